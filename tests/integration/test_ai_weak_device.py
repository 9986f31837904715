"""A weak device and a strong one, both real daemons with the real model, paired on loopback: "weak" runs
in a cpu cgroup limited to a quarter of one core (cgroup v1 `cpu.cfs_quota_us`), "strong" in one of its
own with no limit; both offload (ai.offload) and serve their paired devices. Each measures its own speed
at load, so placement sees the quota: AUTO from the weak device runs on the strong one, LOCAL stays, AUTO
from the strong device stays there; a long prompt with SPLIT is prefilled on the strong device and
decoded on the weak one; concurrent AUTO streams from the weak device all finish. Skipped where a cpu
cgroup cannot be made (not root, no cgroup v1); the groups are removed afterwards, passed or failed. The
same placements between equal devices are test_ai_cross_device's."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cgroup import cpu_cgroup, group_of, start_in, unavailable
from harness import Daemon
from test_pairing import _owner, _pair
from test_sync_daemons import ENV

from aicap import AiClient
from aicap._messages import CompletionChunk

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(300)]

USE_AI = "ohos.permission.USE_AI"
APP = "com.example.notes"
QUOTA = 0.25  # the weak device's share of one core
# each device's weight against the other processes here (1024 each): on a busy machine (others' tests)
# the weak device still gets its quarter and the strong one a core, when each measures its speed at load
SHARES = 8192
# 47 tokens: its prefill takes the weak device about 1 s, the strong one about 0.3 s. A prompt of a few
# tokens may stay on the weak device: placement compares expected first tokens, and then the round trip
# (measured from a device that gets a quarter of each 100 ms) weighs as much as the prefill.
LOG = (
    "A note for the ship's log, morning watch: wind from the north-west, a long swell from the west, the "
    "harbour lights still on, two fishing boats going out past the breakwater, and rain expected before noon."
)
# one decode thread each: two OpenMP teams of two on 2 cores wait at every barrier for a descheduled
# member (test_ai_cross_device); a quarter of a core cannot run a team of two at all
AI = {
    "DATAMGR_AI__ENABLED": "true",
    "DATAMGR_AI__N_THREADS": "1",
    "DATAMGR_AI__OFFLOAD": "true",
    "DATAMGR_AI__SERVE_PEERS": "paired",
    "DATAMGR_DISCOVERY__SECURITY_LEVEL": "4",  # each confirms the other at SL4: ai.offload_min_level is 3
    "DATAMGR_AI__SPEED_MAX_AGE_S": "1",  # an idle device asked for its speed probes it again after 1 s
}


@dataclass
class Device:
    daemon: Daemon
    device_id: str
    app: AiClient
    admin: AiClient


@dataclass
class Pair:
    weak: Device
    strong: Device
    weak_group: Path  # its cpu cgroup

    def speeds(self) -> str:
        """What each device measured at load (for a failure's message: placement compares these)."""
        found = {}
        for name, dev in (("weak", self.weak), ("strong", self.strong)):
            m = re.search(r"prefill (\d+) tokens/s, decode step ([\d.]+) ms", dev.daemon.log())
            found[name] = f"{m[1]} tokens/s, {m[2]} ms/step" if m else "not measured"
        return f"measured at load: {found}"


def _device(d: Daemon) -> Device:
    with _owner(d) as owner:
        device_id = owner.identity().device_id
    admin = (d.data_dir / "admin.token").read_text().strip()
    return Device(
        d, device_id, AiClient.connect(d.address, d.add_app(APP, USE_AI)), AiClient.connect(d.address, admin)
    )


def _stop(d: Daemon) -> None:
    if d.proc is None:
        return
    try:
        d.stop()
    except subprocess.TimeoutExpired:
        d.kill9()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if reason := unavailable():
        pytest.skip(f"a weak device needs a cpu cgroup: {reason}")
    tmp = tmp_path_factory.mktemp("ai-weak")
    strong, weak = (
        Daemon(tmp / name, env={**ENV, **AI, "DATAMGR_DISCOVERY__DEVICE_NAME": name})
        for name in ("strong", "weak")
    )
    devices: list[Device] = []
    # on leaving each group: anything still in it moved out, the group removed
    with cpu_cgroup(QUOTA, SHARES) as weak_group, cpu_cgroup(shares=SHARES) as strong_group:
        try:
            # one after the other: each measures its speed at load, alone
            start_in(strong_group, strong, timeout=120)
            start_in(weak_group, weak, timeout=120)
            _pair(weak, strong)
            devices = [_device(weak), _device(strong)]
            yield Pair(devices[0], devices[1], weak_group)
        finally:
            for dev in devices:
                dev.app.close()
                dev.admin.close()
            for d in (weak, strong):
                _stop(d)
    for d in (weak, strong):
        assert "Traceback" not in d.log(), d.log()[-3000:]


def _finished(dev: Device) -> int:
    return sum(e.requests_finished for e in dev.admin.stats().engines)


def _prompt_tokens(dev: Device) -> int:
    return sum(e.prompt_tokens_total for e in dev.admin.stats().engines)


def test_the_weak_device_runs_in_its_cgroup(pair: Pair) -> None:
    """The premise: the weak daemon is in the group limited to a quarter core, the strong one is not."""
    weak, strong = pair.weak.daemon.proc, pair.strong.daemon.proc
    assert weak is not None and strong is not None
    assert group_of(weak.pid) == pair.weak_group != group_of(strong.pid)
    period = int((pair.weak_group / "cpu.cfs_period_us").read_text())
    assert int((pair.weak_group / "cpu.cfs_quota_us").read_text()) == int(period * QUOTA)


def test_auto_from_the_weak_device_runs_on_the_strong_one_and_local_stays(pair: Pair) -> None:
    weak, strong = pair.weak, pair.strong
    there = weak.app.complete(LOG, max_tokens=4, temperature=0, placement="auto")
    usage = there.samples[0].usage
    assert usage is not None and usage.device == strong.device_id, pair.speeds()
    assert len(there.samples[0].tokens) == 4
    before = _finished(strong)
    here = weak.app.complete(LOG, max_tokens=4, temperature=0, placement="local")
    usage = here.samples[0].usage
    assert usage is not None and usage.device == weak.device_id
    assert _finished(strong) == before
    assert here.samples[0].tokens == there.samples[0].tokens  # the same model, greedy, each alone


def test_auto_from_the_strong_device_stays_there(pair: Pair) -> None:
    weak, strong = pair.weak, pair.strong
    before = _finished(weak)
    out = strong.app.complete(LOG, max_tokens=4, temperature=0, placement="auto")
    usage = out.samples[0].usage
    assert usage is not None and usage.device == strong.device_id, pair.speeds()
    assert _finished(weak) == before  # the weak device serves the strong one's apps, but is slower


def test_split_prefills_a_long_prompt_on_the_strong_device_and_decodes_on_the_weak_one(pair: Pair) -> None:
    weak, strong = pair.weak, pair.strong
    prompt = "The tide comes in over the old harbour wall, and the fishing boats lift. " * 40  # 641 tokens
    before = _prompt_tokens(strong)
    out = weak.app.complete(prompt, max_tokens=4, temperature=0, ignore_eos=True, placement="split")
    usage = out.samples[0].usage
    assert usage is not None and usage.device == weak.device_id  # decoded here
    assert 600 <= usage.prompt_tokens <= 1000, usage.prompt_tokens
    assert len(out.samples[0].tokens) == 4
    # all but the last prompt token prefilled there (the last one is the first decode step here)
    assert _prompt_tokens(strong) - before == usage.prompt_tokens - 1, pair.speeds()


def test_concurrent_auto_streams_from_the_weak_device_all_finish(pair: Pair) -> None:
    weak, strong = pair.weak, pair.strong
    max_tokens = 16

    def run(i: int) -> list[CompletionChunk]:
        with weak.app.stream_complete(
            f"Stream {i}. {LOG}", max_tokens=max_tokens, temperature=0, ignore_eos=True, placement="auto"
        ) as stream:
            return list(stream)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    devices = []
    for chunks in results:
        assert sum(len(c.token_ids) for c in chunks) == max_tokens
        usage = chunks[-1].usage
        assert usage is not None and chunks[-1].finish_reason == "length"
        devices.append(usage.device)
    assert set(devices) <= {weak.device_id, strong.device_id}
    assert strong.device_id in devices, pair.speeds()


def _measured(dev: Device) -> list[float]:
    """The prefill speeds the device logged, one per probe of its speed, oldest first."""
    return [float(m) for m in re.findall(r"prefill (\d+) tokens/s", dev.daemon.log())]


def _probed(asking: Device, asked: Device) -> float:
    """Has `asking` place a request (asking `asked` for its load, older than ai.speed_max_age_s by
    then: `asked` is idle and probes its speed again) and returns the prefill speed `asked` logs."""
    seen = len(_measured(asked))
    time.sleep(1.5)  # past the age (1 s) and the asking device's cache of loads (peers.LOAD_TTL_S)
    asking.app.complete("Hello.", max_tokens=1, temperature=0, placement="auto")
    deadline = time.monotonic() + 60
    while len(_measured(asked)) == seen:
        assert time.monotonic() < deadline, f"no new speed probe: {asked.daemon.log()[-2000:]}"
        time.sleep(0.2)
    return _measured(asked)[-1]


def test_a_device_measures_its_speed_again_when_it_changed(pair: Pair) -> None:
    """A device's speed figures are not the ones of its load for ever: the weak device's quota lifted,
    it reports itself fast once asked; the quota back, slow again (placement then follows)."""
    weak, strong = pair.weak, pair.strong
    quota = pair.weak_group / "cpu.cfs_quota_us"
    limit = quota.read_text()
    slow = _measured(weak)[-1]
    quota.write_text("-1")
    try:
        fast = _probed(strong, weak)
    finally:
        quota.write_text(limit)
    assert fast >= 2 * slow, (slow, fast)
    again = _probed(strong, weak)
    assert again * 2 <= fast, (slow, fast, again)
