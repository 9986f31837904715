"""Who this device is: an EC P-256 key and a self-signed certificate, made at first start.

Both live in `{data_dir}/device/` (`key.pem` mode 0600, `cert.pem`) and are never regenerated while
they exist: peers pin the certificate, so a new one means pairing again. The device id is derived from
the public key (the first 16 bytes of SHA-256 of the SubjectPublicKeyInfo, hex) and is the
certificate's CN; the fingerprint is SHA-256 of the certificate's DER. Every certificate names the DNS
name `datamgr-peer`, so peers dial by address with one fixed `grpc.ssl_target_name_override`.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datamgr.errors import DatamgrError, InvalidArgument

PEER_HOSTNAME = "datamgr-peer"
# Validity does not mean anything for a pinned self-signed certificate; a wide window keeps a peer with
# a wrong clock from refusing it. 9999-12-31 is RFC 5280's "no well-defined expiration date".
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class IdentityError(DatamgrError):
    """The key and certificate in the data directory do not belong together (never silently replaced)."""

    code = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class Identity:
    """This device's key pair and certificate, with the two names peers know it by."""

    device_id: str
    fingerprint: str  # SHA-256 of the certificate DER, 64 lowercase hex digits
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path

    @property
    def display_fingerprint(self) -> str:
        return format_fingerprint(self.fingerprint)


def device_id_of(cert: x509.Certificate) -> str:
    return _key_id(cert.public_key())


def _key_id(public: object) -> str:
    assert isinstance(public, ec.EllipticCurvePublicKey)
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:16].hex()


def fingerprint_of(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def format_fingerprint(fingerprint: str) -> str:
    """`5A3F 09C1 ...`: 16 groups of 4 hex digits, to read aloud or compare by eye."""
    upper = fingerprint.upper()
    return " ".join(upper[i : i + 4] for i in range(0, len(upper), 4))


def load_certificate(pem: bytes | str) -> x509.Certificate:
    """A peer's certificate from PEM; InvalidArgument unless it is one datamgr could have made.

    It becomes a TLS root once trusted, so it must be self-signed and not a CA (it cannot vouch for
    other certificates), and name `datamgr-peer` (or our channels could not verify it)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidArgument(f"not a PEM certificate: {exc}") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidArgument("a device certificate must carry an EC P-256 key")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidArgument("a device certificate must be self-signed") from None
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidArgument("a device certificate needs basic constraints and a DNS name") from None
    if ca:
        raise InvalidArgument("a device certificate must not be a CA certificate")
    if PEER_HOSTNAME not in names.get_values_for_type(x509.DNSName):
        raise InvalidArgument(f"a device certificate must name {PEER_HOSTNAME}")
    return cert


def certificate_info(pem: bytes | str) -> tuple[str, str, str]:
    """(device id, fingerprint, the certificate alone in canonical PEM) of a device certificate.

    Store the canonical PEM, never the PEM received: that may carry more certificates after the first
    one, which would become trusted roots too."""
    cert = load_certificate(pem)
    return device_id_of(cert), fingerprint_of(cert), cert.public_bytes(serialization.Encoding.PEM).decode()


def _make_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _key_id(public))])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PEER_HOSTNAME)]), critical=False)
        # not a CA: a paired device's certificate is a trust root here, and must not vouch for others
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_identity(data_dir: Path) -> Identity:
    """This device's identity from `{data_dir}/device/`, created there first if it is missing.

    A missing certificate is re-made from the existing key (the device id stays; paired peers must
    pair again, as the fingerprint changes); a key is only ever created when there is none."""
    directory = data_dir / "device"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    if key_path.exists():
        key_pem = key_path.read_bytes()
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{key_path} is not an EC private key")
        os.chmod(key_path, 0o600)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_path.unlink(missing_ok=True)  # a certificate without its key is of no use
        _write_private(key_path, key_pem)
    if cert_path.exists():
        cert_pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key() != key.public_key():
            raise IdentityError(
                f"{cert_path} does not belong to {key_path}: restore the pair from a backup, or delete "
                "both to make a new device identity (every paired device then has to pair again)"
            )
    else:
        cert = _make_certificate(key)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        tmp = cert_path.with_suffix(".tmp")
        tmp.write_bytes(cert_pem)
        os.replace(tmp, cert_path)
    return Identity(
        device_id=device_id_of(cert),
        fingerprint=fingerprint_of(cert),
        cert_pem=cert_pem,
        key_pem=key_pem,
        cert_path=cert_path,
        key_path=key_path,
    )
