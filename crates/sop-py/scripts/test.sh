#!/usr/bin/env bash
# Builds the `sop` Python package into a venv (target/py-venv) and runs its pytest suite.
# Idempotent: the venv, its tools and cargo's build cache are reused on re-runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/py-venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import maturin, pytest" 2>/dev/null \
   && ! { [ -x "$venv/bin/maturin" ] && "$venv/bin/python" -c "import pytest" 2>/dev/null; }; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check maturin pytest
fi

# mypy checks the type stubs (tests/test_typing.py); installed once, its check takes ~2 s.
if ! "$venv/bin/python" -c "import mypy" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check mypy
fi

cd "$here"
# Rebuild only when a Rust input changed since the last successful build (maturin's develop
# re-links every time otherwise). The Python sources are installed editable: no rebuild needed.
stamp="$venv/.sop-py-build-stamp"
newer=""
if [ -f "$stamp" ] && "$venv/bin/python" -c "import sop._sop" 2>/dev/null; then
    newer="$(find "$here/src" "$here/Cargo.toml" "$here/pyproject.toml" "$root/crates/sop/src" \
        "$root/crates/sop/Cargo.toml" "$root/crates/sop-redis/src" \
        "$root/crates/sop-redis/Cargo.toml" "$root/Cargo.toml" "$root/Cargo.lock" -newer "$stamp" -print -quit)"
else
    newer="missing"
fi
if [ -n "$newer" ]; then
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release --quiet
    touch "$stamp"
fi
exec "$venv/bin/python" -m pytest -q "$@" tests
