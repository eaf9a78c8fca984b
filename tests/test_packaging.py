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


IMAGE_LOCKS = ("spark-image.txt", "python-image.txt")


@pytest.mark.parametrize("lock", IMAGE_LOCKS)
def test_an_image_lock_is_the_job_library_at_dev_pins_without_spark(lock: str):
    """What the images install is what CI's venv has: every pin is dev.txt's, and no pyspark or py4j (the Spark
    image's Spark brings its own; the Python image runs no Spark)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    image, dev = pins(lock), pins("dev.txt")
    assert {n: v for n, v in image.items() if dev.get(n) != v} == {}, f"{lock} must pin what dev.txt pins"
    assert not image.keys() & {"pyspark", "py4j"}
    needed = requirement_names(project["dependencies"] + project["optional-dependencies"]["jobs"]) - {"pyspark"}
    assert needed - image.keys() == set(), "run `make lock`"
    assert "sagemaker-mlops" not in image and "pytest" not in image


def test_pyspark_is_the_spark_of_the_processing_image_the_sdk_names_for_our_region():
    import pyspark
    import yaml
    from sagemaker.core import image_uris

    from ndr_jobs.interface import image

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"pyspark=={image.SPARK_VERSION}" in project["optional-dependencies"]["jobs"]
    assert pins("dev.txt")["pyspark"] == image.SPARK_VERSION
    assert pyspark.__version__ == image.SPARK_VERSION, "this venv is not the locked one: `make` reinstalls it"
    assert image.SPARK_VERSION.rsplit(".", 1)[0] == image.SPARK_FRAMEWORK_VERSION
    assert "py" + image.SPARK_IMAGE_PYTHON.replace(".", "") == image.SPARK_PY_VERSION
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^SPARK_IMAGE_PYTHON := {re.escape(image.SPARK_IMAGE_PYTHON)}$", makefile, re.M)

    config = image_uris.config_for_framework("spark")["processing"]
    newest = max(config["versions"], key=lambda v: tuple(map(int, v.split("."))))
    assert newest == image.SPARK_FRAMEWORK_VERSION, f"the SDK names a newer Spark image ({newest}): move to it"
    assert image.SPARK_PY_VERSION in config["versions"][newest]["py_versions"]
    regions = {yaml.safe_load(p.read_text())["spec"]["region"]
               for p in (ROOT / "specs" / "environments").glob("*.yaml")}  # fmt: skip
    assert regions
    for region in sorted(regions):
        uri = image_uris.retrieve("spark", region, version=image.SPARK_FRAMEWORK_VERSION,
                                  py_version=image.SPARK_PY_VERSION, instance_type="ml.m5.2xlarge")
        assert uri.endswith(f"/{image.SPARK_IMAGE_REPOSITORY}:{image.SPARK_FRAMEWORK_VERSION}-cpu-"
                            f"{image.SPARK_PY_VERSION}"), uri


def test_the_python_image_runs_the_python_its_lock_was_resolved_for():
    makefile = (ROOT / "Makefile").read_text()
    locked = re.search(r"^PYTHON_IMAGE_PYTHON := (\d+\.\d+)$", makefile, re.M)
    dockerfile = (ROOT / "docker/python/Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=python:(\d+\.\d+)\.\d+-slim", dockerfile, re.M)
    assert locked and base and base.group(1) == locked.group(1)
