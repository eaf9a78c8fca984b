"""The compiler on the real specs: complete, deterministic, in the seed's names and order, valid ASL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main
from ndr_compiler.compile import compile_specs
from tests.conftest import GENERATED, REFERENCE_STATES, ROOT, SPECS, aws_pipeline_schema

#: states the generated machines list elsewhere than the reference does, and why
MOVED = {
    # effects before the success mark (docs/reliability.md): the emit sits in the lock body
    "sfn_ndr_prediction_publication": {"EmitPublicationEvent"},
}
JANITOR = "sfn_ndr_lock_janitor"
MACHINES = [
    "sfn_ndr_15m_features_inference",
    "sfn_ndr_prediction_publication",
    "sfn_ndr_monthly_fg_b_baselines",
    "sfn_ndr_training_orchestrator",
    "sfn_ndr_backfill_reprocessing",
]
# JSONata-mode ASL: JSONPath-only fields must never appear
JSONPATH_FIELDS = {
    "Parameters",
    "ResultPath",
    "ResultSelector",
    "InputPath",
    "OutputPath",
    "ItemsPath",
    "Variable",
    "StringEquals",
    "TimestampPath",
    "SecondsPath",
}


def seed_states() -> dict[str, list[str]]:
    return json.loads(REFERENCE_STATES.read_text())


def load(name: str) -> dict:
    return json.loads((GENERATED / "state_machines" / f"{name}.asl.json").read_text())


def walk(states: dict):
    for name, state in states.items():
        yield name, state
        if state["Type"] == "Map":
            yield from walk(state["ItemProcessor"]["States"])


def test_every_seed_state_is_generated_with_its_name_in_declared_order():
    seeds = seed_states()
    assert sorted(seeds) == sorted(MACHINES)
    for name, expected in seeds.items():
        names = {n for n, _ in walk(load(name)["States"])}
        assert set(expected) <= names, (name, set(expected) - names)
        moved = MOVED.get(name, set())
        states = list(load(name)["States"])
        assert [s for s in states if s in expected and s not in moved] == [s for s in expected if s not in moved]


def test_generated_is_fresh_and_compiling_twice_is_byte_identical(tmp_path: Path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    runner = CliRunner()
    assert runner.invoke(main, [str(SPECS), "--out", str(out1)]).exit_code == 0
    assert runner.invoke(main, [str(SPECS), "--out", str(out2)]).exit_code == 0
    files = sorted(p.relative_to(out1) for p in out1.rglob("*") if p.is_file())
    assert len(files) == 43
    for rel in files:
        data = (out1 / rel).read_bytes()
        assert data == (out2 / rel).read_bytes()
        assert data == (GENERATED / rel).read_bytes(), f"{rel} is stale"
        assert data.endswith(b"\n") and b"\t" not in data


def test_check_reports_a_stale_file_with_a_diff(tmp_path: Path):
    out = tmp_path / "gen"
    shutil.copytree(GENERATED, out)
    target = out / "state_machines" / "sfn_ndr_training_orchestrator.asl.json"
    target.write_text(target.read_text().replace("StartTrainingPipeline", "StartTraining", 1))
    before = target.read_bytes()
    result = CliRunner().invoke(main, [str(SPECS), "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert "--- a/state_machines/sfn_ndr_training_orchestrator.asl.json" in result.output
    assert "is stale" in result.output
    assert target.read_bytes() == before  # --check never writes


def test_check_notices_an_orphan_file(tmp_path: Path):
    out = tmp_path / "gen"
    shutil.copytree(GENERATED, out)
    (out / "state_machines" / "old.asl.json").write_text("{}\n")
    assert CliRunner().invoke(main, [str(SPECS), "--out", str(out), "--check"]).exit_code == 1
    assert CliRunner().invoke(main, [str(SPECS), "--out", str(out)]).exit_code == 0
    assert not (out / "state_machines" / "old.asl.json").exists()


@pytest.mark.parametrize("name", MACHINES)
def test_jsonata_mode_only(name: str):
    asl = load(name)
    assert asl["QueryLanguage"] == "JSONata"
    for state_name, state in walk(asl["States"]):
        assert not JSONPATH_FIELDS & set(state), (state_name, JSONPATH_FIELDS & set(state))
        assert len(state_name) <= 80
        for rule in state.get("Choices", []):
            assert set(rule) <= {"Condition", "Next", "Assign", "Output", "Comment"}


@pytest.mark.parametrize("name", MACHINES)
def test_every_task_has_a_way_to_the_failure_path(name: str):
    for state_name, state in walk(load(name)["States"]):
        if state["Type"] in ("Task", "Map"):
            catches = [e for c in state.get("Catch", []) for e in c["ErrorEquals"]]
            assert "States.ALL" in catches, state_name


def test_integrations_are_the_ones_the_platform_uses():
    resources = {s["Resource"] for n in [*MACHINES, JANITOR] for _, s in walk(load(n)["States"]) if "Resource" in s}
    assert resources == {
        "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution",
        "arn:aws:states:::aws-sdk:sagemaker:describePipelineExecution",
        "arn:aws:states:::aws-sdk:sagemaker:stopPipelineExecution",
        "arn:aws:states:::aws-sdk:dynamodb:query",
        "arn:aws:states:::dynamodb:getItem",
        "arn:aws:states:::dynamodb:putItem",
        "arn:aws:states:::dynamodb:updateItem",
        "arn:aws:states:::dynamodb:deleteItem",
        "arn:aws:states:::states:startExecution.sync:2",
        "arn:aws:states:::events:putEvents",
        "arn:aws:states:::aws-sdk:s3:getObject",
    }


def test_duplicate_lock_is_caught_by_name():
    acquire = load("sfn_ndr_15m_features_inference")["States"]["AcquireMiniBatchLock"]
    assert acquire["Catch"][0] == {
        "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
        "Next": "DuplicateMiniBatch",
    }
    pub = load("sfn_ndr_prediction_publication")["States"]
    assert pub["AcquirePublicationLock"]["Catch"][0]["Next"] == "DuplicatePublicationSuppressed"
    assert pub["DuplicatePublicationSuppressed"]["Type"] == "Succeed"


def test_pipeline_names_stay_placeholders():
    text = "".join((GENERATED / "state_machines" / f"{n}.asl.json").read_text() for n in MACHINES)
    names = set(re.findall(r'"PipelineName": "([^"]+)"', text))
    assert names == {
        "${PipelineName15m}",
        "${PipelineNameInference}",
        "${PipelineNamePredictionJoin}",
        "${PipelineNameMachineInventory}",
        "${PipelineNameFGB}",
        "${PipelineNameIFTraining}",
        "${PipelineNameBackfillHistoricalExtractor}",
        "${PipelineNameBackfill15m}",
    }


def test_compile_reports_no_diagnostics_on_the_real_specs():
    result = compile_specs([SPECS])
    # W701 aside: the cadence model's verdict on dev's 15-minute chain (docs/cadence.md, tests/test_cadence.py)
    assert [d.format() for d in result.diagnostics if d.code != "W701"] == []
    kinds = sorted(a.relpath.split("/")[0] for a in result.artifacts)
    assert kinds.count("state_machines") == 6  # and the generated lock janitor
    assert kinds.count("pipelines") == 9
    assert kinds.count("diagrams") == 15
    assert kinds.count("schema") == 6  # the spec language, and each machine's inbound contract
    assert kinds.count("iam") == 7


def test_asl_validator_accepts_every_generated_file():
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    if not validator.exists():
        pytest.fail("asl-validator is not installed: run `make test`, which installs it with npm")
    for name in [*MACHINES, JANITOR]:
        path = GENERATED / "state_machines" / f"{name}.asl.json"
        proc = subprocess.run([str(validator), "--json-path", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


PIPELINES = [
    "features_15m",
    "delta_builder",
    "inference",
    "prediction_feature_join",
    "machine_inventory_unload",
    "fg_b_baselines",
    "if_training",
    "backfill_historical_extractor",
    "backfill_windows",
]


def test_every_generated_pipeline_validates_against_the_aws_schema():
    import jsonschema

    validator = jsonschema.Draft7Validator(aws_pipeline_schema())
    names = sorted(p.stem for p in (GENERATED / "pipelines").glob("*.json"))
    assert names == sorted(PIPELINES)
    for name in names:
        validator.validate(json.loads((GENERATED / "pipelines" / f"{name}.json").read_text()))


def _spec_steps(step: dict) -> list[tuple[str, str]]:
    """(name, module) of each spec step a Processing step runs: a fused one's from its launcher arguments."""
    from ndr_jobs.interface.fused import FUSED_FLAG, parse_fused

    app = step["Arguments"]["AppSpecification"]
    if app["ContainerEntrypoint"][-1] == FUSED_FLAG:
        literal = [a if isinstance(a, str) else "x" for a in app["ContainerArguments"]]
        return [(p.name, p.module) for p in parse_fused(literal)]
    return [(step["Name"], app["ContainerEntrypoint"][-1])]


