"""The job library's command lines: importable without Spark, typed parsing, honest exit codes."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

import ndr_jobs.scripts
from ndr_jobs.interface import entrypoints
from ndr_jobs.runtime.config import DeltaRuntime, PublicationRuntime, TrainingRuntime
from tests.conftest import SPECS

SCRIPTS = [
    "run_delta_builder",
    "run_fg_a_builder",
    "run_pair_counts_builder",
    "run_fg_c_builder",
    "run_inference_predictions",
    "run_prediction_feature_join",
    "run_machine_inventory_unload",
    "run_fg_b_builder",
    "run_if_training",
    "run_historical_windows_extractor",
    "run_backfill_windows",
]
BATCH = [
    "--project-name",
    "ndr-prod",
    "--feature-spec-version",
    "v1",
    "--mini-batch-id",
    "m1",
    "--batch-start-ts-iso",
    "2026-10-01T12:00:00Z",
    "--batch-end-ts-iso",
    "2026-10-01T12:15:00Z",
]


def test_every_script_is_declared_in_the_interface():
    found = {m.name for m in pkgutil.iter_modules(ndr_jobs.scripts.__path__) if m.name.startswith("run_")}
    assert {f"ndr_jobs.scripts.{name}" for name in found} == set(entrypoints.ENTRYPOINTS) == {
        f"ndr_jobs.scripts.{name}" for name in SCRIPTS
    }


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_parses_exactly_its_declaration(name: str):
    module = f"ndr_jobs.scripts.{name}"
    script = importlib.import_module(module)

    def shape(parser):
        return [(a.option_strings, a.required, a.default, a.choices, a.type) for a in parser._actions]

    assert shape(script.build_parser()) == shape(entrypoints.build_parser(module))
    assert script.build_parser().prog == f"python -m {module}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_a_parser_and_imports_no_spark(name: str):
    code = f"import sys, ndr_jobs.scripts.{name} as s; s.build_parser(); assert 'pyspark' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_arguments_become_a_typed_runtime():
    script = importlib.import_module("ndr_jobs.scripts.run_delta_builder")
    rt = script.parse_runtime([*BATCH, "--raw-batch-folder", "s3://acme-ndr-raw/pan-traffic/a/p/v1/2026/10/01/1200/"])
    assert rt == DeltaRuntime(
        "ndr-prod",
        "v1",
        "m1",
        "2026-10-01T12:00:00Z",
        "2026-10-01T12:15:00Z",
        "s3://acme-ndr-raw/pan-traffic/a/p/v1/2026/10/01/1200/",
        max_quarantine_ratio=0.5,
    )
    assert script.parse_runtime([*BATCH, "--max-quarantine-ratio", "0.05"]).max_quarantine_ratio == 0.05
    for bad in ("1.5", "-0.1", "nan", "1e-3", " 0.5", ".5"):
        with pytest.raises(SystemExit):
            script.parse_runtime([*BATCH, "--max-quarantine-ratio", bad])
    join = importlib.import_module("ndr_jobs.scripts.run_prediction_feature_join")
    assert join.parse_runtime([*BATCH, "--publication-target", "redshift"]) == PublicationRuntime(
        "ndr-prod", "v1", "m1", "2026-10-01T12:00:00Z", "2026-10-01T12:15:00Z", publication_target="redshift"
    )


def test_training_override_is_a_json_list():
    script = importlib.import_module("ndr_jobs.scripts.run_if_training")
    rt = script.parse_runtime(
        [
            "--stage",
            "remediate",
            "--project-name",
            "p",
            "--feature-spec-version",
            "v1",
            "--training-start-ts-iso",
            "2026-09-01T00:00:00Z",
            "--training-end-ts-iso",
            "2026-10-01T00:00:00Z",
            "--run-key",
            "r1",
            "--missing-windows-override",
            '["2026-09-03T10:00:00Z"]',
        ]
    )
    assert isinstance(rt, TrainingRuntime) and rt.missing_windows_override == ["2026-09-03T10:00:00Z"]


@pytest.mark.parametrize("bad", [["--batch-start-ts-iso", "yesterday"], ["--colour", "blue"]])
def test_bad_arguments_exit_2(bad: list[str]):
    args = [*BATCH[:6], *bad] if bad[0] != "--colour" else [*BATCH, *bad]
    proc = subprocess.run(
        [sys.executable, "-m", "ndr_jobs.scripts.run_fg_a_builder", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_a_job_that_fails_exits_1_and_its_last_line_says_why():
    env = {k: v for k, v in os.environ.items() if k != "NDR_STORAGE_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-m", "ndr_jobs.scripts.run_fg_a_builder", *BATCH], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr  # for the logs
    assert proc.stderr.strip().splitlines()[-1] == "error: ValueError: NDR_STORAGE_ROOT is not set"


def test_the_15_minute_pipeline_runs_the_feature_chain_in_its_one_declared_order():
    from ndr_compiler.specs import load_specs
    from ndr_jobs.processing.chain import FEATURE_CHAIN

    specs = load_specs([SPECS])[0]
    (pipeline,) = [p for p in specs.of_kind("Pipeline") if p.name == "features_15m"]
    assert [s.entrypoint for s in pipeline.model.spec.steps] == [f"ndr_jobs.scripts.run_{n}" for n in FEATURE_CHAIN]
