"""Fault injection over every generated state machine: not hand-picked cases, but every Task failing in turn,
every pipeline ending Failed, Stopped or never, and the execution stopped or timed out at every state.

After each faulty run the janitor gets the status change (as its EventBridge rule would deliver it), then:

* the run ended SUCCEEDED or FAILED with a named ``NDR.*`` error (an injected fault that escaped every Catch
  would end ``Injected.*``), and every janitor run SUCCEEDED;
* no lock is RUNNING and no pipeline the run started is left running;
* every pipeline was started with values every step's job accepts (its own argument parser);
* a rerun of the same event completes the work, and the publication event of a batch went out once (by its
  ``ndr_event_id``, exactly once except when the execution stopped between the emit and its success mark,
  the one window at-least-once delivery leaves; see docs/reliability.md).

Each case uses its own batch window, so one platform per machine serves every case.
"""

from __future__ import annotations

import copy
import functools
import importlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ndr_compiler.local import ScriptedPipelines, offline_aws
from ndr_compiler.local.pipeline_runner import load_definition, resolve_parameters, step_command
from ndr_compiler.local.platform import OfflinePlatform, stand_up
from ndr_compiler.local.sfn_runtime import Faults
from ndr_compiler.specs import load_specs
from ndr_jobs import contract
from tests.conftest import CONTRACTS, GENERATED, SPECS

PROJECT = next(iter(load_specs([SPECS])[0].projects().values())).model
FM, PUB, MONTHLY, TRAINING, BACKFILL = (
    "sfn_ndr_15m_features_inference", "sfn_ndr_prediction_publication", "sfn_ndr_monthly_fg_b_baselines",
    "sfn_ndr_training_orchestrator", "sfn_ndr_backfill_reprocessing",
)
MACHINES = [FM, PUB, MONTHLY, TRAINING, BACKFILL]
#: local SageMaker pipeline name -> pipeline spec, and placeholder -> local name
NAMES = {
    "ndr-features-15m": "features_15m", "ndr-inference": "inference", "ndr-prediction-join": "prediction_feature_join",
    "ndr-machine-inventory": "machine_inventory_unload", "ndr-fg-b-baselines": "fg_b_baselines",
    "ndr-if-training": "if_training", "ndr-backfill-extractor": "backfill_historical_extractor",
}
PIPELINES = {
    "PipelineName15m": "ndr-features-15m", "PipelineNameBackfill15m": "ndr-features-15m",
    "PipelineNameInference": "ndr-inference", "PipelineNamePredictionJoin": "ndr-prediction-join",
    "PipelineNameMachineInventory": "ndr-machine-inventory", "PipelineNameFGB": "ndr-fg-b-baselines",
    "PipelineNameIFTraining": "ndr-if-training", "PipelineNameBackfillHistoricalExtractor": "ndr-backfill-extractor",
}
#: the pipelines each machine starts (its own run_pipeline states)
STARTS = {
    FM: ["ndr-features-15m", "ndr-inference"], PUB: ["ndr-prediction-join"],
    MONTHLY: ["ndr-machine-inventory", "ndr-fg-b-baselines"], TRAINING: ["ndr-if-training"],
    BACKFILL: ["ndr-backfill-extractor", "ndr-features-15m"],
}
#: where a stop between an effect and its success mark can repeat the effect (at-least-once, same event id)
EFFECT_WINDOWS = {(PUB, "MarkPublicationSucceeded")}
EPOCH = datetime(2027, 1, 1, tzinfo=UTC)
_case = itertools.count()


def walk(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        if state["Type"] == "Map":
            yield from walk(state["ItemProcessor"]["States"])


@functools.cache
def asl_states(machine: str) -> dict[str, dict[str, Any]]:
    asl = json.loads((GENERATED / "state_machines" / f"{machine}.asl.json").read_text())
    return dict(walk(asl["States"]))


def states_of(machine: str) -> list[tuple[str, str]]:
    return [(name, state["Type"]) for name, state in asl_states(machine).items()]


def poll_waits(machine: str) -> dict[str, str]:
    """The local pipeline name -> the Wait state of the loop that polls it (start -> record -> describe ->
    choice -> default)."""
    states = asl_states(machine)
    out = {}
    for state in states.values():
        if state.get("Resource", "").endswith("startPipelineExecution"):
            describe = states[states[state["Next"]]["Next"]]
            wait = states[describe["Next"]]["Default"]
            out[PIPELINES[state["Arguments"]["PipelineName"].strip("${}")]] = wait
    return out


class Pipelines(ScriptedPipelines):
    """Scripted pipelines whose backfill extractor writes a manifest of two windows, as the job does."""

    platform: OfflinePlatform | None = None

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        super().start(pipeline_name, execution_arn, parameters)
        if pipeline_name == "ndr-backfill-extractor" and self.platform is not None:
            start = contract.parse_timestamp(parameters["StartTsIso"])
            windows = []
            for i in range(2):
                moment = start + i * contract.WINDOW
                folder = batch_folder(moment)
                windows.append({"mini_batch_id": contract.batch_folder(folder).mini_batch_id,
                                "batch_start_ts": contract.iso(moment),
                                "batch_end_ts": contract.iso(moment + contract.WINDOW), "batch_folder": folder})
            self.platform.put_json(parameters["ManifestUri"], {"windows": windows})


def batch_folder(moment: datetime) -> str:
    return f"s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/{moment:%Y/%m/%d/%H%M}/"


@dataclass
class Case:
    machine: str
    event: Any
    window: datetime


def new_case(machine: str) -> Case:
    """The machine's contract example, on a window of its own."""
    window = EPOCH + timedelta(days=next(_case))
    if machine == FM:
        event = json.loads((CONTRACTS / "15m_batch_completed.eventbridge.json").read_text())
        event["detail"]["batch_folder"] = batch_folder(window)
        event["detail"]["batch_end_ts"] = contract.iso(window + contract.WINDOW)
    elif machine == PUB:
        event = {"org_id": "acme", "project_name": "ndr-prod", "feature_spec_version": "v1",
                 "mini_batch_id": contract.mini_batch_id("acme", "ndr-prod", "v1", contract.iso(window)),
                 "batch_start_ts": contract.iso(window), "batch_end_ts": contract.iso(window + contract.WINDOW)}
    elif machine == MONTHLY:
        event = json.loads((CONTRACTS / "monthly_baselines.scheduler.json").read_text())
    elif machine == TRAINING:
        event = json.loads((CONTRACTS / "training.request.json").read_text())
    else:
        event = json.loads((CONTRACTS / "backfill.request.json").read_text())
        event["start_ts"] = contract.iso(window)
        event["end_ts"] = contract.iso(window + 2 * contract.WINDOW)
    return Case(machine, event, window)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[OfflinePlatform, Pipelines, Faults]]:
    pipelines, faults = Pipelines(), Faults(prefix="fault-")
    with offline_aws(pipelines, faults=faults):
        platform = stand_up(GENERATED, PROJECT, PIPELINES)
        pipelines.platform = platform
        yield platform, pipelines, faults


def accepted_by_every_step(pipeline: str, parameters: dict[str, str]) -> None:
    """Every step of the pipeline parses its command line with these parameters (exit 2 otherwise)."""
    definition = load_definition(GENERATED, NAMES[pipeline])
    values = resolve_parameters(definition, parameters)
    for step in definition["Steps"]:
        argv = step_command(step, values)
        script = importlib.import_module(argv[2])
        parse = getattr(script, "parse_runtime", None) or script.build_parser().parse_args
        parse(argv[3:])  # SystemExit(2) when a value breaks the contract


def check(world: tuple[OfflinePlatform, Pipelines, Faults], case: Case, fault: str, result: Any) -> None:
    platform, pipelines, faults = world
    assert result.status in ("SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"), result.status
    if result.status == "FAILED":
        assert (result.error or "").startswith("NDR."), (fault, result.error, result.cause)
    janitors = platform.settle()
    assert all(j.status == "SUCCEEDED" for j in janitors), [(j.error, j.cause) for j in janitors]
    running = [lk["lock_key"] for lk in platform.locks() if lk.get("lock_status") == "RUNNING"]
    assert running == [], (fault, running)
    assert pipelines.left_running() == [], fault
    for name, parameters in pipelines.starts:
        accepted_by_every_step(name, parameters)

    # the same event again, nothing injected: the work completes
    pipelines.script("ndr-features-15m", None)
    for name in STARTS[case.machine]:
        pipelines.script(name, None)
    faults.fail, faults.stop_at, faults.time_out_at = frozenset(), None, None
    rerun = platform.run(case.machine, case.event, timeout_s=300)
    completed(platform, case, fault, result, rerun)
    platform.settle()
    pipelines.starts.clear()


def completed(platform: OfflinePlatform, case: Case, fault: str, first: Any, rerun: Any) -> None:
    events = platform.events()
    start = contract.iso(case.window)
    if case.machine in (FM, PUB):
        key = ("acme", "ndr-prod", "v1", start)
        if case.machine == FM:
            assert rerun.status == "SUCCEEDED" or (first.status == "SUCCEEDED"
                                                   and rerun.error == "NDR.DuplicateMiniBatch"), (fault, rerun.cause)
            assert platform.lock(contract.lock_key("mini_batch", *key))["lock_status"] == "SUCCEEDED", fault
        else:
            assert rerun.status == "SUCCEEDED", (fault, rerun.error, rerun.cause)
        assert platform.lock(contract.lock_key("publication", *key))["lock_status"] == "SUCCEEDED", fault
        published = [e for e in events if e["detail-type"] == "NDR Predictions Published"]
        assert len({e["detail"]["ndr_event_id"] for e in published}) == 1, (fault, published)
        if (case.machine, fault.split(":", 1)[-1]) not in EFFECT_WINDOWS:
            assert len(published) == 1, (fault, len(published))
    elif case.machine == BACKFILL:
        assert rerun.status == "SUCCEEDED", (fault, rerun.error, rerun.cause)
        for i in range(2):
            window = contract.iso(case.window + i * contract.WINDOW)
            lock = platform.lock(contract.lock_key("mini_batch", "acme", "ndr-prod", "v1", window))
            assert lock["lock_status"] == "SUCCEEDED", (fault, window)
        (reconciled,) = [e for e in events if e["detail-type"] == "NDR Backfill Reconciled"][-1:]
        assert reconciled["detail"]["status"] == "COMPLETE", fault
    else:
        assert rerun.status == "SUCCEEDED", (fault, rerun.error, rerun.cause)


def run(world: tuple[OfflinePlatform, Pipelines, Faults], case: Case, fault: str) -> Any:
    platform, _, _ = world
    return platform.run(case.machine, case.event, name=f"fault-{next(_case)}", timeout_s=600)


TASKS = [(m, name) for m in MACHINES for name, kind in states_of(m) if kind == "Task"]
STATES = [(m, name) for m in MACHINES for name, _ in states_of(m)]
OUTCOMES = [(m, p, script) for m in MACHINES for p in STARTS[m]
            for script in (["Failed"], ["Executing", "Stopped"], ["Executing"])]



@pytest.mark.parametrize(("machine", "task"), TASKS, ids=[f"{m}:{t}" for m, t in TASKS])
def test_every_task_failing(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, task: str):
    case = new_case(machine)
    world[2].fail = frozenset({task})
    check(world, case, f"fail:{task}", run(world, case, task))


@pytest.mark.parametrize(("machine", "pipeline", "script"), OUTCOMES,
                         ids=[f"{m}:{p}:{'-'.join(s)}" for m, p, s in OUTCOMES])
def test_every_pipeline_outcome(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, pipeline: str,
                                script: list[str]):
    """Failed or Stopped: the machine fails, named. Never ends: the machine times out while it polls (giving up
    after the derived budget, and stopping the pipeline, is test_scenarios' poll-exhaustion test)."""
    case = new_case(machine)
    world[1].script(pipeline, script)
    if script == ["Executing"]:
        world[2].time_out_at = poll_waits(machine)[pipeline]
    result = run(world, case, pipeline)
    assert result.status == ("TIMED_OUT" if script == ["Executing"] else "FAILED"), (pipeline, script, result.status)
    check(world, case, f"{pipeline}:{script[-1]}", result)


@pytest.mark.parametrize("how", ["stop", "time_out"])
@pytest.mark.parametrize(("machine", "state"), STATES, ids=[f"{m}:{s}" for m, s in STATES])
def test_every_state_stopped_or_timed_out(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, state: str,
                                          how: str):
    case = new_case(machine)
    faults = world[2]
    if how == "stop":
        faults.stop_at = state
    else:
        faults.time_out_at = state
    check(world, case, f"{how}:{state}", run(world, case, state))


def test_the_suite_covers_every_state_of_every_machine():
    assert {m for m, _ in STATES} == set(MACHINES)
    assert len(TASKS) >= 40 and len(STATES) >= 150


def test_a_copy_of_the_event_is_used_for_each_case():
    a, b = new_case(FM), new_case(FM)
    assert a.event["detail"]["batch_folder"] != b.event["detail"]["batch_folder"]
    assert copy.deepcopy(a.event) == a.event
