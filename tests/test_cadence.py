"""The cadence latency model (docs/cadence.md): its arithmetic on a hand-built IR, schedule periods, what plan
prints for dev, and the lint's W701 (E701 in production)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ndr_compiler import cadence, ir
from ndr_compiler.cadence import (
    Inputs,
    Measured,
    RuntimesFileError,
    critical_path,
    load_runtimes,
    never_fires,
    processing_jobs,
    render_plan,
    schedule_period_seconds,
    trigger_paths,
)
from ndr_compiler.cli import main
from ndr_compiler.compile import compile_specs
from ndr_compiler.models.environment import Environment
from tests.conftest import SPECS

SPAN = ir.Span("hand.yaml")
SPARK = ir.Processor("img", "ml.m5.xlarge", 1, 30, 1800, "role", spark=True)
PYTHON = ir.Processor("img", "ml.m5.xlarge", 1, 30, 3600, "role")


def step(name: str, module: str, processor: ir.Processor, *depends_on: str) -> ir.PipelineStep:
    return ir.PipelineStep(name, SPAN, module, [], processor, depends_on=list(depends_on))


def pipeline(name: str, placeholder: str, *steps: ir.PipelineStep) -> ir.PipelineIR:
    return ir.PipelineIR(name, "hand.yaml", SPAN, [placeholder], [], list(steps))


def poll_states(prefix: str, nxt: str, fail: str) -> list[ir.State]:
    """A run_pipeline's shape: start, describe, a choice looping through wait and increment."""
    return [
        ir.Task(f"Start{prefix}", SPAN, next=f"Describe{prefix}"),
        ir.Task(f"Describe{prefix}", SPAN, next=f"Choice{prefix}"),
        ir.Choice(f"Choice{prefix}", SPAN, rules=[ir.ChoiceRule("ok", nxt), ir.ChoiceRule("ko", fail)],
                  default=f"Wait{prefix}"),
        ir.Wait(f"Wait{prefix}", SPAN, seconds=5, next=f"Inc{prefix}"),
        ir.Pass(f"Inc{prefix}", SPAN, next=f"Describe{prefix}"),
    ]


def poll(prefix: str, placeholder: str, every: int) -> ir.PollLoop:
    return ir.PollLoop(f"Start{prefix}", placeholder, every, 100, SPAN)


@pytest.fixture
def hand() -> tuple[dict[str, ir.StateMachineIR], dict[str, ir.PipelineIR]]:
    """parent: pipeline P (A -> B -> D, A -> C), the child machine (pipeline R), then a map over pipeline Q."""
    p = pipeline("p", "PipeP", step("A", "m.a", SPARK), step("B", "m.b", SPARK, "A"), step("C", "m.c", PYTHON, "A"),
                 step("D", "m.d", SPARK, "B"))
    q = pipeline("q", "PipeQ", step("E", "m.e", SPARK))
    r = pipeline("r", "PipeR", step("F", "m.unmeasured", PYTHON))
    item = ir.Graph("StartQ", [*poll_states("Q", "ItemDone", "ItemDone"), ir.Pass("ItemDone", SPAN, end=True)])
    parent = ir.StateMachineIR("parent", "hand.yaml", SPAN, ir.Graph("StartP", [
        *poll_states("P", "StartChild", "Failed"),
        ir.Task("StartChild", SPAN, next="Items", catch=[ir.Catcher(["States.ALL"], "Failed")]),
        ir.Map("Items", SPAN, processor=item, max_concurrency=1, next="Done"),
        ir.Succeed("Done", SPAN), ir.Fail("Failed", SPAN),
    ]), polls=[poll("P", "PipeP", 30), poll("Q", "PipeQ", 10)],
        child_state_machines=[ir.PlaceholderRef("child", "StartChild", SPAN)])
    child = ir.StateMachineIR("child", "hand.yaml", SPAN, ir.Graph("StartR", [
        *poll_states("R", "Ok", "Ok"), ir.Succeed("Ok", SPAN)]), polls=[poll("R", "PipeR", 15)])
    return {"parent": parent, "child": child}, {"p": p, "q": q, "r": r}


RUNTIMES = {"m.a": 10.0, "m.b": 20.0, "m.c": 100.0, "m.d": 5.0, "m.e": 7.0}


def test_the_critical_path_adds_startups_runtimes_and_polls_along_the_longest_chain(hand):
    machines, pipelines = hand
    path = critical_path("parent", machines, pipelines, Inputs(60, RUNTIMES))
    # P: A -> C (70 + 160) beats A -> B -> D (70 + 80 + 65); poll 30. child: F 60 + unmeasured + poll 15.
    # map (once per item): E 67 + poll 10.
    assert [(leg.at, leg.what, leg.seconds) for leg in path.legs] == [
        ("StartP", "p: A", 70.0), ("StartP", "p: C", 160.0), ("StartP", "poll every 30 s", 30.0),
        ("StartChild > StartR", "r: F", 60.0), ("StartChild > StartR", "poll every 15 s", 15.0),
        ("Items > StartQ", "q: E", 67.0), ("Items > StartQ", "poll every 10 s", 10.0),
    ]
    assert path.total == 412.0
    assert (path.startup, path.runtime, path.polls, path.jobs) == (240.0, 117.0, 55.0, 4)
    assert path.unmeasured == ("m.unmeasured",) and path.maps == ("Items",) and not path.exact
    assert [leg.per_item for leg in path.legs][-2:] == ["Items", "Items"]


def test_fusing_consecutive_steps_on_one_processor_counts_one_startup(hand):
    machines, pipelines = hand
    p = pipelines["p"]
    assert [[s.name for s in j.steps] for j in processing_jobs(p)] == [["A"], ["B"], ["C"], ["D"]]
    # A has two dependants: B stays apart; D, B's only dependant on the same processor, joins B
    assert [[s.name for s in j.steps] for j in processing_jobs(p, fuse=True)] == [["A"], ["B", "D"], ["C"]]
    fused = critical_path("parent", machines, pipelines, Inputs(60, {**RUNTIMES, "m.b": 200.0}, fuse=True))
    assert [leg.what for leg in fused.legs[:2]] == ["p: A", "p: B + D"]  # 60 + 205 now beats C's 160
    assert fused.legs[1].seconds == 265.0 and fused.legs[1].entrypoints == ("m.b", "m.d")


def test_the_real_15_minute_chain_is_one_job_whose_steps_keep_their_runtimes():
    result = compile_specs([SPECS], render=False)
    (job,) = processing_jobs(result.pipelines["features_15m"])  # spec.fuse: one Processing job
    assert [n for s in job.steps for n in s.spec_steps] == [
        "DeltaBuilderStep", "FGABuilderStep", "PairCountsBuilderStep", "FGCCorrBuilderStep"]
    assert len(processing_jobs(result.pipelines["features_15m"], fuse=True)) == 1
    inputs = cadence.inputs_of(dev().spec, load_runtimes())
    (leg,) = cadence.pipeline_legs(result.pipelines["features_15m"], inputs, "Start15mFeaturesPipeline")
    measured = json.loads(cadence.RUNTIMES_FILE.read_text())["seconds"]
    assert leg.runtime == pytest.approx(sum(measured[e] for e in leg.entrypoints)) and len(leg.entrypoints) == 4


@pytest.mark.parametrize(("expression", "seconds"), [
    ("rate(1 minute)", 60), ("rate(15 minutes)", 900), ("rate(2 hours)", 7200), ("rate(1 day)", 86400),
    ("cron(0/15 * * * ? *)", 900), ("cron(*/5 9-17 ? * MON-FRI *)", 300), ("cron(0 8,20 ? * MON-FRI *)", 43200),
    ("cron(0 22 ? * FRI-MON *)", 86400),  # a wrapping range
    ("cron(0 2 1 * ? *)", 28 * 86400),  # monthly: February is the shortest gap
    ("cron(0 4 2 * ? *)", 28 * 86400), ("cron(0 0 L * ? *)", 28 * 86400),  # Jan 31 -> Feb 28
    ("cron(0 12 ? * 6#3 *)", 28 * 86400),  # the third Friday
    ("cron(0 12 ? * 2L *)", 28 * 86400),  # the last Monday
    ("cron(0 9 ? * 2 *)", 7 * 86400), ("cron(30 6 1 1,7 ? *)", 181 * 86400),  # Jan 1 -> Jul 1 (not leap)
    ("cron(0 0 1 1 ? 2027)", None),  # once
])
def test_a_schedule_period_is_its_shortest_gap(expression: str, seconds: int | None):
    assert schedule_period_seconds(expression) == seconds


@pytest.mark.parametrize(("expression", "fires"), [
    ("cron(0 4 30 2 ? *)", False), ("cron(0 0 31 4,6,9,11 ? *)", False), ("cron(0 0 29 2 ? 2027)", False),
    ("cron(0 0 1 1 ? 2020-2025)", False),  # only years already past
    ("cron(0 0 29 2 ? 2028)", True), ("cron(0 0 31 1-3 ? *)", True), ("cron(0 0 ? * 6#5 *)", True),
    ("cron(0 0 1 1 ? 2040)", True),  # after the calendar searched: not known to be wrong
    ("rate(5 minutes)", True),
])
def test_a_schedule_that_never_fires_is_named(expression: str, fires: bool):
    assert (never_fires(expression) is None) == fires


def test_nearest_weekday_days_of_month():
    # 15W: the 15th, or the Friday before / Monday after a weekend; the gap is never shorter than 26 days
    period = schedule_period_seconds("cron(0 0 15W * ? *)")
    assert period is not None and 26 * 86400 <= period <= 28 * 86400
    assert schedule_period_seconds("cron(0 0 LW * ? *)") is not None


def dev() -> Environment:
    return Environment.model_validate(yaml.safe_load((SPECS / "environments" / "dev.yaml").read_text()))


def test_the_environment_overrides_startup_factor_and_runtimes():
    env = dev()
    spec = env.spec.model_copy(update={"cadence": env.spec.cadence.model_copy(update={
        "startup_seconds": 100, "runtime_factor": 2.0,
        "runtimes": {"ndr_jobs.scripts.run_inference_predictions": 30.0}})})
    measured = Measured({"ndr_jobs.scripts.run_delta_builder": 10.0}, "test")
    inputs = cadence.inputs_of(spec, measured)
    assert inputs.startup_seconds == 100
    assert dict(inputs.runtimes) == {"ndr_jobs.scripts.run_delta_builder": 20.0,
                                     "ndr_jobs.scripts.run_inference_predictions": 30.0}


def test_dev_plan_numbers_for_the_15_minute_chain():
    result = compile_specs([SPECS], render=False)
    machines = {m.name: m for m in result.machines if not m.generated}
    paths = {t.name: t for t in trigger_paths(dev().spec, machines, result.pipelines, load_runtimes())}
    t = paths["batch-completed"]
    measured = json.loads(cadence.RUNTIMES_FILE.read_text())["seconds"]
    chain = sum(measured[f"ndr_jobs.scripts.run_{s}"] for s in
                ("delta_builder", "fg_a_builder", "pair_counts_builder", "fg_c_builder", "inference_predictions",
                 "prediction_feature_join"))
    pipelines = [result.pipelines[n] for n in ("features_15m", "inference", "prediction_feature_join")]
    jobs = sum(len(processing_jobs(p)) for p in pipelines)  # 6 while each step is its own job
    assert t.period_seconds == 900
    assert t.path.jobs == jobs and t.path.startup == jobs * 180 and t.path.polls == 3 * 20
    assert t.path.total == pytest.approx(jobs * 180 + chain + 60)
    assert t.path.unmeasured == () and t.path.exact  # every job of the 15-minute chain is measured (make bench)
    assert t.fused.jobs == 3 and t.fused.total == pytest.approx(3 * 180 + chain + 60) and t.fused.total < 900
    assert paths["backfill-requested"].period_seconds is None and paths["backfill-requested"].overrun is None
    assert paths["backfill-requested"].path.maps == ("RunBackfillWindows",)
    assert paths["monthly-baselines"].period_seconds == 28 * 86400
    assert paths["monthly-baselines"].overrun is None


def test_the_runtimes_file_is_checked(tmp_path: Path):
    assert load_runtimes().seconds["ndr_jobs.scripts.run_delta_builder"] > 0
    bad = tmp_path / "runtimes.json"
    bad.write_text('{"seconds": {"m.a": -1}}')
    with pytest.raises(RuntimesFileError, match="non-negative"):
        load_runtimes(bad)
    with pytest.raises(RuntimesFileError, match="cannot read"):
        load_runtimes(tmp_path / "missing.json")





def five_minutes(workdir: Path, production: bool = False) -> None:
    """dev with a 5-minute batch: over the path whether or not the pipelines' steps are fused."""
    env = workdir / "specs" / "environments" / "dev.yaml"
    text = env.read_text().replace("period_minutes: 15", "period_minutes: 5")
    env.write_text(text.replace("  project: ndr\n", "  production: true\n  project: ndr\n") if production else text)


def test_lint_warns_in_dev_and_fails_in_production(workdir: Path):
    five_minutes(workdir)
    result = CliRunner().invoke(main, ["lint", "specs/"])
    assert result.exit_code == 0, result.output
    assert ("specs/environments/dev.yaml:27:7 W701 trigger 'batch-completed' (sfn_ndr_15m_features_inference): "
            "its critical path exceeds its period of 300 s by ") in result.output
    assert "no errors, 1 warning(s)" in result.output
    five_minutes(workdir, production=True)
    result = CliRunner().invoke(main, ["lint", "specs/"])
    assert result.exit_code == 1
    assert "specs/environments/dev.yaml:28:7 E701 " in result.output and " W701 " not in result.output
    assert "in a production environment" in result.output
    assert CliRunner().invoke(main, ["specs/", "--check"]).exit_code == 1  # nor does it compile


def test_a_trigger_within_its_period_is_not_reported(workdir: Path):
    env = workdir / "specs" / "environments" / "dev.yaml"
    env.write_text(env.read_text().replace("period_minutes: 15", "period_minutes: 30"))
    result = CliRunner().invoke(main, ["lint", "specs/"])
    assert result.exit_code == 0 and "W701" not in result.output, result.output


def test_plan_prints_the_model_per_trigger(workdir: Path, moto_server: str):
    five_minutes(workdir)
    result = CliRunner().invoke(main, ["plan", "--env", "dev"])
    out = result.stdout
    assert "cadence of dev (docs/cadence.md): start-up 180 s per Processing job" in out
    table = out[out.index("trigger events/batch-completed"):out.index("trigger schedules/monthly-baselines")]
    assert "period 300 s (period_minutes: 5)" in table
    assert "| Start15mFeaturesPipeline | features_15m: DeltaBuilderStep" in table
    assert "| StartPredictionPublicationWorkflow > StartPredictionJoinPipeline | poll every 20 s | | | 20.0 |" in table
    assert re.search(r"critical path [\d,.]+ s = \d Processing job\(s\): start-up [\d,.]+ s, runtime "
                     r"[\d,.]+ s; polls 60.0 s; OVERRUN by [\d,.]+ s", table)
    assert "trigger events/backfill-requested -> sfn_ndr_backfill_reprocessing: period none" in out
    assert "each of RunBackfillWindows counted once" in out
    assert out.index("cadence of dev") < out.index("plan:")  # printed before the plan itself, which goes on


def test_the_printed_model_is_deterministic():
    result = compile_specs([SPECS], render=False)
    machines = {m.name: m for m in result.machines if not m.generated}
    texts = {render_plan("dev", dev().spec, load_runtimes(),
                         list(trigger_paths(dev().spec, machines, result.pipelines, load_runtimes())))
             for _ in range(2)}
    assert len(texts) == 1


@pytest.mark.parametrize("chunk", [96, 3])
def test_the_backfill_path_costs_one_chunk_job_per_item(chunk: int):
    """Each item of the backfill's Map is a chunk: one Processing job running the chain over its windows."""
    result = compile_specs([SPECS], render=False)
    machines = {m.name: m for m in result.machines if not m.generated}
    paths = {t.name: t for t in trigger_paths(dev().spec, machines, result.pipelines, load_runtimes(), chunk)}
    measured = json.loads(cadence.RUNTIMES_FILE.read_text())["seconds"]
    chain = sum(measured[e] for e in cadence.WINDOW_CHAIN)
    (job,) = [leg for leg in paths["backfill-requested"].path.legs if leg.per_item == "RunBackfillWindows"
              and leg.kind == "job"]
    assert job.entrypoints == (cadence.CHUNK_JOB,) and job.startup == 180
    assert job.runtime == pytest.approx(chunk * chain)
    assert cadence.chunk_windows_of({}) == 96 and cadence.chunk_windows_of({"backfill_chunk_windows": "500"}) == 192
