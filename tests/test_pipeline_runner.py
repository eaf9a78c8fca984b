"""The local pipeline runner: compiled definitions run step by step, exactly as written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main
from ndr_local.pipeline_runner import PipelineRunError, run_pipeline, step_command
from tests.conftest import GENERATED

TRAINING = {
    "ProjectName": "ndr-prod",
    "FeatureSpecVersion": "v1",
    "TrainingStartTsIso": "2026-09-01T00:00:00Z",
    "TrainingEndTsIso": "2026-10-01T00:00:00Z",
    "RunKey": "r1",
}


def test_spark_step_runs_its_module_with_the_definitions_arguments():
    definition = json.loads((GENERATED / "pipelines" / "delta_builder.json").read_text())
    step = definition["Steps"][0]
    assert step["Arguments"]["AppSpecification"]["ContainerEntrypoint"][0] == "smspark-submit"
    params = {
        "ProjectName": "p",
        "FeatureSpecVersion": "v1",
        "MiniBatchId": "m",
        "BatchStartTsIso": "s",
        "BatchEndTsIso": "e",
        "RawBatchFolder": "f",
        "MaxQuarantineRatio": "0.5",
    }
    assert step_command(step, params) == [
        sys.executable,
        "-m",
        "ndr_jobs.scripts.run_delta_builder",
        "--project-name",
        "p",
        "--feature-spec-version",
        "v1",
        "--mini-batch-id",
        "m",
        "--batch-start-ts-iso",
        "s",
        "--batch-end-ts-iso",
        "e",
        "--raw-batch-folder",
        "f",
        "--max-quarantine-ratio",
        "0.5",
    ]


def test_a_failing_step_fails_the_pipeline_and_its_dependents_never_start(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NDR_STORAGE_ROOT", raising=False)  # the verify step cannot know where the features are
    run = run_pipeline(GENERATED, "if_training", TRAINING, {})
    assert run.status == "Failed"
    assert [s.status for s in run.steps] == ["Failed"] + ["NotStarted"] * 6
    assert run.steps[0].exit_code == 1
    assert run.failure_reason.endswith("error: ValueError: NDR_STORAGE_ROOT is not set")


def test_defaults_fill_parameters_and_mistakes_are_refused():
    with pytest.raises(PipelineRunError, match="parameter 'RunKey' is required"):
        run_pipeline(GENERATED, "if_training", {k: v for k, v in TRAINING.items() if k != "RunKey"}, {})
    with pytest.raises(PipelineRunError, match="unknown parameter"):
        run_pipeline(GENERATED, "if_training", {**TRAINING, "Colour": "blue"}, {})
    with pytest.raises(PipelineRunError, match="no compiled pipeline 'nope'"):
        run_pipeline(GENERATED, "nope", {}, {})


def test_steps_run_in_dependency_order_with_resolved_environment(tmp_path: Path):
    out = tmp_path / "order.txt"
    code = "import os, sys; open(os.environ['OUT'], 'a').write(sys.argv[-1] + ':' + os.environ['ROOT'] + '\\n')"
    script = tmp_path / "probe_step.py"
    script.write_text(code)

    def step(name: str, deps: list[str]) -> dict:
        return {
            "Name": name,
            "Type": "Processing",
            "DependsOn": deps,
            "Arguments": {
                "AppSpecification": {
                    "ContainerEntrypoint": ["python3", "-m", "probe_step"],
                    "ContainerArguments": ["--name", {"Get": "Parameters.Tag"}, name],
                },
                "Environment": {"OUT": str(out), "ROOT": "${NdrStorageRoot}"},
            },
        }

    gen = tmp_path / "generated" / "pipelines"
    gen.mkdir(parents=True)
    steps = [step("C", ["B"]), step("A", []), step("B", ["A"])]
    (gen / "probe.json").write_text(
        json.dumps({"Parameters": [{"Name": "Tag", "Type": "String", "DefaultValue": "t"}], "Steps": steps})
    )
    run = run_pipeline(tmp_path / "generated", "probe", {}, {"NdrStorageRoot": "/data/ndr"}, cwd=tmp_path)
    assert run.status == "Succeeded", run.steps
    assert out.read_text().splitlines() == ["A:/data/ndr", "B:/data/ndr", "C:/data/ndr"]


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NDR_STORAGE_ROOT", raising=False)
    args = ["run-pipeline", "if_training", *[f"--param={k}={v}" for k, v in TRAINING.items()]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "Failed      TrainingDataVerifierStep" in result.output
    assert "pipeline if_training: Failed" in result.output
    bad = CliRunner().invoke(main, ["run-pipeline", "if_training", "--param", "oops"])
    assert bad.exit_code == 2


# --- the warm executor: one reused process, the same contract as a fresh `python -m` ----------------------

STEP_MODULES = {
    "step_ok": "import os, sys\nprint('args', sys.argv[1:], os.environ.get('NDR_X'))\n",
    "step_exit": "import sys\nprint('partial')\nsys.exit(3)\n",
    "step_message": "import sys\nsys.exit('bad arguments')\n",
    "step_raise": "raise RuntimeError('job blew up')\n",
    "step_env": "import os\nos.environ['NDR_LEAK'] = '1'\nprint(os.environ.get('NDR_LEAK_BEFORE', 'clean'))\n",
    "step_die": "import os\nos._exit(9)\n",
    "step_pid": "import os\nprint(os.getpid())\n",
}


@pytest.fixture
def step_dir(tmp_path: Path) -> Path:
    for name, body in STEP_MODULES.items():
        (tmp_path / f"{name}.py").write_text(body)
    return tmp_path


def _both(step_dir: Path, module: str, *args: str, env: dict[str, str] | None = None):
    from ndr_local.step_worker import SubprocessExecutor, WarmExecutor

    argv = [sys.executable, "-m", module, *args]
    full_env = {**os.environ, **(env or {})}
    with WarmExecutor(step_dir / "worker.log") as warm:
        return warm.run(argv, full_env, str(step_dir)), SubprocessExecutor().run(argv, full_env, str(step_dir))


@pytest.mark.parametrize(
    ("module", "code", "out", "err"),
    [
        ("step_ok", 0, "args ['--a', 'b'] x1\n", ""),
        ("step_exit", 3, "partial\n", ""),
        ("step_message", 1, "", "bad arguments\n"),
        ("step_raise", 1, "", "RuntimeError: job blew up\n"),
    ],
)
def test_a_warm_step_exits_and_prints_as_a_fresh_process_does(step_dir: Path, module, code, out, err):
    warm, fresh = _both(step_dir, module, "--a", "b", env={"NDR_X": "x1"})
    assert (warm.exit_code, warm.stdout) == (fresh.exit_code, fresh.stdout) == (code, out)
    assert warm.stderr.endswith(err) and fresh.stderr.endswith(err)


def test_the_warm_worker_is_reused_isolates_environments_and_survives_a_dying_step(step_dir: Path):
    from ndr_local.step_worker import WarmExecutor

    env = dict(os.environ)
    argv = [sys.executable, "-m"]
    with WarmExecutor(step_dir / "worker.log") as warm:
        first = warm.run([*argv, "step_pid"], env, str(step_dir)).stdout
        assert warm.run([*argv, "step_pid"], env, str(step_dir)).stdout == first  # the same process
        assert first.strip() != str(os.getpid())
        assert warm.run([*argv, "step_env"], env, str(step_dir)).stdout == "clean\n"
        leaked = warm.run([*argv, "step_env"], {**env, "NDR_LEAK_BEFORE": "given"}, str(step_dir))
        assert leaked.stdout == "given\n"  # the step's environment is exactly the one given
        assert warm.run([*argv, "step_ok"], env, str(step_dir)).stdout == "args [] None\n"  # NDR_LEAK gone
        died = warm.run([*argv, "step_die"], env, str(step_dir))
        assert died.exit_code == 1 and "step worker died (exit code 9)" in died.stderr
        again = warm.run([*argv, "step_pid"], env, str(step_dir)).stdout
        assert again and again != first  # a new worker took over
