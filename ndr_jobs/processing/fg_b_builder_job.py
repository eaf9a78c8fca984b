"""FG-B: monthly baselines (host, segment, pair, IP metadata) over the spec's horizons, regular and backfill.

Entry: :func:`run_fg_b_builder_from_runtime_config`. A run for reference month M summarises ``[end - H, end)``
for each horizon H, ``end`` the first instant of the month after M; both modes compute the same thing. Tables and
columns: ``docs/datasets.md``; design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface.feature_spec import FeatureSpecBody, load_feature_spec, parse_duration
from ndr_jobs.runtime.config import MonthlyRuntime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TABLES = ("host", "segment", "pair/host", "pair/segment", "ip_metadata")
BASELINE_MODES = ("regular", "backfill")
_PERCENTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99}


def horizon_end(reference_month: str) -> datetime:
    """The first instant of the month after ``reference_month`` (YYYY-MM), UTC."""
    month = datetime.strptime(reference_month, "%Y-%m").replace(tzinfo=UTC)
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def table_location(root: str, table: str) -> tuple[str, str]:
    """(root, dataset) for :func:`ndr_jobs.datasets.storage.write_partition`.

    ``fg_b/pair/host`` -> (root/fg_b/pair, host).
    """
    parent, _, name = f"{layout.FG_B}/{table}".rpartition("/")
    return storage.join(root, parent), name


def snapshot_partition(feature_spec_version: str, horizon: str, reference_month: str) -> list[tuple[str, str]]:
    return [("feature_spec_version", feature_spec_version), ("baseline_horizon", horizon),
            ("reference_month", reference_month)]  # fmt: skip


def robust_stats(frame: DataFrame, keys: list[str], columns: list[str], statistics: list[str]) -> DataFrame:
    """Per ``keys``: ``<c>_<stat>`` for every column and statistic (``docs/datasets.md``), exact percentiles."""
    from pyspark.sql import functions as F

    wanted_pcts = [p for p in _PERCENTILES if p in statistics or (p == "median" and "mad" in statistics)]
    levels = [_PERCENTILES[p] for p in wanted_pcts]
    first: list[Any] = []
    for c in columns:
        x = F.col(c).cast("DOUBLE")
        if "mean" in statistics:
            first.append(F.avg(x).alias(f"{c}_mean"))
        if "std" in statistics:
            first.append(F.coalesce(F.stddev_samp(x), F.lit(0.0)).alias(f"{c}_std"))
        if levels:
            first.append(F.percentile(x, F.array(*(F.lit(v) for v in levels))).alias(f"_{c}_pct"))
    stats = frame.groupBy(*keys).agg(*first)
    # one select, not a withColumn per percentile: each withColumn analyses the whole plan again (12 s a table)
    plain = [f"{c}_{s}" for c in columns for s in ("mean", "std") if s in statistics]
    pcts = [F.col(f"_{c}_pct")[i].alias(f"{c}_{p}") for c in columns for i, p in enumerate(wanted_pcts)]
    stats = stats.select(*keys, *plain, *pcts)
    if "mad" in statistics:
        medians = stats.select(*keys, *(F.col(f"{c}_median").alias(f"_{c}_med") for c in columns))
        deviations = frame.join(medians, keys).select(
            *keys, *(F.abs(F.col(c).cast("DOUBLE") - F.col(f"_{c}_med")).alias(c) for c in columns)
        )
        mads = deviations.groupBy(*keys).agg(*(F.percentile(F.col(c), F.lit(0.5)).alias(f"{c}_mad") for c in columns))
        stats = stats.join(mads, keys)
    ordered = [f"{c}_{s}" for c in columns for s in statistics]
    return stats.select(*keys, *ordered)


def build_baseline(fg_a: DataFrame, spec: FeatureSpecBody, key: str) -> DataFrame:
    """fg_b/host (``key`` ``host_ip``, with the host's segment) or fg_b/segment (``key`` ``segment``, with its
    number of hosts) rows, without the horizon columns, from FG-A rows that carry ``segment``."""
    from pyspark.sql import functions as F

    columns, stats = spec.baseline_columns(), list(spec.fg_b.statistics)
    described = F.min("segment").alias("segment") if key == "host_ip" else F.count_distinct("host_ip").alias("n_hosts")
    meta = fg_a.groupBy(key).agg(
        described,
        F.count(F.lit(1)).alias("n_windows"),
        F.min("batch_start_ts").alias("first_seen"),
        F.max("batch_start_ts").alias("last_seen"),
    )
    return meta.join(robust_stats(fg_a, [key], columns, stats), key)


def build_pair_host_baseline(pairs: DataFrame) -> DataFrame:
    """fg_b/pair/host rows from pair counts of internal sources."""
    from pyspark.sql import functions as F

    sessions, sent = F.col("sessions").cast("DOUBLE"), F.col("bytes_sent").cast("DOUBLE")
    return pairs.groupBy("src_ip", "dst_ip", "dst_port").agg(
        F.count_distinct("batch_start_ts").alias("windows_active"),
        F.sum("sessions").alias("sessions_sum"),
        F.avg(sessions).alias("sessions_mean"),
        F.coalesce(F.stddev_samp(sessions), F.lit(0.0)).alias("sessions_std"),
        F.max("sessions").alias("sessions_max"),
        F.sum("bytes_sent").alias("bytes_sent_sum"),
        F.avg(sent).alias("bytes_sent_mean"),
        F.max("bytes_sent").alias("bytes_sent_max"),
        F.sum("bytes_received").alias("bytes_received_sum"),
        F.sum("deny_count").alias("deny_sum"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
    )


def build_pair_segment_baseline(pairs: DataFrame) -> DataFrame:
    """fg_b/pair/segment rows from pair counts carrying ``src_segment`` and ``dst_segment``."""
    from pyspark.sql import functions as F

    return pairs.groupBy("src_segment", "dst_ip", "dst_port").agg(
        F.min("dst_segment").alias("dst_segment"),
        F.count_distinct("src_ip").alias("src_hosts"),
        F.count_distinct("batch_start_ts").alias("windows_active"),
        F.sum("sessions").alias("sessions_sum"),
        F.sum("bytes_sent").alias("bytes_sent_sum"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
    )


def build_ip_metadata(pairs: DataFrame, spec: FeatureSpecBody, inventory: DataFrame | None) -> DataFrame:
    """fg_b/ip_metadata rows from every pair count (any source)."""
    from pyspark.sql import functions as F

    from ndr_jobs.features.common import is_internal, with_segment

    src_internal = is_internal("src_ip", spec.network)
    as_dst = pairs.select(
        F.col("dst_ip").alias("ip"), "first_seen", "last_seen", F.col("sessions").alias("as_dst"),
        F.lit(0).cast("BIGINT").alias("as_src"),
        F.when(src_internal & (F.col("src_ip") != F.col("dst_ip")), F.col("src_ip")).alias("peer"),
    )  # fmt: skip
    as_src = pairs.select(
        F.col("src_ip").alias("ip"), "first_seen", "last_seen", F.lit(0).cast("BIGINT").alias("as_dst"),
        F.col("sessions").alias("as_src"), F.lit(None).cast("STRING").alias("peer"),
    )  # fmt: skip
    merged = as_dst.unionByName(as_src).groupBy("ip").agg(
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
        F.count_distinct("peer").alias("prevalence"),
        F.sum("as_dst").alias("sessions_as_dst"),
        F.sum("as_src").alias("sessions_as_src"),
    )
    direction = (
        F.when((F.col("sessions_as_dst") > 0) & (F.col("sessions_as_src") > 0), F.lit("both"))
        .when(F.col("sessions_as_dst") > 0, F.lit("dst_only"))
        .otherwise(F.lit("src_only"))
    )
    merged = merged.withColumn("is_internal", is_internal("ip", spec.network)).withColumn("direction", direction)
    merged = with_segment(merged, "ip", "segment", spec.network, inventory)
    return merged.select("ip", "is_internal", "segment", "first_seen", "last_seen", "prevalence",
                         "sessions_as_dst", "sessions_as_src", "direction")  # fmt: skip


def _with_horizon(frame: DataFrame, start: datetime, end: datetime) -> DataFrame:
    from pyspark.sql import functions as F

    return frame.withColumn("horizon_start", F.lit(start).cast("TIMESTAMP")).withColumn(
        "horizon_end", F.lit(end).cast("TIMESTAMP")
    )


_SORT = {
    "host": ["host_ip"],
    "segment": ["segment"],
    "pair/host": ["src_ip", "dst_ip", "dst_port"],
    "pair/segment": ["src_segment", "dst_ip", "dst_port"],
    "ip_metadata": ["ip"],
}


def run_fg_b_builder_from_runtime_config(runtime: MonthlyRuntime) -> dict[str, Any]:
    """Build and write every FG-B table for every horizon of the reference month; print and return the summary."""
    from pyspark.sql import functions as F

    from ndr_jobs.features.common import is_internal, read_inventory, with_segment
    from ndr_jobs.interface.contract import iso
    from ndr_jobs.runtime.spark import spark_session
    from ndr_jobs.runtime.summary import Phases, emit

    if runtime.baseline_mode not in BASELINE_MODES:
        raise ValueError(f"baseline mode {runtime.baseline_mode!r} is not one of {', '.join(BASELINE_MODES)}")
    phase = Phases()
    spec = load_feature_spec(runtime.feature_spec_version)
    root, fsv, month = layout.storage_root(), runtime.feature_spec_version, runtime.reference_month
    end = horizon_end(month)
    horizons = sorted(spec.fg_b.horizons, key=parse_duration)
    earliest = end - parse_duration(horizons[-1])
    spark = spark_session("ndr-fg-b-builder")
    phase("spark_session")

    fg_a_present = [s for s in layout.existing_batches(root, layout.FG_A, fsv) if earliest <= s < end]
    pairs_present = [s for s in layout.existing_batches(root, layout.PAIR_COUNTS, fsv) if earliest <= s < end]
    inventory = read_inventory(spark, root, fsv, month)
    cached: list[DataFrame] = []

    def keep(frame: DataFrame) -> DataFrame:
        frame = frame.persist()
        cached.append(frame)
        return frame

    fg_a_all = layout.read_batches(spark, root, layout.FG_A, fsv, fg_a_present)
    if fg_a_all is not None:
        fg_a_all = keep(with_segment(fg_a_all, "host_ip", "segment", spec.network, inventory))
    pairs_all = layout.read_batches(spark, root, layout.PAIR_COUNTS, fsv, pairs_present)
    if pairs_all is not None:
        pairs_all = pairs_all.where(is_internal("src_ip", spec.network))
        pairs_all = with_segment(pairs_all, "src_ip", "src_segment", spec.network, inventory)
        pairs_all = keep(with_segment(pairs_all, "dst_ip", "dst_segment", spec.network, inventory))
    all_pairs = layout.read_batches(spark, root, layout.PAIR_COUNTS, fsv, pairs_present)
    phase("read")

    rows: dict[str, dict[str, int]] = {h: {} for h in horizons}
    coverage: dict[str, dict[str, float]] = {}
    outputs: dict[str, dict[str, str]] = {h: {} for h in horizons}
    try:
        for horizon in horizons:
            start = end - parse_duration(horizon)
            n_slices = int(parse_duration(horizon) / layout.BATCH)
            coverage[horizon] = {
                "fg_a": round(sum(1 for s in fg_a_present if s >= start) / n_slices, 6),
                "pair_counts": round(sum(1 for s in pairs_present if s >= start) / n_slices, 6),
            }
            in_horizon = F.col("batch_start_ts") >= F.lit(start)
            fg_a = fg_a_all.where(in_horizon) if fg_a_all is not None else _empty_fg_a(spark, spec)
            pairs = pairs_all.where(in_horizon) if pairs_all is not None else _empty_pairs(spark, True)
            every_pair = all_pairs.where(in_horizon) if all_pairs is not None else _empty_pairs(spark, False)
            tables = {
                "host": build_baseline(fg_a, spec, "host_ip"),
                "segment": build_baseline(fg_a, spec, "segment"),
                "pair/host": build_pair_host_baseline(pairs),
                "pair/segment": build_pair_segment_baseline(pairs),
                "ip_metadata": build_ip_metadata(every_pair, spec, inventory),
            }
            for table, frame in tables.items():
                frame = keep(_with_horizon(frame, start, end))
                n = frame.count()
                table_root, name = table_location(root, table)
                written = storage.write_partition(
                    frame, table_root, name, snapshot_partition(fsv, horizon, month), _SORT[table],
                    storage.files_for(n), n,
                )  # fmt: skip
                rows[horizon][table] = n
                outputs[horizon][table] = written.path
            phase(f"horizon_{horizon}")
    finally:
        for frame in cached:
            frame.unpersist()
    return emit(
        {
            "job": "fg_b_builder",
            "project_name": runtime.project_name,
            "feature_spec_version": fsv,
            "reference_month": month,
            "baseline_mode": runtime.baseline_mode,
            "horizon_end": iso(end),
            "horizons": horizons,
            "segment_source": "inventory" if inventory is not None else "cidr_map",
            "horizon_coverage": coverage,
            "rows": rows,
            "outputs": outputs,
            "seconds": phase.total(),
            "phase_seconds": phase.seconds,
        }
    )


def _empty_fg_a(spark: Any, spec: FeatureSpecBody) -> DataFrame:
    columns = ", ".join(f"{c} DOUBLE" for c in spec.fg_a.columns())
    return spark.createDataFrame([], f"host_ip STRING, {columns}, batch_start_ts TIMESTAMP, segment STRING")


def _empty_pairs(spark: Any, with_segments: bool) -> DataFrame:
    schema = ("src_ip STRING, dst_ip STRING, dst_port INT, sessions BIGINT, bytes_sent BIGINT, "
              "bytes_received BIGINT, deny_count BIGINT, first_seen TIMESTAMP, last_seen TIMESTAMP, "
              "batch_start_ts TIMESTAMP")  # fmt: skip
    if with_segments:
        schema += ", src_segment STRING, dst_segment STRING"
    return spark.createDataFrame([], schema)
