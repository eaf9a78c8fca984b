"""Build FG-A: current-behaviour features per host over windows ending at the batch end.

One run, for the batch window ``[batch_start, batch_end)`` (15 minutes), writes

``$NDR_STORAGE_ROOT/fg_a/feature_spec_version=<v>/batch_start=<YYYYMMDDTHHMM>/``
    one row per host: every internal source address (``host_ip``; internal = the feature spec's
    ``network.internal_networks``) with at least one delta row in the batch. Columns, in order:

    * ``host_ip`` (string);
    * ``<feature>_<window>`` (double, never null) for every feature of the spec's ``fg_a.features`` and each
      of its windows, features in spec order, windows shortest first (v1: ``sessions_15m``, ``sessions_1h``,
      ``sessions_24h``, ``fan_out_15m``, ... — :meth:`ndr_jobs.feature_spec.FgA.columns`);
    * ``batch_start_ts``, ``batch_end_ts`` (timestamps, UTC).

    Rows are sorted by ``host_ip``; re-running a batch replaces its partition.

Windows end at the batch end: ``15m`` is the batch's own delta, ``1h`` the last 4 delta partitions, ``24h``
the last 96. Missing delta partitions are skipped: the window uses what exists, and the summary's
``windows_coverage`` says what fraction of each window's partitions was there. Features (the catalogue,
:data:`ndr_jobs.feature_spec.FG_A_CATALOGUE`), per host and window, over the host's delta rows as source:

``sessions``, ``fan_out`` (distinct dst_ip), ``distinct_dst_ports``, ``internal_fan_out``/``external_fan_out``
(distinct internal/external dst_ip), ``admin_port_fan_out`` (distinct internal dst_ip on a
``network.admin_ports`` port), ``bytes_out_log``/``bytes_in_log`` (ln(1 + bytes sent/received)),
``out_in_ratio`` (sent / (sent + received)), ``max_dst_bytes_out_log`` (ln(1 + most bytes sent to one
dst_ip)), ``external_bytes_out_log``, ``deny_ratio`` (denied sessions / sessions), ``rare_port_sessions``/
``rare_app_sessions`` (sessions on a dst_port/app that at most ``max(port_max_hosts, host_fraction x hosts)``
internal hosts used over ``rarity.reference_window``), ``internal_internal_sessions``; and, over the
external (host, dst_ip) series of the window, sessions per 15-minute slice scored by
:func:`ndr_jobs.features.common.pair_periodicity`: ``periodic_max_score`` (the best series),
``periodic_top_fill`` and ``periodic_top_cv`` (that series' active-slice fraction and count CV),
``periodic_pairs`` (series scoring at least ``periodicity.score_threshold``). Ratios are 0 when their
denominator is 0.

The summary (a dict, printed as one JSON line on stdout) gives hosts written, delta partitions read,
``windows_coverage`` and the seconds per phase.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs import datasets, storage
from ndr_jobs.feature_spec import FeatureSpecBody, load_feature_spec, parse_duration, slices
from ndr_jobs.runtime import BatchRuntime

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

PERIODIC_FEATURES = ("periodic_max_score", "periodic_top_fill", "periodic_top_cv", "periodic_pairs")


def batch_window(runtime: BatchRuntime) -> tuple[datetime, datetime]:
    """The batch's [start, end), checked to be one 15-minute slice on a slice boundary."""
    start, end = datasets.parse_utc(runtime.batch_start_ts), datasets.parse_utc(runtime.batch_end_ts)
    if end - start != datasets.BATCH:
        raise ValueError(f"batch {runtime.batch_start_ts} .. {runtime.batch_end_ts} is not 15 minutes")
    if start.minute % 15 or start.second or start.microsecond:
        raise ValueError(f"batch start {runtime.batch_start_ts} is not on a 15-minute boundary")
    return start, end


