"""Step fusion (issue 22): a Pipeline spec's ``fuse`` group runs as one Processing job, in one Spark session.

The lint codes with their positions, the IR and poll-budget arithmetic, the rendered step (against the SageMaker
SDK too), the launcher's ``--fused`` command line under hostile values, and a real fused run on local Spark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler import ir
from ndr_compiler.cli import main
from ndr_compiler.compile import compile_specs
from ndr_compiler.diagnostics import display_path
from ndr_compiler.expand.pipeline import runtime_seconds
from ndr_compiler.render.mermaid import pipeline_diagram
from ndr_compiler.render.sagemaker_pipeline import render_pipeline
from ndr_jobs.interface.fused import FusedArgumentsError, FusedStep, parse_fused
from tests.conftest import ROOT, SPECS

BAD = ROOT / "tests" / "bad_specs"
CONTEXT = [SPECS / "project.yaml", SPECS / "state_machines" / "sfn_ndr_prediction_publication.yaml",
           SPECS / "pipelines"]
CHAIN = ["DeltaBuilderStep", "FGABuilderStep", "PairCountsBuilderStep", "FGCCorrBuilderStep"]
BATCH_ARGS = """      arguments:
        --project-name: "{{ ProjectName }}"
        --feature-spec-version: "{{ FeatureSpecVersion }}"
        --mini-batch-id: "{{ MiniBatchId }}"
        --batch-start-ts-iso: "{{ BatchStartTsIso }}"
        --batch-end-ts-iso: "{{ BatchEndTsIso }}"
"""


def lint(path: Path) -> list[str]:
    """The diagnostics of ``path`` (linted with the project's specs), as printed: ``file:line:col CODE message``."""
    result = CliRunner().invoke(main, ["lint", str(path), *map(str, CONTEXT)])
    assert "Traceback" not in result.output
    return [ln.replace(display_path(path), "@", 1) for ln in result.output.splitlines()
            if ln.startswith(display_path(path))]


@pytest.mark.parametrize(("fixture", "where", "code", "words"), [
    ("fuse_unknown_step", "34:17", "E207", "names 'PairStep', which is not a step of this pipeline; did you mean"),
    ("fuse_not_a_chain", "33:17", "E208", "'PairsStep' depends on nothing"),
    ("fuse_processor_mismatch", "35:17", "E209", "'PairsStep' differs from 'FGAStep' in overrides"),
    ("fuse_not_spark", "26:7", "E210", "processor profile 'python', which is not a Spark one"),
    ("fuse_inner_dependency", "36:7", "E211", "'FGCStep' depends on 'FGAStep', an inner step of fuse group 1"),
    ("fused_job_name", "34:7", "E212", "over 64 characters"),
    ("fused_job_limits", "36:7", "E411", "max runtime of 600000s"),
])
def test_each_bad_group_gets_its_code_at_its_place(fixture: str, where: str, code: str, words: str):
    (line,) = lint(BAD / f"{fixture}.yaml")
    assert line.startswith(f"@:{where} {code} ") and words in line, line


def pipeline_spec(tmp_path: Path, steps: list[tuple[str, str, list[str] | None, str]], fuse: list[list[str]]) -> Path:
    """A pipeline spec of Spark feature steps: (name, script, depends_on, extra YAML) each, and its fuse groups."""
    text = ("apiVersion: ndr/v1\nkind: Pipeline\nmetadata: {name: fused_test}\nspec:\n  project: ndr\n"
            "  parameters:\n" + "".join(f"    {p}: {{type: String}}\n" for p in
                                        ("ProjectName", "FeatureSpecVersion", "MiniBatchId", "BatchStartTsIso",
                                         "BatchEndTsIso")) + "  steps:\n")
    for name, script, deps, extra in steps:
        text += f"    - name: {name}\n      entrypoint: ndr_jobs.scripts.{script}\n      processor: spark\n"
        text += (f"      depends_on: [{', '.join(deps)}]\n" if deps else "") + extra + BATCH_ARGS
    if fuse:
        text += "  fuse:\n" + "".join(f"    - [{', '.join(g)}]\n" for g in fuse)
    path = tmp_path / "fused_test.yaml"
    path.write_text(text)
    return path


RETRY = "      retry: {max_attempts: 2}\n"


def three_steps(fuse: list[list[str]], third_deps: list[str] | None = None) -> list:
    return [("A", "run_fg_a_builder", None, RETRY), ("B", "run_pair_counts_builder", ["A"], RETRY),
            ("C", "run_fg_c_builder", third_deps or ["B"], RETRY)]


@pytest.mark.parametrize(("fuse", "third_deps", "at", "code", "words"), [
    ([["A", "B"], ["B", "C"]], None, (47, 8), "E207", "'B', already fused in group 1"),
    ([["A", "A"]], None, (46, 11), "E207", "'A', already fused in this group"),
    ([["A", "C"]], None, (46, 11), "E208", "'C' is not declared right after 'A'"),
    ([["A", "B"]], ["A", "B"], (37, 7), "E211", "'C' depends on 'A', an inner step"),
])
def test_more_bad_groups(tmp_path: Path, fuse: list[list[str]], third_deps: list[str] | None,
                         at: tuple[int, int], code: str, words: str):
    path = pipeline_spec(tmp_path, three_steps(fuse, third_deps), fuse)
    lines = lint(path)
    assert any(ln.startswith(f"@:{at[0]}:{at[1]} {code} ") and words in ln for ln in lines), lines


def test_a_job_name_taken_by_a_step_is_refused(tmp_path: Path):
    steps = three_steps([["A", "B"]])
    steps[2] = ("A-B", "run_fg_c_builder", ["B"], RETRY)
    path = pipeline_spec(tmp_path, steps, [["A", "B"]])
    assert any(" E212 " in ln and "'A-B', which a step already has" in ln for ln in lint(path))


def compiled(tmp_path: Path, fuse: list[list[str]]) -> ir.PipelineIR:
    path = pipeline_spec(tmp_path, three_steps(fuse), fuse)
    result = compile_specs([path, SPECS / "project.yaml"], render=False)
    assert [d.format() for d in result.diagnostics if d.severity == "error"] == []
    return result.pipelines["fused_test"]


def test_a_group_is_one_job_and_the_budget_counts_it_once(tmp_path: Path):
    plain, fused = compiled(tmp_path, []), compiled(tmp_path, [["A", "B"]])
    runtime = plain.steps[0].processor.max_runtime_seconds  # the spark profile's (all three the same)
    assert [s.name for s in fused.steps] == ["A-B", "C"]
    job, c = fused.steps
    assert job.spec_steps == ["A", "B"] and [x.module for x in job.commands] == [
        "ndr_jobs.scripts.run_fg_a_builder", "ndr_jobs.scripts.run_pair_counts_builder"]
    assert job.processor.max_runtime_seconds == 2 * runtime
    assert c.depends_on == ["A-B"]  # the dependency on the group's last step is one on the job
    assert job.retry == plain.steps[0].retry and job.depends_on == []
    provisioning, attempts = 600, 1 + 2
    assert runtime_seconds(plain, provisioning) == 3 * (runtime + provisioning) * attempts
    assert runtime_seconds(fused, provisioning) == ((2 * runtime + provisioning) + (runtime + provisioning)) * attempts
    assert runtime_seconds(plain, provisioning) - runtime_seconds(fused, provisioning) == provisioning * attempts


def test_the_15_minute_chain_is_one_job_and_its_poll_budget_follows():
    result = compile_specs([SPECS], render=False)
    p = result.pipelines["features_15m"]
    (job,) = p.steps
    assert job.name == "DeltaBuilderStep-FGCCorrBuilderStep" and job.spec_steps == CHAIN
    per_step = [c.max_runtime_seconds for c in job.commands]
    assert job.processor.max_runtime_seconds == sum(per_step) == 7200
    provisioning = 600
    assert runtime_seconds(p, provisioning) == (7200 + provisioning) * 3  # 23400 s: 1170 polls every 20 s
    asl = json.loads((ROOT / "generated/state_machines/sfn_ndr_15m_features_inference.asl.json").read_text())
    assert "$features_poll_attempt >= 1170 %}" in json.dumps(asl)


def test_the_rendered_job_names_its_steps_and_counts_their_arguments(tmp_path: Path):
    p = compiled(tmp_path, [["A", "B"]])
    definition = render_pipeline(p, "ndr-fused-test")
    job, c = definition["Steps"]
    assert (job["Name"], job["Description"]) == ("A-B", "Fused: A, B (in order, one Spark session)")
    assert c["DependsOn"] == ["A-B"]
    app = job["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["smspark-submit", "/opt/ndr/spark_launcher.py", "--fused"]
    args = app["ContainerArguments"]
    assert args[:3] == ["A", "ndr_jobs.scripts.run_fg_a_builder", "10"] and args[13:16] == [
        "B", "ndr_jobs.scripts.run_pair_counts_builder", "10"]
    assert args[4] == {"Get": "Parameters.ProjectName"}
    # whatever the parameters hold at run time, the launcher finds the same two steps
    for hostile in ("--fused", "3", "C ndr_jobs.scripts.x 0", ""):
        values = [a if isinstance(a, str) else hostile for a in args]
        steps = parse_fused(values)
        assert [(s.name, s.module, len(s.arguments)) for s in steps] == [
            ("A", "ndr_jobs.scripts.run_fg_a_builder", 10), ("B", "ndr_jobs.scripts.run_pair_counts_builder", 10)]
    assert job["Arguments"]["StoppingCondition"]["MaxRuntimeInSeconds"] == 2 * c["Arguments"][
        "StoppingCondition"]["MaxRuntimeInSeconds"]
    diagram = pipeline_diagram(p)
    assert 'subgraph j0 ["A-B: one Spark job"]' in diagram
    assert "p0 --> p1" in diagram and "p1 --> p2" in diagram  # A -> B inside, B (the job's last) -> C


def test_the_sdk_builds_the_same_fused_job(tmp_path: Path):
    from tests.sdk_oracle import sdk_render_pipeline

    p = compiled(tmp_path, [["A", "B"]])
    assert render_pipeline(p, "ndr-fused-test") == sdk_render_pipeline(p, "ndr-fused-test")


@pytest.mark.parametrize(("argv", "words"), [
    ([], "names no step"),
    (["A", "ndr_jobs.scripts.x"], "expected <name> <module> <count>"),
    (["A B", "ndr_jobs.scripts.x", "0"], "is not a step name"),
    (["A", "os.system", "0"], "is not an ndr_jobs module"),
    (["A", "ndr_jobs.scripts.x", "-1"], "is not a number"),
    (["A", "ndr_jobs.scripts.x", "01"], "is not a number"),
    (["A", "ndr_jobs.scripts.x", "3", "--a", "b"], "3 arguments announced, 2 left"),
    (["A", "ndr_jobs.scripts.x", "0", "A", "ndr_jobs.scripts.y", "0"], "named twice"),
])
def test_the_launcher_refuses_a_malformed_fused_command_line(argv: list[str], words: str):
    with pytest.raises(FusedArgumentsError, match=words):
        parse_fused(argv)
    assert parse_fused(["A", "ndr_jobs.scripts.x", "2", "--a", "A", "B", "ndr_jobs.scripts.y", "0"]) == [
        FusedStep("A", "ndr_jobs.scripts.x", ["--a", "A"]), FusedStep("B", "ndr_jobs.scripts.y", [])]


def test_a_fused_job_runs_its_steps_in_one_spark_session_and_stops_at_the_first_failure(tmp_path: Path):
    """The launcher as the local runner starts it, in a fresh interpreter on local Spark: the delta builder and
    FG-A share one Spark application, the pair counts fail on an unknown feature spec version (FG-C never runs),
    the job's exit status is theirs and its last stderr line names the step."""
    from tests.test_delta_builder import PARTITION, write_batch

    org, project = "acme", "ndr-prod"
    s3 = tmp_path / "s3"
    write_batch(s3 / f"acme-ndr-raw/pan-traffic/{org}/{project}/v1/2026/10/01/1200")
    batch = ["--project-name", project, "--mini-batch-id", f"{org}-{project}-v1-20261001T1200",
             "--batch-start-ts-iso", "2026-10-01T12:00:00Z", "--batch-end-ts-iso", "2026-10-01T12:15:00Z"]
    steps = [("DeltaBuilderStep", "run_delta_builder", ["--feature-spec-version", "v1", *batch,
                                                        "--max-quarantine-ratio", "1.0"]),
             ("FGABuilderStep", "run_fg_a_builder", ["--feature-spec-version", "v1", *batch]),
             ("PairCountsBuilderStep", "run_pair_counts_builder", ["--feature-spec-version", "v9", *batch]),
             ("FGCCorrBuilderStep", "run_fg_c_builder", ["--feature-spec-version", "v1", *batch])]
    argv = [token for name, script, args in steps
            for token in (name, f"ndr_jobs.scripts.{script}", str(len(args)), *args)]
    report = tmp_path / "report.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NDR_LOCAL_S3_ROOT": str(s3), "NDR_ORG_ID": org,
           "NDR_RAW_ROOT": "s3://acme-ndr-raw", "NDR_STORAGE_ROOT": "s3://acme-ndr-features/ndr-prod",
           "NDR_SPARK_MASTER": "local[1]", "NDR_FUSED_REPORT": str(report)}
    proc = subprocess.run([sys.executable, "-m", "ndr_jobs.runtime.spark_launcher", "--fused", *argv],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["step"], r["exit_code"] == 0) for r in records] == [
        ("DeltaBuilderStep", True), ("FGABuilderStep", True), ("PairCountsBuilderStep", False)], proc.stderr[-3000:]
    app_ids = {r["spark_application_id"] for r in records}
    assert len(app_ids) == 1 and None not in app_ids  # one Spark session for the whole job
    assert proc.returncode == records[-1]["exit_code"] != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("spark_launcher: FusedStepFailed: step PairCountsBuilderStep (3 of 4, "
                           "ndr_jobs.scripts.run_pair_counts_builder) failed with exit code"), last
    assert "v9" in last  # the step's own last words, carried into the job's
    assert json.loads(records[0]["stdout"].strip().splitlines()[-1])["delta_rows"] == 5
    fg_a = s3 / "acme-ndr-features/ndr-prod/fg_a" / PARTITION
    assert fg_a.is_dir()  # FG-A read the delta the step before it wrote, in the same session
    assert not (s3 / "acme-ndr-features/ndr-prod/fg_c").exists()  # after the failure nothing ran


