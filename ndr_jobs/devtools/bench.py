"""The data-plane benchmark: the 15-minute chain on local Spark, stage by stage, beside a DuckDB reference.

``python -m ndr_jobs.devtools.bench --out docs/benchmarks-data.md [--rows 1000000 5000000] [--repeat 3] [--quick]
[--json FILE] [--runtimes FILE]``; ``--quick`` is the smoke mode tests run. Method: ``docs/design/jobs.md`` (Devtools).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ndr_jobs.datasets import storage
from ndr_jobs.interface.contract import iso
from ndr_jobs.processing.chain import FEATURE_CHAIN, job_function
from ndr_jobs.runtime.config import BatchRuntime, PublicationRuntime

#: the 15-minute pipeline's stages, in order
STAGES: tuple[str, ...] = FEATURE_CHAIN
#: the live machines' jobs after the features, on the same window: scored by a model trained and promoted on the
#: window itself beforehand (not timed), then joined with the features and published (the S3 target)
MODEL_STAGES: tuple[str, ...] = ("inference_predictions", "prediction_feature_join")
#: the deployment gate for the one-window model: a single window is too small a validation split to judge
_ONE_WINDOW_GATE = {"NDR_GATE_MIN_VALIDATION_ROWS": "1", "NDR_GATE_MAX_ALERT_RATE_RATIO": "1000"}
REFERENCE = "delta (DuckDB reference)"
#: the summary key that counts each stage's output rows (the first one present)
OUTPUT_KEYS = ("delta_rows", "hosts", "pairs", "hosts_scored", "rows")
DEFAULT_ROWS = (1_000_000, 5_000_000)
QUICK_ROWS, QUICK_WARMUP, WARMUP = 100_000, 5_000, 50_000
#: runs per size: this machine's speed drifts by a quarter from minute to minute, and the JVM's JIT warms up
REPEAT = 3
BATCH_START = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)  # a Thursday, office hours
ORG, PROJECT, FSV = "acme", "ndr-prod", "v1"
LINES_PER_HOST = 200
SEED = 11

# -- projection assumptions --
ESTATES_LOGS_PER_S = (10_000, 50_000)
DEADLINE_S = 300.0
BATCH_S = 900.0
INSTANCE, INSTANCE_VCPUS, INSTANCE_GIB = "ml.m5.4xlarge", 16, 64
#: vCPUs per instance left to the OS, YARN daemons and (on the first instance) the driver
RESERVED_VCPUS = 1
#: cluster throughput per vCPU relative to local[*] per core (network shuffle, stragglers, serial driver phases)
PARALLEL_EFFICIENCY = 0.6


# -- machine facts --------------------------------------------------------------------------------------


def _java_version() -> str:
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    try:
        proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Cores, memory and versions of this machine."""
    import duckdb
    import pyspark

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "cores": os.cpu_count() or 1,
        "cpu": _cpu_model(),
        "memory_gib": round(memory / 2**30, 1),
        "os": platform.platform(),
        "java": _java_version(),
        "pyspark": pyspark.__version__,
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
        "spark_master": os.environ.get("NDR_SPARK_MASTER", "local[*]"),
        "spark_driver_memory": os.environ.get("NDR_SPARK_DRIVER_MEMORY", "2g"),
        "load_average_at_start": _load(),
    }


def _load() -> list[float] | None:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


# -- memory sampling ------------------------------------------------------------------------------------


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, rss KiB, command) of every process, from ``ps``."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,rss=,comm="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit():
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return rows


def memory_sample(root: int) -> dict[str, int]:
    """RSS in KiB of ``root`` (driver), its ``java`` descendants (jvm) and the JVM's descendants (workers)."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, ppid, _, _ in procs:
        children.setdefault(ppid, []).append(pid)
    info = {pid: (rss, comm) for pid, _, rss, comm in procs}
    sample = {"driver": info.get(root, (0, ""))[0], "jvm": 0, "workers": 0}
    stack = [(c, False) for c in children.get(root, [])]
    while stack:
        pid, under_jvm = stack.pop()
        rss, comm = info.get(pid, (0, ""))
        is_java = "java" in Path(comm).name
        if is_java:
            sample["jvm"] += rss
        elif under_jvm:
            sample["workers"] += rss
        stack.extend((c, under_jvm or is_java) for c in children.get(pid, []))
    return sample


class PeakSampler:
    """Samples :func:`memory_sample` on a thread while a ``with`` block runs; ``peaks`` in MiB."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        root = os.getpid()
        while True:
            for key, kib in memory_sample(root).items():
                self.peaks[key] = max(self.peaks.get(key, 0.0), kib / 1024)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for key, kib in memory_sample(os.getpid()).items():  # one last sample: short stages get one at least
            self.peaks[key] = max(self.peaks.get(key, 0.0), kib / 1024)


# -- data -----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One generated batch."""

    rows_requested: int
    lines: int
    hosts: int
    rate_scale: float
    raw_root: str
    folder: str
    files: int
    bytes: int
    seconds: float


def expected_lines(hosts: int, seed: int, start: datetime) -> float:
    """The generator's expected line count of one batch at ``rate_scale`` 1 (background, denies, scanners)."""
    from ndr_jobs.devtools.synth import generator as g

    net = g.build_network(hosts, seed)
    hours = g.BATCH_MS / 3_600_000
    mid = int(start.timestamp() * 1000) + g.BATCH_MS // 2
    people = int((net.host_role != g.SERVER).sum())
    background = float((net.host_rate * g.diurnal(net.host_role, mid)).sum()) * hours
    return background + g.DENY_RATE * hours * people + g.SCANNER_RATE * hours * len(net.host_ids) / 50


#: the generator formats a batch as one Arrow string array (at most 2 GiB, ~3M lines): bigger batches are
#: generated in chunks of at most this many lines, with seeds ``seed, seed + 1, ...`` over the same hosts
CHUNK_LINES = 2_000_000


