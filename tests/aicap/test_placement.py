"""aicap.placement: the expected first token on each device, and AUTO's choice."""

from __future__ import annotations

import math

import pytest

from aicap.placement import LOCAL, Load, choose

FAST = Load("strong", prefill_tokens_per_s=2000, decode_step_s=0.02, rtt_s=0.002)
SLOW = Load(LOCAL, prefill_tokens_per_s=250, decode_step_s=0.08)


def test_an_idle_device_first_token_is_its_prefill_plus_the_round_trip() -> None:
    assert FAST.expected_first_token_s(1000) == pytest.approx(0.002 + 1000 / 2000)


def test_waiting_prompts_and_full_slots_push_the_first_token_back() -> None:
    idle = Load(LOCAL, prefill_tokens_per_s=1000, decode_step_s=0.05)
    queued = Load(LOCAL, tokens_waiting=3000, prefill_tokens_per_s=1000, decode_step_s=0.05)
    full = Load(LOCAL, running=16, max_running=16, waiting=4, prefill_tokens_per_s=1000, decode_step_s=0.05)
    t = idle.expected_first_token_s(100)
    assert queued.expected_first_token_s(100) == pytest.approx(t + 3.0)
    assert full.expected_first_token_s(100) > t + 5 * 0.05


def test_unknown_speed_is_never_expected_sooner() -> None:
    assert math.isinf(Load("new").expected_first_token_s(10))
    assert choose(Load(LOCAL), [FAST], 10).device == "strong"
    assert choose(SLOW, [Load("new")], 10).device == LOCAL


def test_auto_takes_the_earliest_but_keeps_the_prompt_here_unless_a_peer_clearly_pays() -> None:
    assert choose(SLOW, [FAST], 1000).device == "strong"
    twin = Load("twin", prefill_tokens_per_s=2000, decode_step_s=0.02, rtt_s=0.002)
    assert choose(FAST, [twin], 10) is FAST  # as fast as this device: the prompt stays
    a_bit_faster = Load("twin", prefill_tokens_per_s=2400, decode_step_s=0.02)
    here = Load(LOCAL, prefill_tokens_per_s=2000, decode_step_s=0.02)
    assert choose(here, [a_bit_faster], 1000).device == LOCAL  # 1.2x: measurement noise, not worth it
    assert choose(here, [a_bit_faster], 1000, prefer_local=1.0).device == "twin"
    busy_strong = Load("strong", tokens_waiting=20_000, prefill_tokens_per_s=2000, decode_step_s=0.02)
    assert choose(SLOW, [busy_strong], 100).device == LOCAL
    assert choose(SLOW, [busy_strong, FAST], 100).device == "strong"


def test_without_this_device_a_peer_is_chosen_and_none_is_an_error() -> None:
    assert choose(None, [FAST], 10).device == "strong"
    with pytest.raises(ValueError):
        choose(None, [], 10)
