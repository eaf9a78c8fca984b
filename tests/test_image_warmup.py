"""The images' numba warm-up (docker/warm_numba.py), as the Dockerfiles run it: the first run compiles every numba
function of the job library into the cache (a function it does not reach fails it), a second process loads them
all from the cache without compiling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_warm_up_compiles_every_numba_function_and_a_new_process_loads_them(tmp_path: Path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "NUMBA_CPU_NAME": "generic",
           "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "docker" / "warm_numba.py")
    first = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert " 0 loaded from the cache" in first.stdout and " 0 compiled" not in first.stdout, first.stdout
    second = subprocess.run([sys.executable, script, "--check-cached"], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "(0 compiled," in second.stdout, second.stdout
    assert any((tmp_path / "numba").rglob("*.nbi"))  # the index files numba reads at start-up
