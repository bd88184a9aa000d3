"""The fleet identity the relay authenticates with, and the gRPC credentials made of it.

Both ends of a relay stream present the certificate the controller's CA issued them at enrollment
(CN and DNS SAN = the node ID): the server requires a client certificate from that CA, and the client
checks the parent's certificate against the same CA under the parent's node ID
(`grpc.ssl_target_name_override`), so it reaches the node it meant and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

# a record of max_record_bytes plus the message framing
_MESSAGE_OVERHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class FleetIdentity:
    node_id: str
    key_pem: bytes = b""
    cert_pem: bytes = b""
    ca_pem: bytes = b""


def server_credentials(ident: FleetIdentity) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(ident.key_pem, ident.cert_pem)], root_certificates=ident.ca_pem,
                                       require_client_auth=True)


def channel_credentials(ident: FleetIdentity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(ident.ca_pem, ident.key_pem, ident.cert_pem)


def message_options(max_record_bytes: int) -> list[tuple[str, Any]]:
    limit = max_record_bytes + _MESSAGE_OVERHEAD
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def peer_node_id(context: Any) -> str:
    """The node ID (certificate CN) of the peer of a servicer call; "" when it has none."""
    try:
        names = context.auth_context().get("x509_common_name") or []
    except (AttributeError, ValueError):
        return ""
    return names[0].decode(errors="replace") if names else ""