def window_starts(end: datetime, window: str) -> list[datetime]:
    """The 15-minute slice starts of a window ending at ``end``."""
    return datasets.batch_starts(end - parse_duration(window), end)


def rare_values(rows: DataFrame, spec: FeatureSpecBody, end: datetime) -> tuple[list[int], list[str]]:
    """The rare destination ports and apps over the rarity reference window (one Spark job)."""
    from pyspark.sql import functions as F

    rarity = spec.fg_a.rarity
    ref = rows.where(F.col("slice_ts") >= F.lit(end - parse_duration(spec.fg_a.rarity_window)))
    port_users = ref.groupBy(F.lit("port").alias("kind"), F.col("dst_port").cast("STRING").alias("value"))
    app_users = ref.where(F.col("app").isNotNull()).groupBy(F.lit("app").alias("kind"), F.col("app").alias("value"))
    hosts = ref.groupBy(F.lit("hosts").alias("kind"), F.lit("").alias("value"))
    counted = [g.agg(F.count_distinct("host_ip").alias("n")) for g in (port_users, app_users, hosts)]
    found = counted[0].unionByName(counted[1]).unionByName(counted[2]).collect()
    n_hosts = next((r["n"] for r in found if r["kind"] == "hosts"), 0)
    port_limit = max(rarity.port_max_hosts, rarity.host_fraction * n_hosts)
    app_limit = max(rarity.app_max_hosts, rarity.host_fraction * n_hosts)
    ports = sorted(int(r["value"]) for r in found if r["kind"] == "port" and r["n"] <= port_limit)
    apps = sorted(r["value"] for r in found if r["kind"] == "app" and r["n"] <= app_limit)
    return ports, apps


