#!/usr/bin/env bash
# Regenerates the Python code for protos/ into the packages (datamgr/v1, ...).
# With --check, fails if the committed generated code is stale.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
out="$root"
if [ "${1:-}" = "--check" ]; then out="$(mktemp -d)"; fi
protos=$(cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd protos && "$py" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" $protos)
for d in $(cd protos && find . -mindepth 2 -type d | sed 's|^\./||'); do
  touch "$out/$d/__init__.py"
done
if [ "${1:-}" = "--check" ]; then
  for f in $(cd "$out" && find . -name '*_pb2*.py*' | sed 's|^\./||'); do
    if ! cmp -s "$out/$f" "$root/$f"; then echo "stale generated code: $f (run scripts/gen_protos.sh)" >&2; exit 1; fi
  done
  echo "generated code is up to date"
fi
