"""Per-device limits on the generations this device runs for paired devices (`ai.peer_max_concurrent`,
`ai.peer_tokens_per_minute`): a device past either is refused RESOURCE_EXHAUSTED naming the limit, and
its generations count tokens as they go (prompt at admission, each generated token after)."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator

from datamgr.errors import ResourceExhausted

WINDOW_S = 60.0


class DeviceLimits:
    def __init__(
        self, max_concurrent: int, tokens_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_concurrent, self.tokens_per_minute = max_concurrent, tokens_per_minute
        self._clock = clock
        self._running: collections.Counter[str] = collections.Counter()
        self._spent: dict[str, collections.deque[tuple[float, int]]] = {}

    def running(self, device: str) -> int:
        return self._running[device]

    def used(self, device: str) -> int:
        """Tokens the device had processed here in the last minute."""
        spent = self._spent.get(device)
        if spent is None:
            return 0
        horizon = self._clock() - WINDOW_S
        while spent and spent[0][0] < horizon:
            spent.popleft()
        if not spent:
            del self._spent[device]
            return 0
        return sum(n for _, n in spent)

    def charge(self, device: str, tokens: int) -> None:
        self._spent.setdefault(device, collections.deque()).append((self._clock(), tokens))

    @contextlib.contextmanager
    def admit(self, device: str, name: str, prompt_tokens: int) -> Iterator[None]:
        """A generation of `device` (`name` for messages) runs inside; refused past a limit."""
        if self._running[device] >= self.max_concurrent:
            raise ResourceExhausted(
                f"device {name} already runs {self._running[device]} generations here "
                f"(ai.peer_max_concurrent {self.max_concurrent})"
            )
        used = self.used(device)
        if used + prompt_tokens > self.tokens_per_minute:
            raise ResourceExhausted(
                f"device {name} had {used} tokens processed here in the last minute; this prompt's "
                f"{prompt_tokens} would pass ai.peer_tokens_per_minute ({self.tokens_per_minute})"
            )
        self.charge(device, prompt_tokens)
        self._running[device] += 1
        try:
            yield
        finally:
            self._running[device] -= 1
            if not self._running[device]:
                del self._running[device]
