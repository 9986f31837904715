"""The device identity: made once, loaded after, never silently replaced."""

from __future__ import annotations

import datetime
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from datamgr.device.identity import (
    PEER_HOSTNAME,
    IdentityError,
    certificate_info,
    format_fingerprint,
    load_certificate,
    load_identity,
)
from datamgr.errors import InvalidArgument


def test_first_start_makes_key_and_self_signed_certificate(tmp_path: Path) -> None:
    ident = load_identity(tmp_path)
    directory = tmp_path / "device"
    assert ident.key_path == directory / "key.pem" and ident.cert_path == directory / "cert.pem"
    assert stat.S_IMODE(ident.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    cert = x509.load_pem_x509_certificate(ident.cert_path.read_bytes())
    key = serialization.load_pem_private_key(ident.key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject  # self-signed
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ident.device_id == hashlib.sha256(spki).digest()[:16].hex()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.device_id
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [PEER_HOSTNAME]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ident.fingerprint == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert certificate_info(ident.cert_pem) == (ident.device_id, ident.fingerprint, ident.cert_pem.decode())


def test_only_the_first_certificate_of_a_pem_counts(tmp_path: Path) -> None:
    ident, extra = load_identity(tmp_path / "a"), load_identity(tmp_path / "b")
    device_id, fingerprint, pem = certificate_info(ident.cert_pem + extra.cert_pem)
    assert (device_id, fingerprint) == (ident.device_id, ident.fingerprint)
    assert pem == ident.cert_pem.decode()  # what gets stored (and becomes a root): the one certificate


def test_later_starts_load_the_same_identity(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    again = load_identity(tmp_path)
    assert again == first


def test_loosened_key_permissions_are_tightened(tmp_path: Path) -> None:
    ident = load_identity(tmp_path)
    ident.key_path.chmod(0o644)
    load_identity(tmp_path)
    assert stat.S_IMODE(ident.key_path.stat().st_mode) == 0o600


def test_missing_certificate_is_remade_from_the_key(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    first.cert_path.unlink()
    again = load_identity(tmp_path)
    assert again.device_id == first.device_id  # the id is the key's
    assert again.key_pem == first.key_pem
    assert again.fingerprint != first.fingerprint  # a new certificate (new serial)


def test_missing_key_makes_a_new_device(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    first.key_path.unlink()
    again = load_identity(tmp_path)
    assert again.device_id != first.device_id
    assert again.fingerprint != first.fingerprint


def test_certificate_of_another_key_is_refused_not_replaced(tmp_path: Path) -> None:
    mine = load_identity(tmp_path / "a")
    other = load_identity(tmp_path / "b")
    mine.cert_path.write_bytes(other.cert_pem)
    with pytest.raises(IdentityError, match="does not belong"):
        load_identity(tmp_path / "a")
    assert mine.cert_path.read_bytes() == other.cert_pem  # left for the owner to sort out


def test_two_devices_differ(tmp_path: Path) -> None:
    a, b = load_identity(tmp_path / "a"), load_identity(tmp_path / "b")
    assert a.device_id != b.device_id and a.fingerprint != b.fingerprint
    assert len(a.device_id) == 32 and len(a.fingerprint) == 64


def test_fingerprint_is_shown_in_groups() -> None:
    fp = "0123456789abcdef" * 4
    assert format_fingerprint(fp) == "0123 4567 89AB CDEF " * 3 + "0123 4567 89AB CDEF"


def _cert(
    key: object,
    *,
    issuer_key: object = None,
    ca: bool | None = False,
    dns: str | None = PEER_HOSTNAME,
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if dns is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM)


def test_only_certificates_datamgr_could_have_made_are_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert load_certificate(_cert(key)).public_key() == key.public_key()
    with pytest.raises(InvalidArgument, match="not a PEM certificate"):
        load_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidArgument, match="P-256"):
        load_certificate(_cert(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(InvalidArgument, match="P-256"):
        load_certificate(_cert(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(InvalidArgument, match="self-signed"):
        load_certificate(_cert(key, issuer_key=ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(InvalidArgument, match="not be a CA"):
        load_certificate(_cert(key, ca=True))  # trusted, it would vouch for certificates it signs
    with pytest.raises(InvalidArgument, match="basic constraints"):
        load_certificate(_cert(key, ca=None))
    with pytest.raises(InvalidArgument, match="must name datamgr-peer"):
        load_certificate(_cert(key, dns="example.org"))
