"""AI offload between two daemons in network namespaces joined by a veth pair (discovery, pairing and the
peer port on the veth addresses; paired at SL4): an app on alpha runs a generation on bravo by naming it,
through the SDK and the CLI; a link cut silently mid-stream (every packet dropped, no RST) is noticed by
the peer channel's keepalive, and alpha replays the prompt and the tokens already streamed here, the
stream going on with no token lost or repeated; after the heal bravo serves again; a device bravo is not
paired with is refused at its peer port across the link. One pair of daemons for the module; the
namespaces are removed afterwards, passed or failed. The same on loopback, with more placements, is
test_ai_cross_device's."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest
from click.testing import CliRunner
from harness import Daemon
from netns import NetnsUnavailable, VethPair, unavailable
from test_discovery import NamespacedDaemon
from test_pairing import _owner
from test_partition_heal import host_env, wait_online

from aicap import AiClient
from aicap._messages import CompletionChunk
from datamgr.cli import main
from datamgr.errors import DatamgrError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.model,
    pytest.mark.timeout(180),
    pytest.mark.skipif(unavailable() is not None, reason=f"network namespaces: {unavailable()}"),
]

USE_AI = "ohos.permission.USE_AI"
APP = "com.example.notes"
LEVEL = 4  # each owner confirms the other at SL4, above ai.offload_min_level (3)
# one decode thread each: two OpenMP teams of two on 2 cores wait at every barrier for a descheduled
# member (test_ai_cross_device)
AI = {
    "DATAMGR_AI__ENABLED": "true",
    "DATAMGR_AI__N_THREADS": "1",
    "DATAMGR_DISCOVERY__SECURITY_LEVEL": str(LEVEL),
}
PROMPT = "Once upon a time"
DETECTED_BOUND_S = 15.0  # only a cut that keepalive never noticed misses it (TCP alone: minutes)


@dataclass
class Device:
    daemon: Daemon
    device_id: str
    app: AiClient
    token: str


@dataclass
class Hosts:
    net: VethPair
    alpha: Device
    bravo: Device


def _pair(a: Daemon, b: Daemon) -> None:
    """B shows a code, A types it (B's pairing port is on its veth address); each confirms SL4."""
    with _owner(b) as owner_b, _owner(a) as owner_a:
        events = owner_b.open_window(LEVEL)
        opened = next(events).opened
        owner_a.pair(opened.pairing_address, opened.code, LEVEL)
        final = next(events)
        events.close()
    assert final.WhichOneof("event") == "paired"


def _device(d: Daemon) -> Device:
    with _owner(d) as owner:
        device_id = owner.identity().device_id
    token = d.add_app(APP, USE_AI)
    return Device(d, device_id, AiClient.connect(d.address, token), token)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    try:
        net = VethPair("dmai")
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("ai-netns")
    a = NamespacedDaemon(
        net.a.netns,
        tmp / "alpha",
        {**host_env(net.a, "alpha", auto=False), **AI, "DATAMGR_AI__OFFLOAD": "true"},
    )
    b = NamespacedDaemon(
        net.b.netns,
        tmp / "bravo",
        {**host_env(net.b, "bravo", auto=False), **AI, "DATAMGR_AI__SERVE_PEERS": "paired"},
    )
    devices: list[Device] = []
    try:
        a.start(wait=False)  # both load the model at once
        b.start(wait=False)
        for d in (a, b):
            d.wait_healthy(120, service="aicap.v1.AiService")
        _pair(a, b)
        wait_online(a, b)
        devices = [_device(a), _device(b)]
        yield Hosts(net, *devices)
    finally:
        try:
            for dev in devices:
                dev.app.close()
            net.heal()  # a failed test may have left the link cut: the daemons stop without waiting on it
            for d in (b, a):
                if d.proc is not None:
                    d.stop()
        finally:
            net.close()
        for d in (a, b):
            assert "Traceback" not in d.log(), d.log()[-3000:]


def _tokens(chunks: list[CompletionChunk]) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


def test_an_app_runs_a_generation_on_the_named_device_over_the_link(hosts: Hosts) -> None:
    alpha, bravo = hosts.alpha, hosts.bravo
    with alpha.app.stream_complete(
        PROMPT, max_tokens=12, temperature=0, ignore_eos=True, placement=bravo.device_id
    ) as stream:
        chunks = list(stream)
    assert len(chunks) > 1 and len(_tokens(chunks)) == 12  # streamed, not one answer
    usage = chunks[-1].usage
    assert usage is not None and usage.device == bravo.device_id and usage.migrations == 0
    assert chunks[-1].finish_reason == "length" and "".join(c.text for c in chunks).strip()

    cli = CliRunner(
        env={"DATAMGR_CONFIG": None, "DATAMGR_ADDRESS": alpha.daemon.address, "DATAMGR_TOKEN": alpha.token}
    )
    args = ["ai", "complete", PROMPT, "--device", bravo.device_id, "--max-tokens", "12"]
    result = cli.invoke(main, [*args, "--temperature", "0", "--ignore-eos", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (sample,) = json.loads(result.stdout)["samples"]
    assert sample["usage"]["device"] == bravo.device_id and len(sample["tokens"]) == 12
    assert sample["tokens"][:4] == _tokens(chunks)[:4]  # the same device, file and settings


def test_a_generation_cut_off_mid_stream_goes_on_here(hosts: Hosts) -> None:
    """The link drops every packet after 10 tokens: alpha's peer channel notices when its keepalive
    ping goes unanswered, and the generation goes on here from the tokens already streamed."""
    alpha, bravo, net = hosts.alpha, hosts.bravo, hosts.net
    reference = alpha.app.complete(
        PROMPT, max_tokens=8, temperature=0, ignore_eos=True, placement=bravo.device_id
    ).samples[0]
    chunks: list[CompletionChunk] = []
    arrived: list[float] = []
    cut_after, cut_at = 0, 0.0
    try:
        with alpha.app.stream_complete(
            PROMPT, max_tokens=200, temperature=0, ignore_eos=True, placement=bravo.device_id, timeout=90
        ) as stream:
            for chunk in stream:
                chunks.append(chunk)
                arrived.append(time.monotonic())
                if not cut_after and len(_tokens(chunks)) >= 10:
                    net.partition("drop")
                    cut_after, cut_at = len(chunks), time.monotonic()
    finally:
        net.heal()
    assert cut_after, "the stream ended before 10 tokens"
    before, tokens = _tokens(chunks[:cut_after]), _tokens(chunks)
    assert before[:4] == reference.tokens[:4]  # bravo ran it before the cut
    assert len(tokens) == 200  # none lost, none repeated: the replay here asked for 200 less as many
    usage = chunks[-1].usage
    assert usage is not None and usage.migrations == 1 and usage.device == alpha.device_id
    assert chunks[-1].finish_reason == "length"
    # the stream's longest silence after the cut: detection plus the replay's prefill here (a chunk or
    # two may still arrive from bravo right after the cut: they were on their way)
    gap, resumed = max((b - a, b) for a, b in pairwise(arrived[cut_after - 1 :]))
    print(
        f"\ncut after {len(before)} tokens: gap {gap:.2f} s, resumed {resumed - cut_at:.2f} s after the cut"
    )
    assert gap < DETECTED_BOUND_S, gap

    # healed: bravo takes the next generation (a new connection, the old one was dropped)
    deadline = time.monotonic() + 20
    while True:
        try:
            out = alpha.app.complete(PROMPT, max_tokens=4, placement=bravo.device_id, timeout=20)
            break
        except DatamgrError as exc:
            assert time.monotonic() < deadline, f"bravo not reachable after the heal: {exc}"
            time.sleep(0.2)
    assert out.samples[0].usage is not None and out.samples[0].usage.device == bravo.device_id


# Run in namespace a: a device with a fresh identity (never paired) asks bravo for its load.
_UNPAIRED = """
import asyncio, sys, tempfile
from pathlib import Path
import grpc
from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.sync.v1 import ai_peer_pb2, ai_peer_pb2_grpc

async def main() -> None:
    address, cert = sys.argv[1], Path(sys.argv[2]).read_bytes()
    with tempfile.TemporaryDirectory() as data:
        async with open_peer_channel(address, load_identity(Path(data)), cert) as ch:
            try:
                await ai_peer_pb2_grpc.AiPeerServiceStub(ch).GetLoad(ai_peer_pb2.GetLoadRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                print(exc.code().name)
                return
    print("OK")

asyncio.run(main())
"""


def test_a_device_that_is_not_paired_is_refused_at_the_peer_port(hosts: Hosts) -> None:
    bravo, net = hosts.bravo, hosts.net
    with _owner(bravo.daemon) as owner:
        port = owner.identity().peer_port
    cert = bravo.daemon.data_dir / "device" / "cert.pem"
    cmd = ["ip", "netns", "exec", net.a.netns, sys.executable, "-c", _UNPAIRED, f"{net.b.address}:{port}"]
    proc = subprocess.run([*cmd, str(cert)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "UNAUTHENTICATED", proc.stdout + proc.stderr
