"""The type stubs: tests/typing_example.py runs, and passes ``mypy --strict`` when mypy is installed."""
import os
import subprocess
import sys

import pytest

import sop

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "typing_example.py")


def test_typing_example_runs(tmp_path):
    sys.path.insert(0, HERE)
    try:
        import typing_example
    finally:
        sys.path.remove(HERE)
    assert len(typing_example.sop4py_style(str(tmp_path / "a"))) == 4
    assert typing_example.pythonic_style(str(tmp_path / "b")) == 2
    db = typing_example.clustered_database(str(tmp_path / "c"), "127.0.0.1:6379")
    assert db.options.type == sop.DatabaseType.Clustered and sop.Redis.connection_string is None


def test_stubs_pass_mypy_strict():
    import mypy  # noqa: F401  (installed by scripts/test.sh; a missing mypy is a failure, not a skip)
    cache = os.path.join(HERE, "..", "..", "..", "target", "mypy-cache")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache, EXAMPLE],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
