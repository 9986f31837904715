"""`datamgr serve` as a process: the data-directory lock, configuration, TCP, health, reflection, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from harness import CONTACTS, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.connection import metadata
from datamgr.errors import DatamgrError
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SERVICES = ("datamgr.v1.AdminService", "datamgr.v1.DataShareService")


class CustomSocketDaemon(Daemon):
    """A daemon whose configuration puts the Unix socket outside the data directory."""

    def __init__(self, data_dir: Path, socket: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self._socket = socket

    @property
    def socket(self) -> Path:
        return self._socket


def with_people(daemon: Daemon, rows: int = 0) -> str:
    """Registers the contacts provider (and `rows` people); returns a consumer token with READ and WRITE."""
    provider = daemon.add_app(CONTACTS)
    with daemon.helper(provider) as h:
        h.register_provider(contacts_manifest())
        if rows:
            h.batch_insert(PEOPLE_URI, [{"name": f"p{i}"} for i in range(rows)])
    return daemon.add_app("com.example.dialer", READ, WRITE)


def page_sizes(address: str, token: str) -> list[int]:
    """Rows per streamed page of a query that leaves page_rows to the daemon's setting."""
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.DataShareServiceStub(ch)
        return [
            m.page.row_count for m in stub.Query(pb.QueryRequest(uri=PEOPLE_URI), metadata=metadata(token))
        ]


def health(address: str, service: str = "") -> str:
    with grpc.insecure_channel(address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("daemon") / "data").start()
    try:
        yield d
    finally:
        d.stop()


# ---- one daemon per data directory ----


