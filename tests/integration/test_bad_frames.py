"""Requests that do not decode are INVALID_ARGUMENT with a clear message, never UNKNOWN or INTERNAL, and
leave no traceback in the daemon's log (issue 10, point 10): every method of every service on the app
socket, the unauthenticated Pair call on the pairing port, and a bad frame in the middle of a stream.
Also here: Health's List, and AddModel given a FIFO or a device instead of a model file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from harness import Daemon

from aicap.v1 import aicap_pb2
from datamgr.device.identity import PEER_HOSTNAME
from datamgr.v1 import admin_pb2, datashare_pb2, devices_pb2, kv_pb2, pairing_pb2, pairing_pb2_grpc, peer_pb2
from udmf.v1 import udmf_pb2

pytestmark = [pytest.mark.integration, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
ENV = {"DATAMGR_AI__N_CTX": "256", "DATAMGR_DISCOVERY__ENABLED": "false"}


def _nested(depth: int, field: int = 1000) -> bytes:
    """`depth` groups inside each other under an unknown field: past protobuf's recursion limit (100)."""
    return _VarintBytes(field << 3 | 3) * depth + _VarintBytes(field << 3 | 4) * depth


FRAMES = {
    "a length that lies": b"\x0a\xff\xff\xff\x0f",  # field 1, 268 MB announced, 0 bytes follow
    "garbage": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "nested 200 deep": _nested(200),
}
SERVICES = [
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    datashare_pb2.DESCRIPTOR.services_by_name["DataShareService"],
    kv_pb2.DESCRIPTOR.services_by_name["KvStoreService"],
    devices_pb2.DESCRIPTOR.services_by_name["DeviceService"],
    pairing_pb2.DESCRIPTOR.services_by_name["PairingService"],
    udmf_pb2.DESCRIPTOR.services_by_name["UdmfService"],
    aicap_pb2.DESCRIPTOR.services_by_name["AiService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]
METHODS = {f"/{s.full_name}/{m.name}": m for s in SERVICES for m in s.methods}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("frames") / "data", env=ENV).start(service=AI_SERVICE)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def md(daemon: Daemon) -> list[tuple[str, str]]:
    """An app's metadata (the daemon refuses some callers before it reads their requests)."""
    return [("authorization", f"Bearer {daemon.add_app('com.example.fuzz', USE_AI)}")]


@pytest.fixture(autouse=True)
def clean_log(daemon: Daemon) -> Iterator[None]:
    """What the daemon logged during the test holds no traceback and no bug."""
    start = len(daemon.log())
    yield
    log = daemon.log()[start:]
    assert "Traceback" not in log, log[-3000:]
    assert "bug in" not in log and "Unexpected" not in log, log[-3000:]


def admin_md(daemon: Daemon) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {(daemon.data_dir / 'admin.token').read_text().strip()}")]


def call_raw(channel: grpc.Channel, path: str, method: Any, frames: list[bytes], md: Any) -> Any:
    """Calls `path` with raw request bytes (identity serializers), consuming any response stream."""
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    rpc = kinds[method.client_streaming, method.server_streaming](path)
    request: Any = iter(frames) if method.client_streaming else frames[0]
    response = rpc(request, metadata=md, timeout=30)
    return list(response) if method.server_streaming else response


def refused(fn: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
    details = info.value.details() or ""
    assert "malformed request" in details
    return details


@pytest.mark.parametrize("path", sorted(METHODS))
def test_an_undecodable_request_is_invalid_argument_in_every_method(
    daemon: Daemon, md: Any, path: str
) -> None:
    with grpc.insecure_channel(daemon.address) as ch:
        for frame in FRAMES.values():
            details = refused(lambda frame=frame: call_raw(ch, path, METHODS[path], [frame], md))
            assert path in details


def _good_then_bad(daemon: Daemon, md: Any, path: str, first: bytes) -> None:
    with grpc.insecure_channel(daemon.address) as ch:
        for frame in FRAMES.values():
            refused(lambda frame=frame: call_raw(ch, path, METHODS[path], [first, frame], md))


def test_a_bad_frame_after_a_good_one_in_a_udmf_write(daemon: Daemon, md: Any) -> None:
    for method, intention in (
        ("InsertData", udmf_pb2.INTENTION_DATA_HUB),
        ("SetDragData", udmf_pb2.INTENTION_DRAG),
    ):
        options = udmf_pb2.WriteRequest(options=udmf_pb2.WriteOptions(intention=intention))
        _good_then_bad(daemon, md, f"/udmf.v1.UdmfService/{method}", options.SerializeToString())


def test_a_bad_frame_after_a_provider_attached(daemon: Daemon, md: Any) -> None:
    """The provider's stream is read by a task of its own, which takes a broken stream for the provider
    leaving: the call still ends with INVALID_ARGUMENT."""
    hello = datashare_pb2.ProviderMessage(hello=datashare_pb2.ProviderHello())
    _good_then_bad(daemon, md, "/datamgr.v1.DataShareService/AttachProvider", hello.SerializeToString())


def test_a_bad_frame_after_a_lazy_drag_started(daemon: Daemon, md: Any) -> None:
    start = udmf_pb2.LazyDragStart(
        properties=udmf_pb2.Properties(tag="lazy"),
        record_count=1,
        summary=udmf_pb2.Summary(summary={"general.plain-text": 10}),
    )
    message = udmf_pb2.LazySourceMessage(start=start)
    _good_then_bad(daemon, md, "/udmf.v1.UdmfService/StartLazyDrag", message.SerializeToString())


def test_an_undecodable_pair_call_on_the_pairing_port(daemon: Daemon) -> None:
    """Pair is open to anyone reaching the pairing port (no certificate, no token) while a window is."""
    cert = (daemon.data_dir / "device" / "cert.pem").read_bytes()
    target = f"127.0.0.1:{daemon.endpoint()['pairing_port']}"
    options = [("grpc.ssl_target_name_override", PEER_HOSTNAME)]
    method = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].methods_by_name["Pair"]
    with grpc.insecure_channel(daemon.address) as local:
        window = pairing_pb2_grpc.PairingServiceStub(local).OpenPairingWindow(
            pairing_pb2.OpenPairingWindowRequest(), metadata=admin_md(daemon), timeout=60
        )
        try:
            assert next(window).WhichOneof("event") == "opened"
            with grpc.secure_channel(target, grpc.ssl_channel_credentials(cert), options=options) as ch:
                pair = "/datamgr.v1.PeerService/Pair"
                for frame in FRAMES.values():
                    refused(lambda frame=frame: call_raw(ch, pair, method, [frame], None))
        finally:
            window.cancel()


def test_health_list_gives_every_services_status(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.address) as ch:
        listed = health_pb2_grpc.HealthStub(ch).List(health_pb2.HealthListRequest(), timeout=10)
    statuses = {name: r.status for name, r in listed.statuses.items()}
    serving = health_pb2.HealthCheckResponse.SERVING
    expected = {"", AI_SERVICE, *(s.full_name for s in SERVICES[:7])}
    assert statuses == dict.fromkeys(expected, serving)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_add_model_refuses_what_is_not_a_regular_file(daemon: Daemon, tmp_path: Path, kind: str) -> None:
    """Reading a FIFO's first bytes would block the adding thread forever; a device never ends."""
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "model.gguf"
        os.mkfifo(path)
    admin = admin_md(daemon)
    with grpc.insecure_channel(daemon.address) as ch:
        add = ch.unary_unary(
            "/aicap.v1.AiService/AddModel",
            request_serializer=aicap_pb2.AddModelRequest.SerializeToString,
            response_deserializer=aicap_pb2.AddModelResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            add(aicap_pb2.AddModelRequest(name=f"from-{kind}", path=str(path)), metadata=admin, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "not a regular file" in (info.value.details() or "")
