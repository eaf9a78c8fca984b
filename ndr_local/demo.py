"""``make run``: the whole platform on this machine, driven by the generated state machines.

What it does, in order (every stage is a real execution of a compiled state machine whose pipelines run
the real jobs on local Spark; nothing is scripted):

1. **estate**: a seeded synthetic estate (``ndr_jobs.devtools.synth``) writes PAN-OS TRAFFIC mini-batches into the
   local stand-in of the raw bucket, in the ingestion layout, with a few malformed lines; a machine
   inventory goes into a DuckDB file (the local Redshift).
2. **backfill** (``sfn_ndr_backfill_reprocessing``): a history range is reprocessed, one ``backfill_windows``
   Spark job per chunk of the windows the historical windows extractor found.
3. **baselines** (``sfn_ndr_monthly_fg_b_baselines``): inventory refresh, then FG-B baselines of the
   history month.
4. **training** (``sfn_ndr_training_orchestrator``): the Isolation Forest lifecycle over a range with no
   features yet: verify finds the windows missing, remediation builds them, then train, publish,
   attributes and the deploy gate promote the model.
5. **live** (``sfn_ndr_15m_features_inference``): one batch-completion event per 15-minute batch of a
   span with injected attacks, in the contract's EventBridge, SQS and SNS wrappers in turn: features,
   inference, and the nested publication workflow (prediction/feature join).
6. **malformed event**: a batch-completed event whose folder is not a 15-minute window of the org's raw
   bucket: rejected at the intake (``NDR.InvalidEvent``), announced on the bus, no pipeline started.
7. **aborted execution**: the last live batch's execution is stopped while its features pipeline runs; the
   lock janitor (its EventBridge rule stood in for) stops the pipeline and frees the lock, and the batch,
   announced again, runs to the end.
8. **duplicate**: the first live event again: rejected by the mini-batch lock, nothing written.

Then the top anomalies with the features that drove them (and whether the synthetic ground truth says
they were attacks) and a summary: batches, rows, quarantined lines, alerts, time per stage.

Everything lands under ``--workdir`` (default ``var/demo``): ``s3/<bucket>/...`` is the local S3, the
datasets under ``s3/acme-ndr-features/ndr-prod/``. See ``docs/quickstart.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ndr_jobs.interface.contract import iso, parse_utc
from ndr_jobs.interface.progress import Progress
from ndr_local import events

ORG, PROJECT, FSV = "acme", "ndr-prod", "v1"


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("var/demo")
    specs: Path = Path("specs")
    generated: Path = Path("generated")
    hosts: int = 40
    seed: int = 7
    # 8 windows of history: the fewest FG-B takes as a baseline (fewer: cold start, every z-score 0)
    history_start: datetime = parse_utc("2026-09-30T10:00:00Z")
    history_hours: float = 2.0
    # training remediates (builds) its windows' features in one step: every window costs a 15m chain run
    training_start: datetime = parse_utc("2026-10-01T11:00:00Z")
    training_hours: float = 1.0
    live_start: datetime = parse_utc("2026-10-01T12:00:00Z")
    live_hours: float = 1.0
    noise_rate: float = 0.002
    # waits and poll budgets at a tenth: a 15m pipeline has 90 s (not 15 min) before the machine gives up
    wait_scale: float = 0.1
    top: int = 10


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    detail: str = ""


@dataclass
class DemoReport:
    stages: list[Stage] = field(default_factory=list)
    batches: int = 0
    lines: int = 0
    quarantined: int = 0
    alerts: int = 0
    duplicate_rejected: bool = False
    duplicate_wrote_nothing: bool = False
    rejected_reason: str = ""
    recovered_after_abort: bool = False
    top: list[dict[str, Any]] = field(default_factory=list)
    #: the promoted model's ``excluded_unseen_windows`` (training metrics): features left out, and why
    unseen: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def injected_in_top(self) -> int:
        """How many of the top anomalies were injected attacks (the synthetic ground truth)."""
        return sum(1 for row in self.top if row.get("attack"))

    @property
    def ok(self) -> bool:
        return not self.failures


class DemoError(Exception):
    pass


def _tree_digest(root: Path) -> str:
    """A digest of every file's path, size and content under ``root`` (what a run wrote)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalRun:
    """The offline platform of one local run: the environment, the warm step worker, moto with the generated
    state machines, and the pipelines running the real jobs. ``with LocalRun(config) as run: run.execute(...)``.

    The demo drives it stage by stage; the failure drills (``tests/test_drills.py``) use it directly.
    """

    def __init__(self, config: DemoConfig, echo: Callable[[str], None] = print) -> None:
        from ndr_compiler.compile import compile_specs

        self.config, self.echo = config, echo
        self.work = config.workdir.resolve()
        self.s3 = self.work / "s3"
        self.log = self.work / "logs"
        compiled = compile_specs([config.specs], render=False)
        if not compiled.ok:
            raise DemoError("the specs do not compile: run `ndr-compile lint specs/`")
        self.compiled = compiled
        self.project = compiled.specs.projects()["ndr"].model
        routing = next(r for r in self.project.spec.routing if r.org_id == ORG).model_dump()
        self.raw_bucket = str(routing["raw_bucket"])
        self.storage_root = str(routing["feature_root"])
        self.raw_prefix = f"s3://{self.raw_bucket}/pan-traffic/{ORG}/{PROJECT}/{FSV}/"
        self._stack = ExitStack()

    def __enter__(self) -> LocalRun:
        from ndr_local.platform import stand_up
        from ndr_local.runner import LocalPipelines, local_pipeline_names
        from ndr_local.sfn_runtime import offline_aws
        from ndr_local.step_worker import WarmExecutor

        if self.work.exists():
            shutil.rmtree(self.work)
        self.s3.mkdir(parents=True)
        self.log.mkdir()
        env = {
            "NDR_LOCAL_S3_ROOT": str(self.s3),
            "NDR_INVENTORY_DUCKDB": str(self.work / "redshift.duckdb"),
            "NDR_PUBLICATION_DUCKDB": str(self.work / "redshift.duckdb"),
        }
        stack = self._stack
        stack.enter_context(_environment(env))
        moto_log = logging.getLogger("moto")  # it logs every Fail state (a rejected duplicate, too) as an error
        stack.callback(moto_log.setLevel, moto_log.level)
        moto_log.setLevel(logging.CRITICAL)
        executor = stack.enter_context(WarmExecutor(self.log / "step-worker.log"))
        placeholders, names = local_pipeline_names(self.compiled.pipelines)
        values = {"NdrStorageRoot": self.storage_root, "NdrRawRoot": f"s3://{self.raw_bucket}", "NdrOrgId": ORG}
        self.pipelines = LocalPipelines(self.config.generated, names, values, echo=lambda m: self.echo(f"   {m}"),
                                        executor=executor)
        stack.enter_context(offline_aws(self.pipelines, wait_time_scale=self.config.wait_scale,
                                        local_s3_root=self.s3))
        self.platform = stand_up(self.config.generated, self.project, placeholders)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def execute(self, machine: str, payload: Any, what: str, expect: str | None = "SUCCEEDED") -> Any:
        """Run one execution to its end; :class:`DemoError` when it does not end ``expect`` (None: any)."""
        run = self.platform.run(machine, payload, timeout_s=1800)
        if expect is not None and run.status != expect:
            failed = [r for _, _, r in self.pipelines.runs if r is not None and r.status == "Failed"]
            why = failed[-1].failure_reason if failed else f"{run.error}: {run.cause}"
            raise DemoError(f"{what}: {machine} ended {run.status} ({why}); logs in {self.log}")
        return run

    def dataset(self, name: str) -> Path:
        """The local directory of a dataset (``fg_a``, ``publication``, ...)."""
        return self.s3 / self.storage_root.removeprefix("s3://") / name

    def generate(self, name: str, start: datetime, hours: float, attacks: tuple[str, ...] = (),
                 noise_rate: float = 0.0) -> Any:
        """Synthetic raw batches of the estate into the local raw bucket; labels in ``labels-<name>.jsonl``."""
        from ndr_jobs.devtools.synth.generator import SynthConfig, generate

        return generate(
            SynthConfig(start=start, hours=hours, hosts=self.config.hosts, seed=self.config.seed, attacks=attacks,
                        org_id=ORG, project_name=PROJECT, feature_spec_version=FSV, noise_rate=noise_rate),
            f"s3://{self.raw_bucket}", labels_path=str(self.work / f"labels-{name}.jsonl"),
        )  # fmt: skip

    def batch_event(self, start: datetime) -> dict[str, Any]:
        """The ingestion's batch-completed event of the batch starting at ``start`` (its objects counted)."""
        folder = self.s3 / self.raw_bucket / "pan-traffic" / ORG / PROJECT / FSV / start.strftime("%Y/%m/%d/%H%M")
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return events.batch_completed(self.raw_bucket, ORG, PROJECT, FSV, start, len(files),
                                      sum(p.stat().st_size for p in files))

    def backfill(self, start: datetime, end: datetime) -> Any:
        return self.execute("sfn_ndr_backfill_reprocessing",
                            events.backfill_request(PROJECT, FSV, start, end, self.raw_prefix), "backfill")

    def baselines(self, month: str) -> Any:
        return self.execute("sfn_ndr_monthly_fg_b_baselines", events.monthly_baselines(PROJECT, FSV, month),
                            "baselines")

    def abort_and_recover(self, start: datetime) -> tuple[Any, list[Any], Any]:
        """Start the batch's 15-minute execution, stop it while its features pipeline runs, let the janitor
        clean up, then announce the batch again: (the aborted run's status, the janitor runs, the rerun)."""
        from ndr_jobs.interface.contract import mini_batch_id

        machine = "sfn_ndr_15m_features_inference"
        event = self.batch_event(start)
        sfn = self.platform.client("stepfunctions")
        arn = sfn.start_execution(stateMachineArn=self.platform.machine_arns[machine], input=json.dumps(event),
                                  name=f"aborted-{start:%Y%m%dT%H%M}")["executionArn"]
        batch = mini_batch_id(ORG, PROJECT, FSV, iso(start))
        deadline = time.monotonic() + 600
        while not any(p.get("MiniBatchId") == batch for _, p, _ in self.pipelines.started):
            if time.monotonic() > deadline:
                raise DemoError(f"the features pipeline of {batch} did not start")
            time.sleep(0.2)
        sfn.stop_execution(executionArn=arn, error="Demo.Aborted", cause="stopped by make run while it ran")
        while (aborted := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.1)
        janitors = self.platform.settle(timeout_s=1800)
        return aborted, janitors, self.execute(machine, event, "the aborted batch, announced again")

    def train(self, start: datetime, end: datetime) -> Any:
        return self.execute("sfn_ndr_training_orchestrator", events.training_request(PROJECT, FSV, start, end),
                            "training")


