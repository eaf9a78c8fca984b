"""The images' build contexts: byte for byte reproducible, a new tag for any change to a shipped file, every file a
Dockerfile copies present, the wheel installable; the CLI without Docker. No Docker daemon needed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler import images
from ndr_compiler.cli import ENVIRONMENT_ERROR, main
from tests.conftest import image_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return image_tree(tmp_path / "a")


def test_a_context_is_byte_identical_across_builds_and_fresh_copies(tree: Path, tmp_path: Path):
    first = {kind: images.context(image, tree) for kind, image in images.IMAGES.items()}
    assert first == {kind: images.context(image, tree) for kind, image in images.IMAGES.items()}
    copy = image_tree(tmp_path / "b")
    # another checkout: other mtimes and modes, compiled bytecode lying around
    for path in copy.rglob("*"):
        if path.is_file():
            os.utime(path, (1_000_000_000, 1_000_000_000))
    (copy / "ndr_jobs" / "__pycache__").mkdir(exist_ok=True)
    (copy / "ndr_jobs" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (copy / "docker" / "warm_numba.py").chmod(0o755)
    assert first == {kind: images.context(image, copy) for kind, image in images.IMAGES.items()}
    assert first["spark"] != first["python"]
    assert all(re.fullmatch(r"ctx-[0-9a-f]{16}", t) for t in images.tags(tree).values())


@pytest.mark.parametrize(("rel", "changed"), [
    ("ndr_jobs/parsing/panos.py", {"spark", "python"}),
    ("docker/warm_numba.py", {"spark", "python"}),
    ("docker/spark/Dockerfile", {"spark"}),
    ("requirements/spark-image.txt", {"spark"}),
    ("ndr_jobs/runtime/spark_launcher.py", {"spark", "python"}),  # the launcher is in the wheel too
    ("docker/python/Dockerfile", {"python"}),
    ("requirements/python-image.txt", {"python"}),
])
def test_a_change_to_a_shipped_file_is_another_tag(tree: Path, rel: str, changed: set[str]):
    before = images.tags(tree)
    with (tree / rel).open("a") as f:
        f.write("\n# changed\n")
    after = images.tags(tree)
    assert {kind for kind in before if before[kind] != after[kind]} == changed


def test_files_that_do_not_ship_leave_the_tags_alone(tree: Path):
    before = images.tags(tree)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n# a comment: the wheel's metadata is the same\n")
    (tree / "README.md").write_text("not shipped")
    (tree / "ndr_jobs" / "notes.txt").write_text("not a module")
    (tree / "docker" / "NOTES.md").write_text("not copied")
    assert images.tags(tree) == before
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.1.1"'))
    after = images.tags(tree)
    assert after["spark"] != before["spark"] and after["python"] != before["python"]


def test_context_entries_are_sorted_with_fixed_owner_time_and_mode(tree: Path):
    data = images.context(images.IMAGES["spark"], tree)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert {"docker/spark/Dockerfile", "requirements/spark-image.txt", "ndr_jobs/runtime/spark_launcher.py",
            "docker/warm_numba.py", "dist/ndr-0.1.0-py3-none-any.whl"} == set(names)


@pytest.mark.parametrize("kind", sorted(images.IMAGES))
def test_every_file_a_dockerfile_copies_is_in_its_context(tree: Path, kind: str):
    image = images.IMAGES[kind]
    names = set(images.context_files(image, tree))
    dockerfile = (tree / image.dockerfile).read_text()
    copies = re.findall(r"^COPY\s+(\S+)\s+(\S+)", dockerfile, re.M)
    assert copies
    for src, _ in copies:
        assert any(n == src or n.startswith(src.rstrip("/") + "/") for n in names), src
    assert re.search(r"pip install --require-hashes --no-deps -r .*requirements", dockerfile)
    assert re.search(r"pip install --no-deps /tmp/ndr/dist/\*\.whl", dockerfile)
    assert "NUMBA_CPU_NAME=generic" in dockerfile and "warm_numba.py --check-cached" in dockerfile
    if kind == "spark":  # where the pipelines' Spark steps find the launcher
        assert ("ndr_jobs/runtime/spark_launcher.py", "/opt/ndr/spark_launcher.py") in copies
        assert f"ARG BASE_IMAGE={images.spark_base('us-east-1')}\n" in dockerfile
    else:
        assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+\.\d+-slim-\w+$", dockerfile, re.M)  # an exact tag


def test_the_wheel_installs_and_runs_the_launcher(tree: Path, tmp_path: Path):
    name, data = images.wheel(tree)
    assert data == images.wheel(tree)[1]
    whl = tmp_path / name
    whl.write_bytes(data)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(whl)], check=True)
    assert (target / "ndr_jobs" / "runtime" / "spark_launcher.py").read_bytes() == \
        (tree / "ndr_jobs" / "runtime" / "spark_launcher.py").read_bytes()
    assert not (target / "ndr_compiler").exists()  # only the job library ships
    done = subprocess.run([sys.executable, "-c", "import ndr_jobs.runtime.spark_launcher as m; print(m.__file__)"],
                          env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().startswith(str(target))
    metadata = (target / "ndr-0.1.0.dist-info" / "METADATA").read_text()
    assert "Name: ndr\n" in metadata and "Requires-Dist: numba>=0.60" in metadata


def test_the_spark_base_is_the_image_the_sagemaker_sdk_names():
    sagemaker = pytest.importorskip("sagemaker.core.image_uris")
    config = json.loads((Path(sagemaker.__file__).parent / "image_uri_config" / "spark.json").read_text())
    version = config["processing"]["versions"][images.SPARK_VERSION]
    assert version["registries"] == images.SPARK_REGISTRIES
    assert images.SPARK_PY in version["py_versions"] and version["repository"] == images.SPARK_REPOSITORY
    assert images.spark_base("eu-west-1") == sagemaker.retrieve(
        "spark", region="eu-west-1", version=images.SPARK_VERSION, py_version=images.SPARK_PY,
        instance_type="ml.m5.xlarge")


@pytest.mark.parametrize("value", [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/ndr-spark-processing:ctx",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/ndr@sha256:" + "a" * 64,
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/ndr",
])
def test_ecr_uris_parse_and_others_do_not(value: str):
    uri = images.parse_ecr_uri(value)
    assert uri is not None and value.startswith(uri.repository_uri)
    assert images.parse_ecr_uri("docker.io/library/python:3.12") is None
    assert images.parse_ecr_uri(value + ";rm -rf /") is None


@pytest.mark.parametrize("args", [["images", "build"], ["images", "build", "--env", "dev"],
                                  ["images", "push", "--env", "specs/environments/dev.yaml"]])
def test_without_docker_the_images_commands_say_so_in_one_line(args: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker on it
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ENVIRONMENT_ERROR, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: docker is not installed or not on PATH")

