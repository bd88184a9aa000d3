"""Fleet distribution: the edge-to-edge relay (records, commit bus, gRPC server and client, manager)."""
