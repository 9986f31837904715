"""A 32-token vocabulary for llguidance (the fake runner's VOCAB): enough pieces to write small JSON
objects of the keys "a", "b", "c", "x", "y", digits and a few words; token 0 is the end-of-generation
token (as the fake runner's EOG)."""

from __future__ import annotations

import functools

import llguidance

PIECES = [
    b"<eos>",
    b"{",
    b"}",
    b'"',
    b":",
    b",",
    b" ",
    b"a",
    b"b",
    b"c",
    b"x",
    b"y",
    *(str(d).encode() for d in range(10)),
    b"[",
    b"]",
    b"-",
    b".",
    b"!",
    b"ab",
    b'{"',
    b'": ',
    b"yes",
    b"no",
]
assert len(PIECES) == 32
EOS = 0


class _Vocab:
    """What llguidance's TokenizerWrapper reads: the tokens' bytes and a tokenizer (longest piece
    first; bytes no piece covers are skipped)."""

    eos_token_id = EOS
    bos_token_id = None
    special_token_ids = [EOS]
    tokens = [b"\xff<eos>", *PIECES[1:]]  # 0xff marks a special token

    def __call__(self, text: bytes | str) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        by_length = sorted(range(1, len(PIECES)), key=lambda t: -len(PIECES[t]))
        out, i = [], 0
        while i < len(data):
            t = next((t for t in by_length if data.startswith(PIECES[t], i)), None)
            if t is None:
                i += 1
                continue
            out.append(t)
            i += len(PIECES[t])
        return out


@functools.cache
def grammar_tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Vocab()))


def encode(text: str) -> list[int]:
    return _Vocab()(text)


def decode(tokens: list[int]) -> str:
    return b"".join(PIECES[t] for t in tokens if t != EOS).decode()
