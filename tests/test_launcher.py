"""Hostile values on the way a Spark step really runs: ``smspark-submit`` builds a ``spark-submit`` command
line and runs it with ``/bin/sh``, then ``spark-submit`` runs the launcher, which runs the job's module.

``smspark_command`` is smspark's own construction (``smspark/cli.py::_construct_spark_submit_command`` in
aws/sagemaker-spark-container: every argument through ``shlex.quote``, joined with spaces, ``shell=True``).
A stand-in ``spark-submit`` on the PATH drops the cluster options and runs the app with this interpreter; the last
test runs the real ``spark-submit`` of the installed PySpark (the Spark of the image, docs/runtime.md) instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ndr_jobs.runtime import spark_launcher
from tests.conftest import GENERATED, ROOT
from tests.test_delta_builder import EXPECTED_DELTA, PARTITION, read, write_batch

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


def smspark_command(app: str, app_arguments: list[str], master: str = "yarn") -> str:
    """smspark-submit's command line for ``app`` and its arguments (no spark options: the steps pass none)."""
    cmd = ["spark-submit", "--master", master, "--deploy-mode", "client", app, *app_arguments]
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


#: hostile values the delta builder's parser refuses, and how it says so
REFUSED = [
    ("$(touch {canary})", "argument --mini-batch-id: {value!r} is not an identifier"),
    ("x; touch {canary}", "argument --mini-batch-id: {value!r} is not an identifier"),
    ("--project-name=evil", "argument --mini-batch-id: expected one argument"),  # never taken as a value
]


def delta_arguments(value: str) -> list[str]:
    """The delta builder's command line with ``value`` as the mini-batch id."""
    return ["--project-name", "ndr-prod", "--feature-spec-version", "v1", "--mini-batch-id", value,
            "--batch-start-ts-iso", "2026-10-01T12:00:00Z", "--batch-end-ts-iso", "2026-10-01T12:15:00Z"]


@pytest.mark.parametrize(("template", "refusal"), REFUSED)
def test_the_job_refuses_hostile_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str,
                                        refusal: str):
    """The job's own parser, in-process, on each value as the shell hands it over (the test above)."""
    from ndr_jobs.scripts import run_delta_builder

    value = template.format(canary=tmp_path / "canary")
    with pytest.raises(SystemExit) as exc:
        run_delta_builder.parse_runtime(delta_arguments(value))
    assert exc.value.code == 2
    assert refusal.format(value=value) in capsys.readouterr().err


