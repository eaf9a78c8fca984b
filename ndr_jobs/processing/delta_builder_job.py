"""Build the 15-minute delta table (and its quarantine) from one raw PAN-OS TRAFFIC mini-batch.

Entry: :func:`run_delta_builder_from_runtime_config`. Each Spark task reads and parses its own splits of the raw
files and sums in-window records per delta key in a compiled hash table (:func:`partial_rows`); one shuffle merges
the partial rows (:func:`merge_partials`). Columns: ``docs/datasets.md``; design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ndr_jobs.datasets import layout, storage
from ndr_jobs.features.hash_agg import MAX, MIN, OR, SUM, HashAggregator
from ndr_jobs.interface import contract
from ndr_jobs.interface.entrypoints import DEFAULT_MAX_QUARANTINE_RATIO
from ndr_jobs.parsing import raw_lines
from ndr_jobs.runtime.config import BatchRuntime, DeltaRuntime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DELTA_DATASET = "delta"
QUARANTINE_DATASET = "quarantine"
DELTA_KEYS: tuple[str, ...] = ("src_ip", "dst_ip", "dst_port", "protocol", "app", "action", "from_zone", "to_zone")
#: the session end reasons counted in their own column; any other reason counts in ``end_other``
END_REASON_COLUMNS: dict[str, str] = {
    "tcp-fin": "end_tcp_fin",
    "tcp-rst-from-client": "end_tcp_rst_from_client",
    "tcp-rst-from-server": "end_tcp_rst_from_server",
    "aged-out": "end_aged_out",
    "policy-deny": "end_policy_deny",
    "threat": "end_threat",
}
DELTA_COLUMNS: tuple[str, ...] = (
    *DELTA_KEYS,
    "sessions",
    "log_records",
    "bytes_sent",
    "bytes_received",
    "packets",
    "packets_sent",
    "packets_received",
    "deny_count",
    "duration_sum",
    "duration_max",
    *END_REASON_COLUMNS.values(),
    "end_other",
    "first_seen",
    "last_seen",
    "active_minutes",
    "batch_start_ts",
    "batch_end_ts",
)
QUARANTINE_COLUMNS: tuple[str, ...] = ("reason", "detail", "source_file", "raw_line", "mini_batch_id")
#: the columns that identify a quarantined line (``file_index``: its file, 1-based in the read's input files)
_QUARANTINE_FIELDS = ("quarantine_reason", "quarantine_detail", "file_index", "raw_line")
#: the last minute ``active_minutes`` has a bit for (a BIGINT mask)
MAX_MINUTE = 63
#: an action that lets the session through; every other action (deny, drop, reset-*) counts as a deny
ALLOW_ACTION = "allow"


#: quarantined lines shown when the quarantine guard trips (and the characters of each line shown)
QUARANTINE_SAMPLE = 5
SAMPLE_CHARS = 300


class QuarantineRatioExceededError(RuntimeError):
    """Too large a share of a batch's lines was quarantined: most likely the log format changed."""


class RawPathError(ValueError):
    """A raw batch folder or object outside the project's routed raw prefix."""


def org_id_for(runtime: BatchRuntime, start: datetime) -> str:
    """``$NDR_ORG_ID``, or the org id the mini-batch id starts with."""
    if os.environ.get("NDR_ORG_ID"):
        return os.environ["NDR_ORG_ID"]
    suffix = f"-{runtime.project_name}-{runtime.feature_spec_version}-{layout.stamp(start)}"
    if runtime.mini_batch_id.endswith(suffix) and len(runtime.mini_batch_id) > len(suffix):
        return runtime.mini_batch_id[: -len(suffix)]
    raise ValueError(
        f"cannot tell the org id: mini-batch id {runtime.mini_batch_id!r} does not end with {suffix!r} "
        "and NDR_ORG_ID is not set"
    )


