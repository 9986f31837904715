"""`split_text`: a long text cut into overlapping chunks to embed, as OpenHarmony's
intelligence.splitText(text, {size, overlapRatio}).

Each chunk has at most `size` characters and ends at the best boundary found within its last part:
a paragraph, else a line, else a sentence, else a word, else anywhere. The next chunk starts about
`overlap_ratio` x size characters before the previous one ended, moved forward to a word's start, so
the chunks cover the text in order and neighbours share the context around their cut. Pure and
deterministic (no tokenizer: sizes are characters, as OpenHarmony's are).
"""

from __future__ import annotations

import re

# where a chunk may end, best first: after a blank line, a line break, a sentence's end, a space
_BREAKS = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile("[.!?;\u3002\uff01\uff1f\uff1b](?=\\s|$)|[\u3002\uff01\uff1f\uff1b]"),  # and CJK's full stops
    re.compile(r"\s"),
)
_MIN_FILL = 0.5  # a boundary is used only if the chunk keeps at least this share of `size`


def split_text(text: str, size: int, overlap_ratio: float = 0.0) -> list[str]:
    """`text` as chunks of at most `size` characters that cover it in order; consecutive chunks share
    about `overlap_ratio` (0 to 1, exclusive) x `size` characters. A text of at most `size` characters
    is one chunk; an empty one, none. ValueError for a size below 1 or a ratio outside [0, 1)."""
    return [text[start:end] for start, end in spans(text, size, overlap_ratio)]


def spans(text: str, size: int, overlap_ratio: float = 0.0) -> list[tuple[int, int]]:
    """The chunks of `split_text` as (start, end) offsets into `text`: starts and ends both rising."""
    if size < 1:
        raise ValueError(f"size {size} must be at least 1 character")
    if not 0 <= overlap_ratio < 1:
        raise ValueError(f"overlap_ratio {overlap_ratio} must be at least 0 and less than 1")
    overlap = int(size * overlap_ratio)
    out: list[tuple[int, int]] = []
    start, end = 0, 0
    while start < len(text):
        end = len(text) if len(text) - start <= size else _cut(text, start, start + size, end)
        out.append((start, end))
        if end == len(text):
            break
        start = _next_start(text, start, end, overlap)
    return out


def _cut(text: str, start: int, limit: int, after: int) -> int:
    """The end of the chunk that starts at `start` and may not pass `limit`: after the best boundary
    in its last half (and past `after`, the previous chunk's end), else at `limit`."""
    low = max(start + max(1, int((limit - start) * _MIN_FILL)), after + 1)
    window = text[low:limit]
    for pattern in _BREAKS:
        ends = [m.end() for m in pattern.finditer(window)]
        if ends:
            return low + ends[-1]
    return limit


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """Where the chunk after [start, end) begins: `overlap` characters before `end`, moved forward to
    the next word's start if that is before `end`; always after `start`, so the chunks advance."""
    if overlap <= 0:
        return end
    at = max(start + 1, end - overlap)
    if at > start + 1 and not text[at - 1].isspace():
        space = re.compile(r"\s+").search(text, at, end)
        if space is not None and space.end() < end:
            at = space.end()
    return at
