"""How fast this device runs its model, measured from the engine's own steps (what placement compares
between devices: see aicap/placement.py).

Two figures, each the median of the last few qualifying steps of the last minute, so one step slowed
by a moment of contention does not make the device look slow, a device that became slower (a CPU quota,
another busy program, a hot phone) is seen as such within a few steps, and after a quiet minute the
next steps alone decide (a probe of an idle device, aicap.service):

- prefill speed: tokens per second of a step that computes at least `PREFILL_MIN_TOKENS` tokens
  (llama_decode's time grows with the tokens in the batch, prompt and decode rows alike);
- decode step: the seconds of a step that computes one token for at most `STEP_MAX_ROWS` sequences
  (the device's own step, not its load: placement counts the load from the requests running);
- drafted token: what one more token adds to a step of one sequence that verifies a draft (at most
  `DRAFT_MAX_TOKENS`): the step's seconds beyond the decode step, per drafted token. Speculation sizes
  drafts by it (llm_engine._draft_cost). A small batch pays more per token than a prompt chunk does:
  3.8 ms against 2.7 on the Q8_0 copy here, 5.2 ms on the shipped Q4_1 weights a lone sequence
  decodes on (solo.py).

`figures` is replaced whole after each sample, so any thread may read it.
"""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass

PREFILL_MIN_TOKENS = 32
STEP_MAX_ROWS = 2
DRAFT_MAX_TOKENS = 16
WINDOW = 8  # samples a figure is the median of, at most
HORIZON_S = 60.0  # and none older than this before the newest


@dataclass(frozen=True, slots=True)
class Speed:
    prefill_tokens_per_s: float = 0.0  # 0: not measured yet
    decode_step_s: float = 0.0
    measured_at: float = 0.0  # time.monotonic() of the last sample (0: none)
    draft_token_s: float = 0.0  # 0: not measured yet


class SpeedMeter:
    def __init__(self, window: int = WINDOW, horizon_s: float = HORIZON_S) -> None:
        self._horizon = horizon_s
        # (time.monotonic(), value) of the qualifying steps, oldest first
        self._prefill: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self._step: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self._draft: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self.figures = Speed()
        self._since = 0.0  # samples before this do not count (restart)

    def restart(self) -> None:
        """The next steps alone decide each figure (a probe of a device whose figures are stale); the
        figures stay until then. Any thread may call it."""
        self._since = time.monotonic()

    def observe(
        self, tokens: int, rows: int, seconds: float, now: float | None = None, drafted: int = 0
    ) -> None:
        """One step: `tokens` computed for `rows` sequences in `seconds`, ending at `now`; `drafted` of
        the tokens were a draft."""
        if seconds <= 0 or tokens <= 0:
            return
        now = time.monotonic() if now is None else now
        if tokens >= PREFILL_MIN_TOKENS:
            self._prefill.append((now, tokens / seconds))
        elif tokens == rows and rows <= STEP_MAX_ROWS:
            self._step.append((now, seconds))
        elif rows == 1 and drafted == tokens - 1 <= DRAFT_MAX_TOKENS and self.figures.decode_step_s > 0:
            self._draft.append((now, max(seconds - self.figures.decode_step_s, 0.0) / drafted))
        else:
            return
        old = self.figures
        self.figures = Speed(
            self._median(self._prefill, now, old.prefill_tokens_per_s),
            self._median(self._step, now, old.decode_step_s),
            now,
            self._median(self._draft, now, old.draft_token_s),
        )

    def _median(self, samples: collections.deque[tuple[float, float]], now: float, old: float) -> float:
        while samples and samples[0][0] < max(now - self._horizon, self._since):
            samples.popleft()
        return statistics.median(v for _, v in samples) if samples else old