def build_fg_a(
    spark: SparkSession,
    delta: DataFrame | None,
    spec: FeatureSpecBody,
    start: datetime,
    end: datetime,
    covered: list[datetime],
    cached: list[DataFrame] | None = None,
) -> DataFrame:
    """FG-A rows (see the module doc) from the delta rows of the longest window (``batch_start_ts`` column).

    ``covered`` lists the slice starts whose delta partitions exist (for periodicity spans); frames this
    persists are appended to ``cached`` for the caller to unpersist.

    Two aggregation levels and no per-window joins: the rows are summed per (host, dst_ip, slice); from
    that, per (host, dst_ip) with one conditional sum per window and the last slice seen (a destination is
    in a window when its last slice is), then per host, where a distinct count over a window is a count of
    the (host, dst_ip) rows whose last slice is in it. Ports go the same way through (host, dst_port).
    """
    from pyspark.sql import functions as F

    from ndr_jobs.features.common import is_internal, pair_periodicity, ratio

    fg_a = spec.fg_a
    columns = fg_a.columns()
    out_schema = "host_ip STRING, " + ", ".join(f"{c} DOUBLE" for c in columns)
    out_schema += ", batch_start_ts TIMESTAMP, batch_end_ts TIMESTAMP"
    if delta is None:
        return spark.createDataFrame([], out_schema)

    network = spec.network
    rows = delta.select(
        F.col("src_ip").alias("host_ip"), "dst_ip", "dst_port", "app",
        F.coalesce(F.col("sessions"), F.lit(0)).alias("sessions"),
        F.coalesce(F.col("deny_count"), F.lit(0)).alias("deny_count"),
        F.coalesce(F.col("bytes_sent"), F.lit(0)).alias("bytes_sent"),
        F.coalesce(F.col("bytes_received"), F.lit(0)).alias("bytes_received"),
        F.col("batch_start_ts").alias("slice_ts"),
    ).where(is_internal("host_ip", network))  # fmt: skip
    if cached is not None:
        rows = rows.persist()
        cached.append(rows)
    rare_ports, rare_apps = rare_values(rows, spec, end)

    zero = F.lit(0).cast("BIGINT")
    sessions = F.col("sessions")
    per_slice = (
        rows.withColumn("_rare_port", F.col("dst_port").isin(rare_ports))
        .withColumn("_rare_app", F.col("app").isin(rare_apps) if rare_apps else F.lit(False))
        .withColumn("_admin", F.col("dst_port").isin(list(network.admin_ports)))
        .groupBy("host_ip", "dst_ip", "slice_ts")
        .agg(
            F.sum(sessions).alias("sessions"),
            F.sum("bytes_sent").alias("bytes_sent"),
            F.sum("bytes_received").alias("bytes_received"),
            F.sum("deny_count").alias("deny_count"),
            F.sum(F.when(F.col("_rare_port"), sessions).otherwise(zero)).alias("rare_port_sessions"),
            F.sum(F.when(F.coalesce(F.col("_rare_app"), F.lit(False)), sessions).otherwise(zero)).alias(
                "rare_app_sessions"
            ),
            F.max(F.col("_admin")).alias("admin"),
        )
        .withColumn("internal", is_internal("dst_ip", network))
    )
    if cached is not None:
        per_slice = per_slice.persist()
        cached.append(per_slice)

    windows = fg_a.windows
    since = {w: F.lit(end - parse_duration(w)) for w in windows}
    summed = ("sessions", "bytes_sent", "bytes_received", "deny_count", "rare_port_sessions", "rare_app_sessions")
    per_dst = per_slice.groupBy("host_ip", "dst_ip").agg(
        F.max("slice_ts").alias("last"),
        F.max(F.when(F.col("admin"), F.col("slice_ts"))).alias("last_admin"),
        F.first("internal").alias("internal"),
        *(
            F.sum(F.when(F.col("slice_ts") >= since[w], F.col(c)).otherwise(zero)).alias(f"{c}_{w}")
            for w in windows for c in summed
        ),
    )  # fmt: skip

    def count_if(cond: Column) -> Column:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("DOUBLE")

    def total(col: str, cond: Column | None = None) -> Column:
        value = F.col(col) if cond is None else F.when(cond, F.col(col)).otherwise(zero)
        return F.coalesce(F.sum(value), zero).cast("DOUBLE")

    internal = F.col("internal")
    metrics: dict[tuple[str, str], Column] = {}
    for w in windows:
        seen = F.col("last") >= since[w]
        sent, received, n = total(f"bytes_sent_{w}"), total(f"bytes_received_{w}"), total(f"sessions_{w}")
        metrics |= {
            ("sessions", w): n,
            ("fan_out", w): count_if(seen),
            ("internal_fan_out", w): count_if(seen & internal),
            ("external_fan_out", w): count_if(seen & ~internal),
            ("admin_port_fan_out", w): count_if((F.col("last_admin") >= since[w]) & internal),
            ("bytes_out_log", w): F.log1p(sent),
            ("bytes_in_log", w): F.log1p(received),
            ("out_in_ratio", w): ratio(sent, sent + received),
            ("max_dst_bytes_out_log", w): F.log1p(F.coalesce(F.max(f"bytes_sent_{w}"), zero).cast("DOUBLE")),
            ("external_bytes_out_log", w): F.log1p(total(f"bytes_sent_{w}", ~internal)),
            ("deny_ratio", w): ratio(total(f"deny_count_{w}"), n),
            ("rare_port_sessions", w): total(f"rare_port_sessions_{w}"),
            ("rare_app_sessions", w): total(f"rare_app_sessions_{w}"),
            ("internal_internal_sessions", w): total(f"sessions_{w}", internal),
        }
    wanted = {(f.name, w) for f in fg_a.features for w in f.windows}
    host_metrics = [e.alias(f"{n}_{w}") for (n, w), e in metrics.items() if (n, w) in wanted]
    result = (
        per_dst.groupBy("host_ip")
        .agg(F.max("last").alias("_last"), *host_metrics)
        .where(F.col("_last") == F.lit(start))  # hosts active in the batch
        .drop("_last")
    )

    port_windows = [w for w in windows if ("distinct_dst_ports", w) in wanted]
    if port_windows:
        per_port = rows.groupBy("host_ip", "dst_port").agg(F.max("slice_ts").alias("last"))
        ports = per_port.groupBy("host_ip").agg(
            *(count_if(F.col("last") >= since[w]).alias(f"distinct_dst_ports_{w}") for w in port_windows)
        )
        result = result.join(ports, "host_ip", "left")

    for window in windows:
        periodic = [n for n in PERIODIC_FEATURES if (n, window) in wanted]
        if not periodic:
            continue
        window_start = end - parse_duration(window)
        series = per_slice.where(~F.col("internal") & (F.col("slice_ts") >= since[window]))
        scored = pair_periodicity(
            series.select("host_ip", "dst_ip", "slice_ts", "sessions"),
            [s for s in covered if s >= window_start],
            fg_a.periodicity,
        )
        best = scored.groupBy("host_ip").agg(
            F.max_by(F.struct("score", "fill", "cv"), F.struct("score", "active_slices", "dst_ip")).alias("_top"),
            count_if(F.col("score") >= fg_a.periodicity.score_threshold).alias("_pairs"),
        )
        top_scored = F.col("_top.score") > 0
        values = {
            "periodic_max_score": F.col("_top.score"),
            "periodic_top_fill": F.when(top_scored, F.col("_top.fill")),
            "periodic_top_cv": F.when(top_scored, F.col("_top.cv")),
            "periodic_pairs": F.col("_pairs"),
        }
        result = result.join(
            best.select("host_ip", *(values[n].alias(f"{n}_{window}") for n in periodic)), "host_ip", "left"
        )
    return result.select(
        "host_ip",
        *(F.coalesce(F.col(c).cast("DOUBLE"), F.lit(0.0)).alias(c) for c in columns),
        F.lit(start).cast("TIMESTAMP").alias("batch_start_ts"),
        F.lit(end).cast("TIMESTAMP").alias("batch_end_ts"),
    )


