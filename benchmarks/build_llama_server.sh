#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the sdist of the llama-cpp-python version in .venv (the same
# llama.cpp the engine runs on), with the CPU flags scripts/setup.sh uses (a native build picks AMX
# kernels that crash on these machines), into ~/.cache/datamgr/llama-server. About 7 minutes on 2 cores.
# benchmarks/aicap_bench.py then runs it beside the engine (system "llama-server").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT="${LLAMA_SERVER_OUT:-$HOME/.cache/datamgr}"
VERSION=$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "==> llama-cpp-python $VERSION: fetching its sdist from the package index"
"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
SRC=$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)
echo "==> building llama-server (no web UI, no curl)"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$OUT"
install -m 755 "$WORK/build/bin/llama-server" "$OUT/llama-server"
echo "==> $OUT/llama-server"
