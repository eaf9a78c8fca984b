"""Cross-spec checks between state machines, pipeline specs and the job library: one negative test each."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main


def lint(specs: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["lint", str(specs)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_real_specs_pass(spec_copy: Path):
    code, out = lint(spec_copy)
    assert code == 0, out


def test_parameter_renamed_on_the_pipeline_side_only(spec_copy: Path):
    edit(spec_copy / "pipelines/inference.yaml", "    MiniBatchId: {type: String}", "    MiniBatchKey: {type: String}")
    edit(spec_copy / "pipelines/inference.yaml", '"{{ MiniBatchId }}"', '"{{ MiniBatchKey }}"')
    code, out = lint(spec_copy)
    assert code == 1
    assert "E504 'StartInferencePipeline' passes 'MiniBatchId', which pipeline 'inference'" in out
    assert "E505 'StartInferencePipeline' does not pass required parameter 'MiniBatchKey'" in out
    assert "sfn_ndr_15m_features_inference.yaml:" in out


def test_required_parameter_not_passed(spec_copy: Path):
    edit(
        spec_copy / "state_machines/sfn_ndr_training_orchestrator.yaml",
        '          RunKey: "{% $params.run_key %}"\n',
        "",
    )
    code, out = lint(spec_copy)
    assert code == 1 and "E505 'StartTrainingPipeline' does not pass required parameter 'RunKey'" in out


def test_parameter_with_a_default_may_be_omitted(spec_copy: Path):
    edit(
        spec_copy / "state_machines/sfn_ndr_15m_features_inference.yaml",
        '                RawBatchFolder: "{% $params.batch_folder %}"\n',
        "",
    )
    code, out = lint(spec_copy)
    assert code == 0, out


def test_literal_of_the_wrong_type(spec_copy: Path):
    edit(
        spec_copy / "pipelines/fg_b_baselines.yaml",
        "BaselineMode: {type: String, default: regular}",
        "BaselineMode: {type: Integer, default: 1}",
    )
    edit(
        spec_copy / "state_machines/sfn_ndr_monthly_fg_b_baselines.yaml",
        'BaselineMode: "{% $params.baseline_mode %}"',
        "BaselineMode: regular",
    )
    code, out = lint(spec_copy)
    assert code == 1 and "E506" in out and "'regular' for 'BaselineMode', which is a Integer" in out


def test_missing_entrypoint_module(spec_copy: Path):
    edit(
        spec_copy / "pipelines/inference.yaml",
        "ndr_jobs.scripts.run_inference_predictions",
        "ndr_jobs.scripts.run_inference_prediction",
    )
    code, out = lint(spec_copy)
    assert code == 1 and "E508 entrypoint module 'ndr_jobs.scripts.run_inference_prediction' does not exist" in out


def test_argument_the_script_does_not_take(spec_copy: Path):
    edit(
        spec_copy / "pipelines/inference.yaml",
        '        --batch-end-ts-iso: "{{ BatchEndTsIso }}"\n',
        '        --batch-end-ts-iso: "{{ BatchEndTsIso }}"\n        --colour: blue\n',
    )
    code, out = lint(spec_copy)
    assert (
        code == 1 and "E509 step 'InferencePredictionsStep'" in out and "unrecognized arguments: --colour blue" in out
    )


def test_required_argument_the_step_does_not_pass(spec_copy: Path):
    edit(spec_copy / "pipelines/inference.yaml", '        --mini-batch-id: "{{ MiniBatchId }}"\n', "")
    code, out = lint(spec_copy)
    assert code == 1 and "E509" in out and "the following arguments are required: --mini-batch-id" in out


def test_literal_argument_checked_by_the_scripts_parser(spec_copy: Path):
    edit(spec_copy / "pipelines/if_training.yaml", "--stage: verify", "--stage: verfy")
    code, out = lint(spec_copy)
    assert code == 1 and "E509 step 'TrainingDataVerifierStep'" in out and "invalid choice: 'verfy'" in out


def test_placeholder_served_by_no_pipeline(spec_copy: Path):
    edit(spec_copy / "pipelines/backfill_windows.yaml", "[PipelineNameBackfill15m]", "[]")
    code, out = lint(spec_copy)
    assert code == 1 and "E503 ${PipelineNameBackfill15m} is served by no Pipeline spec" in out


def test_placeholder_served_twice(spec_copy: Path):
    edit(spec_copy / "pipelines/delta_builder.yaml", "placeholders: []", "placeholders: [PipelineName15m]")
    code, out = lint(spec_copy)
    assert code == 1 and "E511 ${PipelineName15m} is already served by pipeline" in out


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("    - name: FGABuilderStep", "    - name: FGA Builder Step", "E403"),
        ("    ProjectName: {type: String}", "    Project.Name: {type: String}", "E403"),
        (
            'RawBatchFolder: {type: String, default: ""}',
            "RawBatchFolder: {type: String, default: " + "x" * 1100 + "}",
            "E404",
        ),
        ("processor: spark", "processor: gpu", "E513"),
        ("depends_on: [DeltaBuilderStep]", "depends_on: [FGCCorrBuilderStep]", "E510"),
        ('"{{ RawBatchFolder }}"', '"{{ RawFolder }}"', "E507"),
    ],
)
def test_pipeline_spec_limits_and_references(spec_copy: Path, old: str, new: str, code: str):
    edit(spec_copy / "pipelines/features_15m.yaml", old, new)
    exit_code, out = lint(spec_copy)
    assert exit_code == 1 and f" {code} " in out, out
