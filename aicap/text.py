"""A sample's text as its tokens arrive: UTF-8-safe and cut before the first stop string.

Token pieces are bytes that may end inside a UTF-8 character: an incremental decoder holds those
bytes back until the character is whole. Text that might be the beginning of a stop string is held
back too, until the following tokens show whether the stop string follows; on a match only the text
before it is released and the sample is done.
"""

from __future__ import annotations

import codecs


class SampleText:
    """The releasable text of one sample. `feed` a token's bytes, `finish` when the sample ends."""

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._pending = ""  # decoded text not yet released (a possible stop-string start)
        self.stopped = False  # a stop string was found; nothing more is released

    def feed(self, piece: bytes) -> str:
        """The text the piece makes releasable (often the piece itself, maybe "" or more)."""
        if self.stopped:
            return ""
        return self._release(self._decoder.decode(piece), final=False)

    def finish(self) -> str:
        """The rest, at the end of the sample (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        return self._release(self._decoder.decode(b"", final=True), final=True)

    def _release(self, text: str, final: bool) -> str:
        pending = self._pending + text
        if not self._stops:
            self._pending = ""
            return pending
        cut = min((i for i in (pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return pending[:cut]
        keep = 0 if final else _partial_stop(pending, self._stops)
        self._pending = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is a proper beginning of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