def test_seed_pipeline_steps_and_entrypoints():
    definitions = {n: json.loads((GENERATED / "pipelines" / f"{n}.json").read_text())["Steps"] for n in PIPELINES}
    steps = {n: [pair for s in found for pair in _spec_steps(s)] for n, found in definitions.items()}
    # the 15-minute chain is fused into one Processing job (issue 22); its steps keep their names inside it
    assert [s["Name"] for s in definitions["features_15m"]] == ["DeltaBuilderStep-FGCCorrBuilderStep"]
    assert [s for s, _ in steps["features_15m"]] == [
        "DeltaBuilderStep",
        "FGABuilderStep",
        "PairCountsBuilderStep",
        "FGCCorrBuilderStep",
    ]
    assert [s for s, _ in steps["if_training"]] == [
        "TrainingDataVerifierStep",
        "MissingFeatureCreationStep",
        "PostRemediationVerificationStep",
        "IFTrainingStep",
        "ModelPublishStep",
        "ModelAttributesStep",
        "ModelDeployStep",
    ]
    assert steps["delta_builder"] == [("DeltaBuilderStep", "ndr_jobs.scripts.run_delta_builder")]
    assert steps["inference"] == [("InferencePredictionsStep", "ndr_jobs.scripts.run_inference_predictions")]
    assert steps["prediction_feature_join"] == [
        ("PredictionFeatureJoinStep", "ndr_jobs.scripts.run_prediction_feature_join")
    ]
    assert steps["machine_inventory_unload"] == [
        ("MachineInventoryUnloadStep", "ndr_jobs.scripts.run_machine_inventory_unload")
    ]
    assert steps["fg_b_baselines"] == [("FGBaselineBuilderStep", "ndr_jobs.scripts.run_fg_b_builder")]
    assert steps["backfill_historical_extractor"] == [
        ("HistoricalWindowsExtractorStep", "ndr_jobs.scripts.run_historical_windows_extractor")
    ]
    training = json.loads((GENERATED / "pipelines" / "if_training.json").read_text())["Steps"]
    stages = [s["Arguments"]["AppSpecification"]["ContainerArguments"][1] for s in training]
    assert stages == ["verify", "remediate", "reverify", "train", "publish", "attributes", "deploy"]


@pytest.mark.parametrize("name", [*MACHINES, JANITOR])
def test_every_generated_jsonata_expression_parses(name: str):
    """The lint parses what users write (E601); the compiler's own wrapping of it is held to parse here."""
    from jsonata import Jsonata

    def exprs(value: object) -> list[str]:
        if isinstance(value, dict):
            return [e for v in value.values() for e in exprs(v)]
        if isinstance(value, list):
            return [e for v in value for e in exprs(v)]
        if isinstance(value, str) and value.startswith("{%") and value.endswith("%}"):
            return [value[2:-2]]
        return []

    found = exprs(load(name))
    assert len(found) > 10
    for src in found:
        Jsonata(src)  # raises on a syntax error


def test_every_task_names_the_iam_it_needs():
    """IAM is derived from the IR: a Task without an access would be a call its role may not make."""
    from ndr_compiler import ir
    from ndr_compiler.lint.graph import graphs
    from ndr_compiler.render.iam import state_machine_policy

    result = compile_specs([ROOT / "specs"], render=False)
    tasks = [s for m in result.machines for g in graphs(m) for s in g.states if isinstance(s, ir.Task)]
    assert len(tasks) > 20
    assert [t.name for t in tasks if not t.access] == []
    for m in result.machines:
        allowed = {(a, r) for st in state_machine_policy(m)["Statement"] for a in st["Action"] for r in st["Resource"]}
        for g in graphs(m):
            for t in (s for s in g.states if isinstance(s, ir.Task)):
                for access in t.access:
                    assert {(a, r) for a in access.actions for r in access.resources} <= allowed, (m.name, t.name)


def test_each_construct_is_one_module_of_the_registry():
    """A construct (model, expansion, entry, nesting) is defined in its own module and reaches the spec
    language, the expansion and the walk only through the registry."""
    import pkgutil

    import ndr_compiler.constructs as constructs
    from ndr_compiler.expand.state_machine import Expander
    from ndr_compiler.models.state_machine import STEP_KINDS

    modules = {m.name for m in pkgutil.iter_modules(constructs.__path__)} - {"registry"}
    assert modules == set(constructs.CONSTRUCTS)
    for name in modules:
        module = __import__(f"ndr_compiler.constructs.{name}", fromlist=["CONSTRUCT"])
        assert module.CONSTRUCT is constructs.CONSTRUCTS[name]
    assert list(STEP_KINDS) == list(constructs.CONSTRUCTS)
    assert not [a for a in dir(Expander) if a.startswith("x_")]


def test_a_lock_over_a_list_is_the_single_lock_per_element():
    """The backfill's chunk lock: an element's key is the live machine's key of the same batch, each element is
    acquired and released in its own Map iteration, and every way out of the body reads the outcome first."""
    from jsonata import Jsonata

    chunk = load("sfn_ndr_backfill_reprocessing")["States"]["RunBackfillWindows"]["ItemProcessor"]["States"]
    acquire, release = chunk["AcquireBackfillChunkLocks"], chunk["ReleaseBackfillChunkLocks"]
    assert list(acquire["ItemProcessor"]["States"]) == [
        "AcquireBackfillWindowLock", "BackfillWindowSkipped", "AcquireBackfillWindowLockFailed"]
    assert list(release["ItemProcessor"]["States"]) == [
        "BackfillWindowOutcomeChoice", "ReleaseBackfillWindowLockOnSuccess", "ReleaseBackfillWindowLockOnFailure",
        "ReleaseBackfillWindowLockOnFailureFailed"]
    assert acquire["MaxConcurrency"] == release["MaxConcurrency"] == 1
    assert acquire["Next"] == "CheckBackfillChunkAcquired" and release["Next"] == "BackfillWindowSucceeded"
    assert {c["Next"] for c in acquire["Catch"] + release["Catch"]} == {"MiniBatchLockNotReleased"}

    def key(state: dict, bindings: str) -> str:
        return Jsonata(f"({bindings}; {state['Arguments']['Key']['lock_key']['S'][2:-2]})").evaluate(None)

    batch = {"org_id": "acme", "project_name": "ndr-prod", "feature_spec_version": "v1",
             "batch_start_ts": "2026-09-14T00:15:00Z"}
    one = acquire["ItemProcessor"]["States"]["AcquireBackfillWindowLock"]
    live = load("sfn_ndr_15m_features_inference")["States"]["AcquireMiniBatchLock"]
    assert key(one, f"$states := {{'input': {{'value': {json.dumps(batch)}}}}}") == key(
        live, f"$params := {json.dumps(batch)}") == 'mini_batch#["acme","ndr-prod","v1","2026-09-14T00:15:00Z"]'
    for name in ("ReleaseBackfillWindowLockOnSuccess", "ReleaseBackfillWindowLockOnFailure"):
        assert release["ItemProcessor"]["States"][name]["Arguments"]["Key"] == one["Arguments"]["Key"]
    # the body's success and every failure path of the pipeline lead to the outcome, then the releases
    body = {n: s for n, s in chunk.items() if "Backfill" in n and "Pipeline" in n}
    exits = {c["Next"] for s in body.values() for c in s.get("Catch", [])}
    exits |= {r["Next"] for s in body.values() for r in s.get("Choices", [])}
    assert exits - set(body) == {"ReadBackfillChunkReport"}
    assert chunk["ReadBackfillChunkReport"]["Next"] == "ReleaseBackfillChunkLocks"
    assert [c["Next"] for c in chunk["ReadBackfillChunkReport"]["Catch"]] == ["ReleaseBackfillChunkLocks"]


def test_the_lock_region_of_a_list_lock_is_its_maps():
    result = compile_specs([SPECS], render=False)
    (machine,) = [m for m in result.machines if m.name == "sfn_ndr_backfill_reprocessing"]
    (region,) = machine.locks
    assert (region.acquire, region.releases, region.success_mark) == (
        "AcquireBackfillChunkLocks", ["ReadBackfillChunkReport", "ReleaseBackfillChunkLocks"],
        "ReleaseBackfillChunkLocks")
    assert region.body[0] == "StartBackfillPipeline"
