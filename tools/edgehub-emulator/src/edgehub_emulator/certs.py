"""A local CA and a server certificate, created once in the state folder."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"


@dataclass(frozen=True)
class CertPaths:
    """Files of the local PKI: the CA certificate is what clients trust."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san_entries(names: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def ensure_certificates(state_dir: Path, names: list[str]) -> CertPaths:
    """Create the CA and server certificate when missing, or a new server certificate when names changed."""
    folder = state_dir / "certs"
    folder.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY)
    wanted = ["localhost", "127.0.0.1", "::1", *names]
    now = datetime.datetime.now(datetime.timezone.utc)

    if not (folder / CA_KEY).exists() or not paths.ca_cert.exists():
        logger.info("creating a local CA in %s", folder)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgehub-emulator local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(folder / CA_KEY, _key_pem(ca_key))
        paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        paths.server_cert.unlink(missing_ok=True)

    ca_key_loaded = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    ca_cert_loaded = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    if paths.server_cert.exists() and paths.server_key.exists():
        current = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if set(_san_entries(wanted)) <= set(san) and current.not_valid_after_utc > now:
            return paths

    logger.info("creating the server certificate for %s", ", ".join(dict.fromkeys(wanted)))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
        .issuer_name(ca_cert_loaded.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_san_entries(wanted)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key_loaded.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key_loaded, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(paths.server_key, _key_pem(key))
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths
