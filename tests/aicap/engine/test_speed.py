"""The speed meter placement reads (aicap/engine/speed.py): which steps count for which figure, and
that a figure follows the device when it changes without jumping on one odd step."""

from __future__ import annotations

import time

import pytest

from aicap.engine.speed import HORIZON_S, PREFILL_MIN_TOKENS, STEP_MAX_ROWS, WINDOW, Speed, SpeedMeter


def test_nothing_measured_reads_zero() -> None:
    assert SpeedMeter().figures == Speed()


def test_a_prompt_step_measures_prefill_and_a_decode_step_the_step() -> None:
    m = SpeedMeter()
    before = time.monotonic()
    m.observe(64, 1, 0.2)
    assert m.figures.prefill_tokens_per_s == 320.0 and m.figures.decode_step_s == 0.0
    assert m.figures.measured_at >= before
    m.observe(1, 1, 0.01)
    assert m.figures == Speed(320.0, 0.01, m.figures.measured_at)


def test_steps_that_measure_neither_leave_the_figures() -> None:
    m = SpeedMeter()
    m.observe(64, 1, 0.2)
    figures = m.figures
    m.observe(STEP_MAX_ROWS + 1, STEP_MAX_ROWS + 1, 0.05)  # many sequences' step: their load, not the device
    m.observe(PREFILL_MIN_TOKENS - 1, 2, 0.05)  # a short prompt chunk: mostly fixed cost
    m.observe(0, 0, 0.05)
    m.observe(64, 1, 0.0)
    assert m.figures is figures


def test_one_odd_step_does_not_move_the_median_and_a_lasting_change_does() -> None:
    m = SpeedMeter()
    for _ in range(WINDOW):
        m.observe(1, 1, 0.01)
    m.observe(1, 1, 2.0)  # a moment of contention
    assert m.figures.decode_step_s == 0.01
    for _ in range(WINDOW // 2 + 1):  # the device became slower
        m.observe(1, 1, 0.04)
    assert m.figures.decode_step_s == 0.04


def test_after_a_quiet_spell_the_new_steps_alone_decide() -> None:
    """An idle device probed again is judged by the probe, not by the steps of minutes ago; the other
    figure, not measured since, keeps its last value."""
    m = SpeedMeter()
    for i in range(WINDOW):
        m.observe(64, 1, 0.8, now=float(i))  # 80 tokens/s under a quota
        m.observe(1, 1, 0.05, now=float(i))
    m.observe(64, 1, 0.2, now=HORIZON_S + WINDOW + 1)  # the quota lifted: one prompt step
    assert m.figures.prefill_tokens_per_s == 320.0
    assert m.figures.decode_step_s == 0.05


def test_a_restart_lets_the_next_steps_alone_decide() -> None:
    m = SpeedMeter()
    for _ in range(WINDOW):
        m.observe(64, 1, 0.8)
    m.restart()
    assert m.figures.prefill_tokens_per_s == 80.0  # until a step says otherwise
    m.observe(64, 1, 0.2)
    assert m.figures.prefill_tokens_per_s == 320.0


def test_a_verified_draft_measures_what_a_drafted_token_adds() -> None:
    m = SpeedMeter()
    m.observe(5, 1, 0.03, drafted=4)  # no decode step measured yet: nothing to subtract from
    assert m.figures.draft_token_s == 0.0
    m.observe(1, 1, 0.01)
    m.observe(5, 1, 0.03, drafted=4)  # 20 ms beyond the 10 ms step, for 4 drafted tokens
    assert m.figures.draft_token_s == pytest.approx(0.005) and m.figures.decode_step_s == 0.01
    figures = m.figures
    m.observe(5, 1, 0.05)  # a prompt's last 5 tokens: not a draft
    m.observe(6, 2, 0.05, drafted=4)  # two sequences: their step is not the one measured
    assert m.figures is figures
