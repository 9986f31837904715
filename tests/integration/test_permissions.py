"""Apps, tokens and permissions through a real daemon: who may call what, and what they are told."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.client import AdminClient, DataSharePredicates
from datamgr.errors import DatamgrError
from datamgr.v1 import admin_pb2, admin_pb2_grpc
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def error(fn: Any, *args: Any) -> DatamgrError:
    with pytest.raises(DatamgrError) as info:
        fn(*args)
    return info.value


def provider_manifest(bundle: str, **table_access: Any) -> dict[str, Any]:
    """One table `t` (id, v) whose access settings are exactly `table_access`."""
    return {
        "bundle": bundle,
        "stores": [
            {
                "name": "s",
                "tables": [
                    {
                        "name": "t",
                        "primary_key": "id",
                        "columns": [{"name": "id", "type": "integer"}, {"name": "v", "type": "text"}],
                        **table_access,
                    }
                ],
            }
        ],
    }


def uri(bundle: str) -> str:
    return f"datashare:///{bundle}/s/t"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("perm") / "data").start()
    try:
        provider = d.add_app(CONTACTS)
        with d.helper(provider) as h:
            h.register_provider(contacts_manifest())
            h.insert(PEOPLE_URI, {"name": "Ada"})
        yield d
    finally:
        d.stop()
    assert "Traceback" not in d.log()


def provide(daemon: Daemon, bundle: str, **table_access: Any) -> str:
    """Registers `bundle` with one table; returns the provider's token."""
    token = daemon.add_app(bundle)
    with daemon.helper(token) as h:
        h.register_provider(provider_manifest(bundle, **table_access))
        h.insert(uri(bundle), {"v": "from the provider"})
    return token


def can_read(daemon: Daemon, token: str, target: str) -> bool | str:
    """True if `token` may query `target`, else the status code name."""
    with daemon.helper(token) as h:
        try:
            with h.query(target) as rs:
                rs.row_count  # noqa: B018 - drains the stream
            return True
        except DatamgrError as exc:
            return exc.code


def can_write(daemon: Daemon, token: str, target: str) -> bool | str:
    with daemon.helper(token) as h:
        try:
            h.insert(target, {"v": "x"} if "/s/t" in target else {"name": "x"})
            return True
        except DatamgrError as exc:
            return exc.code


# ---- authentication ----