def run_fg_a_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's FG-A partition; print and return the summary."""
    from ndr_jobs.features.common import Phases, emit, iso
    from ndr_jobs.spark import spark_session

    phase = Phases()
    start, end = batch_window(runtime)
    spec = load_feature_spec(runtime.feature_spec_version)
    root = datasets.storage_root()
    fsv = runtime.feature_spec_version
    spark = spark_session("ndr-fg-a-builder")
    phase("spark_session")

    longest = window_starts(end, spec.fg_a.max_window)
    present = [s for s in datasets.existing_batches(root, datasets.DELTA, fsv) if longest[0] <= s < end]
    coverage = {
        w: round(sum(1 for s in present if s >= end - parse_duration(w)) / slices(w), 6) for w in spec.fg_a.windows
    }
    delta = datasets.read_batches(spark, root, datasets.DELTA, fsv, present) if present else None
    cached: list[DataFrame] = []
    frame = build_fg_a(spark, delta, spec, start, end, present, cached).persist()
    try:
        hosts = frame.count()
        phase("features")
        written = storage.write_partition(
            frame, root, datasets.FG_A, datasets.batch_partition(fsv, start), ["host_ip"],
            storage.files_for(hosts, 200_000), hosts,
        )  # fmt: skip
        phase("write")
    finally:
        for cached_frame in [frame, *cached]:
            cached_frame.unpersist()
    return emit(
        {
            "job": "fg_a_builder",
            "mini_batch_id": runtime.mini_batch_id,
            "project_name": runtime.project_name,
            "feature_spec_version": fsv,
            "batch_start_ts": iso(start),
            "batch_end_ts": iso(end),
            "hosts": hosts,
            "columns": len(spec.fg_a.columns()),
            "delta_partitions_read": len(present),
            "batch_delta_present": start in present,
            "windows_coverage": coverage,
            "output": written.path,
            "seconds": phase.total(),
            "phase_seconds": phase.seconds,
        }
    )
