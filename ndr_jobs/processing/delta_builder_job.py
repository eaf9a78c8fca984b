"""Build the 15-minute delta table from PAN-OS TRAFFIC logs.

One run reads one raw mini-batch folder and writes, for its window ``[batch_start, batch_end)``:

``$NDR_STORAGE_ROOT/delta/feature_spec_version=<v>/batch_start=<YYYYMMDDTHHMM>/``
    one row per (src_ip, dst_ip, dst_port, protocol, app, action, from_zone, to_zone) seen in the window:
    :data:`DELTA_COLUMNS`. Counts are sessions (a log's ``repeat_count``, at least 1, is its number of
    sessions); ``log_records`` counts log lines. Times are UTC. ``active_minutes`` is a bit mask of the
    minutes of the window the row's events fall in (bit ``i``: minute ``i`` from the batch start; a 15-minute
    batch uses bits 0..14): finer timing than the batch, for the beacon features downstream.
``$NDR_STORAGE_ROOT/quarantine/feature_spec_version=<v>/batch_start=<YYYYMMDDTHHMM>/``
    every line that is not a usable TRAFFIC record: reason code, detail, source file and the raw line.

How: the lines are read (``spark.read.text``, gzip or not) and parsed once (:func:`ndr_jobs.panos.parse_traffic`);
one aggregation groups every line by its status (in the window, before, after, quarantined, blank), by its
quarantine fields when quarantined, and by the delta key. Those groups (the delta rows plus one per
distinct malformed line) are cached; the counts, the quarantine and the delta are read from them. Only
the columns the delta needs come back from the Python workers, and a line's file travels as a small index,
not as its path. The read is split into one task per core (:func:`read_settings`: 128 MiB .. 1 GiB per task)
rather than Spark's 128 MiB, so that each task's partial aggregation merges more of a key's lines before the
shuffle (the 5M-line benchmark batch: 3.4M partial groups leave 27 tasks of 128 MiB; each half of the batch has
932k distinct keys, so 2 tasks send about 1.9M), and the cache is not compressed (it is read twice, right after
it is built): 45 s instead of 58-61 s for that batch, back to back on 2 cores. There (``make bench``,
``docs/benchmarks.md``) the read, transfer and parse of the lines are about two thirds of the time, the
aggregation, the cache and the sorted write of the delta rows the rest (the rows grow faster than the lines:
197k for 1M lines, 1.44M for 5M).

Rows whose event time falls outside the window (late or early arrivals) are counted in the summary and
not written. Blank lines are counted and skipped. Each partition is replaced as a whole, atomically
(:func:`ndr_jobs.storage.write_partition`): re-running a batch replaces its output, a failed run leaves
the previous output. The quarantine partition is written before the delta one, so a delta partition is
never newer than its quarantine; the two are not one transaction, and a retried run makes them agree.
The summary (a dict, also printed as one JSON line on stdout) says what was read, parsed, quarantined
(by reason), kept and written, with the seconds each phase took.

Where the raw batch is: ``runtime.raw_batch_folder`` when given; otherwise
``$NDR_RAW_ROOT/pan-traffic/<org_id>/<project_name>/<feature_spec_version>/YYYY/MM/DD/HHMM/`` (the
ingestion contract), with ``org_id`` from ``$NDR_ORG_ID`` or else from the mini-batch id
(``<org_id>-<project_name>-<feature_spec_version>-<YYYYMMDDTHHMM>``).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs import datasets, storage
from ndr_jobs.runtime import BatchRuntime

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
#: the parsed columns the delta needs
DELTA_INPUTS: tuple[str, ...] = (
    *DELTA_KEYS, "repeat_count", "bytes_sent", "bytes_received", "packets", "packets_sent", "packets_received",
    "elapsed_seconds", "session_end_reason", "event_time",
)  # fmt: skip
#: the last minute ``active_minutes`` has a bit for (a BIGINT mask)
MAX_MINUTE = 63
#: an action that lets the session through; every other action (deny, drop, reset-*) counts as a deny
ALLOW_ACTION = "allow"


def org_id_for(runtime: BatchRuntime, start: datetime) -> str:
    """``$NDR_ORG_ID``, or the org id the mini-batch id starts with."""
    if os.environ.get("NDR_ORG_ID"):
        return os.environ["NDR_ORG_ID"]
    suffix = f"-{runtime.project_name}-{runtime.feature_spec_version}-{datasets.stamp(start)}"
    if runtime.mini_batch_id.endswith(suffix) and len(runtime.mini_batch_id) > len(suffix):
        return runtime.mini_batch_id[: -len(suffix)]
    raise ValueError(
        f"cannot tell the org id: mini-batch id {runtime.mini_batch_id!r} does not end with {suffix!r} "
        "and NDR_ORG_ID is not set"
    )


def raw_batch_folder(runtime: BatchRuntime, start: datetime) -> str:
    """The raw mini-batch folder: the runtime's, or the contract layout under ``$NDR_RAW_ROOT``."""
    if runtime.raw_batch_folder:
        return runtime.raw_batch_folder
    root = os.environ.get("NDR_RAW_ROOT")
    if not root:
        raise ValueError("no --raw-batch-folder given and NDR_RAW_ROOT is not set")
    org_id = org_id_for(runtime, start)
    day_time = start.astimezone(UTC).strftime("%Y/%m/%d/%H%M")
    return storage.join(root, "pan-traffic", org_id, runtime.project_name, runtime.feature_spec_version, day_time) + "/"


def build_delta(events: DataFrame, start: datetime, end: datetime, extra_keys: tuple[str, ...] = ()) -> DataFrame:
    """The delta rows (:data:`DELTA_COLUMNS`) of parsed TRAFFIC records already inside the window.

    ``extra_keys`` are grouped on first and kept in front (the job groups every line of a batch in one pass).
    """
    from pyspark.sql import functions as F

    sessions = F.greatest(F.col("repeat_count"), F.lit(1)).cast("BIGINT")
    zero = F.lit(0).cast("BIGINT")
    reason = F.col("session_end_reason")
    known = list(END_REASON_COLUMNS)
    return events.groupBy(*extra_keys, *DELTA_KEYS).agg(
        F.sum(sessions).alias("sessions"),
        F.count(F.lit(1)).cast("BIGINT").alias("log_records"),
        F.sum("bytes_sent").alias("bytes_sent"),
        F.sum("bytes_received").alias("bytes_received"),
        F.sum("packets").alias("packets"),
        F.sum("packets_sent").alias("packets_sent"),
        F.sum("packets_received").alias("packets_received"),
        F.sum(F.when(F.coalesce(F.col("action"), F.lit("")) != ALLOW_ACTION, sessions).otherwise(zero)).alias(
            "deny_count"
        ),
        F.sum("elapsed_seconds").alias("duration_sum"),
        F.max("elapsed_seconds").alias("duration_max"),
        *(F.sum(F.when(reason == name, sessions).otherwise(zero)).alias(c) for name, c in END_REASON_COLUMNS.items()),
        F.sum(F.when(reason.isNull() | ~reason.isin(known), sessions).otherwise(zero)).alias("end_other"),
        F.min("event_time").alias("first_seen"),
        F.max("event_time").alias("last_seen"),
        F.bit_or(F.expr(f"shiftleft(CAST(1 AS BIGINT), {minute_of_window(start)})")).alias("active_minutes"),
        F.lit(start).cast("TIMESTAMP").alias("batch_start_ts"),
        F.lit(end).cast("TIMESTAMP").alias("batch_end_ts"),
    ).select(*extra_keys, *DELTA_COLUMNS)


def minute_of_window(start: datetime) -> str:
    """SQL: the minute of the window an event falls in, from 0 (minutes past 63 count as 63: a 64-bit mask)."""
    micros = f"unix_micros(event_time) - {int(start.timestamp()) * 1_000_000}"
    return f"CAST(least(floor(({micros}) / 60000000), {MAX_MINUTE}) AS INT)"


