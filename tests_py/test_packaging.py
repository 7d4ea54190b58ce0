"""`pip wheel .` builds one abi3 wheel (CPython >= 3.9) that installs and runs in a fresh venv.

The wheel is built with the test profile (MATURIN_PEP517_ARGS) so it reuses `make test`'s
build; the packaging path (pyproject, maturin backend, abi3 tag, python-source layout, stub
files) is the same as for a release wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import laminar as lm
q = lm.Engine().source("s", time="ts").window(lm.tumbling("1s")).group_by("k").agg(n=lm.count())
t = lm.run(q, {"ts": [0, 10, 1500], "k": [1, 1, 2]})
assert sorted(t.to_pylist(), key=lambda r: r["window_start"]) == [
    {"window_start": 0, "window_end": 1000, "k": 1, "n": 2},
    {"window_start": 1000, "window_end": 2000, "k": 2, "n": 1},
], t.to_pylist()
print("fresh-venv-ok", lm.__version__)
"""


def test_pip_wheel_is_abi3_and_installs_in_a_fresh_venv(tmp_path):
    bin_dir = str(Path(sys.executable).parent)  # the venv's maturin, for --no-build-isolation
    env = dict(os.environ, MATURIN_PEP517_ARGS="--profile ci",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheels"), "-q"],
        check=True, env=env, cwd=ROOT,
    )
    wheels = list((tmp_path / "wheels").glob("laminar-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert "-cp39-abi3-" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("laminar/__init__.py", "laminar/_laminar.pyi", "laminar/py.typed"):
        assert expected in names, names
    assert any(n.startswith("laminar/_laminar") and n.endswith(".so") for n in names), names

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    py = fresh / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True)
    out = subprocess.run([str(py), "-c", SCRIPT], check=True, capture_output=True, text=True,
                         cwd=tmp_path)
    assert "fresh-venv-ok" in out.stdout