def raw_batch_folder(runtime: BatchRuntime, start: datetime) -> str:
    """The raw mini-batch folder: the runtime's, or the contract layout under ``$NDR_RAW_ROOT``.

    With ``$NDR_RAW_ROOT`` set (the deployment's routed raw root), a given folder must be the batch's own
    folder under it (:func:`confine_raw_folder`); an ``s3://`` folder must follow the ingestion layout of the
    run's project, spec version and window in any case.
    """
    root = os.environ.get("NDR_RAW_ROOT")
    if runtime.raw_batch_folder:
        return confine_raw_folder(runtime, start, runtime.raw_batch_folder, root)
    if not root:
        raise ValueError("no --raw-batch-folder given and NDR_RAW_ROOT is not set")
    org_id = org_id_for(runtime, start)
    day_time = start.astimezone(UTC).strftime("%Y/%m/%d/%H%M")
    return storage.join(root, "pan-traffic", org_id, runtime.project_name, runtime.feature_spec_version, day_time) + "/"


def confine_raw_folder(runtime: BatchRuntime, start: datetime, folder: str, root: str | None) -> str:
    """``folder`` if it is the run's own raw batch folder (by value), else :class:`RawPathError`.

    An ``s3://`` folder must follow the ingestion layout of the run's project, spec version and window, and with an
    ``s3://`` ``$NDR_RAW_ROOT`` be exactly the batch's folder under it (the routed bucket and org). A local folder
    (tests, local runs) must lie inside a local ``$NDR_RAW_ROOT`` when one is set.
    """
    folder = contract.storage_uri(folder)  # safe segments: no '..', no '.', no control characters
    day_time = start.astimezone(UTC).strftime("%Y/%m/%d/%H%M")
    if storage.is_s3(folder):
        match = re.match(contract.BATCH_FOLDER_PATTERN, folder if folder.endswith("/") else folder + "/")
        want = (runtime.project_name, runtime.feature_spec_version, day_time.replace("/", ""))
        if match is None or (match.group(3), match.group(4), "".join(match.group(5, 6, 7, 8, 9))) != want:
            raise RawPathError(
                f"raw batch folder {folder!r} is not s3://<bucket>/pan-traffic/<org>/{runtime.project_name}/"
                f"{runtime.feature_spec_version}/{day_time}/"
            )
        if root and storage.is_s3(root):
            org_id = org_id_for(runtime, start)
            own = storage.join(
                root, "pan-traffic", org_id, runtime.project_name, runtime.feature_spec_version, day_time
            )
            if folder.rstrip("/") != own:
                raise RawPathError(f"raw batch folder {folder!r} is not this batch's folder under NDR_RAW_ROOT: {own}/")
        return folder
    if root and not storage.is_s3(root):
        real_root = storage.local_path(root).resolve()
        if not storage.local_path(folder).resolve().is_relative_to(real_root):
            raise RawPathError(f"raw batch folder {folder!r} is outside NDR_RAW_ROOT {root!r}")
    return folder


def confine_objects(folder: str, objects: list[storage.ObjectInfo]) -> list[storage.ObjectInfo]:
    """``objects`` if each lies inside ``folder`` (locally: after resolving symbolic links), else
    :class:`RawPathError`."""
    base = folder.rstrip("/") + "/"
    real_base = (
        None if storage.is_s3(storage.backing(folder)) else storage.local_path(storage.backing(folder)).resolve()
    )
    for o in objects:
        inside = o.path.startswith(base) and not {".", ".."} & set(o.path[len(base) :].split("/"))
        if inside and real_base is not None:
            inside = storage.local_path(storage.backing(o.path)).resolve().is_relative_to(real_base)
        if not inside:
            raise RawPathError(f"raw object {o.path!r} is outside the batch folder {folder!r}")
    return objects


