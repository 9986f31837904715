"""Fast weights (aicap.weights): a Q4_1 model is loaded as its Q8_0 copy, made once in the cache
directory and found there after; other files load as they are; a conversion that fails loads the
source; and the copy is the same model within rounding (its perplexity and top tokens)."""

from __future__ import annotations

import logging
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from aicap import weights
from aicap.engine.model_runner import default_model_path, quiet_llama_logs

pytestmark = pytest.mark.model

TEXT = (
    "The distributed data service keeps each app's tables on the device and syncs them with the "
    "owner's other devices when they are paired. An app that provides a table decides which other "
    "apps may read it, and every read is checked against the permissions the user granted. When a "
    "permission is revoked, the streams that depended on it end at once, and the data stays where "
    "it was. Drag and drop moves a typed record from one app to another, and only the target may "
    "read it, once. The language model answers every app through the same daemon, which schedules "
    "their requests together so that none of them waits for long."
)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weights.fast_weights(default_model_path(), tmp_path_factory.mktemp("cache"))


def test_a_q4_1_model_loads_as_its_q8_0_copy_made_once(copy: Path) -> None:
    source = default_model_path()
    assert weights.file_type(source) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1
    assert copy == weights.copy_path(source, copy.parent)
    assert copy.name.endswith(f"-q8_0-v{weights.VERSION}.gguf")
    assert weights.file_type(copy) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    mtime = copy.stat().st_mtime_ns
    assert weights.fast_weights(source, copy.parent) == copy  # found, not made again
    assert copy.stat().st_mtime_ns == mtime
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no temporary file left


def test_fast_files_and_non_models_load_as_they_are(copy: Path, tmp_path: Path) -> None:
    assert weights.fast_weights(copy, tmp_path) == copy  # Q8_0 already
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    assert weights.file_type(junk) is None
    assert weights.fast_weights(junk, tmp_path) == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.gguf"]  # nothing written


def test_a_conversion_that_fails_loads_the_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="aicap.weights"):
        assert weights.fast_weights(default_model_path(), blocked) == default_model_path()
    assert "could not convert" in caplog.text


def _logits(path: Path, tokens: list[int]) -> np.ndarray:
    """Every position's logits of `tokens` in one batch."""
    quiet_llama_logs()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, t in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(len(tokens), n_vocab)).copy()
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def _perplexity(logits: np.ndarray, tokens: list[int]) -> float:
    z = logits[:-1] - logits[:-1].max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean()))


def test_the_copy_is_the_same_model_within_rounding(copy: Path) -> None:
    from aicap.engine.tokenizer import Tokenizer

    tok = Tokenizer(default_model_path())
    try:
        tokens = tok.tokenize(TEXT)
    finally:
        tok.close()
    assert len(tokens) > 100
    shipped, converted = _logits(default_model_path(), tokens), _logits(copy, tokens)
    ppl_shipped, ppl_converted = _perplexity(shipped, tokens), _perplexity(converted, tokens)
    assert ppl_converted < 1.03 * ppl_shipped, (ppl_converted, ppl_shipped)
    agree = float(np.mean(shipped.argmax(axis=1) == converted.argmax(axis=1)))
    assert agree > 0.85, agree
    assert np.corrcoef(shipped.ravel(), converted.ravel())[0, 1] > 0.99