def test_a_stopped_job_starts_no_further_step(tmp_path: Path):
    """The local stand-in of SageMaker stopping the job: once the stop file exists, no step starts (exit 143)."""
    (tmp_path / "stop").touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NDR_FUSED_STOP": str(tmp_path / "stop"),
           "NDR_FUSED_REPORT": str(tmp_path / "report.jsonl")}
    proc = subprocess.run([sys.executable, "-m", "ndr_jobs.runtime.spark_launcher", "--fused", "A",
                           "ndr_jobs.scripts.run_fg_a_builder", "0", "B", "ndr_jobs.scripts.run_fg_c_builder", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 143
    assert proc.stderr.strip().splitlines()[-1] == "spark_launcher: FusedJobStopped: stopped before step A (1 of 2)"
    assert not (tmp_path / "report.jsonl").exists()


def test_a_malformed_fused_command_line_exits_2_with_a_named_error():
    proc = subprocess.run([sys.executable, "-m", "ndr_jobs.runtime.spark_launcher", "--fused", "A",
                           "ndr_jobs.scripts.run_fg_a_builder", "5", "--x"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("spark_launcher: FusedArgumentsError: fused step A: 5 arguments announced, "
                                   "1 left")


def test_reviews_name_the_fused_steps():
    from ndr_compiler.render.sagemaker_pipeline import spec_step_names
    from ndr_compiler.semantic_diff import pipeline_summary

    definition = json.loads((ROOT / "generated/pipelines/features_15m.json").read_text())
    assert [spec_step_names(s) for s in definition["Steps"]] == [CHAIN]
    assert pipeline_summary("features_15m", definition) == (
        "new pipeline features_15m: 4 steps (DeltaBuilderStep, FGABuilderStep, PairCountsBuilderStep, "
        "FGCCorrBuilderStep) in 1 Processing job, 7 parameters")
    diagram = (ROOT / "generated/diagrams/features_15m.md").read_text()
    assert 'subgraph j0 ["DeltaBuilderStep-FGCCorrBuilderStep: one Spark job"]' in diagram
    assert all(f'"{name}<br/>' in diagram for name in CHAIN)


@pytest.mark.parametrize(("template", "code", "words", "shell"), [
    ("$(touch {canary})", 2, "--mini-batch-id", True),
    ("x; touch {canary}", 2, "--mini-batch-id", False),
    ("--fused", 2, "--mini-batch-id: expected one argument", False),
    ("4", 1, "NDR_STORAGE_ROOT is not set", True),  # a valid id: the job runs, and stops where this test's setup ends
])
def test_hostile_values_reach_the_first_job_of_the_15_minute_job_through_the_shell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], template: str, code: int,
        words: str, shell: bool):
    """The generated fused step as smspark-submit runs it (every argument through ``shlex.quote``, ``/bin/sh``,
    a stand-in spark-submit): a hostile MiniBatchId neither runs in the shell nor moves a step boundary (the
    launcher still sees 4 steps); the delta builder gets it as one value, and the job's last words name it.
    ``shell``: the whole way in a new process; otherwise the launcher in this process, on the command line the
    shell hands over unchanged (tests/test_launcher.py)."""
    from tests.test_launcher import smspark_command

    canary = tmp_path / "canary"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "spark-submit").write_text(f'#!/bin/sh\nshift 4\nexec {sys.executable} "$@"\n')
    (bin_dir / "spark-submit").chmod(0o755)
    (step,) = json.loads((ROOT / "generated/pipelines/features_15m.json").read_text())["Steps"]
    app = step["Arguments"]["AppSpecification"]
    smspark, launcher, flag = app["ContainerEntrypoint"]
    values = {"ProjectName": "ndr-prod", "FeatureSpecVersion": "v1", "MiniBatchId": template.format(canary=canary),
              "BatchStartTsIso": "2026-10-01T12:00:00Z", "BatchEndTsIso": "2026-10-01T12:15:00Z",
              "RawBatchFolder": "", "MaxQuarantineRatio": "0.5"}
    arguments = [values[a["Get"].removeprefix("Parameters.")] if isinstance(a, dict) else a
                 for a in app["ContainerArguments"]]
    from ndr_jobs.runtime import spark_launcher

    assert (smspark, launcher) == ("smspark-submit", "/opt/ndr/spark_launcher.py")
    if shell:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NDR_")}  # none of the platform's settings
        env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT), NDR_SPARK_MASTER="local[1]",
                   NDR_LOCAL_S3_ROOT=str(tmp_path / "s3"))
        command = smspark_command(spark_launcher.__file__, [flag, *arguments])
        proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)
        returncode, stderr = proc.returncode, proc.stderr
    else:
        for name in [k for k in os.environ if k.startswith("NDR_") and k != "NDR_SPARK_JAVA_OPTIONS"]:
            monkeypatch.delenv(name)
        monkeypatch.chdir(tmp_path)
        assert flag == spark_launcher.FUSED_FLAG
        returncode, stderr = spark_launcher.run_fused(arguments), capsys.readouterr().err
    assert returncode == code, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("spark_launcher: FusedStepFailed: step DeltaBuilderStep (1 of 4, "
                           f"ndr_jobs.scripts.run_delta_builder) failed with exit code {code}: "), last
    assert words in last
    assert not canary.exists()
