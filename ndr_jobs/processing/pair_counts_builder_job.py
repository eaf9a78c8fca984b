"""Count (src_ip, dst_ip, dst_port) per 15-minute slice from the batch's delta partition.

Entry: :func:`run_pair_counts_builder_from_runtime_config`. FG-B reads these slices for its pair baselines, FG-C
for pair novelty and periodicity. Columns: ``docs/datasets.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ndr_jobs.datasets import layout, storage
from ndr_jobs.processing.fg_a_builder_job import batch_window
from ndr_jobs.runtime.config import BatchRuntime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PAIR_KEYS: tuple[str, ...] = ("src_ip", "dst_ip", "dst_port")
PAIR_COUNTS_COLUMNS: tuple[str, ...] = (
    *PAIR_KEYS, "sessions", "bytes_sent", "bytes_received", "deny_count", "first_seen", "last_seen",
    "active_minutes", "batch_start_ts", "batch_end_ts",
)  # fmt: skip


def build_pair_counts(delta: DataFrame) -> DataFrame:
    """The pair-count rows of one batch's delta rows."""
    from pyspark.sql import functions as F

    def total(name: str) -> Any:
        return F.coalesce(F.sum(name), F.lit(0)).cast("BIGINT").alias(name)

    return (
        delta.groupBy(*PAIR_KEYS)
        .agg(
            total("sessions"),
            total("bytes_sent"),
            total("bytes_received"),
            total("deny_count"),
            F.min("first_seen").alias("first_seen"),
            F.max("last_seen").alias("last_seen"),
            F.bit_or("active_minutes").alias("active_minutes"),
            F.min("batch_start_ts").alias("batch_start_ts"),
            F.max("batch_end_ts").alias("batch_end_ts"),
        )
        .select(*PAIR_COUNTS_COLUMNS)
    )


def run_pair_counts_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's pair-count partition; print and return the summary."""

    from ndr_jobs.runtime.spark import spark_session
    from ndr_jobs.runtime.summary import Phases, batch_header, emit

    phase = Phases()
    start, end = batch_window(runtime)
    root, fsv = layout.storage_root(), runtime.feature_spec_version
    spark = spark_session("ndr-pair-counts-builder")
    phase("spark_session")
    delta = layout.read_batches(spark, root, layout.DELTA, fsv, [start])
    if delta is None:
        raise FileNotFoundError(
            f"no delta partition for {layout.stamp(start)} under {layout.dataset_dir(root, layout.DELTA, fsv)}"
        )
    bound = layout.partition_rows(root, layout.DELTA, fsv, start)  # pairs <= delta rows
    written, rows = storage.write_counted(
        build_pair_counts(delta), root, layout.PAIR_COUNTS, layout.batch_partition(fsv, start), list(PAIR_KEYS),
        bound,
    )  # fmt: skip
    phase("write")
    return emit(
        {
            **batch_header("pair_counts_builder", runtime, start, end),
            "pairs": rows,
            "output": written.path,
            "seconds": phase.total(),
            "phase_seconds": phase.seconds,
        }
    )
