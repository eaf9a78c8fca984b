"""FG-C: correlation features per host of a batch: FG-A against FG-B baselines, pair novelty, prevalence.

Entry: :func:`run_fg_c_builder_from_runtime_config`. Uses the FG-B snapshot of the latest reference month whose
horizon ends at or before the batch start. Columns: ``docs/datasets.md``; the z-score and beacon formulas:
``docs/design/jobs.md`` (Features).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface.feature_spec import FG_C_FLAGS, FeatureSpecBody, load_feature_spec, parse_duration
from ndr_jobs.processing.fg_a_builder_job import batch_window
from ndr_jobs.processing.fg_b_builder_job import horizon_end, snapshot_partition, table_location
from ndr_jobs.runtime.config import BatchRuntime

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

MAD_SCALE = 1.4826


def latest_snapshot(root: str, feature_spec_version: str, horizon: str, before: datetime) -> str | None:
    """The latest reference month with an FG-B host snapshot whose horizon end is at or before ``before``."""
    table_root, name = table_location(root, "host")
    prefix = storage.join(table_root, name, f"feature_spec_version={feature_spec_version}",
                          f"baseline_horizon={horizon}")  # fmt: skip
    months = set()
    for path in storage.committed_partitions(prefix):
        first = path[len(prefix) :].strip("/")
        if first.startswith("reference_month=") and "/" not in first:
            months.add(first.split("=", 1)[1])
    eligible = []
    for month in months:
        try:
            if horizon_end(month) <= before:
                eligible.append(month)
        except ValueError:
            continue
    return max(eligible) if eligible else None


def read_snapshot(
    spark: SparkSession, root: str, table: str, feature_spec_version: str, horizon: str, month: str | None
) -> DataFrame | None:
    """One FG-B table of a snapshot, or None when it is missing or empty."""
    if month is None:
        return None
    table_root, name = table_location(root, table)
    path = storage.partition_path(table_root, name, snapshot_partition(feature_spec_version, horizon, month))
    frame = layout.read_partition(spark, path)
    return None if frame is None or frame.isEmpty() else frame


def robust_z(x: Column, median: Column, mad: Column, std: Column, min_scale: float, clip: float) -> Column:
    """Clipped robust z-score (``docs/design/jobs.md``, Features); null when the baseline is null."""
    from pyspark.sql import functions as F

    scale = (
        F.when(mad * MAD_SCALE > 0, mad * MAD_SCALE)
        .when(F.coalesce(std, F.lit(0.0)) > 0, std)
        .otherwise(F.lit(min_scale))
    )
    z = (x - median) / scale
    return F.greatest(F.least(z, F.lit(clip)), F.lit(-clip))


def beacon_features(
    spark: SparkSession, pairs: DataFrame, window_pairs: DataFrame | None, spec: FeatureSpecBody, end: datetime
) -> DataFrame:  # fmt: skip
    """``rare_dst_beacon_score`` and ``rare_dst_active_minutes`` per host (``docs/design/jobs.md``, Features).

    ``pairs``: the batch's pairs with the ``_rare_dst`` flag; ``window_pairs``: pair counts with their
    ``active_minutes`` masks. The masks of the window's slices are laid end to end (slice ``k`` of the window
    at bits ``15k..15k+14``) into one mask per (host, dst_ip), whose set bits are the series' active minutes.
    """
    from pyspark.sql import functions as F

    novelty = spec.fg_c.novelty
    window = parse_duration(novelty.beacon_window)
    window_start = end - window
    n_minutes = int(window.total_seconds() // 60)
    slice_minutes = int(layout.BATCH.total_seconds() // 60)
    schema = "host_ip STRING, rare_dst_beacon_score DOUBLE, rare_dst_active_minutes DOUBLE"
    if window_pairs is None or "active_minutes" not in window_pairs.columns:
        return spark.createDataFrame([], schema)
    rare = pairs.where(F.col("_rare_dst")).select("host_ip", "dst_ip").distinct()
    since = int(window_start.timestamp())
    slice_index = f"CAST((unix_seconds(batch_start_ts) - {since}) / {slice_minutes * 60} AS INT)"
    shifted = f"shiftleft(active_minutes & {(1 << slice_minutes) - 1}, {slice_index} * {slice_minutes})"
    masks = (
        window_pairs.where((F.col("batch_start_ts") >= F.lit(window_start)) & (F.col("batch_start_ts") < F.lit(end)))
        .where(F.col("sessions") > F.coalesce(F.col("deny_count"), F.lit(0)))
        .select(F.col("src_ip").alias("host_ip"), "dst_ip",
                F.expr(shifted).alias("_mask"))
        .join(rare, ["host_ip", "dst_ip"], "left_semi")
        .groupBy("host_ip", "dst_ip")
        .agg(F.bit_or("_mask").alias("_mask"))
    )  # fmt: skip
    minutes = f"filter(sequence(0, {n_minutes - 1}), i -> (shiftright(_mask, i) & 1) = 1)"
    gaps = "transform(sequence(2, size(_m)), k -> CAST(element_at(_m, k) - element_at(_m, k - 1) AS DOUBLE))"
    gaps = f"IF(size(_m) >= 2, {gaps}, CAST(array() AS ARRAY<DOUBLE>))"  # sequence(2, 1) would count down
    mean = "(aggregate(_g, 0.0D, (a, x) -> a + x) / size(_g))"
    cv = f"(sqrt(aggregate(_g, 0.0D, (a, x) -> a + (x - {mean}) * (x - {mean})) / size(_g)) / {mean})"
    persistence = f"(CAST(element_at(_m, -1) - element_at(_m, 1) + 1 AS DOUBLE) / ({n_minutes} - element_at(_m, 1)))"
    score = f"CASE WHEN size(_m) >= {int(novelty.beacon_min_active_minutes)} THEN {persistence} / (1.0D + {cv}) END"
    series = (
        masks.withColumn("_m", F.expr(minutes))
        .withColumn("_g", F.expr(gaps))
        .select("host_ip", "dst_ip", F.size("_m").alias("_active"), F.expr(score).alias("_score"))
    )
    return (
        series.groupBy("host_ip")
        .agg(F.max_by(F.struct("_score", "_active"), F.struct(F.coalesce("_score", F.lit(0.0)), "_active", "dst_ip"))
             .alias("_top"))
        .select("host_ip", F.coalesce(F.col("_top._score"), F.lit(0.0)).alias("rare_dst_beacon_score"),
                F.col("_top._active").cast("DOUBLE").alias("rare_dst_active_minutes"))
    )  # fmt: skip


def build_fg_c(
    spark: SparkSession,
    spec: FeatureSpecBody,
    fg_a: DataFrame,
    batch_pairs: DataFrame,
    window_pairs: DataFrame | None,
    covered: list[datetime],
    baselines: dict[str, DataFrame | None],
    inventory: DataFrame | None,
    start: datetime,
    end: datetime,
    month: str | None,
) -> DataFrame:
    """FG-C rows (``docs/datasets.md``). ``baselines``: FG-B tables by name (None when missing)."""
    from pyspark.sql import functions as F

    from ndr_jobs.features.common import is_internal, ln1p, pair_periodicity, ratio, with_segment

    fg_c, network = spec.fg_c, spec.network
    min_windows = spec.fg_b.min_windows
    z_columns = spec.zscore_columns()
    host_base, seg_base = baselines.get("host"), baselines.get("segment")
    pair_base, seg_pair_base = baselines.get("pair/host"), baselines.get("pair/segment")
    ip_base = baselines.get("ip_metadata")

    extra = ["bytes_out_log_15m"] if "bytes_out_log_15m" in fg_a.columns else []
    hosts = fg_a.select("host_ip", *dict.fromkeys([*z_columns, *extra]))
    # --- host baseline and segment ------------------------------------------------------------------------
    if host_base is not None:
        wanted = ["host_ip", "segment", "n_windows"]
        for c in z_columns:
            wanted += [f"{c}_median", f"{c}_mad", f"{c}_std"]
        if "bytes_out_log_15m_p99" in host_base.columns:
            wanted.append("bytes_out_log_15m_p99")
        hb = host_base.select(*(c for c in dict.fromkeys(wanted) if c in host_base.columns))
        hb = hb.select("host_ip", *(F.col(c).alias(f"_h_{c}") for c in hb.columns if c != "host_ip"))
        hosts = hosts.join(F.broadcast(hb), "host_ip", "left")
        host_ok = F.coalesce(F.col("_h_n_windows"), F.lit(0)) >= min_windows
        hosts = with_segment(hosts, "host_ip", "_seg_fallback", network, inventory)
        hosts = hosts.withColumn("segment", F.coalesce(F.col("_h_segment"), F.col("_seg_fallback")))
    else:
        host_ok = F.lit(False)
        hosts = with_segment(hosts, "host_ip", "segment", network, inventory)
    if seg_base is not None:
        wanted = ["segment", "n_windows"] + [f"{c}_{s}" for c in z_columns for s in ("median", "mad", "std")]
        sb = seg_base.select(*(c for c in wanted if c in seg_base.columns))
        sb = sb.select("segment", *(F.col(c).alias(f"_s_{c}") for c in sb.columns if c != "segment"))
        hosts = hosts.join(F.broadcast(sb), "segment", "left")
        seg_ok = F.coalesce(F.col("_s_n_windows"), F.lit(0)) >= min_windows
    else:
        seg_ok = F.lit(False)
    hosts = hosts.withColumn("_host_ok", host_ok).withColumn("_seg_ok", seg_ok)

    z_exprs = []
    for prefix, ok, tag in (("z_host", "_host_ok", "_h_"), ("z_segment", "_seg_ok", "_s_")):
        if prefix.removeprefix("z_") not in fg_c.zscore.baselines:
            continue
        for c in z_columns:
            present = all(f"{tag}{c}_{s}" in hosts.columns for s in ("median", "mad", "std"))
            if present:
                z = robust_z(F.col(c), F.col(f"{tag}{c}_median"), F.col(f"{tag}{c}_mad"), F.col(f"{tag}{c}_std"),
                             fg_c.zscore.min_scale, fg_c.zscore.clip)  # fmt: skip
                z_exprs.append(F.when(F.col(ok), z).otherwise(F.lit(0.0)).alias(f"{prefix}_{c}"))
            else:
                z_exprs.append(F.lit(0.0).alias(f"{prefix}_{c}"))
    if "_h_bytes_out_log_15m_p99" in hosts.columns and "bytes_out_log_15m" in hosts.columns:
        vs_p99 = F.when(F.col("_host_ok"), F.col("bytes_out_log_15m") - F.col("_h_bytes_out_log_15m_p99"))
    else:
        vs_p99 = F.lit(0.0)
    base = hosts.select(
        "host_ip", "segment", *z_exprs, vs_p99.alias("bytes_out_vs_host_p99"),
        F.when(F.col("_host_ok"), 0.0).otherwise(1.0).alias("host_baseline_missing"),
        F.when(F.col("_seg_ok"), 0.0).otherwise(1.0).alias("segment_baseline_missing"),
    )  # fmt: skip

    # --- pairs of the batch against the pair baselines and the IP metadata -----------------------------
    pairs = (
        batch_pairs.select(F.col("src_ip").alias("host_ip"), "dst_ip", "dst_port", "sessions", "bytes_sent",
                           "deny_count")
        .join(base.select("host_ip", "segment"), "host_ip")
        .withColumn("_allowed", F.col("sessions") > F.coalesce(F.col("deny_count"), F.lit(0)))
        .withColumn("_external", ~is_internal("dst_ip", network))
    )  # fmt: skip
    if pair_base is not None:
        pb = pair_base.select(F.col("src_ip").alias("host_ip"), "dst_ip", "dst_port")
        known_pairs = pb.withColumn("_known_pair", F.lit(True))
        known_dsts = pb.select("host_ip", "dst_ip").distinct().withColumn("_known_dst", F.lit(True))
        with_base = pb.select("host_ip").distinct().withColumn("_has_pair_base", F.lit(True))
        known_ports = pb.select("host_ip", "dst_port").distinct().withColumn("_known_port", F.lit(True))
        pairs = (
            pairs.join(known_pairs, ["host_ip", "dst_ip", "dst_port"], "left")
            .join(known_dsts, ["host_ip", "dst_ip"], "left")
            .join(known_ports, ["host_ip", "dst_port"], "left")
            .join(F.broadcast(with_base), "host_ip", "left")
        )
    else:
        unknown = ("_known_pair", "_known_dst", "_known_port", "_has_pair_base")
        pairs = pairs.select("*", *(F.lit(None).cast("BOOLEAN").alias(c) for c in unknown))
    if seg_pair_base is not None:
        sp = seg_pair_base.select(F.col("src_segment").alias("segment"), "dst_ip", "dst_port").withColumn(
            "_seg_known", F.lit(True)
        )
        seg_ports = (
            seg_pair_base.select(F.col("src_segment").alias("segment"), "dst_port")
            .distinct()
            .withColumn("_seg_known_port", F.lit(True))
        )
        seg_pairs_exist = seg_pair_base.select(F.col("src_segment").alias("segment")).distinct()
        pairs = (
            pairs.join(sp, ["segment", "dst_ip", "dst_port"], "left")
            .join(seg_ports, ["segment", "dst_port"], "left")
            .join(F.broadcast(seg_pairs_exist.withColumn("_seg_has_pairs", F.lit(True))), "segment", "left")
        )
    else:
        pairs = pairs.select("*", *(F.lit(None).cast("BOOLEAN").alias(c)
                                    for c in ("_seg_known", "_seg_known_port", "_seg_has_pairs")))  # fmt: skip
    if ip_base is not None:
        pairs = pairs.join(
            ip_base.select(F.col("ip").alias("dst_ip"), F.col("prevalence").alias("_prevalence")), "dst_ip", "left"
        ).withColumn("_prevalence", F.coalesce(F.col("_prevalence"), F.lit(0)))
        ip_ok = F.lit(True)
    else:
        pairs = pairs.withColumn("_prevalence", F.lit(None).cast("BIGINT"))
        ip_ok = F.lit(False)

    has_pair_base = F.coalesce(F.col("_has_pair_base"), F.lit(False))
    novel_pair = has_pair_base & ~F.coalesce(F.col("_known_pair"), F.lit(False))
    novel_dst = has_pair_base & ~F.coalesce(F.col("_known_dst"), F.lit(False)) & F.col("_allowed")
    low_prev = ip_ok & (F.col("_prevalence") <= fg_c.novelty.low_prevalence_max_hosts)
    ext_allowed = F.col("_external") & F.col("_allowed")
    rare_dst = ext_allowed & (novel_dst | low_prev)
    pairs = (
        pairs.withColumn("_novel_pair", novel_pair)
        .withColumn("_novel_dst", novel_dst)
        .withColumn("_low_prev", ext_allowed & low_prev)
        .withColumn("_rare_dst", rare_dst)
    )

    def count_if(cond: Column) -> Column:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("DOUBLE")

    def bytes_if(cond: Column) -> Column:
        return ln1p(F.sum(F.when(cond, F.col("bytes_sent")).otherwise(0)))

    def distinct_if(cond: Column) -> Column:
        return F.count_distinct(F.when(cond, F.col("dst_ip"))).cast("DOUBLE")

    seg_has = F.coalesce(F.col("_seg_has_pairs"), F.lit(False))
    novel_port = has_pair_base & ~F.coalesce(F.col("_known_port"), F.lit(False))
    seg_novel_port = seg_has & ~F.coalesce(F.col("_seg_known_port"), F.lit(False))
    dns_port = F.col("dst_port").isin(list(spec.fg_a.protocol.dns_ports))
    allowed_sessions = F.col("sessions") - F.coalesce(F.col("deny_count"), F.lit(0))
    per_host = pairs.groupBy("host_ip").agg(
        F.count(F.lit(1)).cast("DOUBLE").alias("pairs"),
        count_if(F.col("_novel_pair")).alias("novel_pairs"),
        bytes_if(F.col("_novel_pair")).alias("novel_pair_bytes_out_log"),
        distinct_if(F.col("_novel_dst")).alias("novel_dsts"),
        distinct_if(F.col("_novel_dst") & F.col("_external")).alias("novel_external_dsts"),
        bytes_if(F.col("_novel_dst")).alias("novel_dst_bytes_out_log"),
        count_if(seg_has & ~F.coalesce(F.col("_seg_known"), F.lit(False))).alias("segment_novel_pairs"),
        F.max(F.when(ip_ok & ext_allowed, 1.0 / (1.0 + F.col("_prevalence")))).alias("max_dst_rarity"),
        ln1p(F.min(F.when(ip_ok & ext_allowed, F.col("_prevalence")))).alias("min_dst_prevalence_log"),
        distinct_if(F.col("_low_prev")).alias("low_prevalence_dsts"),
        bytes_if(F.col("_low_prev")).alias("low_prevalence_bytes_out_log"),
        F.sum(F.when(novel_port, F.col("sessions")).otherwise(0)).cast("DOUBLE").alias("novel_port_sessions"),
        distinct_if(novel_port).alias("novel_port_fan_out"),
        F.count_distinct(F.when(seg_novel_port, F.col("dst_port"))).cast("DOUBLE").alias("segment_novel_ports"),
        distinct_if(seg_novel_port).alias("segment_novel_port_fan_out"),
        F.sum(F.when(ip_ok & dns_port & (F.col("_prevalence") <= fg_c.novelty.low_prevalence_max_hosts),
                     allowed_sessions).otherwise(0)).cast("DOUBLE").alias("rare_dns_dst_sessions"),
        F.max(has_pair_base).alias("_has_pair_base"),
    )
    per_host = per_host.withColumn("novel_pair_fraction", ratio(F.col("novel_pairs"), F.col("pairs")))

    # --- periodicity of series to rare external destinations ---------------------------------------------
    window = fg_c.novelty.periodicity_window
    window_start = end - parse_duration(window)
    covered_in_window = [s for s in covered if s >= window_start]
    if window_pairs is not None:
        rare = pairs.where(F.col("_rare_dst")).select("host_ip", "dst_ip").distinct()
        series = (
            window_pairs.where(F.col("batch_start_ts") >= F.lit(window_start))
            .select(F.col("src_ip").alias("host_ip"), "dst_ip", F.col("batch_start_ts").alias("slice_ts"),
                    (F.col("sessions") - F.coalesce(F.col("deny_count"), F.lit(0))).alias("sessions"))
            .where(F.col("sessions") > 0)
            .join(rare, ["host_ip", "dst_ip"], "left_semi")
        )  # fmt: skip
        scored = pair_periodicity(series, covered_in_window, spec.fg_a.periodicity)
        n_covered = float(max(1, len(covered_in_window)))
        periodic = (
            scored.groupBy("host_ip")
            .agg(
                F.max_by(F.struct("score", "active_slices"), F.struct("score", "active_slices", "dst_ip")).alias("_top")
            )
            .select(
                "host_ip",
                F.col("_top.score").alias("rare_dst_periodic_score"),
                (F.col("_top.active_slices") / F.lit(n_covered)).alias("rare_dst_active_fraction"),
            )
        )
    else:
        periodic = spark.createDataFrame([], "host_ip STRING, rare_dst_periodic_score DOUBLE, "
                                             "rare_dst_active_fraction DOUBLE")  # fmt: skip

    beacon = beacon_features(spark, pairs, window_pairs, spec, end)
    out = base.join(per_host, "host_ip", "left").join(periodic, "host_ip", "left").join(beacon, "host_ip", "left")
    pair_missing = F.when(F.coalesce(F.col("_has_pair_base"), F.lit(False)), 0.0).otherwise(1.0)
    out = out.withColumn("pair_baseline_missing", pair_missing).withColumn(
        "ip_baseline_missing", F.lit(0.0 if ip_base is not None else 1.0)
    )
    z_names = [f"z_{b}_{c}" for b in ("host", "segment") if b in fg_c.zscore.baselines for c in z_columns]
    return out.select(
        "host_ip",
        "segment",
        *(F.coalesce(F.col(c).cast("DOUBLE"), F.lit(0.0)).alias(c) for c in z_names),
        *(F.coalesce(F.col(c).cast("DOUBLE"), F.lit(0.0)).alias(c) for c in fg_c.features),
        *(F.col(c) for c in FG_C_FLAGS),
        F.lit(month or "").alias("baseline_reference_month"),
        F.lit(start).cast("TIMESTAMP").alias("batch_start_ts"),
        F.lit(end).cast("TIMESTAMP").alias("batch_end_ts"),
    )


def run_fg_c_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's FG-C partition; print and return the summary."""

    from ndr_jobs.features.common import read_inventory
    from ndr_jobs.runtime.spark import spark_session
    from ndr_jobs.runtime.summary import Phases, batch_header, emit

    phase = Phases()
    start, end = batch_window(runtime)
    spec = load_feature_spec(runtime.feature_spec_version)
    root, fsv = layout.storage_root(), runtime.feature_spec_version
    spark = spark_session("ndr-fg-c-builder")
    phase("spark_session")

    fg_a = layout.read_batches(spark, root, layout.FG_A, fsv, [start])
    batch_pairs = layout.read_batches(spark, root, layout.PAIR_COUNTS, fsv, [start])
    for name, frame in (("fg_a", fg_a), ("pair_counts", batch_pairs)):
        if frame is None:
            raise FileNotFoundError(f"no {name} partition for {layout.stamp(start)} (feature spec version {fsv})")
    novelty = spec.fg_c.novelty
    longest = max(parse_duration(novelty.periodicity_window), parse_duration(novelty.beacon_window))
    wanted = layout.batch_starts(end - longest, end)
    covered = [s for s in layout.existing_batches(root, layout.PAIR_COUNTS, fsv) if wanted[0] <= s < end]
    window_pairs = layout.read_batches(spark, root, layout.PAIR_COUNTS, fsv, covered)
    horizon = spec.fg_c.baseline_horizon
    month = latest_snapshot(root, fsv, horizon, start)
    baselines = {
        t: read_snapshot(spark, root, t, fsv, horizon, month)
        for t in ("host", "segment", "pair/host", "pair/segment", "ip_metadata")
    }
    inventory = read_inventory(spark, root, fsv, month) if month else None
    phase("read")

    frame = build_fg_c(spark, spec, fg_a, batch_pairs, window_pairs, covered, baselines, inventory, start, end, month)
    bound = layout.partition_rows(root, layout.FG_A, fsv, start)  # one row per FG-A host
    written, hosts = storage.write_counted(
        frame, root, layout.FG_C, layout.batch_partition(fsv, start), ["host_ip"], bound, 200_000
    )
    phase("write")
    return emit(
        {
            **batch_header("fg_c_builder", runtime, start, end),
            "hosts": hosts,
            "baseline_horizon": horizon,
            "baseline_reference_month": month,
            "baselines_missing": sorted(t for t, f in baselines.items() if f is None),
            "periodicity_window_coverage": round(
                sum(1 for s in covered if s >= end - parse_duration(novelty.periodicity_window))
                / len(layout.batch_starts(end - parse_duration(novelty.periodicity_window), end)),
                6,
            ),
            "output": written.path,
            "seconds": phase.total(),
            "phase_seconds": phase.seconds,
        }
    )