def _generate(rows: int, seed: int, raw_root: str) -> dict[str, Any]:
    """(In a child process.) Write one batch of about ``rows`` lines under ``raw_root``.

    Over :data:`CHUNK_LINES`, the batch is the union of ``k`` generator runs (seeds ``seed .. seed + k - 1``,
    each ``rows / k`` lines, the same host count: the same internal addresses, ``k`` times the sessions; each
    seed draws its own internet pool), their files renamed ``...-c<chunk>-<file>.log`` into one folder.
    """
    from ndr_jobs.devtools.synth.generator import SynthConfig, batch_folder, generate

    hosts = min(50_000, max(20, rows // LINES_PER_HOST))
    chunks = max(1, math.ceil(rows / CHUNK_LINES))
    folder = ""
    lines, seconds, scales = 0, 0.0, []
    for chunk in range(chunks):
        chunk_seed = seed + chunk
        rate_scale = rows / chunks / expected_lines(hosts, chunk_seed, BATCH_START)
        scales.append(rate_scale)
        files = max(1, min(16, rows // chunks // 250_000))
        config = SynthConfig(start=BATCH_START, hours=0.25, hosts=hosts, seed=chunk_seed, org_id=ORG,
                             project_name=PROJECT, feature_spec_version=FSV, files_per_batch=files,
                             rate_scale=rate_scale)  # fmt: skip
        chunk_root = raw_root if chunks == 1 else storage.join(raw_root, f"_chunk{chunk}")
        result = generate(config, chunk_root)
        lines, seconds = lines + result.rows, seconds + result.seconds
        folder = batch_folder(raw_root, config, BATCH_START) + "/"
        if chunks > 1:
            source = storage.local_path(batch_folder(chunk_root, config, BATCH_START))
            target = storage.local_path(folder)
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(source.iterdir()):
                stem, _, rest = file.name.rpartition("-")
                file.rename(target / f"{stem}-c{chunk:02d}-{rest}")
            shutil.rmtree(storage.local_path(chunk_root))
    objects = storage.list_objects(folder)
    return {"rows_requested": rows, "lines": lines, "hosts": hosts, "rate_scale": round(sum(scales), 4),
            "raw_root": raw_root, "folder": folder, "files": len(objects), "bytes": sum(o.size for o in objects),
            "seconds": round(seconds, 2)}  # fmt: skip


def generate_batch(rows: int, raw_root: str, seed: int = SEED) -> Batch:
    """Generate a batch in a fresh process (its memory is not the benchmark's)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return Batch(**pool.submit(_generate, rows, seed, raw_root).result())


# -- stages ---------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    stage: str
    status: str  # ok | skipped | failed
    seconds: float | None = None
    lines_per_s: float | None = None
    output_rows: int | None = None
    jvm_peak_mib: float | None = None
    workers_peak_mib: float | None = None
    driver_peak_mib: float | None = None
    detail: str = ""
    #: the seconds of every run, in order (``seconds`` is their median)
    runs: list[float] = field(default_factory=list)


@dataclass
class SizeResult:
    batch: Batch
    stages: list[StageResult] = field(default_factory=list)
    delta_identical: bool | None = None
    delta_check: str = ""

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.stage == name), None)

    @property
    def ratio(self) -> float | None:
        spark, duck = self.stage("delta_builder"), self.stage(REFERENCE)
        if spark and duck and spark.status == duck.status == "ok" and spark.seconds and duck.seconds:
            return spark.seconds / duck.seconds
        return None

    @property
    def first_ratio(self) -> float | None:
        """Spark delta / DuckDB seconds in the first run (the JVM's least warm)."""
        spark, duck = self.stage("delta_builder"), self.stage(REFERENCE)
        if spark and duck and spark.runs and duck.runs and duck.runs[0]:
            return spark.runs[0] / duck.runs[0]
        return None

    @property
    def chain(self) -> list[StageResult]:
        """The feature chain's stages (the 15-minute pipeline), without the reference and the model stages."""
        return [s for s in self.stages if s.stage in STAGES]

    @property
    def jobs(self) -> list[StageResult]:
        """Every job measured: the feature chain, then the model stages."""
        return [s for s in self.stages if s.stage != REFERENCE]

    @property
    def chain_seconds(self) -> float:
        return sum(s.seconds or 0.0 for s in self.chain if s.status == "ok")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _timed(name: str, lines: int, call: Any) -> StageResult:
    with PeakSampler() as sampler:
        began = time.perf_counter()
        try:
            summary = call()
            status, detail = "ok", ""
        except Exception as exc:  # a broken stage is a row of the report, not the end of the benchmark
            summary, status = None, "failed"
            detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - began
    result = StageResult(name, status, detail=detail)
    if status == "ok":
        result.seconds = round(seconds, 3)
        result.lines_per_s = round(lines / seconds) if seconds > 0 else None
        if isinstance(summary, dict):
            result.output_rows = next((summary[k] for k in OUTPUT_KEYS if isinstance(summary.get(k), int)), None)
        result.jvm_peak_mib = round(sampler.peaks.get("jvm", 0.0))
        result.workers_peak_mib = round(sampler.peaks.get("workers", 0.0))
        result.driver_peak_mib = round(sampler.peaks.get("driver", 0.0))
    return result


def run_chain(batch: Batch, store: str, stages: Sequence[str] = STAGES) -> list[StageResult]:
    """The chain on ``batch``, storage under ``store``: the ``stages`` run, the others are ``skipped``."""
    stamp = BATCH_START.strftime("%Y%m%dT%H%M")
    runtime = BatchRuntime(project_name=PROJECT, feature_spec_version=FSV,
                           mini_batch_id=f"{ORG}-{PROJECT}-{FSV}-{stamp}",
                           batch_start_ts=iso(BATCH_START),
                           batch_end_ts=iso(BATCH_START + timedelta(minutes=15)),
                           raw_batch_folder=batch.folder)  # fmt: skip
    results = []
    with _environment(NDR_STORAGE_ROOT=store, NDR_RAW_ROOT=batch.raw_root, NDR_ORG_ID=ORG):
        for name in STAGES:
            if name not in stages:
                results.append(StageResult(name, "skipped", detail="not selected (--stages)"))
                continue

            def call(name: str = name) -> Any:
                module, function = job_function(name)
                return getattr(import_module(module), function)(runtime)

            with contextlib.redirect_stdout(sys.stderr):  # the jobs' JSON summaries: not the report's stdout
                results.append(_timed(name, batch.lines, call))
        features_built = all(r.status == "ok" for r in results if r.stage in ("fg_a_builder", "fg_c_builder"))
        with contextlib.redirect_stdout(sys.stderr), _environment(**_ONE_WINDOW_GATE):
            model = promote_window_model(store) if features_built else "FG-A or FG-C was not built"
            for name in MODEL_STAGES:
                if model:
                    results.append(StageResult(name, "skipped", detail=f"no model: {model}"))
                    continue

                def job(name: str = name) -> Any:
                    module, function = job_function(name)
                    publication = name == "prediction_feature_join"
                    return getattr(import_module(module), function)(
                        PublicationRuntime(**asdict(runtime)) if publication else runtime)

                results.append(_timed(name, batch.lines, job))
    return results


def promote_window_model(store: str) -> str:
    """Train and promote a model on the bench's window (the training job's stages, once per storage root), with
    the window's FG-A and FG-C copied one window earlier (training splits by window); "" when a promoted model
    exists, else why not (the model stages are then reported skipped)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ndr_jobs.datasets import layout
    from ndr_jobs.model import registry
    from ndr_jobs.model.features import read_partitions
    from ndr_jobs.processing.if_training_job import STAGES as TRAINING_STAGES
    from ndr_jobs.processing.if_training_job import run_if_training_from_runtime_config
    from ndr_jobs.runtime.config import TrainingRuntime

    if registry.ModelStore(store, PROJECT, FSV).promoted() is not None:
        return ""
    try:
        earlier = BATCH_START - layout.BATCH
        for dataset in (layout.FG_A, layout.FG_C):  # training splits by window: it needs two
            table = read_partitions(store, dataset, FSV, [BATCH_START])
            for name in ("batch_start_ts", "batch_end_ts"):
                column = table[name]
                shifted = pc.subtract(column, pa.scalar(layout.BATCH, pa.duration("us")))
                table = table.set_column(table.schema.get_field_index(name), name, shifted.cast(column.type))
            storage.write_table(table, store, dataset, layout.batch_partition(FSV, earlier))
        for stage in TRAINING_STAGES:
            run_if_training_from_runtime_config(TrainingRuntime(
                PROJECT, FSV, stage, iso(earlier), iso(BATCH_START + layout.BATCH), "bench-window"))
    except Exception as exc:  # reported as the model stages' detail, not the end of the benchmark
        traceback.print_exc(file=sys.stderr)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return "" if registry.ModelStore(store, PROJECT, FSV).promoted() is not None else "the gate did not promote it"


# -- the DuckDB reference -------------------------------------------------------------------------------

#: (output column, CSV position, type) of the delta's inputs, as the Spark parser reads them
_POSITIONS = {"src_ip": 7, "dst_ip": 8, "app": 14, "from_zone": 16, "to_zone": 17, "repeat_count": 23,
              "dst_port": 25, "protocol": 29, "action": 30, "bytes_sent": 32, "bytes_received": 33, "packets": 34,
              "elapsed": 36, "packets_sent": 44, "packets_received": 45, "session_end_reason": 46,
              "generated_time": 6, "high_res_time": 102, "log_type": 3}  # fmt: skip
FIELD_COUNT = 115


def duckdb_delta_sql(files: Sequence[str], out: str, start: datetime, end: datetime) -> str:
    """``COPY (the delta aggregation of the CSV files) TO out`` in DuckDB (``docs/design/jobs.md``, Devtools)."""
    from ndr_jobs.processing.delta_builder_job import ALLOW_ACTION, END_REASON_COLUMNS, MAX_MINUTE

    def q(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def c(name: str) -> str:
        return f"c{_POSITIONS[name]}"

    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(FIELD_COUNT)) + "}"
    sessions = f"greatest(coalesce(CAST({c('repeat_count')} AS BIGINT), 0), 1)"
    reasons = ", ".join(
        f"sum(CASE WHEN session_end_reason = {q(r)} THEN sessions ELSE 0 END) AS {col}"
        for r, col in END_REASON_COLUMNS.items()
    )
    known = ", ".join(q(r) for r in END_REASON_COLUMNS)
    return f"""
COPY (
  WITH lines AS (
    SELECT * FROM read_csv([{", ".join(q(f) for f in files)}], header = false, delim = ',', quote = '"',
                           escape = '"', auto_detect = false, null_padding = true, strict_mode = false,
                           columns = {columns})
  ), events AS (
    SELECT {c("src_ip")} AS src_ip, {c("dst_ip")} AS dst_ip, CAST({c("dst_port")} AS INTEGER) AS dst_port,
           {c("protocol")} AS protocol, {c("app")} AS app, {c("action")} AS action,
           {c("from_zone")} AS from_zone, {c("to_zone")} AS to_zone, {sessions} AS sessions,
           CAST({c("bytes_sent")} AS BIGINT) AS bytes_sent, CAST({c("bytes_received")} AS BIGINT) AS bytes_received,
           CAST({c("packets")} AS BIGINT) AS packets, CAST({c("packets_sent")} AS BIGINT) AS packets_sent,
           CAST({c("packets_received")} AS BIGINT) AS packets_received,
           CAST({c("elapsed")} AS BIGINT) AS elapsed, {c("session_end_reason")} AS session_end_reason,
           coalesce(TRY_CAST({c("high_res_time")} AS TIMESTAMPTZ),
                    TRY_STRPTIME({c("generated_time")}, '%Y/%m/%d %H:%M:%S')::TIMESTAMPTZ) AS event_time
    FROM lines WHERE {c("log_type")} = 'TRAFFIC'
  )
  SELECT src_ip, dst_ip, dst_port, protocol, app, action, from_zone, to_zone,
         sum(sessions) AS sessions, count(*) AS log_records, sum(bytes_sent) AS bytes_sent,
         sum(bytes_received) AS bytes_received, sum(packets) AS packets, sum(packets_sent) AS packets_sent,
         sum(packets_received) AS packets_received,
         sum(CASE WHEN coalesce(action, '') <> {q(ALLOW_ACTION)} THEN sessions ELSE 0 END) AS deny_count,
         sum(elapsed) AS duration_sum, max(elapsed) AS duration_max, {reasons},
         sum(CASE WHEN session_end_reason IS NULL OR session_end_reason NOT IN ({known}) THEN sessions ELSE 0 END)
           AS end_other,
         min(event_time) AS first_seen, max(event_time) AS last_seen,
         bit_or(CAST(1 AS BIGINT) << least(CAST(floor((epoch_us(event_time) - {int(start.timestamp()) * 1_000_000})
                                                      / 60000000) AS INTEGER), {MAX_MINUTE})) AS active_minutes
  FROM events
  WHERE event_time >= {q(start.isoformat())}::TIMESTAMPTZ AND event_time < {q(end.isoformat())}::TIMESTAMPTZ
  GROUP BY ALL
) TO {q(out)} (FORMAT parquet)
"""


_COMPARED = ("src_ip, dst_ip, CAST(dst_port AS INTEGER), protocol, app, action, from_zone, to_zone, sessions, "
             "log_records, bytes_sent, bytes_received, packets, deny_count, duration_sum, duration_max, "
             "epoch_us(first_seen), epoch_us(last_seen), active_minutes")  # fmt: skip


def run_reference(batch: Batch, store: str, work: str) -> tuple[StageResult, bool | None, str]:
    """The DuckDB delta (timed), then its comparison with the Spark delta partition under ``store`` (not)."""
    import duckdb

    files = [storage.local_path(o.path).as_posix() for o in storage.list_objects(batch.folder)]
    out = str(Path(work) / f"duckdb-delta-{batch.rows_requested}.parquet")
    end = BATCH_START + timedelta(minutes=15)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        result = _timed(REFERENCE, batch.lines, lambda: con.execute(duckdb_delta_sql(files, out, BATCH_START, end)))
        if result.status == "ok":
            result.output_rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
        spark_dir = Path(store, "delta", f"feature_spec_version={FSV}", f"batch_start={BATCH_START:%Y%m%dT%H%M}")
        spark_files = storage.committed_files(str(spark_dir)) if result.status == "ok" else None
        if not spark_files:
            return result, None, "not compared: a delta is missing"
        quoted = ", ".join("'" + storage.local_path(f).as_posix().replace("'", "''") + "'" for f in spark_files)
        spark = f"read_parquet([{quoted}])"
        duck = f"read_parquet('{out}')"
        only_spark, only_duck = (
            con.execute(
                f"SELECT count(*) FROM (SELECT {_COMPARED} FROM {a} EXCEPT ALL SELECT {_COMPARED} FROM {b})"
            ).fetchone()[0]
            for a, b in ((spark, duck), (duck, spark))
        )
        identical = only_spark == only_duck == 0
        check = "identical" if identical else f"{only_spark} rows only in Spark's, {only_duck} only in DuckDB's"
        return result, identical, check
    finally:
        con.close()


# -- the run --------------------------------------------------------------------------------------------


def merge_runs(runs: list[StageResult], lines: int) -> StageResult:
    """One stage's repeated runs as one result: the median seconds (and its lines/s), every run's seconds, the
    largest peaks; failed if any run failed (with the first failure's detail)."""
    failed = next((r for r in runs if r.status == "failed"), None)
    if failed is not None:
        return failed
    if all(r.status == "skipped" for r in runs):
        return runs[0]
    seconds = statistics.median(r.seconds or 0.0 for r in runs)
    peaks = ("jvm_peak_mib", "workers_peak_mib", "driver_peak_mib")
    return StageResult(
        runs[0].stage, "ok", round(seconds, 3), round(lines / seconds) if seconds else None, runs[-1].output_rows,
        *(max(getattr(r, peak) or 0.0 for r in runs) for peak in peaks), runs=[r.seconds or 0.0 for r in runs],
    )  # fmt: skip


def run_size(rows: int, work: str, stages: Sequence[str] = STAGES, repeat: int = 1) -> SizeResult:
    """One batch of about ``rows`` lines; the chain then the DuckDB reference on it, ``repeat`` times in turn."""
    base = Path(work, f"rows-{rows}")
    batch = generate_batch(rows, str(base / "raw"))
    print(f"bench: {batch.lines:,} lines in {batch.files} files ({batch.bytes / 2**20:.0f} MiB), "
          f"{batch.hosts} hosts, generated in {batch.seconds:.1f} s", file=sys.stderr)  # fmt: skip
    runs: list[list[StageResult]] = []
    checks: list[tuple[bool | None, str]] = []
    for _ in range(repeat):  # a re-run replaces each stage's partition: the jobs are idempotent
        chain = run_chain(batch, str(base / "store"), stages)
        reference, identical, check = run_reference(batch, str(base / "store"), str(base))
        runs.append([*chain, reference])
        checks.append((identical, check))
        for stage in runs[-1]:
            print(f"bench:   {stage.stage}: {stage.status} {stage.seconds or ''} s {stage.detail}", file=sys.stderr)
    result = SizeResult(batch, [merge_runs(list(stage), batch.lines) for stage in zip(*runs, strict=True)])
    result.delta_identical, result.delta_check = next(((i, c) for i, c in checks if i is not True), checks[-1])
    return result


def projection(result: SizeResult, cores: int) -> dict[str, Any]:
    """vCPUs and instances for each estate (the assumptions: :data:`PARALLEL_EFFICIENCY`, :data:`RESERVED_VCPUS`)."""
    seconds = result.chain_seconds
    per_core = result.batch.lines / seconds / cores if seconds else 0.0
    usable = INSTANCE_VCPUS - RESERVED_VCPUS
    estates = []
    for rate in ESTATES_LOGS_PER_S:
        lines = rate * BATCH_S
        needed = lines / DEADLINE_S
        vcpus = needed / (per_core * PARALLEL_EFFICIENCY) if per_core else math.inf
        instances = max(1, math.ceil(vcpus / usable)) if per_core else None
        estates.append({"logs_per_s": rate, "lines_per_batch": int(lines), "lines_per_s_needed": round(needed),
                        "vcpus": round(vcpus, 1) if per_core else None, "instances": instances})  # fmt: skip
    missing = [s.stage for s in result.chain if s.status != "ok"]
    return {"measured_lines": result.batch.lines, "chain_seconds": round(seconds, 3),
            "per_core_lines_per_s": round(per_core), "stages_missing": missing, "estates": estates}  # fmt: skip


def _fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


TABLE_HEADER = ("| stage | status | seconds | lines/s | output rows | JVM peak RSS (MiB) | "
                "Spark Python workers peak RSS (MiB) | driver peak RSS (MiB) |")  # fmt: skip


def render(command: str, machine: dict[str, Any], warmup: int, sizes: list[SizeResult], plan: dict[str, Any],
           max_rss_mib: float) -> str:  # fmt: skip
    out = [
        "## Data plane: the 15-minute chain on local Spark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB memory, "
        f"{machine['os']}; {machine['java']}; PySpark {machine['pyspark']} (`{machine['spark_master']}`, driver "
        f"memory {machine['spark_driver_memory']}); DuckDB {machine['duckdb']}; Python {machine['python']}.",
        "",
        f"Load average (1/5/15 min) at the start {machine['load_average_at_start']}, at the end "
        f"{machine.get('load_average_at_end')}: with more than {machine['cores']} the machine was shared and "
        "every figure is pessimistic.",
        "",
        (
            f"Warm numbers: one {warmup:,}-line batch went through the same stages (and DuckDB) first, in the same "
            "process; its figures are not shown."
            if warmup
            else "**No warm-up (`--warmup 0`): cold figures.**"
        )
        + " Each size is one 15-minute batch of synthetic PAN-OS TRAFFIC lines "
        "(`ndr_jobs.devtools.synth`), on its own storage root, so FG-A reads one delta partition (its 1h/24h windows "
        "are mostly empty: a steady-state run reads 96). After the chain, the live machines' two other jobs run on "
        "the same window: `inference_predictions`, with a model trained and promoted on the window first (its "
        "FG-A and FG-C copied one window earlier, as training splits by window; not timed), then "
        "`prediction_feature_join` (the S3 target). `lines/s` = the batch's raw lines / the stage's "
        "seconds. Memory: peak RSS sampled every 0.2 s during the stage (the driver is this Python process, "
        f"where DuckDB runs); the driver's `ru_maxrss` over the whole run: {max_rss_mib:,.0f} MiB.",
    ]
    for size in sizes:
        b = size.batch
        out += [
            "",
            f"### {b.lines:,} lines ({b.hosts:,} hosts, {b.files} files, {b.bytes / 2**20:,.0f} MiB)",
            "",
            TABLE_HEADER,
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in size.stages:
            status = s.status if not s.detail or s.status == "ok" else f"{s.status} ({s.detail})"
            out.append(
                f"| {s.stage} | {status.replace('|', '/')} | {_fmt(s.seconds, 2) if s.seconds is not None else '–'} "
                f"| {_fmt(s.lines_per_s)} | {_fmt(s.output_rows)} | {_fmt(s.jvm_peak_mib)} | "
                f"{_fmt(s.workers_peak_mib)} | {_fmt(s.driver_peak_mib)} |"
            )
        ok_chain = [s for s in size.chain if s.status == "ok"]
        ratio, first = size.ratio, size.first_ratio
        repeats = max((len(s.runs) for s in size.stages), default=1)
        out += [""]
        if repeats > 1:
            out += [
                f"Seconds are the median of {repeats} runs; every run, in order: "
                + "; ".join(f"{s.stage} {', '.join(f'{r:.1f}' for r in s.runs)}" for s in size.stages if s.runs)
                + ".",
                "",
            ]
        first_note = f" (first run: {first:.1f}x)" if repeats > 1 and first else ""
        out += [
            f"Spark delta / DuckDB: {f'{ratio:.1f}x' if ratio else '–'}{first_note} (goal: at most 4x); "
            f"the two deltas: {size.delta_check}.",
            f"Chain ({', '.join(s.stage for s in ok_chain) or 'no stage'}): {size.chain_seconds:,.1f} s, "
            f"{_fmt(b.lines / size.chain_seconds if size.chain_seconds else None)} lines/s.",
        ]
    usable = INSTANCE_VCPUS - RESERVED_VCPUS
    out += [
        "",
        "### Projection: SageMaker Processing Spark cluster per estate",
        "",
        f"From the {plan['measured_lines']:,}-line run: the chain took {plan['chain_seconds']:,.1f} s on "
        f"{machine['cores']} cores, {plan['per_core_lines_per_s']:,} lines/s per core."
        + (
            f" **Partial: {', '.join(plan['stages_missing'])} did not run (skipped or failed); rerun with "
            "every stage.**"
            if plan["stages_missing"]
            else ""
        ),  # fmt: skip
        "",
        f"| estate (logs/s) | lines per 15-min batch | lines/s to finish in {DEADLINE_S:.0f} s | vCPUs | "
        f"{INSTANCE} instances |",
        "|---:|---:|---:|---:|---:|",
    ]
    for e in plan["estates"]:
        out.append(f"| {e['logs_per_s']:,} | {e['lines_per_batch']:,} | {e['lines_per_s_needed']:,} | "
                   f"{_fmt(e['vcpus'], 1)} | {_fmt(e['instances'])} |")  # fmt: skip
    out += [
        "",
        "Assumptions: a cluster vCPU does the work of one local core at a parallel efficiency of "
        f"{PARALLEL_EFFICIENCY} (network shuffles, stragglers, the driver's serial phases; local[*] has none of "
        f"these); {INSTANCE} = {INSTANCE_VCPUS} vCPUs / {INSTANCE_GIB} GiB, of which {RESERVED_VCPUS} vCPU is left "
        f"to the OS, YARN and the driver ({usable} usable); throughput is linear in the batch size (measured at "
        "one size only: check with a second); the four stages run back to back on the same cluster within the "
        f"{DEADLINE_S:.0f} s. Not included: SageMaker Processing start-up (provisioning and image pull, typically "
        "minutes per job: four cold Processing steps cannot meet a 5-minute budget whatever the instance count; "
        "the chain needs one step, or a warm cluster), S3 latency (here a local disk), and FG-A's steady-state "
        "24 h window (96 delta partitions instead of 1).",
        "",
    ]
    return "\n".join(out)


def runtimes_document(size: SizeResult, machine: dict[str, Any], command: str) -> dict[str, Any]:
    """The per-entrypoint runtimes the compiler's cadence model reads (docs/cadence.md): each chain stage's median
    seconds at ``size`` (its scripts are ``ndr_jobs.scripts.run_<stage>``); failed or skipped stages are left out."""
    b = size.batch
    return {
        "source": f"{command}: the {b.lines:,}-line batch ({b.hosts:,} hosts), median of each stage's runs, local "
                  f"Spark ({machine['spark_master']}, PySpark {machine['pyspark']}) on {machine['cores']} cores",
        "batch_lines": b.lines,
        "seconds": {f"ndr_jobs.scripts.run_{s.stage}": s.seconds for s in size.jobs
                    if s.status == "ok" and s.seconds is not None},
    }


# -- backfill: a day of windows in one job against window by window ---------------------------------------

BACKFILL_START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
#: a day of 15-minute windows
BACKFILL_WINDOWS = 96
#: a small estate: each window is a few thousand lines, so the figures are the per-window fixed cost
BACKFILL_HOSTS = 40


@dataclass
class BackfillResult:
    """The same windows run by one ``run_backfill_windows`` process and by one process per job per window."""

    windows: int
    hosts: int
    lines: int
    bytes: int
    range_seconds: float | None = None
    range_detail: str = ""
    range_session_seconds: float | None = None
    reference_seconds: float | None = None
    reference_detail: str = ""
    reference_processes: int = 0
    identical: bool | None = None
    check: str = ""

    @property
    def ratio(self) -> float | None:
        """Range seconds / window-by-window seconds."""
        if self.range_seconds and self.reference_seconds:
            return self.range_seconds / self.reference_seconds
        return None


def _process(module: str, args: Sequence[str], env: dict[str, str]) -> tuple[float, str, dict[str, Any]]:
    """Run ``python -m module args`` (a fresh interpreter and JVM, as a Processing job has): its wall seconds, the
    error (empty when it exited 0) and its last JSON line."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    last = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        return seconds, (errors[-1] if errors else f"exit {proc.returncode}"), last
    return seconds, "", last


def _same_partitions(a: str, b: str, windows: Sequence[datetime]) -> tuple[bool, str]:
    """Whether two storage roots hold the same rows in every window partition of the chain (read without Spark)."""
    from ndr_jobs.datasets import layout
    from ndr_jobs.processing.backfill_windows_job import WINDOW_DATASETS

    differ, missing = [], []
    for dataset in WINDOW_DATASETS:
        for start in windows:
            tables = [layout.partition_table(storage.partition_path(root, dataset, layout.batch_partition(FSV, start)))
                      for root in (a, b)]  # fmt: skip
            if any(t is None for t in tables):
                missing.append(f"{dataset}@{start:%H%M}")
                continue
            rows = [sorted(map(str, t.to_pylist())) for t in tables if t is not None]
            if rows[0] != rows[1]:
                differ.append(f"{dataset}@{start:%H%M}")
    if missing or differ:
        return False, f"missing {', '.join(missing[:5]) or 'none'}; different {', '.join(differ[:5]) or 'none'}"
    return True, f"identical ({len(WINDOW_DATASETS)} datasets x {len(windows)} windows)"


def run_backfill(work: str, windows: int = BACKFILL_WINDOWS, hosts: int = BACKFILL_HOSTS) -> BackfillResult:
    """``windows`` generated windows from midnight: one range job, then each window as the four job processes the
    pipeline runs today; both timed as whole processes (interpreter, JVM and Spark session start-up included)."""
    from ndr_jobs.devtools.synth.generator import SynthConfig, generate
    from ndr_jobs.processing.historical_windows_extractor_job import (
        run_historical_windows_extractor_from_runtime_config as extract,
    )
    from ndr_jobs.runtime.config import BackfillRuntime

    base = Path(work, f"backfill-{windows}")
    shutil.rmtree(base, ignore_errors=True)  # a kept work dir's report would make the one job resume, not run
    raw, manifest = base / "raw", base / "windows.json"
    end = BACKFILL_START + windows * timedelta(minutes=15)
    config = SynthConfig(start=BACKFILL_START, hours=windows / 4, hosts=hosts, seed=SEED, org_id=ORG,
                         project_name=PROJECT, feature_spec_version=FSV, files_per_batch=1)  # fmt: skip
    made = generate(config, str(raw))
    env = {**os.environ, "NDR_RAW_ROOT": str(raw), "NDR_ORG_ID": ORG}
    with _environment(NDR_RAW_ROOT=str(raw), NDR_ORG_ID=ORG), contextlib.redirect_stdout(sys.stderr):
        extract(BackfillRuntime(
            project_name=PROJECT, feature_spec_version=FSV, start_ts=iso(BACKFILL_START), end_ts=iso(end),
            manifest_uri=str(manifest)))  # fmt: skip
    items = json.loads(manifest.read_text())["windows"]
    objects = storage.list_objects(str(raw))
    result = BackfillResult(len(items), hosts, made.rows, sum(o.size for o in objects))
    print(f"bench: backfill: {len(items)} windows, {made.rows:,} lines", file=sys.stderr)

    project = ["--project-name", PROJECT, "--feature-spec-version", FSV]
    seconds, error, summary = _process(
        "ndr_jobs.scripts.run_backfill_windows",
        [*project, "--manifest-uri", str(manifest), "--report-uri", str(base / "report.json")],
        {**env, "NDR_STORAGE_ROOT": str(base / "range")},
    )
    result.range_seconds, result.range_detail = (None, error) if error else (round(seconds, 3), "")
    result.range_session_seconds = summary.get("spark_session_seconds")
    print(f"bench: backfill: one job {seconds:.1f} s {error}", file=sys.stderr)

    total, one_by_one = 0.0, {**env, "NDR_STORAGE_ROOT": str(base / "one-by-one")}
    for item in items:
        batch = [*project, "--mini-batch-id", item["mini_batch_id"], "--batch-start-ts-iso", item["batch_start_ts"],
                 "--batch-end-ts-iso", item["batch_end_ts"]]  # fmt: skip
        for name in STAGES:
            extra = ["--raw-batch-folder", item["batch_folder"]] if name == "delta_builder" else []
            seconds, error, _ = _process(f"ndr_jobs.scripts.run_{name}", [*batch, *extra], one_by_one)
            total += seconds
            result.reference_processes += 1
            if error:
                result.reference_detail = f"{item['batch_start_ts']} {name}: {error}"
                break
        if result.reference_detail:
            break
    result.reference_seconds = None if result.reference_detail else round(total, 3)
    print(f"bench: backfill: window by window {total:.1f} s {result.reference_detail}", file=sys.stderr)
    starts = [datetime.fromisoformat(i["batch_start_ts"].replace("Z", "+00:00")) for i in items]
    if result.range_seconds and result.reference_seconds:
        result.identical, result.check = _same_partitions(str(base / "range"), str(base / "one-by-one"), starts)
    else:
        result.check = "not compared: a run failed"
    return result


def render_backfill_header(command: str, machine: dict[str, Any]) -> str:
    """The heading of a report that has only the backfill comparison (``--backfill-only``)."""
    return "\n".join([
        "## Data plane: backfill throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB memory; {machine['java']}; "
        f"PySpark {machine['pyspark']} (`{machine['spark_master']}`, driver memory {machine['spark_driver_memory']}); "
        f"Python {machine['python']}. Load average (1/5/15 min) at the start {machine['load_average_at_start']}, at "
        f"the end {machine.get('load_average_at_end')}: with more than {machine['cores']} the machine was shared and "
        "every figure is pessimistic.",
        "",
    ])  # fmt: skip


#: -- the month's cost model: assumptions --
MONTH_WINDOWS = 2880  # 30 days of 15-minute windows
#: a cold SageMaker Processing job's start-up (provisioning, image pull, container start), an assumption
PROCESSING_STARTUP_S = 180.0
#: the steps of today's per-window pipeline, each its own Processing job
STEPS_PER_WINDOW = len(STAGES)
#: windows per job in the model's table
CHUNKS: tuple[int, ...] = (1, 16, 96, 384)


@dataclass(frozen=True)
class BackfillCost:
    """What a backfill costs: Processing jobs, wall hours (windows run one after another) and instance-hours."""

    how: str
    jobs: int
    hours: float
    instance_hours: float


def backfill_cost(windows: int, per_window_s: float, chunk: int | None, session_s: float = 0.0,
                  startup_s: float = PROCESSING_STARTUP_S, instances: int = 1) -> BackfillCost:  # fmt: skip
    """The cost of ``windows`` windows whose chain takes ``per_window_s`` in a warm session.

    ``chunk`` None is the window-by-window pipeline the machine ran before chunks: each window's
    :data:`STEPS_PER_WINDOW` steps are Processing jobs, each paying
    ``startup_s`` and a Spark session start (``session_s``). Otherwise one job per ``chunk`` windows pays them once.
    Every job runs on ``instances`` instances, billed from start-up to exit; windows run one at a time (a window's
    FG-A reads the windows before it).
    """
    if windows < 1 or per_window_s < 0 or session_s < 0 or startup_s < 0 or instances < 1:
        raise ValueError("windows and instances must be positive, the seconds not negative")
    if chunk is not None and chunk < 1:
        raise ValueError(f"a chunk has at least one window, not {chunk}")
    jobs = windows * STEPS_PER_WINDOW if chunk is None else -(-windows // chunk)
    seconds = jobs * (startup_s + session_s) + windows * per_window_s
    plural = "s" if chunk is None or chunk > 1 else ""
    how = f"window by window: {STEPS_PER_WINDOW} jobs each" if chunk is None else f"{chunk} window{plural} per job"
    return BackfillCost(how, jobs, round(seconds / 3600, 2), round(seconds / 3600 * instances, 2))


def month_costs(per_window_s: float, session_s: float) -> list[BackfillCost]:
    return [backfill_cost(MONTH_WINDOWS, per_window_s, chunk, session_s) for chunk in (None, *CHUNKS)]


BACKFILL_HEADER = "| how | windows | processes | seconds | seconds per window | vs window by window |"


def render_backfill(result: BackfillResult) -> str:
    w = result.windows

    def row(how: str, processes: int, seconds: float | None, ratio: float | None, detail: str) -> str:
        per = seconds / w if seconds and w else None
        shown = f"failed ({detail})".replace("|", "/") if detail else _fmt(seconds, 2)
        return f"| {how} | {w} | {processes} | {shown} | {_fmt(per, 2)} | {f'{ratio:.2f}x' if ratio else '–'} |"

    return "\n".join([
        "",
        f"### Backfill: {w} windows in one job against window by window",
        "",
        f"{w} consecutive 15-minute windows from {iso(BACKFILL_START)} ({result.hosts} hosts, {result.lines:,} lines, "
        f"{result.bytes / 2**20:,.1f} MiB in all: small windows, so the figures are the per-window fixed cost). "
        "One job: `python -m ndr_jobs.scripts.run_backfill_windows` over the extractor's manifest, one process and "
        "one Spark session. Window by window: what the backfill pipeline runs today, each window's four steps as "
        "four `python -m ndr_jobs.scripts.run_<step>` processes (each its own interpreter, JVM and Spark session, "
        "as each Processing job has; SageMaker's own start-up of each job is not included). Wall seconds of the "
        "processes, one run each, the one job first.",
        "",
        BACKFILL_HEADER,
        "|---|---:|---:|---:|---:|---:|",
        row("one job (`run_backfill_windows`)", 1, result.range_seconds, result.ratio, result.range_detail),
        row("window by window (4 processes each)", result.reference_processes, result.reference_seconds,
            1.0 if result.reference_seconds else None, result.reference_detail),
        "",
        f"The one job's Spark session start: {_fmt(result.range_session_seconds, 2)} s. The two runs' committed "
        f"partitions: {result.check}.",
        "",
        *render_month(result),
    ])  # fmt: skip


def render_month(result: BackfillResult) -> list[str]:
    """The month's cost model from the one job's figures (nothing when it failed)."""
    if not result.range_seconds or not result.windows:
        return []
    session = result.range_session_seconds or 0.0
    per_window = max(result.range_seconds - session, 0.0) / result.windows
    lines = [
        f"#### A month of backfill ({MONTH_WINDOWS:,} windows), modelled",
        "",
        f"Per window {per_window:.1f} s of work in a warm session (the one job's seconds less its session start, "
        f"over its {result.windows} windows), a Spark session start of {session:.1f} s per job, and a cold "
        f"Processing start-up of {PROCESSING_STARTUP_S:.0f} s per job (an assumption); one instance per job, billed "
        "from start-up to exit; windows one at a time (`backfill_cost` in `ndr_jobs/devtools/bench.py`). Today's row "
        "is low: its jobs run in cold sessions, slower than a warm window's share.",
        "",
        "| how | Processing jobs | hours | instance-hours |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {c.how} | {c.jobs:,} | {c.hours:,.1f} | {c.instance_hours:,.1f} |"
              for c in month_costs(per_window, session)]  # fmt: skip
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.devtools.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the markdown report to write (replaced)")
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="lines per batch, one run per size")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} lines after a {QUICK_WARMUP:,} warm-up")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warm-up batch lines (default {WARMUP:,}, --quick {QUICK_WARMUP:,}; 0: none)",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="the chain's stages to run (the others are reported 'skipped')",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"runs of each size's chain and reference, reported by their median (default {REPEAT}, --quick 1)",
    )
    parser.add_argument(
        "--backfill-windows",
        type=int,
        default=None,
        help=f"windows of the backfill comparison (default {BACKFILL_WINDOWS}, a day; --quick 0; 0: none)",
    )
    parser.add_argument("--backfill-only", action="store_true", help="only the backfill comparison, not the chain")
    parser.add_argument("--json", default=None, help="also write the raw figures as JSON here")
    parser.add_argument("--runtimes", default=None,
                        help="also write the largest size's per-entrypoint seconds here, for the cadence model")
    parser.add_argument("--work-dir", default=None, help="where the data goes (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    a = parser.parse_args(argv)
    rows = a.rows or ([QUICK_ROWS] if a.quick else list(DEFAULT_ROWS))
    if any(r < 1000 for r in rows):
        parser.error("--rows: every size must be at least 1000 lines")
    warmup = a.warmup if a.warmup is not None else (QUICK_WARMUP if a.quick else WARMUP)
    if 0 < warmup < 1000:
        parser.error("--warmup: at least 1000 lines, or 0 for none")
    repeat = a.repeat if a.repeat is not None else (1 if a.quick else REPEAT)
    if repeat < 1:
        parser.error("--repeat: at least 1")
    backfill_windows = a.backfill_windows if a.backfill_windows is not None else (0 if a.quick else BACKFILL_WINDOWS)
    if backfill_windows < 0 or (a.backfill_only and backfill_windows < 1):
        parser.error("--backfill-windows: at least 1 with --backfill-only, else 0 or more")
    command = "python -m ndr_jobs.devtools.bench " + " ".join(sys.argv[1:] if argv is None else argv)

    work = a.work_dir or tempfile.mkdtemp(prefix="ndr-bench-")
    Path(work).mkdir(parents=True, exist_ok=True)
    try:
        machine = machine_info()
        sizes: list[SizeResult] = []
        if not a.backfill_only:
            if warmup:
                print(f"bench: warm-up ({warmup:,} lines)", file=sys.stderr)
                run_size(warmup, str(Path(work, "warmup")), a.stages)
            sizes = [run_size(r, work, a.stages, repeat) for r in rows]
        backfill = run_backfill(work, backfill_windows) if backfill_windows else None
        machine["load_average_at_end"] = _load()
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
        plan: dict[str, Any] = {}
        if sizes:
            plan = projection(max(sizes, key=lambda s: s.batch.lines), machine["cores"])
            text = render(command, machine, warmup, sizes, plan, max_rss)
        else:
            text = render_backfill_header(command, machine)
        if backfill is not None:
            text = text.rstrip("\n") + "\n" + render_backfill(backfill)
        storage.write_text(a.out, text)
        if a.json:
            document = {"command": command, "machine": machine, "warmup_lines": warmup, "driver_max_rss_mib": max_rss,
                        "sizes": [{"batch": asdict(s.batch), "stages": [asdict(x) for x in s.stages],
                                   "spark_duckdb_ratio": s.ratio, "delta_identical": s.delta_identical,
                                   "delta_check": s.delta_check} for s in sizes],
                        "projection": plan,
                        "backfill": None if backfill is None
                        else {**asdict(backfill), "ratio": backfill.ratio}}  # fmt: skip
            storage.write_text(a.json, json.dumps(document, indent=2, sort_keys=True) + "\n")
        if a.runtimes and sizes:  # the chain measured (not --backfill-only)
            runtimes = runtimes_document(max(sizes, key=lambda s: s.batch.lines), machine, command)
            storage.write_text(a.runtimes, json.dumps(runtimes, indent=2, sort_keys=True) + "\n")
        print(text)
    finally:
        if not a.keep and not a.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
