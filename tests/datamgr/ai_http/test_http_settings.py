"""The HTTP API's settings: on, on loopback, by default; plaintext refused beyond loopback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from datamgr.config import HttpSettings, Settings


def test_on_and_on_loopback_by_default() -> None:
    s = Settings().http
    assert (s.enabled, s.listen, s.tls) == (True, "127.0.0.1:8090", False)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:8090", "localhost:80", "127.0.0.2:9"])
def test_plaintext_on_loopback(listen: str) -> None:
    assert HttpSettings(listen=listen).listen == listen


@pytest.mark.parametrize("listen", ["0.0.0.0:8090", "192.168.1.20:8090", "[::]:8090", "example.com:80"])
def test_plaintext_beyond_loopback_is_refused_and_tls_allows_it(listen: str) -> None:
    with pytest.raises(ValidationError, match="not a loopback address"):
        HttpSettings(listen=listen)
    assert HttpSettings(listen=listen, tls=True).tls


def test_the_address_and_body_cap_are_checked() -> None:
    with pytest.raises(ValidationError):
        HttpSettings(listen="8090")
    with pytest.raises(ValidationError):
        HttpSettings(max_body_bytes=10)
