"""A throw-away certificate authority and server certificate for the HTTPS sandbox."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_COMMON_NAME", "DEFAULT_HOSTNAMES", "TestCertificates", "make_test_ca"]

CA_COMMON_NAME = "eightyeightpay sandbox CA"
"""The common name of every test CA."""
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
"""The names a default server certificate is valid for."""


@attrs.frozen
class TestCertificates:
    """PEM files of a test CA and a server certificate it signed."""

    __test__ = False  # not a pytest test class, despite its name

    ca_file: Path
    """The CA certificate: the file a client trusts (``ca_certs=``, ``cafile=``)."""
    cert_file: Path
    """The server certificate."""
    key_file: Path
    """The server's private key (unencrypted, mode 0600)."""
    hostnames: tuple[str, ...]
    """The DNS names and IP addresses the server certificate is valid for."""
    not_after: datetime.datetime
    """When the server certificate expires (UTC)."""

    def server_context(self) -> ssl.SSLContext:
        """Return an ``ssl.SSLContext`` for a server presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Return an ``ssl.SSLContext`` for a client trusting only this CA (names checked)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def _pem(path: Path, data: bytes, *, private: bool = False) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def make_test_ca(
    directory: str | os.PathLike[str],
    *,
    hostname: str | Sequence[str] = DEFAULT_HOSTNAMES,
    not_after_days: float = 30,
) -> TestCertificates:
    """Make a throw-away CA and a server certificate it signs, as PEM files in ``directory``.

    The server certificate is valid for ``hostname`` (one name, or a sequence of DNS names
    and IP addresses) until ``not_after_days`` from now. Pass a wrong host name or a
    negative ``not_after_days`` to make a certificate that clients must reject. The CA itself
    is valid for a year either side of now.
    """
    names = (hostname,) if isinstance(hostname, str) else tuple(hostname)
    if not names:
        raise ValueError("the server certificate needs at least one host name")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=365))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    not_after = now + datetime.timedelta(days=not_after_days)
    # An expired certificate must still have started before it ended.
    not_before = min(now - datetime.timedelta(days=1), not_after - datetime.timedelta(days=1))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    return TestCertificates(
        ca_file=_pem(folder / "sandbox-ca.pem", ca_cert.public_bytes(pem)),
        cert_file=_pem(folder / "sandbox-server.pem", server_cert.public_bytes(pem)),
        key_file=_pem(
            folder / "sandbox-server.key",
            server_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            private=True,
        ),
        hostnames=names,
        not_after=not_after,
    )
