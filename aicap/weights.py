"""Weights llama.cpp's CPU backend multiplies fast: a GGUF whose weights are Q4_1 or Q5_1 is
requantized once to Q8_0 and the copy is loaded in its place (`ai.fast_weights`).

llama.cpp multiplies a batch of tokens by Q8_0, Q4_0, Q5_0 and IQ4_NL weights with its tiled GEMM
(llamafile's tinyBLAS) or repacked kernels, but by Q4_1 and Q5_1 weights one row at a time. The
built-in SmolLM2-135M ships as Q4_1. Measured here (2 threads, bare `llama_decode`): prompts ran at
333-420 tok/s as Q8_0 against 199-265 as Q4_1, and a step of 8 sequences decoding took 39-92 ms
against 51-98. A single sequence decoding reads 1.5x the bytes a token and is slower: 12.6-14.9 ms
a step against 9.2-12.0 at 100 tokens of context.

Q8_0 keeps the weights within rounding: a Q4_1 or Q5_1 block is 32 weights of at most 32 levels,
and Q8_0 stores the same 32 weights in 255 levels. Over 1,000 tokens of English the converted
built-in model's perplexity was 21.90 against 21.95, and its logits agreed with the Q4_1 kernels'
at the top token 95.5% of the time, as the exact F16 dequantization did (96.4%: Q4_1's kernels
round the activations to 8 bits, so no other format reproduces them exactly). Q4_0, the other fast
layout, loses information (perplexity 27.6) and is never chosen.

The copy is written next to the converted embedding model (`ai.model_cache_dir`), under a name that
carries the source's sha256, into a temporary file renamed when whole: a second daemon converting at
the same time writes the same bytes, and a reader never sees half a file.
llama.cpp's quantizer is deterministic, so paired devices converting the same file load the same
weights (the KV state digest is the loaded file's)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
from pathlib import Path

import llama_cpp

from aicap.kv_state import model_digest

log = logging.getLogger("aicap.weights")

VERSION = 1  # bump when the conversion changes: older copies are not reused
# file types whose weights llama.cpp's CPU backend has no batched kernels for
SLOW_TYPES = {llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1: "Q4_1", llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1: "Q5_1"}


def file_type(path: Path) -> int | None:
    """The GGUF's `general.file_type` (a LLAMA_FTYPE), read by llama.cpp from its metadata (the
    vocabulary only: ~0.1 s); None if the file is no model llama.cpp can read or does not say."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        return None
    try:
        buf = ctypes.create_string_buffer(32)
        if llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf)) < 0:
            return None
        return int(buf.value)
    except ValueError:
        return None
    finally:
        llama_cpp.llama_model_free(model)


def copy_path(source: Path, cache_dir: Path) -> Path:
    """Where the Q8_0 copy of `source` is kept: named by its content's sha256 alone, so every copy of
    one file shares one conversion (read once per process and file version: ~0.2 s for the built-in
    model)."""
    return cache_dir / f"weights-{model_digest(source)[:16]}-q8_0-v{VERSION}.gguf"


def fast_weights(source: Path, cache_dir: Path) -> Path:
    """The file to load for `source`: its Q8_0 copy (made now if there is none) when its weights are
    of a slow type, else `source` itself. A conversion that fails (no disk space, a file llama.cpp
    cannot read) is logged and `source` is loaded as it is."""
    kind = SLOW_TYPES.get(file_type(source) or -1)
    if kind is None:
        return source
    out = copy_path(source, cache_dir)
    if out.is_file():
        return out
    try:
        _convert(source, out)
    except (OSError, RuntimeError) as exc:
        log.warning("could not convert %s (%s) to Q8_0: %s; loading it as it is", source, kind, exc)
        return source
    log.info("converted %s (%s) to Q8_0 at %s", source, kind, out)
    return out


def _convert(source: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        params.nthread = 1  # beside a serving daemon; the built-in model takes about a second
        if llama_cpp.llama_model_quantize(str(source).encode(), tmp.encode(), params) != 0:
            raise RuntimeError("llama.cpp's quantizer failed")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def main() -> int:
    """`python -m aicap.weights [CACHE_DIR]`: makes the built-in model's Q8_0 copy in the cache
    (scripts/setup.sh does, so that a daemon's first load need not) and prints the file to load."""
    from aicap.bert_gguf import default_cache_dir
    from aicap.engine.model_runner import default_model_path, quiet_llama_logs

    quiet_llama_logs()
    logging.basicConfig(level=logging.WARNING)
    cache_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_cache_dir()
    print(fast_weights(default_model_path(), cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
