"""Credentials a Flower deployment with TLS and SuperNode authentication needs, generated with ``cryptography``.

A CA, a server certificate for ``127.0.0.1``/``localhost`` signed by it, and one EC key pair per SuperNode in the
OpenSSH format ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read. EC keys
throughout: an RSA-4096 key takes seconds to generate on a busy machine, a P-256/P-384 key a millisecond.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair: the private key it starts with, the public key the SuperLink registers."""

    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class Credentials:
    """Paths of everything :func:`generate_credentials` wrote."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    node_keys: tuple[NodeKey, ...]


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    path.chmod(0o600)


def _certificate(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def generate_node_key(directory: Path, name: str) -> NodeKey:
    """Write a P-384 key pair for one SuperNode as ``<name>`` (private) and ``<name>.pub`` (public), OpenSSH format."""
    key = ec.generate_private_key(ec.SECP384R1())
    node_key = NodeKey(private_key=directory / name, public_key=directory / f"{name}.pub")
    _write_private_key(node_key.private_key, key, serialization.PrivateFormat.OpenSSH)
    node_key.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return node_key


def generate_credentials(directory: Path, num_node_keys: int) -> Credentials:
    """Write a CA, a server certificate for 127.0.0.1/::1/localhost and ``num_node_keys`` SuperNode key pairs.

    Args:
        directory: where the files go (created if missing).
        num_node_keys: how many SuperNode key pairs to write (``supernode-0``, ``supernode-1``, ...).

    Returns:
        The paths of the files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightning-fl test CA")])
    ca_cert = (
        _certificate(ca_name, ca_name, ca_key.public_key(), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    server_cert = (
        _certificate(server_name, ca_name, server_key.public_key(), ca_key)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    credentials = Credentials(
        ca_certificate=directory / "ca.crt",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
        node_keys=tuple(generate_node_key(directory, f"supernode-{index}") for index in range(num_node_keys)),
    )
    credentials.ca_certificate.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    credentials.server_certificate.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private_key(credentials.server_key, server_key, serialization.PrivateFormat.TraditionalOpenSSL)
    return credentials
