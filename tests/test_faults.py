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

from ndr_compiler.specs import load_specs
from ndr_jobs.interface import contract
from ndr_local import ScriptedPipelines, offline_aws
from ndr_local.pipeline_runner import load_definition, part_commands, resolve_parameters
from ndr_local.platform import OfflinePlatform, stand_up
from ndr_local.sfn_runtime import Faults
from tests.conftest import CONTRACTS, GENERATED, SPECS, backfill_report

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
    "ndr-backfill-windows": "backfill_windows",
}
PIPELINES = {
    "PipelineName15m": "ndr-features-15m", "PipelineNameBackfill15m": "ndr-backfill-windows",
    "PipelineNameInference": "ndr-inference", "PipelineNamePredictionJoin": "ndr-prediction-join",
    "PipelineNameMachineInventory": "ndr-machine-inventory", "PipelineNameFGB": "ndr-fg-b-baselines",
    "PipelineNameIFTraining": "ndr-if-training", "PipelineNameBackfillHistoricalExtractor": "ndr-backfill-extractor",
}
#: the pipelines each machine starts (its own run_pipeline states)
STARTS = {
    FM: ["ndr-features-15m", "ndr-inference"], PUB: ["ndr-prediction-join"],
    MONTHLY: ["ndr-machine-inventory", "ndr-fg-b-baselines"], TRAINING: ["ndr-if-training"],
    BACKFILL: ["ndr-backfill-extractor", "ndr-backfill-windows"],
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
    """Scripted pipelines whose backfill extractor writes a manifest of two windows, and whose backfill job writes
    its report, as the jobs do (the report only when the job's script succeeds)."""

    platform: OfflinePlatform | None = None
    #: the manifest also lists a window that is not one (it fails alone, as an item of its own)
    stray: bool = False

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        super().start(pipeline_name, execution_arn, parameters)
        succeeds = self._executions[execution_arn][1][-1] == "Succeeded"
        if pipeline_name == "ndr-backfill-windows" and self.platform is not None and succeeds:
            backfill_report(self.platform, parameters)
        if pipeline_name == "ndr-backfill-extractor" and self.platform is not None:
            start = contract.parse_timestamp(parameters["StartTsIso"])
            windows = []
            for i in range(2):
                moment = start + i * contract.WINDOW
                folder = batch_folder(moment)
                windows.append({"mini_batch_id": contract.batch_folder(folder).mini_batch_id,
                                "batch_start_ts": contract.iso(moment),
                                "batch_end_ts": contract.iso(moment + contract.WINDOW), "batch_folder": folder})
            self.platform.put_json(parameters["ManifestUri"], {"windows": windows + ["not a window"] * self.stray})


def batch_folder(moment: datetime) -> str:
    return f"s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/{moment:%Y/%m/%d/%H%M}/"


@dataclass
class Case:
    machine: str
    event: Any
    window: datetime
    driver: str = "happy"


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


def drivers(machine: str) -> list[str]:
    """Ways to run a machine so that, between them, every one of its states is entered: the happy path, an
    invalid event, a duplicate, another event type, a manifest with a stray window, each pipeline failing, each Task
    failing."""
    tasks = [name for name, kind in states_of(machine) if kind == "Task"]
    out = ["happy", "invalid", "duplicate", *(["other"] if machine == FM else []),
           *(["stray"] if machine == BACKFILL else [])]
    return [*out, *(f"failed:{p}" for p in STARTS[machine]), *(f"fail:{t}" for t in tasks)]


def prepare(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, driver: str) -> Case:
    """A new case of the machine, set up to run the driver's way (faults apply to the next faulty run). A driver
    may combine ways with ``+``."""
    platform, pipelines, faults = world
    case = new_case(machine)
    case.driver = driver
    body = case.event.get("detail", case.event)
    for way in driver.split("+"):
        if way == "invalid":
            body["project_name" if machine != FM else "batch_folder"] = "not a valid value"
        elif way == "other":
            body["event_type"] = "heartbeat"
        elif way == "stray":
            pipelines.stray = True
        elif way == "duplicate":
            platform.run(machine, case.event, timeout_s=300)
            case_events.setdefault(contract.iso(case.window), []).extend(platform.events())
        elif way.startswith("failed:"):
            pipelines.script(way.split(":", 1)[1], ["Failed"])
        elif way.startswith("fail:"):
            faults.fail = faults.fail | {way.split(":", 1)[1]}
    return case


_coverage: dict[str, dict[str, str]] = {}


def coverage(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str) -> dict[str, str]:
    """State -> the first driver whose run enters it (each driver run once, without a stop)."""
    if machine not in _coverage:
        found: dict[str, str] = {}
        tasks = {name for name, kind in states_of(machine) if kind == "Task"}
        for driver in drivers(machine):
            _drive(world, machine, driver, found)
        # a Task entered only on a failure path, failing there: what its own failure leads to
        for task in sorted(tasks & set(found)):
            if found[task] != "happy" and f"fail:{task}" not in found[task].split("+"):
                _drive(world, machine, f"{found[task]}+fail:{task}", found)
        _coverage[machine] = found
    return _coverage[machine]


def _drive(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, driver: str, found: dict[str, str]) -> None:
    case = prepare(world, machine, driver)
    for state in run(world, case).path:
        found.setdefault(state, driver)
    reset(world)


def reset(world: tuple[OfflinePlatform, Pipelines, Faults]) -> None:
    platform, pipelines, faults = world
    faults.fail, faults.stop_at, faults.time_out_at = frozenset(), None, None
    faults.fired.clear()
    pipelines.stray = False
    for name in NAMES:
        pipelines.script(name, None)
    platform.settle()
    platform.events()
    pipelines.starts.clear()


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
        for _, argv in part_commands(step, values):  # a fused step's jobs, each with its own command line
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
    assert platform.locks("RUNNING") == [], fault
    assert pipelines.left_running() == [], fault
    for name, parameters in pipelines.starts:
        accepted_by_every_step(name, parameters)
    # the same event again, nothing injected: the work completes
    reset(world)
    rerun = platform.run(case.machine, case.event, timeout_s=300)
    ways = case.driver.split("+")
    if "invalid" in ways:
        assert rerun.error == "NDR.InvalidEvent", (fault, rerun.error)
    elif "other" in ways:
        assert rerun.status == "SUCCEEDED" and rerun.output["ignored"], fault
    else:
        completed(platform, case, fault, rerun)
    reset(world)


def completed(platform: OfflinePlatform, case: Case, fault: str, rerun: Any) -> None:
    events = platform.events()
    start = contract.iso(case.window)
    if case.machine in (FM, PUB):
        key = ("acme", "ndr-prod", "v1", start)
        batch = platform.lock(contract.lock_key("mini_batch", *key))
        if case.machine == FM:  # ran now, or done before (the lock says so): either way, complete
            assert rerun.status == "SUCCEEDED" or rerun.error == "NDR.DuplicateMiniBatch", (fault, rerun.cause)
            assert batch["lock_status"] == "SUCCEEDED", fault
        else:
            assert rerun.status == "SUCCEEDED", (fault, rerun.error, rerun.cause)
        assert platform.lock(contract.lock_key("publication", *key))["lock_status"] == "SUCCEEDED", fault
        published = [e for e in events + case_events.pop(start, []) if e["detail-type"] == "NDR Predictions Published"]
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


#: events a faulty run put on the bus, by window start (reset() drains the bus before the rerun)
case_events: dict[str, list[dict[str, Any]]] = {}


def run(world: tuple[OfflinePlatform, Pipelines, Faults], case: Case) -> Any:
    platform, _, _ = world
    result = platform.run(case.machine, case.event, name=f"fault-{next(_case)}", timeout_s=600)
    case_events.setdefault(contract.iso(case.window), []).extend(platform.events())
    return result


TASKS = [(m, name) for m in MACHINES for name, kind in states_of(m) if kind == "Task"]
STATES = [(m, name) for m in MACHINES for name, _ in states_of(m)]
OUTCOMES = [(m, p, script) for m in MACHINES for p in STARTS[m]
            for script in (["Failed"], ["Executing", "Stopped"], ["Executing"])]


@pytest.mark.parametrize(("machine", "task"), TASKS, ids=[f"{m}:{t}" for m, t in TASKS])
def test_every_task_failing(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, task: str):
    driver = coverage(world, machine)[task]
    case = prepare(world, machine, driver)
    world[2].fail = world[2].fail | {task}
    result = run(world, case)
    assert ("fail", task) in world[2].fired, (driver, result.path)
    check(world, case, f"fail:{task}", result)


@pytest.mark.parametrize(("machine", "pipeline", "script"), OUTCOMES,
                         ids=[f"{m}:{p}:{'-'.join(s)}" for m, p, s in OUTCOMES])
def test_every_pipeline_outcome(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, pipeline: str,
                                script: list[str]):
    """Failed or Stopped: the machine fails, named (a backfill window fails alone). Never ends: the machine times
    out while it polls (giving up after the derived budget, and stopping the pipeline, is test_scenarios'
    poll-exhaustion test)."""
    case = prepare(world, machine, "happy")
    world[1].script(pipeline, script)
    if script == ["Executing"]:
        world[2].time_out_at = poll_waits(machine)[pipeline]
    result = run(world, case)
    expected = "TIMED_OUT" if script == ["Executing"] else "FAILED"
    if (machine, pipeline) == (BACKFILL, "ndr-backfill-windows") and expected == "FAILED":
        expected = "SUCCEEDED"  # each chunk's windows fail alone; the reconciliation says PARTIAL
    assert result.status == expected, (pipeline, script, result.status)
    check(world, case, f"{pipeline}:{script[-1]}", result)


@pytest.mark.parametrize("how", ["stop", "time_out"])
@pytest.mark.parametrize(("machine", "state"), STATES, ids=[f"{m}:{s}" for m, s in STATES])
def test_every_state_stopped_or_timed_out(world: tuple[OfflinePlatform, Pipelines, Faults], machine: str, state: str,
                                          how: str):
    driver = coverage(world, machine)[state]
    case = prepare(world, machine, driver)
    faults = world[2]
    if how == "stop":
        faults.stop_at = state
    else:
        faults.time_out_at = state
    result = run(world, case)
    assert (how.replace("time_out", "timeout"), state) in faults.fired, (driver, result.path)
    check(world, case, f"{how}:{state}", result)


def test_the_drivers_enter_every_state_of_every_machine(world: tuple[OfflinePlatform, Pipelines, Faults]):
    for machine in MACHINES:
        assert {name for name, _ in states_of(machine)} <= set(coverage(world, machine)), machine
    assert len(TASKS) >= 40 and len(STATES) >= 130


def test_a_copy_of_the_event_is_used_for_each_case():
    a, b = new_case(FM), new_case(FM)
    assert a.event["detail"]["batch_folder"] != b.event["detail"]["batch_folder"]
    assert copy.deepcopy(a.event) == a.event