#: the delta key's text columns (the key is these and ``dst_port``)
TEXT_KEYS: tuple[str, ...] = tuple(k for k in DELTA_KEYS if k != "dst_port")
#: the aggregates each Python worker computes per (status, key) of its lines, and how partial rows merge
PARTIAL_VALUES: tuple[tuple[str, int], ...] = (
    *((c, SUM) for c in ("sessions", "log_records", "bytes_sent", "bytes_received", "packets", "packets_sent",
                         "packets_received", "deny_count", "duration_sum", *END_REASON_COLUMNS.values(), "end_other")),
    ("duration_max", MAX), ("first_seen", MIN), ("last_seen", MAX), ("active_minutes", OR),
)  # fmt: skip
_TIMES = ("first_seen", "last_seen")
#: the partial rows' columns: the line's status, its quarantine fields (quarantined lines only), the delta key
PARTIAL_KEYS: tuple[str, ...] = ("status", *_QUARANTINE_FIELDS, *DELTA_KEYS)
#: the parsed columns the workers need
PARSED: tuple[str, ...] = (
    "quarantine_reason", "quarantine_detail", "raw_line", *DELTA_KEYS, "repeat_count", "bytes_sent", "bytes_received",
    "packets", "packets_sent", "packets_received", "elapsed_seconds", "session_end_reason", "event_time",
)  # fmt: skip

_SQL_TYPES = {pa.string(): "STRING", pa.int32(): "INT", pa.int64(): "BIGINT", pa.timestamp("us", tz="UTC"): "TIMESTAMP"}


def _partial_schema() -> pa.Schema:
    """The Arrow schema of :func:`partial_rows`' batches: :data:`PARTIAL_KEYS`, then :data:`PARTIAL_VALUES`."""
    key_types = {"file_index": pa.int32(), "dst_port": pa.int32()}
    return pa.schema(
        [(c, key_types.get(c, pa.string())) for c in PARTIAL_KEYS]
        + [(c, pa.timestamp("us", tz="UTC") if c in _TIMES else pa.int64()) for c, _ in PARTIAL_VALUES]
    )


