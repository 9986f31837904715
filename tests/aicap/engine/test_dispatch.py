"""How a step's events reach their callers (async_engine._dispatch): every sample's last event arrives,
also when several samples of a request end in the same step (constrained samples keep in step, so they
often do; the request was forgotten at the first one, and the others' last events were dropped)."""

from __future__ import annotations

import asyncio

from aicap.engine.async_engine import _dispatch
from aicap.engine.generation import Request
from aicap.engine.llm_engine import TokenEvent
from aicap.engine.sampler import SamplingParams


class _Ended:
    """An engine whose requests have all ended."""

    def has_request(self, request_id: int) -> bool:
        return False


def test_samples_that_end_in_one_step_each_get_their_last_event() -> None:
    loop = asyncio.new_event_loop()
    try:
        req = Request(7, [1, 2], SamplingParams(max_tokens=4, n=3), "", ("", 0), loop, asyncio.Queue())
        requests = {7: req}
        events = [TokenEvent(7, 10 + i, True, i, finish_reason="stop") for i in range(3)]
        _dispatch(_Ended(), requests, events)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0))
        got = [req.out.get_nowait() for _ in range(req.out.qsize())]
        assert [(ev.index, ev.token) for ev in got] == [(0, 10), (1, 11), (2, 12)]
        assert requests == {}
        _dispatch(_Ended(), requests, [TokenEvent(7, 99, True, 0)])  # a late event of a forgotten request
        loop.run_until_complete(asyncio.sleep(0))
        assert req.out.empty()
    finally:
        loop.close()
