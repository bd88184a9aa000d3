"""Node certificates as TLS server certificates (the relay listener), over real gRPC with mutual TLS.

A child dials its parent's relay port with its own node certificate and names the parent by its node ID
(`grpc.ssl_target_name_override`), verifying it against the fleet CA; the parent requires a client
certificate from that CA. Certificates issued before the relay (clientAuth only) still work
as clients but cannot serve (the handshake checks the server's extended key usage); a client whose
certificate comes from another CA is refused in the handshake, and so is a parent that is not the node
the child meant to dial.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgenet.v1 import edge_pb2, edge_pb2_grpc
from originctl.server.enrollment import CertificateAuthority


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def node_identity(ca: CertificateAuthority, node_id: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return _key_pem(key), ca.sign_node_csr(csr, node_id).cert_pem


def old_style_identity(ca: CertificateAuthority, node_id: str) -> tuple[bytes, bytes]:
    """A node certificate as issued before the relay: EKU clientAuth only."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca._sign_leaf(node_id, key.public_key(), 30, [x509.DNSName(node_id)], (ExtendedKeyUsageOID.CLIENT_AUTH,))
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def foreign_identity(node_id: str) -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor CA")])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


class Echo(edge_pb2_grpc.EnrollmentServiceServicer):
    """Any unary service will do: the handshake is what is tested. It answers with the caller's CN."""

    async def GetEndpoints(self, request: Any, context: Any) -> edge_pb2.Endpoints:
        cn = list(context.auth_context().get("x509_common_name") or [b""])[0]
        return edge_pb2.Endpoints(version=cn.decode())


async def call(port: int, ca_pem: bytes, client: tuple[bytes, bytes], name: str) -> str | grpc.StatusCode:
    creds = grpc.ssl_channel_credentials(ca_pem, client[0], client[1])
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds,
                                       options=[("grpc.ssl_target_name_override", name)]) as ch:
        try:
            resp = await edge_pb2_grpc.EnrollmentServiceStub(ch).GetEndpoints(edge_pb2.GetEndpointsRequest(),
                                                                               timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return str(resp.version)


async def serve(ca: CertificateAuthority, identity: tuple[bytes, bytes]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    edge_pb2_grpc.add_EnrollmentServiceServicer_to_server(Echo(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [identity], root_certificates=ca.cert_pem, require_client_auth=True))
    await server.start()
    return server, port


@pytest.mark.parametrize("issue", [node_identity, old_style_identity], ids=["child-current", "child-before-relay"])
async def test_node_certificate_serves_mutual_tls(tmp_path: Path, issue: Any) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    server, port = await serve(ca, node_identity(ca, "nd-parent1"))
    try:
        assert await call(port, ca.cert_pem, issue(ca, "nd-child01"), "nd-parent1") == "nd-child01"
        # refused: a client certificate from another CA; a parent that is not the node the child asked for
        assert await call(port, ca.cert_pem, foreign_identity("nd-child01"), "nd-parent1") \
            is grpc.StatusCode.UNAVAILABLE
        assert await call(port, ca.cert_pem, issue(ca, "nd-child01"), "nd-other99") is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_certificate_from_before_the_relay_cannot_serve(tmp_path: Path) -> None:
    """Why an edge renews a clientAuth-only certificate (RenewCertificate) before its relay listener serves."""
    ca = CertificateAuthority.load_or_create(tmp_path)
    server, port = await serve(ca, old_style_identity(ca, "nd-parent1"))
    try:
        assert await call(port, ca.cert_pem, node_identity(ca, "nd-child01"), "nd-parent1") \
            is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