def test_a_second_daemon_on_the_same_directory_is_refused(daemon: Daemon) -> None:
    offset = daemon.log_path.stat().st_size
    second = Daemon(daemon.data_dir).start(wait=False)
    assert second.proc is not None
    code = second.proc.wait(30)
    second.proc = None
    assert code != 0
    said = daemon.log_path.read_text(errors="replace")[offset:]
    assert str(daemon.data_dir) in said
    assert "another datamgr daemon" in said
    assert f"pid {daemon.endpoint()['pid']}" in said
    assert "Traceback" not in said
    # The first daemon is untouched: same socket, still serving.
    assert health(daemon.address) == "SERVING"
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_killed_daemon_does_not_block_the_next(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data").start()
    token = with_people(d)
    d.kill9()
    assert d.socket.exists()  # stale socket and lock file are left behind
    d.start()
    with d.helper(token) as h:
        assert h.insert(PEOPLE_URI, {"name": "after kill -9"}) > 0
    assert d.stop() == 0


# ---- configuration ----


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_from_a_toml_file_and_the_environment(tmp_path: Path) -> None:
    sock = tmp_path / "elsewhere" / "custom.sock"
    sock.parent.mkdir()
    config = write_config(
        tmp_path / "datamgr.toml",
        f'socket = "{sock}"\nlog_level = "DEBUG"\n\n[datashare]\npage_rows = 7\n',
    )
    d = CustomSocketDaemon(tmp_path / "data", sock, config=config).start()
    try:
        assert d.endpoint()["socket"] == str(sock)
        assert not (d.data_dir / "datamgr.sock").exists()
        token = with_people(d, rows=20)
        assert page_sizes(d.address, token) == [7, 7, 6]
        assert "DEBUG" in d.log()
    finally:
        assert d.stop() == 0

    # The environment wins over the file.
    d = CustomSocketDaemon(
        tmp_path / "data", sock, config=config, env={"DATAMGR_DATASHARE__PAGE_ROWS": "8"}
    ).start()
    try:
        assert page_sizes(d.address, token) == [8, 8, 4]
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize(
    ("config", "env", "says"),
    [
        ("[datashare]\npage_rows = 0\n", {}, "page_rows"),
        ("colour = 'blue'\n", {}, "colour"),
        ("not toml at all [", {}, "config"),
        (None, {"DATAMGR_CONFIG": "/nonexistent/datamgr.toml"}, "/nonexistent/datamgr.toml"),
        (None, {"DATAMGR_SHUTDOWN_GRACE_S": "-1"}, "shutdown_grace_s"),
    ],
)
def test_invalid_configuration_exits_2_with_a_clear_message(
    tmp_path: Path, config: str | None, env: dict[str, str], says: str
) -> None:
    d = Daemon(
        tmp_path / "data", env=env, config=write_config(tmp_path / "c.toml", config) if config else None
    )
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 2
    d.proc = None
    log = d.log()
    assert says in log
    assert "Traceback" not in log
    assert not d.socket.exists()


# ---- TCP ----


def test_tcp_listen_on_port_0(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env={"DATAMGR_TCP": "127.0.0.1:0"}).start()
    try:
        port, fingerprint = d.endpoint()["tcp_port"], d.endpoint()["tls_fingerprint"]
        assert isinstance(port, int) and port > 0
        assert f"127.0.0.1:{port} (TLS, certificate {fingerprint})" in d.log()
        token = with_people(d)
        address = f"127.0.0.1:{port}"  # TLS by default (test_tcp_tls.py): the client pins the certificate
        with DataShareHelper.connect(address, token, tls_fingerprint=fingerprint) as h:
            row = h.insert(PEOPLE_URI, {"name": "over tcp"})
            with h.query(PEOPLE_URI, DataSharePredicates().equal_to("id", row), ["name"]) as rs:
                assert [r["name"] for r in rs.rows()] == ["over tcp"]
        with d.helper(token) as h, h.query(PEOPLE_URI) as rs:  # and the Unix socket still works
            assert rs.row_count == 1
    finally:
        assert d.stop() == 0
    assert not (d.data_dir / "daemon.json").exists()


def test_without_tcp_there_is_no_port(daemon: Daemon) -> None:
    assert daemon.proc is not None
    endpoint = daemon.endpoint()
    assert {k: endpoint[k] for k in ("pid", "socket", "tcp_port")} == {
        "pid": daemon.proc.pid,
        "socket": str(daemon.socket),
        "tcp_port": None,
    }


# ---- health and reflection ----


def test_health_serving_then_not_serving_on_sigterm(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data").start()
    for service in ("", *SERVICES):
        assert health(d.address, service) == "SERVING"
    with grpc.insecure_channel(d.address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        statuses = [next(watch).status]
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        try:
            for resp in watch:
                statuses.append(resp.status)
                if resp.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
        except grpc.RpcError as exc:  # the stream may end with the server instead
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        watch.cancel()
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert d.stop() == 0
    with pytest.raises(grpc.RpcError) as info:
        health(d.address)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_open_health_watch_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    grace = 3.0
    d = Daemon(tmp_path / "data", env={"DATAMGR_SHUTDOWN_GRACE_S": str(grace)}).start()
    assert d.proc is not None
    with grpc.insecure_channel(d.address) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(30)
        elapsed = time.monotonic() - started
        d.proc = None
        watch.cancel()
    assert code == 0
    assert elapsed < grace - 1, f"shutdown took {elapsed:.1f} s with a health watcher connected"


def test_cli_health(daemon: Daemon) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "datamgr", "health"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SERVING" in ok.stdout
    gone = subprocess.run(
        [sys.executable, "-m", "datamgr", "health", "--address", "unix:/nonexistent.sock"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gone.returncode == 1
    assert "unreachable" in gone.stdout


def test_server_reflection_describes_every_service(daemon: Daemon) -> None:
    token = with_people(daemon)
    with grpc.insecure_channel(daemon.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {*SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        pool = descriptor_pool.DescriptorPool(db)
        datashare = pool.FindServiceByName("datamgr.v1.DataShareService")
        methods = {m.name for m in datashare.methods}
        assert {
            "RegisterProvider",
            "Insert",
            "BatchInsert",
            "Update",
            "Delete",
            "BatchUpdate",
            "Query",
            "Subscribe",
        } <= methods
        admin = {m.name for m in pool.FindServiceByName("datamgr.v1.AdminService").methods}
        assert {"AddApp", "RemoveApp", "ListApps", "GrantPermissions", "RevokePermissions"} <= admin

        # What grpcurl does: build messages from the reflected descriptors alone and call.
        insert = datashare.FindMethodByName("Insert")
        request_cls = message_factory.GetMessageClass(insert.input_type)
        response_cls = message_factory.GetMessageClass(insert.output_type)
        request = request_cls(uri=PEOPLE_URI)
        request.values["name"].string_value = "via reflection"
        call = ch.unary_unary(
            "/datamgr.v1.DataShareService/Insert",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        row_id = call(request, metadata=metadata(token), timeout=10).row_id
    with (
        daemon.helper(token) as h,
        h.query(PEOPLE_URI, DataSharePredicates().equal_to("id", row_id), ["name"]) as rs,
    ):
        assert [r["name"] for r in rs.rows()] == ["via reflection"]


# ---- graceful shutdown ----

BATCH = 60_000


def _sigterm_during_a_batch(d: Daemon, token: str, rows: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    """Starts a batch insert of `rows` (phone `tag`), sends SIGTERM about half way through and waits
    for both; the outcome holds the batch's count or error, and whether it was still in flight."""
    with d.helper(token) as h:
        started = time.monotonic()
        assert h.batch_insert(PEOPLE_URI, [{**r, "phone": f"warm-up {tag}"} for r in rows]) == BATCH
        took = time.monotonic() - started
    outcome: dict[str, Any] = {}

    def batch() -> None:
        with d.helper(token) as h:
            try:
                outcome["count"] = h.batch_insert(PEOPLE_URI, [{**r, "phone": tag} for r in rows])
            except DatamgrError as exc:
                outcome["error"] = exc
            outcome["done"] = time.monotonic()

    thread = threading.Thread(target=batch)
    thread.start()
    time.sleep(took / 2)  # about half way through the call
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    thread.join(60)
    assert not thread.is_alive()
    assert d.stop() == 0
    outcome["in_flight"] = outcome["done"] > sent
    return outcome


def test_sigterm_lets_an_in_flight_batch_finish_whole_or_not_at_all(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data").start()
    try:
        token = with_people(d)
        rows = [{"name": f"row {i}", "phone": "555-0100", "age": i} for i in range(BATCH)]
        # On a loaded machine the batch may finish before the signal lands: then try again (each try
        # has its own tag, and restarts the daemon the last one stopped).
        for attempt in range(4):
            tag = f"in flight {attempt}"
            if attempt:
                d.start()
            outcome = _sigterm_during_a_batch(d, token, rows, tag)
            if outcome["in_flight"]:
                break
        else:
            pytest.fail("every batch finished before SIGTERM: nothing was ever in flight")

        d.start()
        with (
            d.helper(token) as h,
            h.query(PEOPLE_URI, DataSharePredicates().equal_to("phone", tag), ["age"]) as rs,
        ):
            stored = [r["age"] for r in rs.rows()]
        if "count" in outcome:
            assert outcome["count"] == BATCH
            assert sorted(stored) == list(range(BATCH))
        else:
            assert outcome["error"].code in ("UNAVAILABLE", "CANCELLED"), outcome["error"]
            assert stored == []
        assert d.stop() == 0
        log = d.log()
        assert "Traceback" not in log
        assert log.count("serving on") == log.count("stopped") == attempt + 2
    finally:
        d.stop()


def test_sigterm_and_sigint_exit_0_with_a_readable_log(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = Daemon(tmp_path / f"data-{sig.name}").start()
        assert d.proc is not None
        d.proc.send_signal(sig)
        assert d.proc.wait(30) == 0
        d.proc = None
        log = d.log()
        lines = log.splitlines()
        assert any("serving on unix:" in line and str(d.socket) in line for line in lines)
        assert "shutting down" in log
        assert lines[-1].endswith("stopped")
        assert "Traceback" not in log
        assert not d.socket.exists()
        assert not (d.data_dir / "daemon.json").exists()


def test_data_directory_and_files_are_private(daemon: Daemon) -> None:
    assert os.stat(daemon.data_dir).st_mode & 0o077 == 0
    assert os.stat(daemon.data_dir / "admin.token").st_mode & 0o777 == 0o600
