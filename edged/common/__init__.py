"""Pieces both daemons need in the same form: edged imports them, and so does originctl.

    hostport     HOST:PORT parsing
    tomlconfig   reading a TOML file and building a typed dataclass tree from it
    gpu          the fields of one GPU sample (NVML's figures, as reported and as stored)
    mdns         service names and the interface choice for LAN discovery
    fingerprint  the controller CA fingerprint, bootstrap tokens, and reading the CA a controller presents
    files        atomic writes of small files

Rule: nothing here imports gRPC, the generated edgenet code, originctl, or any part of edged outside
edged.common (tests/unit/common/test_imports.py checks it). Errors raised here are plain ValueError
subclasses; each daemon turns them into its own typed error.
"""
