"""The pure parts of TLS to the TCP listener: fingerprints, loopback addresses, the plaintext rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from datamgr.config import Settings
from datamgr.connection import check_plaintext, is_loopback, normalize_fingerprint
from datamgr.errors import InvalidArgument

HEX = "5a3f09c1" * 8


@pytest.mark.parametrize(
    "text", [HEX, HEX.upper(), f"sha256:{HEX}", " ".join(HEX[i : i + 4] for i in range(0, 64, 4)),
             ":".join(HEX[i : i + 2] for i in range(0, 64, 2))],
)  # fmt: skip
def test_fingerprints_in_every_shown_form(text: str) -> None:
    assert normalize_fingerprint(text) == HEX


@pytest.mark.parametrize("text", ["", "sha256:", HEX[:-1], HEX + "0", "g" * 64, "sha1:" + HEX])
def test_what_is_not_a_fingerprint(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not a certificate fingerprint"):
        normalize_fingerprint(text)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.1.2.3:0", True),
        ("[::1]:50051", True),
        ("localhost:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:0", False),
        ("192.168.1.5:50051", False),
        ("example.com:443", False),
        ("localhost.example.com:1", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_plaintext_is_for_the_socket_and_loopback_only() -> None:
    check_plaintext("unix:/run/datamgr.sock")
    check_plaintext("127.0.0.1:50051")
    with pytest.raises(InvalidArgument, match="tls_fingerprint"):
        check_plaintext("192.168.1.5:50051")


def test_settings_refuse_plaintext_off_loopback() -> None:
    assert Settings(tcp="127.0.0.1:0", tcp_plaintext=True).tcp_plaintext
    assert not Settings(tcp="0.0.0.0:50051").tcp_plaintext  # TLS: any address
    with pytest.raises(ValidationError, match="not a loopback address"):
        Settings(tcp="0.0.0.0:50051", tcp_plaintext=True)
