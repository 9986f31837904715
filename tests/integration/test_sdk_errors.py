"""One `except` per status catches it from all three SDKs (the rule in `datamgr.errors`), and each SDK
raises its own package's class for it: a real daemon answers DataShare, UDMF and the AI service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from harness import CONTACTS, PEOPLE_URI, Daemon, contacts_manifest

import aicap.errors
import udmf.errors
from aicap import AiClient
from datamgr import errors
from datamgr.client import DataShareHelper
from udmf import PlainText, UdmfClient, UnifiedData, UnifiedRecord

# the AI service answers once its default model is loaded (in the daemon)
pytestmark = [pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
UNKNOWN = "dmapp_unknown"


@dataclass
class World:
    daemon: Daemon
    app: str  # may use the AI, provides nothing
    provider: str  # provides the contacts table
    clients: ExitStack

    def datashare(self, token: str) -> DataShareHelper:
        return self.clients.enter_context(DataShareHelper.connect(self.daemon.address, token))

    def udmf(self, token: str) -> UdmfClient:
        return self.clients.enter_context(UdmfClient.connect(self.daemon.address, token))

    def ai(self, token: str) -> AiClient:
        return self.clients.enter_context(AiClient.connect(self.daemon.address, token))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {"DATAMGR_DISCOVERY__ENABLED": "false"}
    d = Daemon(tmp_path_factory.mktemp("sdk-errors") / "data", env=env).start(service="aicap.v1.AiService")
    try:
        provider = d.add_app(CONTACTS)
        with d.helper(provider) as h:
            h.register_provider(contacts_manifest())
        with ExitStack() as clients:
            yield World(d, d.add_app("com.example.app", USE_AI), provider, clients)
    finally:
        d.stop()


def gone_key(u: UdmfClient) -> object:
    key = u.insert_data(UnifiedData(UnifiedRecord(PlainText("soon gone"))))
    u.delete_data(key=key)
    return u.query_data(key=key)


def granted_by_an_app(u: UdmfClient) -> None:
    key = u.set_drag_data(UnifiedData(UnifiedRecord(PlainText("dragged"))))
    u.grant_access(key, CONTACTS)  # the system's to grant, not the source's


NOBODY = "datashare:///com.example.none/main/t"
ROW: dict[str, int | str] = {"id": 1, "name": "x"}
Fails = Callable[[World], object]
# status: (the one class for it, [(a call of each SDK that fails with it, the class that SDK raises)])
CASES: dict[str, tuple[type[errors.DatamgrError], list[tuple[Fails, type[errors.DatamgrError]]]]] = {
    "NOT_FOUND": (errors.NotFound, [
        (lambda w: w.datashare(w.app).insert(NOBODY, ROW), errors.NotFound),
        (lambda w: gone_key(w.udmf(w.app)), udmf.errors.NotFound),
        (lambda w: w.ai(w.app).tokenize("x", model="nope"), aicap.errors.NotFound),
    ]),
    "UNAUTHENTICATED": (errors.Unauthenticated, [
        (lambda w: w.datashare(UNKNOWN).insert(PEOPLE_URI, ROW), errors.Unauthenticated),
        (lambda w: w.udmf(UNKNOWN).query_types(type_id="general.text"), udmf.errors.Unauthenticated),
        (lambda w: w.ai(UNKNOWN).models(), aicap.errors.Unauthenticated),
    ]),
    "PERMISSION_DENIED": (errors.PermissionDenied, [
        (lambda w: w.datashare(w.app).insert(PEOPLE_URI, ROW), errors.PermissionDenied),
        (lambda w: granted_by_an_app(w.udmf(w.app)), udmf.errors.PermissionDenied),
        (lambda w: w.ai(w.provider).complete("x", max_tokens=1), aicap.errors.PermissionDenied),
    ]),
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(CASES))
def test_one_except_per_status_catches_it_from_every_sdk(world: World, code: str) -> None:
    shared, calls = CASES[code]
    for fails, own in calls:
        try:
            fails(world)
        except shared as exc:  # the one `except` for the status, whichever SDK raised it
            assert type(exc) is own, exc  # the SDK's own package's class
            assert exc.code == code, exc
        else:
            pytest.fail(f"{own.__module__}: no {code}")