def test_the_launcher_passes_a_hostile_value_to_the_job_which_refuses_it(tmp_path: Path, shell_env: dict[str, str]):
    """The whole way once (smspark-submit's shell line, spark-submit, the launcher, the job): the value reaches the
    job's parser unchanged and is refused there, and the shell never runs it."""
    canary = tmp_path / "canary"
    template, refusal = REFUSED[0]
    value = template.format(canary=canary)
    args = ["ndr_jobs.scripts.run_delta_builder", *delta_arguments(value)]
    proc = subprocess.run(["/bin/sh", "-c", smspark_command(spark_launcher.__file__, args)], capture_output=True,
                          text=True, env={**shell_env, "NDR_SPARK_MASTER": "local[1]"}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert refusal.format(value=value) in proc.stderr
    assert not canary.exists()


# --- the real spark-submit, configured as smspark-submit configures it -------------------------------------

#: the Spark processor's instance (specs/project.yaml: ml.m5.2xlarge): vCPUs and MiB, as smspark reads them from
#: /opt/aws-config/ec2-instance-type-info.json
INSTANCE_CORES, INSTANCE_MEM_MB = 8, 32768


def smspark_spark_defaults(cores: int, mem_mb: int, driver_host: str) -> dict[str, str]:
    """The spark-defaults.conf smspark-submit leaves for one instance before it runs spark-submit: the image's
    static file (``hadoop-config/spark-defaults.conf``, the driver host set to the primary's address), then
    ``Bootstrapper.get_yarn_spark_resource_config`` in its default mode (``AWS_SPARK_CONFIG_MODE`` 1). Left out:
    the class and library paths of EMR's jars, which only the image has."""
    executor_mem = int(mem_mb * 0.95 * (1 - 0.1))
    driver_mem = int(mem_mb * 0.9)
    driver_gc = ("-XX:+UseConcMarkSweepGC -XX:CMSInitiatingOccupancyFraction=70 -XX:MaxHeapFreeRatio=70 "
                 "-XX:+CMSClassUnloadingEnabled")  # fmt: skip
    executor_gc = (f"-XX:+UseParallelGC -XX:InitiatingHeapOccupancyPercent=70 -XX:ConcGCThreads={max(cores // 4, 1)} "
                   f"-XX:ParallelGCThreads={max(3 * cores // 4, 1)} ")  # fmt: skip
    return {
        "spark.driver.host": driver_host,
        "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
        "spark.rpc.askTimeout": "300s",
        "spark.driver.memory": f"{driver_mem}m",
        "spark.driver.memoryOverhead": f"{int(driver_mem * 0.1)}m",
        "spark.driver.defaultJavaOptions": f"-XX:OnOutOfMemoryError='kill -9 %p' {driver_gc}",
        "spark.executor.memory": f"{executor_mem}m",
        "spark.executor.memoryOverhead": f"{int(executor_mem * 0.1)}m",
        "spark.executor.cores": str(cores),
        "spark.executor.defaultJavaOptions": ("-verbose:gc -XX:OnOutOfMemoryError='kill -9 %p' -XX:+PrintGCDetails "
                                              f"-XX:+PrintGCDateStamps {executor_gc}"),  # fmt: skip
        "spark.executor.instances": "1",
        "spark.default.parallelism": str(2 * cores),
        "spark.yarn.appMasterEnv.AWS_REGION": "us-east-1",
        "spark.executorEnv.AWS_REGION": "us-east-1",
    }


def app_specification(pipeline: str, step: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A step's AppSpecification and Environment, as generated/ renders them for SageMaker."""
    definition = json.loads((GENERATED / "pipelines" / f"{pipeline}.json").read_text())
    (found,) = [s for s in definition["Steps"] if s["Name"] == step]
    return found["Arguments"]["AppSpecification"], found["Arguments"]["Environment"]


def run_as_smspark(tmp_path: Path, pipeline: str, step: str, extra_env: dict[str, str] | None = None,
                   ) -> tuple[subprocess.CompletedProcess[str], dict[str, str], Path]:
    """A step from generated/, run as the Spark image runs it; returns the process, the parameter values and the
    directory standing in for S3. smspark-submit's command line through /bin/sh, the installed PySpark's
    ``spark-submit`` with smspark's spark-defaults.conf for one ml.m5.2xlarge, the image's environment (no
    PYTHONPATH: spark-submit puts its own pyspark.zip and py4j on it; PYSPARK_PYTHON the image's Python), the
    launcher at its own path outside the package, and argument values that are valid but awkward on the way (an
    empty one, dots and underscores, a fractional ``+00:00`` time). YARN is the one substitution: ``--master
    local[2]`` instead of ``yarn``, which has no stand-in here."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    assert spark_submit.exists(), f"no spark-submit beside {sys.executable}: PySpark is not installed in this venv"
    app, environment = app_specification(pipeline, step)
    smspark, launcher_path, *head = app["ContainerEntrypoint"]  # head: the module, or --fused
    assert smspark == "smspark-submit"
    launcher = tmp_path / launcher_path.lstrip("/")  # /opt/ndr/spark_launcher.py, as the image places it
    launcher.parent.mkdir(parents=True)
    shutil.copyfile(spark_launcher.__file__, launcher)

    org, project = "a.b_c-1", "ndr.prod_2"
    start, end = "2026-10-01T12:00:00.000+00:00", "2026-10-01T12:15:00Z"
    values = {"ProjectName": project, "FeatureSpecVersion": "v1", "MiniBatchId": f"{org}-{project}-v1-20261001T1200",
              "BatchStartTsIso": start, "BatchEndTsIso": end, "RawBatchFolder": "",
              "MaxQuarantineRatio": "1.000000"}  # fmt: skip
    arguments = [values[a["Get"].removeprefix("Parameters.")] if isinstance(a, dict) else a
                 for a in app["ContainerArguments"]]  # fmt: skip
    s3 = tmp_path / "s3"
    write_batch(s3 / f"acme-ndr-raw/pan-traffic/{org}/{project}/v1/2026/10/01/1200")
    deployed = {"${NdrOrgId}": org, "${NdrRawRoot}": "s3://acme-ndr-raw",
                "${NdrStorageRoot}": "s3://acme-ndr-features/ndr-prod"}  # fmt: skip

    conf_dir = tmp_path / "spark-conf"  # /usr/lib/spark/conf in the image
    conf_dir.mkdir()
    defaults = smspark_spark_defaults(INSTANCE_CORES, INSTANCE_MEM_MB, driver_host="127.0.0.1")
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in defaults.items()))
    image_env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
                 "PYTHONIOENCODING": "UTF-8", "PYSPARK_PYTHON": sys.executable, "AWS_REGION": "us-east-1"}  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYSPARK_", "SPARK_", "NDR_")) and k != "JAVA_TOOL_OPTIONS"}  # fmt: skip
    env.update(image_env, PATH=f"{spark_submit.parent}:{env['PATH']}", SPARK_CONF_DIR=str(conf_dir),
               SPARK_LOCAL_IP="127.0.0.1", NDR_LOCAL_S3_ROOT=str(s3))  # loopback only; S3 as a directory
    env.update({k: deployed.get(v, v) for k, v in environment.items()})
    if installed_ndr_jobs(env) != ROOT / "ndr_jobs":  # this checkout is not the installed one (a worktree)
        env["PYTHONPATH"] = str(ROOT)  # stands in for the wheel the image installs
    env.update(extra_env or {})

    command = smspark_command(str(launcher), [*head, *arguments], master="local[2]")
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, values, s3


def test_a_fused_job_runs_its_steps_in_one_session_through_the_real_spark_submit(tmp_path: Path):
    """features_15m's fused job from generated/ (``--fused``: the four steps' names, modules, counts and arguments)
    through smspark-submit's shell line and the real spark-submit: each step in order, one Spark application."""
    report = tmp_path / "fused.jsonl"
    proc, values, s3 = run_as_smspark(tmp_path, "features_15m", "DeltaBuilderStep-FGCCorrBuilderStep",
                                      {"NDR_FUSED_REPORT": str(report)})
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["step"], r["exit_code"]) for r in records] == [
        ("DeltaBuilderStep", 0), ("FGABuilderStep", 0), ("PairCountsBuilderStep", 0), ("FGCCorrBuilderStep", 0)]
    assert len({r["spark_application_id"] for r in records}) == 1 and records[0]["spark_application_id"]
    assert read(s3 / "acme-ndr-features/ndr-prod/delta" / PARTITION) == EXPECTED_DELTA
    for dataset in ("fg_a", "fg_c"):
        assert (s3 / "acme-ndr-features/ndr-prod" / dataset).is_dir(), f"the fused job wrote no {dataset}"
    assert proc.stderr.count("SparkContext: Running Spark version") == 1, "one Spark session for the four steps"


def test_a_job_runs_through_the_real_spark_submit_as_smspark_submit_runs_it(tmp_path: Path):
    """The delta builder's step (``run_as_smspark``)."""
    proc, values, s3 = run_as_smspark(tmp_path, "delta_builder", "DeltaBuilderStep")
    org, project = "a.b_c-1", "ndr.prod_2"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["raw_batch_folder"], summary["delta_rows"], summary["rows_quarantined"]) == (
        f"s3://acme-ndr-raw/pan-traffic/{org}/{project}/v1/2026/10/01/1200/", 5, 5,
    )  # fmt: skip
    assert summary["outputs"]["delta"] == f"s3://acme-ndr-features/ndr-prod/delta/{PARTITION}"
    assert read(s3 / "acme-ndr-features/ndr-prod/delta" / PARTITION) == EXPECTED_DELTA
    quarantined = read(s3 / "acme-ndr-features/ndr-prod/quarantine" / PARTITION)
    assert {r["mini_batch_id"] for r in quarantined} == {values["MiniBatchId"]}
    # smspark's spark-defaults.conf sized the driver: its memory store has 60 % of the 29 GiB heap, not of the 1 GiB
    # default
    capacity = re.search(r"MemoryStore started with capacity ([0-9.]+) (GiB|MiB)", proc.stderr)
    assert capacity and capacity[2] == "GiB" and float(capacity[1]) > 10, proc.stderr[-4000:]


def installed_ndr_jobs(env: dict[str, str]) -> Path | None:
    """Where the job's interpreter imports ``ndr_jobs`` from, with ``env`` (no PYTHONPATH); None: not installed."""
    out = subprocess.run([sys.executable, "-c", "import ndr_jobs; print(ndr_jobs.__file__)"], env=env,
                         capture_output=True, text=True, check=False, cwd="/")  # fmt: skip
    return Path(out.stdout.strip()).parent if out.returncode == 0 else None
