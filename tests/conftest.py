from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red main must be a real regression, reproducible); explore with
# `pytest --hypothesis-profile=explore`, which draws new ones
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")

# Spark's JVM (in-process sessions, the warm step worker, subprocess jobs: all inherit the environment) compiles with
# C1 only and collects with one thread: on test-sized data the C2 compiler and parallel GC threads cost more CPU than
# they save (test_fg_c: 117 s of CPU against 72 s). C1 alone reserves 48 MB for compiled code, not 240: Spark's
# generated classes fill that within a few jobs and the JVM then stops compiling ("CodeCache is full"), so the size
# is set back. Set NDR_SPARK_JAVA_OPTIONS to override.
os.environ.setdefault("NDR_SPARK_JAVA_OPTIONS",
                      "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m")
# the lint's result cache keys on files, not on a test's monkeypatches: off, except in tests/test_lint_cache.py
os.environ["NDR_NO_CACHE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
GENERATED = ROOT / "generated"
SHARED = ROOT.parent / "shared"
#: the project's own copy of the inbound events (tests/test_contracts.py checks it against ../shared when there)
CONTRACTS = SPECS / "contracts" / "events"
REFERENCE_STATES = SPECS / "contracts" / "reference_states.json"


#: each test file's layer (markers registered in pyproject.toml); a file not listed is a `compiler` test, so a new
#: file runs in `make test-fast` until it is listed here. `make test-fast` runs `-m compiler`.
LAYERS = {
    # the job library: local Spark, Arrow, numba, scikit-learn, DuckDB
    "jobs": {
        "test_backfill_range", "test_bench_data", "test_delta_builder", "test_entrypoints", "test_eval", "test_fg_a",
        "test_fg_b",
        "test_fg_c", "test_forest", "test_hash_agg", "test_if_training", "test_image_warmup", "test_inference",
        "test_fusion", "test_inventory", "test_launcher", "test_pair_counts", "test_panos", "test_prediction_join",
        "test_raw_lines",
        "test_storage", "test_synth", "test_windows_extractor",
    },
    # the generated state machines and pipelines on the local emulator (moto), and deploy against moto
    "local": {
        "test_contracts", "test_demo", "test_deploy", "test_drills", "test_local_run", "test_pipeline_runner",
        "test_scenarios", "test_sfn_runtime",
    },
    # fault injection: every effect of every state machine failed in turn, on the emulator
    "faults": {"test_faults"},
    # property tests of the compiler: hundreds of mutated spec sets compiled (half the compiler layer's time)
    "fuzz": {"test_property"},
}
LAYER_OF = {stem: layer for layer, stems in LAYERS.items() for stem in stems}
#: the longest xdist groups, longest first (seconds of the group on one worker in `make test`, rounded; from the
#: junit of a whole run, docs/benchmarks-tests.md): they start first so that no long group starts last and runs
#: alone at the end; `--no-loadscope-reorder` keeps this order
LONGEST = {
    "test_drills": 130, "test_eval": 120, "test_deploy": 85, "test_backfill_range": 80, "test_scenarios": 65,
    "test_launcher": 60, "test_faults-sfn_ndr_backfill_reprocessing": 48, "test_fg_c": 45, "test_fg_b": 40,
    "test_faults-sfn_ndr_15m_features_inference": 40, "test_delta_builder": 34, "test_local_run": 34,
    "test_fusion": 30, "test_storage": 30, "test_if_training": 26, "test_faults-sfn_ndr_prediction_publication": 23,
    "test_faults-sfn_ndr_monthly_fg_b_baselines": 22, "test_bench_data": 50,
}


def xdist_group(nodeid: str) -> str:
    """A test's group for `--dist loadgroup`, from its node id: its file, except test_faults, whose cases are grouped
    by the state machine they fault (named in each case's id; each group sets up one platform and each machine's
    drivers once, and the file's ~370 cases spread over the workers instead of being the suite's critical path)."""
    path, _, name = nodeid.partition("::")
    stem = Path(path).stem
    if stem == "test_faults":
        machine = re.search(r"sfn_[a-z0-9_]+", name)
        return f"{stem}-{machine[0] if machine else 'sfn_ndr_training_orchestrator'}"  # the two other tests: least work
    return stem


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` by :func:`xdist_group`: xdist 3.8 marks a group by renaming the node id (``id@group``),
    which pytest 9 ignores (a node id is no longer a settable attribute), so its own loadgroup ran every test on its
    own, each worker setting up module fixtures again; this scheduler keeps each group on one worker, groups in
    the workers' collection order (``LONGEST`` first)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)  # type: ignore[arg-type]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(LAYER_OF.get(item.path.stem, "compiler"))
    items.sort(key=lambda item: -LONGEST.get(xdist_group(item.nodeid), 0))  # stable: the rest in collection order


def committed(partition: Path | str) -> dict[str, bytes]:
    """A partition's committed data files (read through its manifest): name -> bytes."""
    from ndr_jobs.datasets import storage

    files = storage.committed_files(str(partition))
    assert files is not None, f"{partition} has no manifest"
    return {f.rsplit("/", 1)[1]: storage.read_bytes(f) for f in files}


def committed_rows(partition: Path | str) -> list[dict]:
    """A partition's rows, read through its manifest (no partition columns), as dicts."""
    from ndr_jobs.datasets import layout

    table = layout.partition_table(str(partition))
    assert table is not None, f"{partition} has no manifest"
    return table.to_pylist()


@pytest.fixture(scope="session")
def spark():  # noqa: ANN201 - a SparkSession (spark_session() reuses one per process)
    from ndr_jobs.runtime.spark import spark_session

    return spark_session()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding copies of specs/ and generated/ (the current directory for the test)."""
    shutil.copytree(SPECS, tmp_path / "specs")
    shutil.copytree(GENERATED, tmp_path / "generated")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    """A writable copy of specs/ for tests that break one thing."""
    dst = tmp_path / "specs"
    shutil.copytree(SPECS, dst)
    return dst


PIPELINE_SCHEMA = SHARED / "vendor" / "sagemaker-pipeline-definition.schema.json"


OWN_PIPELINE_SCHEMA = ROOT / "tests" / "data" / "pipeline-definition.schema.json"


def aws_pipeline_schema() -> dict:
    """The AWS pipeline-definition schema (read from shared/vendor, never copied), with one correction; without
    it beside the checkout, the project's own description of the shape it renders (``tests/data``).

    ``RetryPolicy.ExceptionType`` is a string in the vendor schema, but the service takes (and documents, and
    the SDK writes) a list of exception types: the correction keeps the enum and accepts the list.
    """
    import copy
    import json

    if not PIPELINE_SCHEMA.exists():
        return json.loads(OWN_PIPELINE_SCHEMA.read_text())
    s = copy.deepcopy(json.loads(PIPELINE_SCHEMA.read_text()))
    exception_type = s["definitions"]["RetryPolicy"]["properties"]["ExceptionType"]
    s["definitions"]["RetryPolicy"]["properties"]["ExceptionType"] = {"type": "array", "items": exception_type}
    return s


@pytest.fixture(scope="session")
def moto_endpoint():  # noqa: ANN201 - yields the endpoint URL
    """moto in server mode on a free port, one per process (stopping one waits out its 0.5 s poll)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - yields the endpoint URL
    """The process's moto server, reset (its backends are process-global), with the AWS environment of boto3
    pointed at it: AWS behaviour over real HTTP, conditional writes included."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


#: what the image contexts ship, copied by image_tree (ndr_compiler.images: Dockerfiles, requirements, wheel sources)
IMAGE_FILES = ("pyproject.toml", "docker", "ndr_jobs", "requirements")


def image_tree(dest: Path) -> Path:
    """A fresh copy of what the image contexts ship (no __pycache__). The image requirements are written by the
    runtime work of issue 22; until this branch has them, the copy gets small placeholders so that contexts build."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in IMAGE_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / rel)
    for name in ("spark-image.txt", "python-image.txt"):
        if not (dest / "requirements" / name).exists():
            (dest / "requirements" / name).write_text(f"# placeholder for tests: {name} is not in this tree yet\n")
    return dest


def put_images(values: dict[str, str], kinds: dict[str, str], tree: Path) -> dict[str, str]:
    """Each ECR image URI of ``values`` put into the (moto) ECR it names, a ``ctx`` tag as the tree's context tag of
    the image ``kinds`` gives; returns value name -> pushed digest."""
    import hashlib
    import json

    import boto3

    from ndr_compiler import images

    tags = images.tags(tree)
    digests = {}
    for name, value in sorted(values.items()):
        uri = images.parse_ecr_uri(value)
        if uri is None:
            continue
        ecr = boto3.client("ecr", region_name=uri.region)
        if uri.repo not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}:
            ecr.create_repository(repositoryName=uri.repo)
        layer = "sha256:" + hashlib.sha256(f"{name}:{value}".encode()).hexdigest()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                               "digest": layer},
                    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                                "digest": layer}]}
        tag = tags[kinds[name]] if uri.tag == images.CTX else (uri.tag or "latest")
        image = ecr.put_image(repositoryName=uri.repo, imageManifest=json.dumps(manifest), imageTag=tag)["image"]
        digests[name] = image["imageId"]["imageDigest"]
    return digests


def backfill_report(platform: Any, parameters: dict[str, str], failing: Collection[str] = ()) -> bool:
    """Write, as ``run_backfill_windows`` does, the report of the chunk a backfill pipeline start names: the
    windows its mask selects succeed in time order until the first in ``failing``, which fails, and the rest are
    not run. True when a window failed (the job, and so the pipeline, fails)."""
    from ndr_jobs.interface import contract

    entries, failed = [], False
    for start in contract.masked_window_starts(parameters["FirstWindow"], parameters["WindowMask"]):
        status = "not_run" if failed else "failed" if start in failing else "succeeded"
        failed = failed or status == "failed"
        entries.append({"batch_start_ts": start, "status": status})
    platform.put_json(parameters["ReportUri"], {"format": "ndr-backfill-windows/1", "windows": entries})
    return failed
