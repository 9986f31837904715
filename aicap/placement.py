"""Where a generation runs: this device, a paired device the app names, or the one that gives the
earliest expected first token (AUTO).

Each device reports its load (`Load`): requests waiting and running, prompt tokens waiting to be
prefilled, and two speeds of its default model measured on the device itself from its engine's recent
steps (aicap/engine/speed.py: prefill tokens per second and the time of one decode step), so a device
under a CPU quota reports itself as slow as it is. The expected first token on a device is then

    round trip + (its waiting prompt tokens + this prompt) / its prefill speed
               + one decode step per batch of running sequences the prefill shares its steps with

and AUTO takes the smallest, but keeps the prompt here unless a peer is expected `PREFER_LOCAL` times
sooner (two equal devices measure a little differently; no prompt should leave on that noise). Which
peers may be asked at all (paired, confirmed security level, serving this device, the same model file)
is the host's business (`aicap._host.Peers`); this module only compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOCAL = ""  # the device id that means this device
PREFER_LOCAL = 2.0  # a peer must be expected this many times sooner than this device to be chosen


@dataclass(frozen=True, slots=True)
class Load:
    """A device's load and speed, as it reports them (see AiPeerService.GetLoad)."""

    device: str  # LOCAL for this device
    name: str = ""
    waiting: int = 0
    running: int = 0
    max_running: int = 16
    tokens_waiting: int = 0  # prompt tokens waiting to be prefilled
    prefill_tokens_per_s: float = 0.0  # 0: not measured yet
    decode_step_s: float = 0.0
    rtt_s: float = 0.0  # the round trip to it (0 here)
    cache_type: str = ""  # its KV cache type: KV state moves only between devices with the same

    def expected_first_token_s(self, prompt_tokens: int, max_batch_tokens: int = 512) -> float:
        """Seconds until a new request's first token there; inf when the speeds are unknown."""
        if self.prefill_tokens_per_s <= 0:
            return math.inf
        todo = self.tokens_waiting + prompt_tokens
        prefill = todo / self.prefill_tokens_per_s
        # a prefill shares each step with the running sequences' decodes; once all slots run, a new
        # request also waits for one to finish (counted as a step per waiting request ahead)
        steps = math.ceil(todo / max_batch_tokens)
        shared = steps * self.decode_step_s * min(self.running, self.max_running) / max(self.max_running, 1)
        queued = max(0, self.waiting + self.running + 1 - self.max_running) * self.decode_step_s
        return self.rtt_s + prefill + shared + queued


def choose(
    local: Load | None,
    peers: list[Load],
    prompt_tokens: int,
    max_batch_tokens: int = 512,
    prefer_local: float = PREFER_LOCAL,
) -> Load:
    """The device with the earliest expected first token; `local` (None: this device cannot run the
    model) wins unless a peer is expected `prefer_local` times sooner: a prompt leaves only when that
    clearly pays, not on the noise of two equal devices' measurements. ValueError when there is no
    device at all."""
    if local is None and not peers:
        raise ValueError("no device can run the model")
    best = min(
        peers,
        key=lambda d: (d.expected_first_token_s(prompt_tokens, max_batch_tokens), d.device),
        default=None,
    )
    if local is None:
        assert best is not None
        return best
    if best is None:
        return local
    here = local.expected_first_token_s(prompt_tokens, max_batch_tokens)
    there = best.expected_first_token_s(prompt_tokens, max_batch_tokens)
    return best if there * prefer_local < here else local
