"""Hostile values on the way a Spark step really runs: ``smspark-submit`` builds a ``spark-submit`` command
line and runs it with ``/bin/sh``, then ``spark-submit`` runs the launcher, which runs the job's module.

``smspark_command`` is smspark's own construction (``smspark/cli.py::_construct_spark_submit_command`` in
aws/sagemaker-spark-container: every argument through ``shlex.quote``, joined with spaces, ``shell=True``).
A stand-in ``spark-submit`` on the PATH drops the cluster options and runs the app with this interpreter.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ndr_jobs.runtime import spark_launcher
from tests.conftest import ROOT

HOSTILE = [
    "$(touch {canary})",
    "`touch {canary}`",
    "x; touch {canary}",
    "x && touch {canary} #",
    "' ; touch {canary} ; '",
    '" ; touch {canary} ; "',
    "a b\tc\nd",
    "",
    "*",
    "--project-name=evil",
    "-h",
    "$HOME",
    "ü\u202e",
]


def smspark_command(app: str, app_arguments: list[str]) -> str:
    """smspark-submit's command line for ``app`` and its arguments (no spark options: the steps pass none)."""
    cmd = ["spark-submit", "--master", "yarn", "--deploy-mode", "client", app, *app_arguments]
    return " ".join(shlex.quote(c) for c in cmd)


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "spark-submit"
    fake.write_text(f'#!/bin/sh\nshift 4\nexec {shlex.quote(sys.executable)} "$@"\n')  # drop --master/--deploy-mode
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("template", HOSTILE)
def test_the_shell_stage_hands_every_value_over_unchanged(tmp_path: Path, shell_env: dict[str, str],
                                                          template: str):
    canary = tmp_path / "canary"
    value = template.format(canary=canary)
    echo = tmp_path / "echo.py"
    echo.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    args = ["ndr_jobs.scripts.run_delta_builder", "--mini-batch-id", value, "--raw-batch-folder", value]
    proc = subprocess.run(["/bin/sh", "-c", smspark_command(str(echo), args)], capture_output=True, text=True,
                          env=shell_env, cwd=tmp_path, check=True)
    assert json.loads(proc.stdout) == args
    assert not canary.exists()


@pytest.mark.parametrize(
    ("template", "refusal"),
    [
        ("$(touch {canary})", "argument --mini-batch-id: {value!r} is not an identifier"),
        ("x; touch {canary}", "argument --mini-batch-id: {value!r} is not an identifier"),
        ("--project-name=evil", "argument --mini-batch-id: expected one argument"),  # never taken as a value
    ],
)
def test_the_launcher_passes_hostile_values_to_the_job_which_refuses_them(tmp_path: Path, shell_env: dict[str, str],
                                                                          template: str, refusal: str):
    canary = tmp_path / "canary"
    value = template.format(canary=canary)
    args = ["ndr_jobs.scripts.run_delta_builder", "--project-name", "ndr-prod", "--feature-spec-version", "v1",
            "--mini-batch-id", value, "--batch-start-ts-iso", "2026-10-01T12:00:00Z",
            "--batch-end-ts-iso", "2026-10-01T12:15:00Z"]
    proc = subprocess.run(["/bin/sh", "-c", smspark_command(spark_launcher.__file__, args)], capture_output=True,
                          text=True, env={**shell_env, "NDR_SPARK_MASTER": "local[1]"}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert refusal.format(value=value) in proc.stderr
    assert not canary.exists()
