#!/usr/bin/env bash
# W9: runs bench/w9.py unchanged under SOP-rs's `sop` package (target/py-venv, the venv of
# scripts/test.sh, built with `maturin develop --release`) and under sop4py 2.3.3 from PyPI
# (target/py-venv-sop4py), then prints the ratio table ours/sop4py.
#   usage: bench/run_w9.sh [N]        (N defaults to 100000; env W9_REPEAT = rounds, default 3;
#                                      W9_TMP = parent of the temp folders)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
n="${1:-${N:-100000}}"
py="${PYTHON:-python3}"
ours="$root/target/py-venv"
theirs="$root/target/py-venv-sop4py"

# --- ours: the same venv and build stamp as scripts/test.sh -------------------------------
if [ ! -x "$ours/bin/python" ]; then
    "$py" -m venv "$ours"
fi
if ! [ -x "$ours/bin/maturin" ] && ! "$ours/bin/python" -c "import maturin" 2>/dev/null; then
    "$ours/bin/pip" install --quiet --disable-pip-version-check maturin pytest
fi
stamp="$ours/.sop-py-build-stamp"
newer=""
if [ -f "$stamp" ] && "$ours/bin/python" -c "import sop._sop" 2>/dev/null; then
    newer="$(find "$here/src" "$here/Cargo.toml" "$here/pyproject.toml" "$root/crates/sop/src" \
        "$root/crates/sop/Cargo.toml" "$root/crates/sop-redis/src" \
        "$root/crates/sop-redis/Cargo.toml" "$root/Cargo.toml" "$root/Cargo.lock" -newer "$stamp" -print -quit)"
else
    newer="missing"
fi
if [ -n "$newer" ]; then
    (cd "$here" && VIRTUAL_ENV="$ours" PATH="$ours/bin:$PATH" "$ours/bin/maturin" develop --release --quiet)
    touch "$stamp"
fi

# --- sop4py 2.3.3 from PyPI ---------------------------------------------------------------
if [ ! -x "$theirs/bin/python" ]; then
    "$py" -m venv "$theirs"
fi
if ! "$theirs/bin/python" -c "import sop, sys; sys.exit(sop.__version__ != '2.3.3' or hasattr(sop, '_sop'))" 2>/dev/null; then
    "$theirs/bin/pip" install --quiet --disable-pip-version-check "sop4py==2.3.3"
fi

# --- run ------------------------------------------------------------------------------------
out="$(mktemp -d "${TMPDIR:-/tmp}/w9-results.XXXXXX")"
trap 'rm -rf "$out"' EXIT
tmp_args=()
if [ -n "${W9_TMP:-}" ]; then mkdir -p "$W9_TMP"; tmp_args=(--tmp "$W9_TMP"); fi
# Run from an empty folder so `import sop` resolves to each venv's package, never a source tree.
cd "$out"
# W9_REPEAT rounds (default 3), alternating the two implementations so that machine noise hits
# both alike; the table keeps each cell's best run.
for _ in $(seq "${W9_REPEAT:-3}"); do
    "$ours/bin/python" "$here/bench/w9.py" --n "$n" --out "$out/ours.jsonl" "${tmp_args[@]}"
    "$theirs/bin/python" "$here/bench/w9.py" --n "$n" --out "$out/sop4py.jsonl" "${tmp_args[@]}"
done
"$ours/bin/python" "$here/bench/w9.py" --report "$out/ours.jsonl" "$out/sop4py.jsonl"