def read_settings(spark: SparkSession, raw_bytes: int) -> dict[str, str]:
    """The job's SQL settings: splits of ``raw_bytes / cores`` (128 MiB .. 1 GiB), and an uncompressed cache
    (why: the module doc)."""
    split = min(max(-(-raw_bytes // max(spark.sparkContext.defaultParallelism, 1)), 128 << 20), 1 << 30)
    return {"spark.sql.files.maxPartitionBytes": str(split), "spark.sql.inMemoryColumnarStorage.compressed": "false"}


def _status(start: datetime, end: datetime) -> Any:
    from pyspark.sql import functions as F

    return (
        F.when(F.col("_blank"), F.lit("blank"))
        .when(F.col("quarantine_reason").isNotNull(), F.lit("quarantined"))
        .when(F.col("event_time") < F.lit(start), F.lit("before_window"))
        .when(F.col("event_time") >= F.lit(end), F.lit("after_window"))
        .otherwise(F.lit("in_window"))
    )


def run_delta_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's delta and quarantine partitions; print and return the summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ndr_jobs.features.common import batch_header
    from ndr_jobs.panos import parse_traffic
    from ndr_jobs.spark import spark_session, sql_conf

    began = time.perf_counter()
    start, end = datasets.parse_utc(runtime.batch_start_ts), datasets.parse_utc(runtime.batch_end_ts)
    if end <= start:
        raise ValueError(f"batch end {runtime.batch_end_ts} is not after batch start {runtime.batch_start_ts}")
    if start.second or start.microsecond:
        raise ValueError(f"batch start {runtime.batch_start_ts} is not on a whole minute")
    storage_root = os.environ.get("NDR_STORAGE_ROOT")
    if not storage_root:
        raise ValueError("NDR_STORAGE_ROOT is not set")
    folder = raw_batch_folder(runtime, start)
    objects = storage.list_objects(folder)
    if not objects:
        raise FileNotFoundError(f"no raw objects under {folder}")

    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    spark = spark_session("ndr-delta-builder")
    phase("spark_session")
    with sql_conf(spark, read_settings(spark, sum(o.size for o in objects))):
        text = spark.read.text([storage.spark_uri(o.path) for o in objects])
        # a line's file goes through the parser as a small number, not as its path: the Python workers receive
        # and return every column of every line
        files = F.array(*(F.lit(uri) for uri in text.inputFiles()))
        raw = text.select(
            F.col("value"),
            F.array_position(files, F.input_file_name()).cast("INT").alias("file_index"),
            F.col("value").rlike(r"^[ \t]*$").alias("_blank"),
        )
        # One pass over the lines: every line lands in one group of (status, its quarantine fields if it is
        # quarantined, the delta key). The groups are few (the delta rows, plus one per distinct malformed line)
        # and cached; the counts, the delta and the quarantine all come from them.
        quarantined = F.col("status") == "quarantined"
        parsed = (
            "quarantine_reason", "quarantine_detail", "raw_line", *(c for c in DELTA_INPUTS if c not in DELTA_KEYS)
        )
        lines = parse_traffic(raw, columns=(*DELTA_KEYS, *parsed)).withColumn("status", _status(start, end))
        keyed = lines.select(
            "status", *(F.when(quarantined, F.col(c)).alias(c) for c in _QUARANTINE_FIELDS), *DELTA_INPUTS
        )
        groups = build_delta(keyed, start, end, extra_keys=("status", *_QUARANTINE_FIELDS))
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
            partition = [("feature_spec_version", runtime.feature_spec_version), ("batch_start", datasets.stamp(start))]
            quarantine = groups.filter(quarantined).select(
                F.col("quarantine_reason").alias("reason"),
                F.col("quarantine_detail").alias("detail"),
                F.element_at(files, F.col("file_index")).alias("source_file"),
                "raw_line",
                F.lit(runtime.mini_batch_id).alias("mini_batch_id"),
                F.explode(F.array_repeat(F.lit(0), F.col("log_records").cast("INT"))).alias("_occurrence"),
            ).drop("_occurrence")  # a line that came n times is quarantined n times
            n_quarantined = by_status.get("quarantined", 0)
            quarantine_out = storage.write_partition(
                quarantine, storage_root, QUARANTINE_DATASET, partition, list(QUARANTINE_COLUMNS[:4]),
                storage.files_for(n_quarantined), n_quarantined,
            )  # fmt: skip
            phase("quarantine")
            delta = groups.filter(F.col("status") == "in_window").select(*DELTA_COLUMNS)
            delta_out = storage.write_partition(
                delta, storage_root, DELTA_DATASET, partition, list(DELTA_KEYS), storage.files_for(delta_rows),
                delta_rows,
            )
            phase("delta")
        finally:
            groups.unpersist()

    blank = by_status.get("blank", 0)
    summary: dict[str, Any] = {
        **batch_header("delta_builder", runtime, start, end),
        "raw_batch_folder": folder,
        "raw_files": len(objects),
        "raw_bytes": sum(o.size for o in objects),
        "rows_read": sum(by_status.values()) - blank,
        "blank_lines": blank,
        "rows_parsed": sum(by_status.get(s, 0) for s in ("in_window", "before_window", "after_window")),
        "rows_quarantined": n_quarantined,
        "quarantined_by_reason": by_reason,
        "rows_in_window": by_status.get("in_window", 0),
        "rows_before_window": by_status.get("before_window", 0),
        "rows_after_window": by_status.get("after_window", 0),
        "delta_rows": delta_rows,
        "outputs": {"delta": delta_out.path, "quarantine": quarantine_out.path},
        "output_files": {"delta": len(delta_out.files), "quarantine": len(quarantine_out.files)},
        "seconds": round(time.perf_counter() - began, 3),
        "phase_seconds": phases,
    }
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary
