"""``make run``: the whole platform on this machine, driven by the generated state machines.

What it does, in order (every stage is a real execution of a compiled state machine whose pipelines run
the real jobs on local Spark; nothing is scripted):

1. **estate**: a seeded synthetic estate (``ndr_jobs.synth``) writes PAN-OS TRAFFIC mini-batches into the
   local stand-in of the raw bucket, in the ingestion layout, with a few malformed lines; a machine
   inventory goes into a DuckDB file (the local Redshift).
2. **backfill** (``sfn_ndr_backfill_reprocessing``): a history range is reprocessed, one 15-minute
   feature pipeline per window found by the historical windows extractor.
3. **baselines** (``sfn_ndr_monthly_fg_b_baselines``): inventory refresh, then FG-B baselines of the
   history month.
4. **training** (``sfn_ndr_training_orchestrator``): the Isolation Forest lifecycle over a range with no
   features yet: verify finds the windows missing, remediation builds them, then train, publish,
   attributes and the deploy gate promote the model.
5. **live** (``sfn_ndr_15m_features_inference``): one batch-completion event per 15-minute batch of a
   span with injected attacks, in the contract's EventBridge, SQS and SNS wrappers in turn: features,
   inference, and the nested publication workflow (prediction/feature join).
6. **duplicate**: the first live event again: rejected by the mini-batch lock, nothing written.

Then the top anomalies with the features that drove them (and whether the synthetic ground truth says
they were attacks) and a summary: batches, rows, quarantined lines, alerts, time per stage.

Everything lands under ``--workdir`` (default ``var/demo``): ``s3/<bucket>/...`` is the local S3, the
datasets under ``s3/acme-ndr-features/ndr-prod/``. See ``docs/quickstart.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ndr_compiler.local import events

ORG, PROJECT, FSV = "acme", "ndr-prod", "v1"


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("var/demo")
    specs: Path = Path("specs")
    generated: Path = Path("generated")
    hosts: int = 40
    seed: int = 7
    history_start: datetime = _utc("2026-09-30T09:00:00Z")
    history_hours: float = 3.0
    training_start: datetime = _utc("2026-10-01T08:00:00Z")
    training_hours: float = 4.0
    live_start: datetime = _utc("2026-10-01T12:00:00Z")
    live_hours: float = 1.5
    noise_rate: float = 0.002
    wait_scale: float = 0.05
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
    top: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

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


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoReport:
    """Run every stage (see the module doc); raises :class:`DemoError` when a stage fails."""
    from ndr_compiler.compile import compile_specs
    from ndr_compiler.local.platform import stand_up
    from ndr_compiler.local.runner import LocalPipelines, local_pipeline_names
    from ndr_compiler.local.sfn_runtime import offline_aws
    from ndr_compiler.local.step_worker import WarmExecutor

    report = DemoReport()
    work = config.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    s3 = work / "s3"
    s3.mkdir(parents=True)
    compiled = compile_specs([config.specs], render=False)
    if not compiled.ok:
        raise DemoError("the specs do not compile: run `ndr-compile lint specs/`")
    project = compiled.specs.projects()["ndr"].model
    routing = next(r for r in project.spec.routing if r.org_id == ORG)
    raw_bucket = routing.model_dump()["raw_bucket"]
    storage_root = str(routing.model_dump()["feature_root"])
    env = {
        "NDR_LOCAL_S3_ROOT": str(s3),
        "NDR_RAW_ROOT": f"s3://{raw_bucket}",
        "NDR_INVENTORY_DUCKDB": str(work / "redshift.duckdb"),
        "NDR_PUBLICATION_DUCKDB": str(work / "redshift.duckdb"),
    }

    def stage(name: str) -> Stage:
        s = Stage(name)
        report.stages.append(s)
        echo(f"\n== {name}")
        return s

    with _environment(env):
        # 1. the estate
        s = stage("estate: synthetic PAN-OS traffic and inventory")
        t = time.perf_counter()
        labels = _make_estate(config, raw_bucket, work, echo)
        s.seconds = time.perf_counter() - t

        placeholders, names = local_pipeline_names(compiled.pipelines)
        log = work / "logs"
        log.mkdir()
        executor = WarmExecutor(log / "step-worker.log")
        values = {"NdrStorageRoot": storage_root, "NdrRawRoot": f"s3://{raw_bucket}", "NdrOrgId": ORG}
        pipelines = LocalPipelines(config.generated, names, values, echo=lambda m: echo(f"   {m}"), executor=executor)
        try:
            with offline_aws(pipelines, wait_time_scale=config.wait_scale, local_s3_root=s3):
                platform = stand_up(config.generated, project, placeholders)

                def execute(machine: str, payload: Any, what: str, expect: str = "SUCCEEDED") -> Any:
                    run = platform.run(machine, payload, timeout_s=1800)
                    if run.status != expect:
                        failed = [r for _, _, r in pipelines.runs if r is not None and r.status == "Failed"]
                        why = failed[-1].failure_reason if failed else f"{run.error}: {run.cause}"
                        raise DemoError(f"{what}: {machine} ended {run.status} ({why}); logs in {log}")
                    return run

                raw_prefix = f"s3://{raw_bucket}/pan-traffic/{ORG}/{PROJECT}/{FSV}/"
                hist_end = config.history_start + timedelta(hours=config.history_hours)
                s = stage(f"backfill: history {events._iso(config.history_start)} .. {events._iso(hist_end)}")
                t = time.perf_counter()
                execute("sfn_ndr_backfill_reprocessing",
                        events.backfill_request(PROJECT, FSV, config.history_start, hist_end, raw_prefix), "backfill")
                s.seconds = time.perf_counter() - t

                month = config.history_start.strftime("%Y-%m")
                s = stage(f"baselines: inventory and FG-B for {month}")
                t = time.perf_counter()
                execute("sfn_ndr_monthly_fg_b_baselines", events.monthly_baselines(PROJECT, FSV, month), "baselines")
                s.seconds = time.perf_counter() - t

                train_end = config.training_start + timedelta(hours=config.training_hours)
                s = stage(f"training: {events._iso(config.training_start)} .. {events._iso(train_end)}")
                t = time.perf_counter()
                execute("sfn_ndr_training_orchestrator",
                        events.training_request(PROJECT, FSV, config.training_start, train_end), "training")
                s.seconds = time.perf_counter() - t

                s = stage("live: 15-minute batches with injected attacks")
                t = time.perf_counter()
                live = _live_events(config, raw_bucket, s3)
                first_payload = None
                for i, (wrapper, payload) in enumerate(live):
                    echo(f"   batch {i + 1}/{len(live)} ({wrapper}) {payload_folder(payload)}")
                    execute("sfn_ndr_15m_features_inference", payload, f"live batch {i + 1}")
                    first_payload = first_payload or payload
                    report.batches += 1
                s.seconds = time.perf_counter() - t

                s = stage("duplicate: the first live event again")
                t = time.perf_counter()
                before = _tree_digest(s3)
                run = execute("sfn_ndr_15m_features_inference", first_payload, "duplicate", expect="FAILED")
                report.duplicate_rejected = "DuplicateMiniBatch" in run.path
                report.duplicate_wrote_nothing = _tree_digest(s3) == before
                s.detail = f"{run.status} at {run.path[-1]}; outputs unchanged: {report.duplicate_wrote_nothing}"
                echo(f"   {s.detail}")
                s.seconds = time.perf_counter() - t
        finally:
            executor.close()

    _summarise(report, pipelines.runs, storage_root, s3, labels, config)
    if not report.duplicate_rejected or not report.duplicate_wrote_nothing:
        report.failures.append("the duplicate batch event was not rejected cleanly")
    return report


def payload_folder(payload: Any) -> str:
    text = json.dumps(payload)
    start = text.find("pan-traffic/")
    return text[start : text.find("/", start + 40) + 6] if start >= 0 else ""


def _make_estate(config: DemoConfig, raw_bucket: str, work: Path, echo: Callable[[str], None]) -> Path:
    from ndr_jobs.synth.generator import ATTACK_CLASSES, SynthConfig, generate

    out = f"s3://{raw_bucket}"
    labels = work / "labels.jsonl"
    spans = [
        ("history", config.history_start, config.history_hours, (), 0.0),
        ("training", config.training_start, config.training_hours, (), 0.0),
        ("live", config.live_start, config.live_hours, ATTACK_CLASSES, config.noise_rate),
    ]
    for name, start, hours, attacks, noise in spans:
        result = generate(
            SynthConfig(start=start, hours=hours, hosts=config.hosts, seed=config.seed, attacks=tuple(attacks),
                        org_id=ORG, project_name=PROJECT, feature_spec_version=FSV, noise_rate=noise),
            out, labels_path=str(work / f"labels-{name}.jsonl"),
        )  # fmt: skip
        echo(f"   {name}: {result.batches} batches, {result.rows:,} lines"
             + (f", attacks {', '.join(attacks)}, {sum(result.noise_rows.values())} malformed" if attacks else ""))
    shutil.copyfile(work / "labels-live.jsonl", labels)
    from ndr_jobs.synth.inventory import create_inventory_duckdb

    machines = create_inventory_duckdb(os.environ["NDR_INVENTORY_DUCKDB"], config.hosts, config.seed)
    echo(f"   inventory: {machines} machines in {os.environ['NDR_INVENTORY_DUCKDB']} (the Redshift stand-in)")
    return labels


def _live_events(config: DemoConfig, raw_bucket: str, s3: Path) -> list[tuple[str, Any]]:
    """One event per live batch, cycling through the contract's three wrappers."""
    out: list[tuple[str, Any]] = []
    n = max(1, round(config.live_hours * 4))
    for i in range(n):
        start = config.live_start + timedelta(minutes=15 * i)
        folder = s3 / raw_bucket / "pan-traffic" / ORG / PROJECT / FSV / start.strftime("%Y/%m/%d/%H%M")
        files = sorted(p for p in folder.iterdir() if p.is_file())
        event = events.batch_completed(raw_bucket, ORG, PROJECT, FSV, start, len(files),
                                       sum(p.stat().st_size for p in files))
        wrapper = ("eventbridge", "sqs", "sns")[i % 3]
        if wrapper == "sqs":
            out.append((wrapper, events.as_sqs(event)))
        elif wrapper == "sns":
            out.append((wrapper, events.as_sns(event)))
        else:
            out.append((wrapper, event))
    return out


def _summarise(report: DemoReport, runs: list[Any], storage_root: str, s3: Path, labels: Path,
               config: DemoConfig) -> None:
    """Counts from the jobs' own summaries, and the top anomalies from the published dataset."""
    for _spec, _params, run in runs:
        if run is None:
            continue
        for step in run.steps:
            summary = step.summary or {}
            if step.name == "DeltaBuilderStep" and _spec == "features_15m":
                report.lines += int(summary.get("lines_read", 0) or 0)
                report.quarantined += int(summary.get("lines_quarantined", 0) or 0)
    report.top, report.alerts = _top_anomalies(storage_root, s3, labels, config)


def _local(uri: str, s3: Path) -> Path:
    return s3 / uri.removeprefix("s3://")


def _top_anomalies(storage_root: str, s3: Path, labels: Path, config: DemoConfig) -> tuple[list[dict[str, Any]], int]:
    import duckdb

    published = _local(storage_root, s3) / "publication" / f"feature_spec_version={FSV}"
    files = sorted(published.rglob("*.parquet"))
    if not files:
        return [], 0
    con = duckdb.connect()
    rel = con.read_parquet([str(f) for f in files], hive_partitioning=True)
    columns = set(rel.columns)
    alerts = 0
    if "is_alert" in columns:
        alerts = int(con.sql("SELECT count(*) FROM rel WHERE is_alert").fetchone()[0])
    rows = con.sql(f"SELECT * FROM rel ORDER BY score DESC, host_ip LIMIT {int(config.top)}").to_arrow_table()
    attacks = _attack_windows(labels)
    top = []
    for row in rows.to_pylist():
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
        start, end = _utc(label["start"]), _utc(label["end"])
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
        echo(f"{i:3}. {row.get('host_ip', '?'):15} {when}  score {float(row.get('score', 0)):.3f}{truth}")
        for name, value in _drivers(row)[:3]:
            echo(f"       {name} = {value}")
    echo("\n== summary")
    echo(f"   batches processed live : {report.batches}")
    echo(f"   raw lines read         : {report.lines:,}")
    echo(f"   quarantined lines      : {report.quarantined:,}")
    echo(f"   alerts                 : {report.alerts}")
    echo(f"   duplicate event        : {'rejected, nothing written' if report.duplicate_rejected and report.duplicate_wrote_nothing else 'NOT rejected cleanly'}")  # noqa: E501
    for s in report.stages:
        echo(f"   {s.seconds:7.1f} s  {s.name}")
    echo(f"   {sum(s.seconds for s in report.stages):7.1f} s  total")


def _drivers(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The features that drove a score, from the prediction's ``top_features`` (name, value, deviation)."""
    found = row.get("top_features") or []
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
