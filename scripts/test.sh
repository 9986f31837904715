#!/usr/bin/env bash
# All checks, as CI runs them: setup, PostgreSQL server binaries, generated code, ruff, mypy, pytest.
# Arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x). Exits non-zero if any check fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

section() { printf '\n=== %s ===\n' "$*"; }

section "setup"
bash scripts/setup.sh

section "PostgreSQL server binaries"
pg_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1; }
if [ -z "$(pg_initdb)" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: PostgreSQL server binaries (initdb under /usr/lib/postgresql/*/bin) are missing;" >&2
    echo "         install them as root: apt-get install postgresql" >&2
    exit 1
  fi
  echo "installing postgresql with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  [ -n "$(pg_initdb)" ] || { echo "test.sh: postgresql installed but no initdb found" >&2; exit 1; }
fi
echo "found $(pg_initdb)"

# The checks below all run; each failure is reported and makes the script fail at the end.
failed=()
section "generated protobuf code"
bash scripts/gen_protos.sh --check || failed+=("gen_protos --check")

section "ruff"
.venv/bin/ruff check . || failed+=("ruff check")

section "mypy"
.venv/bin/mypy datamgr aicap udmf || failed+=("mypy")

section "pytest"
rc=0
.venv/bin/pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
[ "$rc" -eq 0 ] || failed+=("pytest (exit $rc)")

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\ntest.sh: FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\ntest.sh: all checks passed\n'