def stage_count(config: DemoConfig) -> int:
    """How many stages :func:`run_demo` runs: 8, or 7 with a single live batch (no aborted execution)."""
    return 8 if max(1, round(config.live_hours * 4)) > 1 else 7


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print, progress: TextIO | None = None) -> DemoReport:
    """Run every stage (see the module doc), a progress line of the stages on ``progress`` (default stderr);
    raises :class:`DemoError` when a stage fails."""
    with Progress(stage_count(config), "make run", progress) as line:
        return _run_demo(config, lambda text: line.echo(text, echo), line)


def _run_demo(config: DemoConfig, echo: Callable[[str], None], line: Progress) -> DemoReport:
    report = DemoReport()

    @contextmanager
    def stage(name: str) -> Iterator[Stage]:
        s = Stage(name)
        report.stages.append(s)
        line.step(name.split(":")[0])
        echo(f"\n== {name}")
        began = time.perf_counter()
        yield s
        s.seconds = time.perf_counter() - began

    c = config
    hist_end = c.history_start + timedelta(hours=c.history_hours)
    train_end = c.training_start + timedelta(hours=c.training_hours)
    with LocalRun(config, echo) as run:
        with stage("estate: synthetic PAN-OS traffic and inventory"):
            _make_estate(run, echo)
        with stage(f"backfill: history {iso(c.history_start)} .. {iso(hist_end)}"):
            run.backfill(c.history_start, hist_end)
        month = c.history_start.strftime("%Y-%m")
        with stage(f"baselines: inventory and FG-B for {month}"):
            run.baselines(month)
        with stage(f"training: {iso(c.training_start)} .. {iso(train_end)}"):
            run.train(c.training_start, train_end)
        with stage("live: 15-minute batches with injected attacks, through the three contract wrappers"):
            live = _live_events(run)
            for i, (wrapper, payload) in enumerate(live[:-1] if len(live) > 1 else live):
                start = run.config.live_start + timedelta(minutes=15 * i)
                echo(f"   batch {i + 1}/{len(live)}: {start:%Y-%m-%d %H:%M} UTC, batch-completed event via {wrapper}")
                run.execute("sfn_ndr_15m_features_inference", payload, f"live batch {i + 1}")
                report.batches += 1
        with stage("malformed event: a batch-completed event outside the org's raw bucket") as s:
            bad = run.batch_event(run.config.live_start)
            bad["detail"]["batch_folder"] = bad["detail"]["batch_folder"].replace(run.raw_bucket, "another-bucket")
            rejected = run.execute("sfn_ndr_15m_features_inference", bad, "malformed event", expect="FAILED")
            announced = [e for e in run.platform.events() if e["detail-type"] == "NDR Event Rejected"]
            if rejected.error == "NDR.InvalidEvent" and announced:
                report.rejected_reason = rejected.cause
            s.detail = f"{rejected.status} {rejected.error}: {rejected.cause}"
            echo(f"   {s.detail}\n   announced on the bus as '{announced[0]['detail-type'] if announced else '-'}'")
        if len(live) > 1:
            last = run.config.live_start + timedelta(minutes=15 * (len(live) - 1))
            with stage(f"aborted execution: batch {last:%H:%M} stopped mid-pipeline, then announced again") as s:
                aborted, janitors, rerun = run.abort_and_recover(last)
                for j in janitors:
                    out = j.output or {}
                    if out.get("pipelines") or out.get("locks_released"):
                        stopped = ", ".join(f"{p['pipeline_execution_arn'].rsplit('/', 1)[-1]} {p['status']}"
                                            for p in out.get("pipelines", []))
                        echo(f"   janitor: pipelines {stopped or 'none'}; locks freed: {out.get('locks_released')}")
                report.recovered_after_abort = aborted["status"] == "ABORTED" and rerun.status == "SUCCEEDED"
                report.batches += int(rerun.status == "SUCCEEDED")
                s.detail = f"{aborted['status']}, then the batch ran again: {rerun.status}"
                echo(f"   {s.detail}")
        with stage("duplicate: the first live event again") as s:
            before = _tree_digest(run.s3)
            again = run.execute("sfn_ndr_15m_features_inference", live[0][1], "duplicate", expect="FAILED")
            report.duplicate_rejected = "DuplicateMiniBatch" in again.path
            report.duplicate_wrote_nothing = _tree_digest(run.s3) == before
            s.detail = f"{again.status} at {again.path[-1]}; outputs unchanged: {report.duplicate_wrote_nothing}"
            echo(f"   {s.detail}")
        _summarise(report, run)
    if not report.duplicate_rejected or not report.duplicate_wrote_nothing:
        report.failures.append("the duplicate batch event was not rejected cleanly")
    if not report.rejected_reason:
        report.failures.append("the malformed event was not rejected as NDR.InvalidEvent")
    if len(live) > 1 and not report.recovered_after_abort:
        report.failures.append("the aborted batch did not run again")
    return report


def _make_estate(run: LocalRun, echo: Callable[[str], None]) -> None:
    from ndr_jobs.devtools.synth.generator import ATTACK_CLASSES
    from ndr_jobs.devtools.synth.inventory import create_inventory_duckdb

    c = run.config
    spans = [
        ("history", c.history_start, c.history_hours, (), 0.0),
        ("training", c.training_start, c.training_hours, (), 0.0),
        ("live", c.live_start, c.live_hours, ATTACK_CLASSES, c.noise_rate),
    ]
    for name, start, hours, attacks, noise in spans:
        result = run.generate(name, start, hours, tuple(attacks), noise)
        echo(f"   {name}: {result.batches} batches, {result.rows:,} lines"
             + (f", attacks {', '.join(attacks)}, {sum(result.noise_rows.values())} malformed" if attacks else ""))
    machines = create_inventory_duckdb(os.environ["NDR_INVENTORY_DUCKDB"], c.hosts, c.seed)
    echo(f"   inventory: {machines} machines in {os.environ['NDR_INVENTORY_DUCKDB']} (the Redshift stand-in)")


def _live_events(run: LocalRun) -> list[tuple[str, Any]]:
    """One event per live batch, cycling through the contract's three wrappers."""
    out: list[tuple[str, Any]] = []
    for i in range(max(1, round(run.config.live_hours * 4))):
        event = run.batch_event(run.config.live_start + timedelta(minutes=15 * i))
        wrapper = ("eventbridge", "sqs", "sns")[i % 3]
        out.append((wrapper, events.as_sqs(event) if wrapper == "sqs" else events.as_sns(event)
                    if wrapper == "sns" else event))
    return out


def _summarise(report: DemoReport, run: LocalRun) -> None:
    """Counts from the jobs' own summaries, and the top anomalies from the published dataset."""
    for spec, _params, pipeline_run in run.pipelines.runs:
        if pipeline_run is None or spec != "features_15m":
            continue
        for step in pipeline_run.steps:
            summary = step.summary or {}
            if step.name == "DeltaBuilderStep" and _params.get("BatchStartTsIso", "") >= iso(
                run.config.live_start
            ):
                report.lines += int(summary.get("rows_read", 0) or 0)
                report.quarantined += int(summary.get("rows_quarantined", 0) or 0)
    report.top, report.alerts = _top_anomalies(run.dataset("publication"), run.work / "labels-live.jsonl",
                                               run.config)
    report.unseen = _unseen_windows(run.storage_root)


def _unseen_windows(storage_root: str) -> dict[str, Any] | None:
    """What the promoted model left out because training never saw its window whole (its training metrics)."""
    from ndr_jobs.model import artifacts, registry

    pointer = registry.ModelStore(storage_root, PROJECT, FSV).promoted()
    if pointer is None:
        return None
    found = artifacts.read_json(pointer["metrics_uri"]).get("excluded_unseen_windows")
    return found if isinstance(found, dict) else None


def _top_anomalies(publication: Path, labels: Path, config: DemoConfig) -> tuple[list[dict[str, Any]], int]:
    import duckdb

    from ndr_jobs.datasets import storage

    published = publication / f"feature_spec_version={FSV}"
    files = [f for p in storage.committed_partitions(str(published)) for f in storage.committed_files(p) or []]
    if not files:
        return [], 0
    con = duckdb.connect()
    con.register("published", con.read_parquet([str(f) for f in files], hive_partitioning=True))
    columns = {c[0] for c in con.execute("SELECT * FROM published LIMIT 0").description}
    alerts = 0
    if "alert" in columns:
        alerts = int(con.execute("SELECT count(*) FROM published WHERE alert").fetchone()[0])
    cursor = con.execute(f"SELECT * FROM published ORDER BY score DESC, host_ip LIMIT {int(config.top)}")
    names = [c[0] for c in cursor.description]
    rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    attacks = _attack_windows(labels)
    top = []
    for row in rows:
        start = row.get("batch_start_ts")
        key = (row.get("host_ip"), start.replace(tzinfo=UTC) if isinstance(start, datetime) else start)
        row["attack"] = attacks.get(key, "")
        top.append(row)
    return top, alerts


def _attack_windows(labels: Path) -> dict[tuple[str, datetime], str]:
    """(attacker ip, 15-minute window start) -> attack class, from the synthetic ground truth."""
    out: dict[tuple[str, datetime], str] = {}
    if not labels.exists():
        return out
    for line in labels.read_text().splitlines():
        label = json.loads(line)
        start, end = parse_utc(label["start"]), parse_utc(label["end"])
        moment = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        while moment <= end:
            out.setdefault((label["src_ip"], moment), label["attack"])
            moment += timedelta(minutes=15)
    return out


def render(report: DemoReport, echo: Callable[[str], None] = print) -> None:
    """The top anomalies and the summary, as ``make run`` prints them."""
    echo("\n== top anomalies (published predictions joined with their features)")
    if not report.top:
        echo("   (no predictions were published)")
    for i, row in enumerate(report.top, 1):
        start = row.get("batch_start_ts")
        when = start.strftime("%Y-%m-%d %H:%M") if isinstance(start, datetime) else str(start)
        truth = f"  <- injected {row['attack']}" if row.get("attack") else ""
        detector = f" ({row['detector']})" if row.get("detector") else ""
        echo(f"{i:3}. {row.get('host_ip', '?'):15} {when}  score {float(row.get('score', 0)):.4f}{detector}{truth}")
        for name, value in _drivers(row)[:3]:
            echo(f"       {name} = {value}")
    if report.top:
        echo(f"   {report.injected_in_top} of these {len(report.top)} are injected attacks (synthetic ground truth)")
    echo("\n== summary")
    echo(f"   batches processed live : {report.batches}")
    echo(f"   raw lines read         : {report.lines:,}")
    echo(f"   quarantined lines      : {report.quarantined:,}")
    echo(f"   alerts                 : {report.alerts}")
    echo(f"   injected in the top {len(report.top):<3}: {report.injected_in_top}")
    if report.unseen is not None:
        left = report.unseen["features"]
        names = ", ".join(u["feature"] for u in left)
        echo(f"   features left out      : {len(left)}, window longer than the {report.unseen['training_span']} of "
             f"training" + (f" ({names})" if names else ""))
    echo(f"   malformed event        : {'rejected: ' + report.rejected_reason if report.rejected_reason else 'NOT rejected'}")  # noqa: E501
    echo(f"   aborted execution      : {'recovered: the batch ran again' if report.recovered_after_abort else 'not recovered'}")  # noqa: E501
    echo(f"   duplicate event        : {'rejected, nothing written' if report.duplicate_rejected and report.duplicate_wrote_nothing else 'NOT rejected cleanly'}")  # noqa: E501
    for s in report.stages:
        echo(f"   {s.seconds:7.1f} s  {s.name}")
    echo(f"   {sum(s.seconds for s in report.stages):7.1f} s  total")


def _drivers(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The features that drove a score: the publication's ``top_features_json`` (feature, value, deviation)."""
    found = row.get("top_features_json") or row.get("top_features") or []
    if isinstance(found, str):  # published as a JSON string, so that any warehouse loads it
        found = json.loads(found)
    out = []
    for item in found:
        if isinstance(item, dict):
            value = item.get("value")
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            deviation = item.get("deviation")
            if isinstance(deviation, float):
                shown += f" (deviation {deviation:+.2f})"
            out.append((str(item.get("name") or item.get("feature")), shown))
    return out
