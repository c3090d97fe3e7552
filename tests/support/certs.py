"""A test CA and the certificates it signs, as PEM files (cryptography), for the TLS tests."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TestCA:
    """A self-signed CA, valid for a day, that signs leaf certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, common_name: str):
        self.now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = self._builder(self.name, self.key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(
            self.key, hashes.SHA256())

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 ) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(hours=1))
                .not_valid_after(self.now + datetime.timedelta(days=1)))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, extension: x509.ExtensionType, cert_path: Path,
              key_path: Path) -> None:
        """A leaf certificate for ``common_name`` with one extension, and its private key."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = self._builder(subject, key.public_key()).add_extension(
            extension, critical=False).sign(self.key, hashes.SHA256())
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
