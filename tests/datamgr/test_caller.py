"""Who calls (datamgr.caller): an app's token is its registered App, the admin token the owner, and no
token or an unknown one is UNAUTHENTICATED; the helpers for owner-only and app-only services."""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamgr import tenant
from datamgr.apps import AdminCredential, AppRegistry
from datamgr.caller import NO_TOKEN, OWNER, UNKNOWN_APP, UNKNOWN_TOKEN, Identify, app_of, token_in
from datamgr.errors import Unauthenticated


class Context:
    def __init__(self, *metadata: tuple[str, Any]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata


def bearer(token: str) -> Context:
    return Context(("user-agent", "test"), ("authorization", f"Bearer {token}"))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Identify, str, str]:
    apps = AppRegistry(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    _, token = apps.add("com.example.app")
    apps.grant("com.example.app", ["ohos.permission.X"])
    admin = AdminCredential(tmp_path / "admin.token")
    return Identify(apps, admin), token, (tmp_path / "admin.token").read_text().strip()


def test_an_apps_token_is_its_app_and_the_rest_of_the_call_is_its_tenant(
    world: tuple[Identify, str, str],
) -> None:
    identify, token, _ = world

    def in_a_call() -> tuple[Any, str]:
        return identify(bearer(token)), tenant.current()

    app, current = contextvars.copy_context().run(in_a_call)
    assert (app.bundle, app.permissions, app.is_admin) == ("com.example.app", {"ohos.permission.X"}, False)
    assert current == "com.example.app"
    assert app_of(app) is app


def test_the_admin_token_is_the_owner(world: tuple[Identify, str, str]) -> None:
    identify, _, admin = world
    assert identify(bearer(admin)) is OWNER
    assert (OWNER.bundle, OWNER.permissions, OWNER.is_admin) == (tenant.DAEMON, frozenset(), True)
    identify.owner(bearer(admin))
    with pytest.raises(Unauthenticated, match=re.escape(UNKNOWN_APP)):
        app_of(OWNER)  # DataShare and KV are apps' services


def test_an_apps_token_is_not_the_owners(world: tuple[Identify, str, str], tmp_path: Path) -> None:
    identify, token, _ = world
    with pytest.raises(Unauthenticated, match=f"admin token from {tmp_path / 'admin.token'}"):
        identify.owner(bearer(token))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (Context(), NO_TOKEN),
        (Context(("authorization", "Basic abc")), NO_TOKEN),
        (bearer("dmapp_not-a-real-token"), UNKNOWN_TOKEN),
    ],
)
def test_no_token_or_an_unknown_one_is_unauthenticated(
    world: tuple[Identify, str, str], context: Context, message: str
) -> None:
    identify, _, _ = world
    with pytest.raises(Unauthenticated) as info:
        identify(context)
    assert info.value.message == message
    assert identify.lookup("dmapp_not-a-real-token") is None


def test_token_in_reads_the_bearer_token() -> None:
    assert token_in([("authorization", "Bearer  abc ")]) == "abc"
    assert token_in([("authorization", b"Bearer abc")]) is None
    assert token_in(None) is None