def test_no_token_is_unauthenticated(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.address) as ch:
        stub = pb_grpc.DataShareServiceStub(ch)
        for call in (
            lambda: stub.Insert(pb.InsertRequest(uri=PEOPLE_URI)),
            lambda: list(stub.Query(pb.QueryRequest(uri=PEOPLE_URI))),
            lambda: stub.Delete(pb.DeleteRequest(uri=PEOPLE_URI), metadata=(("authorization", "Basic abc"),)),
            lambda: stub.Delete(pb.DeleteRequest(uri=PEOPLE_URI), metadata=(("authorization", "Bearer "),)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "token" in (info.value.details() or "")


def test_unknown_token_is_unauthenticated(daemon: Daemon) -> None:
    with daemon.helper("dmapp_not-a-real-token") as h:
        assert error(h.insert, PEOPLE_URI, {"name": "x"}).code == "UNAUTHENTICATED"
        assert error(h.query, PEOPLE_URI).code == "UNAUTHENTICATED"
        assert error(h.register_provider, contacts_manifest()).code == "UNAUTHENTICATED"
    # An app token is not an admin token, nor the other way round.
    admin_token = (daemon.data_dir / "admin.token").read_text().strip()
    with daemon.helper(admin_token) as h:
        assert error(h.query, PEOPLE_URI).code == "UNAUTHENTICATED"


def test_the_daemons_own_bundle_names_cannot_be_registered(daemon: Daemon) -> None:
    """Its replicated system stores live under them: an app of that name could read them."""
    with daemon.admin() as admin:
        with pytest.raises(DatamgrError) as info:
            admin.add_app("ohos.distributeddata.udmf")
        assert info.value.code == "INVALID_ARGUMENT" and "belong to the daemon" in info.value.message
        assert "ohos.distributeddata.udmf" not in [a.bundle for a in admin.list_apps()]


# ---- named permissions ----


def test_missing_permission_is_denied_naming_it(daemon: Daemon) -> None:
    token = daemon.add_app("com.example.nothing")
    with daemon.helper(token) as h:
        err = error(h.query, PEOPLE_URI)
        assert err.code == "PERMISSION_DENIED"
        assert READ in err.message
        err = error(h.insert, PEOPLE_URI, {"name": "x"})
        assert err.code == "PERMISSION_DENIED"
        assert WRITE in err.message
        for call in (
            lambda: h.update(PEOPLE_URI, None, {"name": "y"}),
            lambda: h.delete(PEOPLE_URI),
            lambda: h.batch_insert(PEOPLE_URI, [{"name": "z"}]),
            lambda: h.batch_update({PEOPLE_URI: [({"name": "w"}, None)]}),
        ):
            err = error(call)
            assert (err.code, WRITE in err.message) == ("PERMISSION_DENIED", True)


def test_read_permission_does_not_open_writes(daemon: Daemon) -> None:
    token = daemon.add_app("com.example.reader", READ)
    assert can_read(daemon, token, PEOPLE_URI) is True
    assert can_write(daemon, token, PEOPLE_URI) == "PERMISSION_DENIED"
    writer = daemon.add_app("com.example.writer", WRITE)
    assert can_write(daemon, writer, PEOPLE_URI) is True
    assert can_read(daemon, writer, PEOPLE_URI) == "PERMISSION_DENIED"


def test_grant_and_revoke_take_effect_immediately(daemon: Daemon) -> None:
    bundle = "com.example.fickle"
    token = daemon.add_app(bundle)
    with daemon.helper(token) as h, daemon.admin() as admin:  # one channel throughout
        assert error(h.query, PEOPLE_URI).code == "PERMISSION_DENIED"
        assert list(admin.grant(bundle, [READ]).permissions) == [READ]
        with h.query(PEOPLE_URI) as rs:
            assert rs.row_count >= 1
        admin.revoke(bundle, [READ])
        err = error(h.query, PEOPLE_URI)
        assert (err.code, READ in err.message) == ("PERMISSION_DENIED", True)
        apps = {a.bundle: list(a.permissions) for a in admin.list_apps()}
        assert apps[bundle] == []


def test_batch_update_needs_write_on_every_uri(daemon: Daemon) -> None:
    other = "com.example.other"
    provide(daemon, other, read_permission=READ, write_permission="com.example.permission.OTHER_WRITE")
    token = daemon.add_app("com.example.halfway", READ, WRITE)
    with daemon.helper(token) as h:
        err = error(
            h.batch_update, {PEOPLE_URI: [({"phone": "p"}, None)], uri(other): [({"v": "hacked"}, None)]}
        )
        assert err.code == "PERMISSION_DENIED"
        assert "OTHER_WRITE" in err.message
        with h.query(PEOPLE_URI, DataSharePredicates().equal_to("phone", "p")) as rs:
            assert rs.row_count == 0  # nothing of the batch applied
        with h.query(uri(other)) as rs:
            assert [r["v"] for r in rs.rows()] == ["from the provider"]


# ---- silent-access rules ----


def test_a_table_without_permissions_is_provider_only(daemon: Daemon) -> None:
    bundle = "com.example.private"
    provider = provide(daemon, bundle)
    strong = daemon.add_app("com.example.strong", READ, WRITE, "noPermission")
    for op in (can_read, can_write):
        assert op(daemon, strong, uri(bundle)) == "PERMISSION_DENIED"
        assert op(daemon, provider, uri(bundle)) is True
    with daemon.helper(strong) as h:
        assert "provider-only" in error(h.query, uri(bundle)).message


def test_no_permission_opens_to_every_app(daemon: Daemon) -> None:
    bundle = "com.example.open"
    provide(daemon, bundle, read_permission="noPermission", write_permission=WRITE)
    anyone = daemon.add_app("com.example.anyone")
    assert can_read(daemon, anyone, uri(bundle)) is True
    assert can_write(daemon, anyone, uri(bundle)) == "PERMISSION_DENIED"


def test_reject_closes_to_every_other_app(daemon: Daemon) -> None:
    bundle = "com.example.rejecting"
    provider = provide(daemon, bundle, read_permission="reject", write_permission="reject")
    holder = daemon.add_app("com.example.holder", "reject")  # holding a permission named reject opens nothing
    assert can_read(daemon, holder, uri(bundle)) == "PERMISSION_DENIED"
    assert can_write(daemon, holder, uri(bundle)) == "PERMISSION_DENIED"
    assert can_read(daemon, provider, uri(bundle)) is True


def test_silent_access_off_closes_the_tables_to_consumers(daemon: Daemon) -> None:
    bundle = "com.example.loud"
    token = daemon.add_app(bundle)
    m = provider_manifest(bundle, read_permission="noPermission", write_permission="noPermission")
    m["silent_access"] = False
    with daemon.helper(token) as h:
        h.register_provider(m)
    consumer = daemon.add_app("com.example.loud.consumer")
    with daemon.helper(consumer) as h:
        err = error(h.query, uri(bundle))
        assert err.code == "PERMISSION_DENIED"
        assert "silent access off" in err.message
    assert can_write(daemon, consumer, uri(bundle)) == "PERMISSION_DENIED"
    assert can_write(daemon, token, uri(bundle)) is True  # the provider still reaches its own tables
    assert can_read(daemon, token, uri(bundle)) is True


def test_allow_list_restricts_in_addition_to_permissions(daemon: Daemon) -> None:
    bundle = "com.example.picky"
    friend, stranger, unpermitted = "com.example.friend", "com.example.stranger", "com.example.unpermitted"
    provide(daemon, bundle, read_permission=READ, write_permission=WRITE, allow_list=[friend, unpermitted])
    friend_t = daemon.add_app(friend, READ, WRITE)
    stranger_t = daemon.add_app(stranger, READ, WRITE)
    unpermitted_t = daemon.add_app(unpermitted)
    assert can_read(daemon, friend_t, uri(bundle)) is True
    assert can_write(daemon, friend_t, uri(bundle)) is True
    with daemon.helper(stranger_t) as h:
        err = error(h.query, uri(bundle))
        assert err.code == "PERMISSION_DENIED"
        assert "allow-list" in err.message
    assert can_write(daemon, stranger_t, uri(bundle)) == "PERMISSION_DENIED"
    assert can_read(daemon, unpermitted_t, uri(bundle)) == "PERMISSION_DENIED"  # listed, but lacks READ


def test_table_settings_override_the_manifest(daemon: Daemon) -> None:
    bundle = "com.example.layered"
    token = daemon.add_app(bundle)
    manifest = provider_manifest(bundle, read_permission="noPermission")
    manifest["read_permission"] = READ
    manifest["write_permission"] = WRITE
    with daemon.helper(token) as h:
        h.register_provider(manifest)
    anyone = daemon.add_app("com.example.layered.reader")
    assert can_read(daemon, anyone, uri(bundle)) is True  # the table's noPermission wins over READ
    assert can_write(daemon, anyone, uri(bundle)) == "PERMISSION_DENIED"  # inherited WRITE


def test_an_app_may_not_register_a_manifest_for_another_bundle(daemon: Daemon) -> None:
    token = daemon.add_app("com.example.impostor", READ, WRITE)
    with daemon.helper(token) as h:
        hijack = contacts_manifest(read_permission="noPermission", write_permission="noPermission")
        err = error(h.register_provider, hijack)
        assert err.code == "PERMISSION_DENIED"
        assert CONTACTS in err.message
        stranger = daemon.add_app("com.example.impostor.victim")
    # The real manifest still stands.
    assert can_read(daemon, stranger, PEOPLE_URI) == "PERMISSION_DENIED"


# ---- the admin credential ----


def test_admin_calls_need_the_admin_token(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.address) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        calls = [
            lambda md: stub.AddApp(admin_pb2.AddAppRequest(bundle="com.example.sneaky"), metadata=md),
            lambda md: stub.ListApps(admin_pb2.ListAppsRequest(), metadata=md),
            lambda md: stub.GrantPermissions(
                admin_pb2.GrantPermissionsRequest(bundle=CONTACTS, permissions=["x"]), metadata=md
            ),
            lambda md: stub.RevokePermissions(
                admin_pb2.RevokePermissionsRequest(bundle=CONTACTS, permissions=["x"]), metadata=md
            ),
            lambda md: stub.RemoveApp(admin_pb2.RemoveAppRequest(bundle=CONTACTS), metadata=md),
        ]
        app_token = daemon.add_app("com.example.notadmin")
        for md in (
            (),
            (("authorization", "Bearer dmadm_wrong"),),
            (("authorization", f"Bearer {app_token}"),),
        ):
            for call in calls:
                with pytest.raises(grpc.RpcError) as info:
                    call(md)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with AdminClient(daemon.address, token="dmadm_wrong") as admin:
        assert error(admin.list_apps).code == "UNAUTHENTICATED"
    with daemon.admin() as admin:
        bundles = {a.bundle for a in admin.list_apps()}
    assert "com.example.sneaky" not in bundles
    assert CONTACTS in bundles


def test_admin_token_file_is_readable_only_by_its_user(daemon: Daemon) -> None:
    path = daemon.data_dir / "admin.token"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600
    assert path.stat().st_uid == os.getuid()
    assert path.read_text().strip().startswith("dmadm_")


def test_adding_an_app_twice_is_already_exists(daemon: Daemon) -> None:
    daemon.add_app("com.example.twice")
    with daemon.admin() as admin:
        err = error(admin.add_app, "com.example.twice")
        assert err.code == "ALREADY_EXISTS"
        assert error(admin.add_app, "not a bundle!").code == "INVALID_ARGUMENT"
        assert error(admin.grant, "com.example.missing", [READ]).code == "NOT_FOUND"
        assert error(admin.remove_app, "com.example.missing").code == "NOT_FOUND"


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = daemon.env()
    return subprocess.run(
        [sys.executable, "-m", "datamgr", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_apps_add_prints_the_token_once_and_stores_only_its_hash(daemon: Daemon) -> None:
    bundle = "com.example.cli"
    first = cli(daemon, "apps", "add", bundle, "--json")
    assert first.returncode == 0, first.stderr
    token = json.loads(first.stdout)["token"]
    assert token.startswith("dmapp_")
    with daemon.helper(token) as h:
        assert error(h.query, PEOPLE_URI).code == "PERMISSION_DENIED"  # authenticated, not yet permitted

    second = cli(daemon, "apps", "add", bundle)
    assert second.returncode == 1
    assert "ALREADY_EXISTS" in second.stderr
    assert "Traceback" not in second.stderr
    assert token not in second.stdout + second.stderr

    granted = cli(daemon, "apps", "grant", bundle, READ)
    assert granted.returncode == 0, granted.stderr
    assert can_read(daemon, token, PEOPLE_URI) is True
    listed = cli(daemon, "apps", "list", "--json")
    assert {a["bundle"]: a["permissions"] for a in json.loads(listed.stdout)}[bundle] == [READ]
    assert token not in listed.stdout

    stored = b"".join(p.read_bytes() for p in daemon.data_dir.glob("datamgr.db*"))
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_removing_an_app_invalidates_its_token(daemon: Daemon) -> None:
    bundle = "com.example.leaving"
    token = daemon.add_app(bundle, READ)
    with daemon.helper(token) as h:
        with h.query(PEOPLE_URI) as rs:
            assert rs.row_count >= 1
        with daemon.admin() as admin:
            admin.remove_app(bundle)
            assert bundle not in {a.bundle for a in admin.list_apps()}
        assert error(h.query, PEOPLE_URI).code == "UNAUTHENTICATED"
    # Registering the bundle again issues a new token; the old one stays dead and no permission survives.
    new_token = daemon.add_app(bundle)
    assert new_token != token
    assert can_read(daemon, token, PEOPLE_URI) == "UNAUTHENTICATED"
    assert can_read(daemon, new_token, PEOPLE_URI) == "PERMISSION_DENIED"


def test_removing_a_provider_drops_its_tables(daemon: Daemon) -> None:
    bundle = "com.example.gone"
    provider = provide(daemon, bundle, read_permission="noPermission")
    reader = daemon.add_app("com.example.gone.reader")
    assert can_read(daemon, reader, uri(bundle)) is True
    with daemon.admin() as admin:
        admin.remove_app(bundle)
    assert can_read(daemon, reader, uri(bundle)) == "NOT_FOUND"
    assert can_read(daemon, provider, uri(bundle)) == "UNAUTHENTICATED"
    provider = provide(daemon, bundle, read_permission="noPermission")  # a fresh start, no old rows
    with daemon.helper(reader) as h, h.query(uri(bundle)) as rs:
        assert [r["v"] for r in rs.rows()] == ["from the provider"]