def line_values(parsed: pa.RecordBatch | pa.Table, when: np.ndarray, start_us: int) -> np.ndarray:
    """Per parsed TRAFFIC record (event times ``when``, epoch microseconds), what it adds to its delta row:
    :data:`PARTIAL_VALUES`, one row per value."""

    def ints(name: str) -> np.ndarray:
        return pc.fill_null(parsed.column(name).cast(pa.int64()), 0).to_numpy(zero_copy_only=False)

    sessions = np.maximum(ints("repeat_count"), 1)
    zero = np.zeros_like(sessions)
    allowed = pc.fill_null(pc.equal(parsed.column("action"), ALLOW_ACTION), False).to_numpy(zero_copy_only=False)
    # the end reason as its column's position (the last: any other reason, or none), through its few distinct values
    reasons = pc.dictionary_encode(parsed.column("session_end_reason"))
    names = list(END_REASON_COLUMNS)
    known = [names.index(r) if r in names else len(names) for r in reasons.dictionary.to_pylist()]
    code_of = np.array([*known, len(names)])  # the last: a null reason
    code = code_of[pc.fill_null(reasons.indices, len(code_of) - 1).to_numpy(zero_copy_only=False)]
    ends = [np.where(code == k, sessions, zero) for k in range(len(names) + 1)]
    minute = np.clip((when - start_us) // 60_000_000, 0, MAX_MINUTE)
    elapsed = ints("elapsed_seconds")
    return np.stack([
        sessions, np.ones_like(sessions), ints("bytes_sent"), ints("bytes_received"), ints("packets"),
        ints("packets_sent"), ints("packets_received"), np.where(allowed, zero, sessions), elapsed,
        *ends,
        elapsed, when, when, np.left_shift(1, minute),
    ])  # fmt: skip


def partial_rows(
    batches: Iterable[tuple[pa.Array | raw_lines.Unread, int]], start_us: int, end_us: int
) -> Iterator[pa.RecordBatch]:
    """A Spark task's lines (batches of lines, each with its file's index) as partial delta rows
    (:func:`_partial_schema`).

    In-window TRAFFIC records are summed per delta key in a compiled hash table (:class:`HashAggregator`): a
    task sends one row per key it saw, not one per line. Records before or after the window and blank lines
    are counted, one row per status; each quarantined line is a row of its own (reason, detail, file, line).
    """
    from ndr_jobs.parsing.panos import parse_arrow

    schema = _partial_schema()
    table = HashAggregator(TEXT_KEYS, ("dst_port",), PARTIAL_VALUES, max_groups=1 << 20, arena_bytes=96 << 20)
    counts = {"blank": 0, "before_window": 0, "after_window": 0}

    def rows(columns: dict[str, Any], n: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema], schema=schema
        )

    def groups(found: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        columns = {name: found.column(name) for name in found.schema.names}
        columns |= {c: columns[c].cast(schema.field(c).type) for c in (*_TIMES, "dst_port")}
        columns["status"] = pa.array(["in_window"] * found.num_rows, pa.string())
        out = rows(columns, found.num_rows)
        for at in range(0, out.num_rows, 1 << 16):
            yield out.slice(at, 1 << 16)

    for lines, file_index in batches:
        if isinstance(lines, raw_lines.Unread):  # the rest of an object the reader refused: one record
            yield rows({
                "status": pa.array(["quarantined"]), "quarantine_reason": pa.array([lines.reason]),
                "quarantine_detail": pa.array([lines.detail]), "raw_line": pa.array([""]),
                "file_index": pa.array([file_index], pa.int32()), "log_records": pa.array([1], pa.int64()),
            }, 1)  # fmt: skip
            continue
        blank = raw_lines.blank(lines)
        parsed = parse_arrow(lines, PARSED)
        quarantined = parsed.column("quarantine_reason").is_valid().to_numpy(zero_copy_only=False) & ~blank
        if quarantined.any():
            picked = pa.array(np.flatnonzero(quarantined))
            n = len(picked)
            columns = {c: parsed.column(c).take(picked) for c in ("quarantine_reason", "quarantine_detail", "raw_line")}
            columns["status"] = pa.array(["quarantined"] * n, pa.string())
            columns["file_index"] = pa.array(np.full(n, file_index, np.int32))
            columns["log_records"] = pa.array(np.ones(n, np.int64))
            yield rows(columns, n)
        good = ~blank & ~quarantined
        when = pc.fill_null(parsed.column("event_time").cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        before, after = good & (when < start_us), good & (when >= end_us)
        counts["blank"] += int(blank.sum())
        counts["before_window"] += int(before.sum())
        counts["after_window"] += int(after.sum())
        inside = good & ~before & ~after
        if not inside.any():
            continue
        records = parsed.filter(pa.array(inside)) if not inside.all() else parsed
        text = [records.column(c) for c in TEXT_KEYS]
        port = records.column("dst_port").cast(pa.int64()).to_numpy(zero_copy_only=False)[None, :]
        for found in table.add(text, port, line_values(records, when[inside], start_us)):
            yield from groups(found)
    if len(table):
        yield from groups(table.flush())
    for status, n in counts.items():
        if n:
            yield rows({"status": pa.array([status]), "log_records": pa.array([n], pa.int64())}, 1)


def merge_partials(partials: DataFrame, start: datetime, end: datetime, files: int) -> DataFrame:
    """The groups of the batch (:data:`PARTIAL_KEYS`, then :data:`DELTA_COLUMNS`) from the tasks' partial rows,
    in ``files`` partitions by a hash of :data:`DELTA_KEYS`: the delta's files, so that one shuffle serves the
    merge and the write. The hash also takes ``raw_line``, null on a record's row (Spark's hash skips a null, so
    the row goes where the key alone sends it) and the line on a quarantined one (a batch of malformed lines is
    spread over the partitions, not merged by one task).

    (The tasks' rows go straight to the shuffle: merging them in the reading tasks first, as Spark's own
    ``groupBy`` would, gains nothing, since a task's rows already have distinct keys.)
    """
    from pyspark.sql import functions as F

    merge = {SUM: F.sum, MIN: F.min, MAX: F.max, OR: F.bit_or}
    return (
        partials.repartition(files, *DELTA_KEYS, "raw_line")
        .groupBy(*PARTIAL_KEYS)
        .agg(
            *(merge[op](c).alias(c) for c, op in PARTIAL_VALUES),
            F.lit(start).cast("TIMESTAMP").alias("batch_start_ts"),
            F.lit(end).cast("TIMESTAMP").alias("batch_end_ts"),
        )
        .select(*PARTIAL_KEYS[: -len(DELTA_KEYS)], *DELTA_COLUMNS)
    )


def task_bytes(spark: SparkSession, raw_bytes: int) -> int:
    """Raw bytes per task: ``raw_bytes / cores``, within 128 MiB .. 1 GiB (a task's hash table stays bounded,
    and a small batch is not cut finer than Spark's text source would cut it)."""
    return min(max(-(-raw_bytes // max(spark.sparkContext.defaultParallelism, 1)), 128 << 20), 1 << 30)


def delta_files(spark: SparkSession, raw_bytes: int) -> int:
    """How many files the delta is written in: one per 256 MiB of raw bytes, at most one per core (a file's rows
    are merged, sorted and written by one task)."""
    return min(max(-(-raw_bytes // (256 << 20)), 1), max(spark.sparkContext.defaultParallelism, 1))


def run_delta_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's delta and quarantine partitions; print and return the summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ndr_jobs.runtime.spark import UNCOMPRESSED_CACHE, spark_session, sql_conf
    from ndr_jobs.runtime.summary import Phases, batch_header, emit

    phase = Phases()
    start, end = contract.parse_utc(runtime.batch_start_ts), contract.parse_utc(runtime.batch_end_ts)
    if end <= start:
        raise ValueError(f"batch end {runtime.batch_end_ts} is not after batch start {runtime.batch_start_ts}")
    if start.second or start.microsecond:
        raise ValueError(f"batch start {runtime.batch_start_ts} is not on a whole minute")
    storage_root = os.environ.get("NDR_STORAGE_ROOT")
    if not storage_root:
        raise ValueError("NDR_STORAGE_ROOT is not set")
    folder = raw_batch_folder(runtime, start)
    objects = confine_objects(folder, storage.list_objects(folder))
    max_ratio = runtime.max_quarantine_ratio if isinstance(runtime, DeltaRuntime) else DEFAULT_MAX_QUARANTINE_RATIO
    if not objects:
        raise FileNotFoundError(f"no raw objects under {folder}")

    phase("list_objects")
    spark = spark_session("ndr-delta-builder")
    phase("spark_session")
    raw_bytes = sum(o.size for o in objects)
    with sql_conf(spark, UNCOMPRESSED_CACHE):
        start_us, end_us = (int(t.timestamp()) * 1_000_000 for t in (start, end))
        # splits of at most 128 MiB (a worker holds one in memory at a time), packed into tasks of task_bytes
        tasks = max(spark.sparkContext.defaultParallelism, -(-raw_bytes // task_bytes(spark, raw_bytes)))
        splits = raw_lines.splits_frame(spark, raw_lines.plan_splits(objects), tasks)

        cap = raw_lines.decompressed_cap()  # read on the driver: the workers get the value

        def task(rows: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            lines = (
                (b, s.file_index) for r in rows for s in raw_lines.splits_of(r) for b in raw_lines.read_split(s, cap)
            )
            return partial_rows(lines, start_us, end_us)

        ddl = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in _partial_schema())
        partials = splits.mapInArrow(task, ddl)
        # the groups are few (the delta rows, one per distinct malformed line, one per other status) and cached;
        # the counts, the delta and the quarantine all come from them
        files = delta_files(spark, raw_bytes)
        groups = merge_partials(partials, start, end, files)
        groups = groups.persist(StorageLevel.MEMORY_AND_DISK_DESER)
        try:
            tally = groups.groupBy("status", "quarantine_reason").agg(
                F.sum("log_records").alias("lines"), F.count(F.lit(1)).alias("groups")
            )
            by_status: dict[str, int] = {}
            by_reason: dict[str, int] = {}
            delta_rows = 0
            for row in tally.collect():
                by_status[row["status"]] = by_status.get(row["status"], 0) + row["lines"]
                if row["status"] == "quarantined":
                    by_reason[row["quarantine_reason"]] = row["lines"]
                if row["status"] == "in_window":
                    delta_rows = row["groups"]
            by_reason = dict(sorted(by_reason.items()))
            phase("read_parse_group")

            # quarantine first: a delta partition (what the next steps read) never precedes its quarantine
            partition = [("feature_spec_version", runtime.feature_spec_version), ("batch_start", layout.stamp(start))]
            quarantine = (
                groups.filter(F.col("status") == "quarantined")
                .select(
                    F.col("quarantine_reason").alias("reason"),
                    F.col("quarantine_detail").alias("detail"),
                    F.element_at(F.array(*(F.lit(o.path) for o in objects)), F.col("file_index")).alias("source_file"),
                    "raw_line",
                    F.lit(runtime.mini_batch_id).alias("mini_batch_id"),
                    F.explode(F.array_repeat(F.lit(0), F.col("log_records").cast("INT"))).alias("_occurrence"),
                )
                .drop("_occurrence")
            )  # a line that came n times is quarantined n times
            n_quarantined = by_status.get("quarantined", 0)
            quarantine_out = storage.write_partition(
                quarantine, storage_root, QUARANTINE_DATASET, partition, list(QUARANTINE_COLUMNS[:4]),
                storage.files_for(n_quarantined), n_quarantined,
            )  # fmt: skip
            phase("quarantine")
            rows_read = sum(by_status.values()) - by_status.get("blank", 0)
            ratio = n_quarantined / rows_read if rows_read else 0.0
            sample: list[dict[str, str]] = []
            delta_out = None
            if ratio > max_ratio:  # the quarantine is written (the evidence); the delta is not
                picked = (
                    groups.filter(F.col("status") == "quarantined")
                    .orderBy("quarantine_reason", "quarantine_detail", "raw_line")
                    .limit(QUARANTINE_SAMPLE)
                    .collect()
                )
                sample = [{"reason": r["quarantine_reason"], "detail": r["quarantine_detail"] or "",
                           "line": (r["raw_line"] or "")[:SAMPLE_CHARS]} for r in picked]  # fmt: skip
            else:
                delta = groups.filter(F.col("status") == "in_window").select(*DELTA_COLUMNS)
                delta_out = storage.write_partition(
                    delta,
                    storage_root,
                    DELTA_DATASET,
                    partition,
                    list(DELTA_KEYS),
                    files,
                    delta_rows,
                    partitioned=True,
                )
                phase("delta")
        finally:
            groups.unpersist()

    blank = by_status.get("blank", 0)
    summary: dict[str, Any] = {
        **batch_header("delta_builder", runtime, start, end),
        "raw_batch_folder": folder,
        "raw_files": len(objects),
        "raw_bytes": raw_bytes,
        "rows_read": sum(by_status.values()) - blank,
        "blank_lines": blank,
        "rows_parsed": sum(by_status.get(s, 0) for s in ("in_window", "before_window", "after_window")),
        "rows_quarantined": n_quarantined,
        "quarantined_by_reason": by_reason,
        "rows_in_window": by_status.get("in_window", 0),
        "rows_before_window": by_status.get("before_window", 0),
        "rows_after_window": by_status.get("after_window", 0),
        "delta_rows": delta_rows,
        # the share a CloudWatch metric filter on the job's log group can watch ($.quarantine_ratio)
        "quarantine_ratio": round(ratio, 6),
        "max_quarantine_ratio": max_ratio,
        "quarantine_guard": "passed" if delta_out is not None else "tripped",
        "outputs": {"delta": delta_out.path if delta_out else None, "quarantine": quarantine_out.path},
        "output_files": {"delta": len(delta_out.files) if delta_out else 0, "quarantine": len(quarantine_out.files)},
        "seconds": phase.total(),
        "phase_seconds": phase.seconds,
    }
    if delta_out is None:
        summary["quarantine_sample"] = sample
        emit(summary)
        reasons = ", ".join(f"{k}: {v}" for k, v in by_reason.items())
        shown = "; ".join(f"{x['reason']} ({x['detail']}): {x['line'][:120]!r}" for x in sample)
        raise QuarantineRatioExceededError(
            f"{n_quarantined} of {summary['rows_read']} lines quarantined ({ratio:.1%} > max_quarantine_ratio "
            f"{max_ratio:g}): the delta was not written; a format change? by reason: {reasons}; sample: {shown}; "
            f"all of them: {quarantine_out.path}"
        )
    return emit(summary)
