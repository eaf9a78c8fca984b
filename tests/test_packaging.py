"""The lock files cover pyproject.toml's dependencies at one version each, and a command whose extra is missing
says which extra to install."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    return {normalize(n): v for n, v in PIN.findall((ROOT / "requirements" / lock).read_text())}


def requirement_names(reqs: list[str]) -> set[str]:
    return {normalize(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in reqs} - {"ndr"}


def test_every_dependency_is_locked_and_lint_pins_agree_with_dev():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    dev, lint = pins("dev.txt"), pins("lint.txt")
    everything = requirement_names(project["dependencies"]).union(*map(requirement_names, extras.values()))
    assert everything - dev.keys() == set(), "run `make lock`"
    assert requirement_names(project["dependencies"] + extras["lint"]) <= lint.keys(), "run `make lock`"
    assert {n: v for n, v in lint.items() if dev.get(n) != v} == {}, "lint.txt must pin what dev.txt pins"
    assert "sagemaker-mlops" not in lint and "pyspark" not in lint


@pytest.mark.parametrize(("args", "extra"), [(["run-pipeline", "if_training"], "local"), (["demo"], "local")])
def test_a_missing_extra_is_named(args: list[str], extra: str):
    hide = "import sys; sys.modules.update(dict.fromkeys(['moto', 'botocore', 'boto3', 'pyspark']))"
    out = subprocess.run([sys.executable, "-c", f"{hide}; from ndr_compiler.cli import main; main()", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"needs the '{extra}' extra: pip install 'ndr[{extra}]'" in out.stderr
