"""``ndr-compile run``: the compiled state machines drive the real jobs through the local pipeline runner.

Failure drill: a job that raises -> pipeline Failed -> lock released -> WorkflowFailed, and the next
announcement of the batch runs again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main
from ndr_compiler.local import offline_aws
from ndr_compiler.local.platform import stand_up
from ndr_compiler.local.runner import LocalPipelines, local_pipeline_names
from ndr_compiler.specs import load_specs
from tests.conftest import CONTRACTS, GENERATED, SPECS

pytestmark = pytest.mark.skipif(not CONTRACTS.exists(), reason="shared contracts not present")


def test_cli_runs_the_training_machine_with_the_real_pipeline(tmp_path: Path):
    result = CliRunner().invoke(
        main,
        [
            "run",
            "sfn_ndr_training_orchestrator",
            "--input",
            str(CONTRACTS / "training.request.json"),
            "--specs",
            str(SPECS),
            "--generated",
            str(GENERATED),
            "--wait-scale",
            "0.01",
            "--value",
            f"NdrStorageRoot={tmp_path}",
        ],
    )
    # the training jobs are not implemented yet: the pipeline fails at its first step, honestly
    assert result.exit_code == 1
    assert "pipeline if_training Failed: TrainingDataVerifierStep Failed" in result.output
    assert "execution: FAILED" in result.output
    assert "not implemented yet" in result.output


def test_a_failing_job_releases_the_lock_and_the_batch_can_run_again(tmp_path: Path):
    specs, _ = load_specs([SPECS])
    project = specs.projects()["ndr"].model
    from ndr_compiler.compile import compile_specs

    compiled = compile_specs([SPECS], render=False)
    placeholders, names = local_pipeline_names(compiled.pipelines)
    pipelines = LocalPipelines(GENERATED, names, {"NdrStorageRoot": str(tmp_path)})
    event = json.loads((CONTRACTS / "15m_batch_completed.eventbridge.json").read_text())
    with offline_aws(pipelines, wait_time_scale=0.01):
        platform = stand_up(GENERATED, project, placeholders)
        first = platform.run("sfn_ndr_15m_features_inference", event, timeout_s=300)
        assert first.status == "FAILED"
        assert first.path[-2:] == ["ReleaseMiniBatchLockOnFailure", "WorkflowFailed"]
        assert json.loads(first.cause)["error"] == "NDR.PipelineFailed"
        assert platform.lock("acme-ndr-prod-v1-20261001T1200") is None
        ((spec, params, run),) = pipelines.runs
        assert spec == "features_15m" and params["MiniBatchId"] == "acme-ndr-prod-v1-20261001T1200"
        assert run.status == "Failed"
        # the lock was freed: the same batch announced again is not a duplicate, it runs (and fails alike)
        again = platform.run("sfn_ndr_15m_features_inference", event, timeout_s=300)
        assert "DuplicateMiniBatch" not in again.path
        assert len(pipelines.runs) == 2
