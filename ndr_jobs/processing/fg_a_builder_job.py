"""Build FG-A: current-behaviour features per internal host over windows ending at the batch end.

Entry: :func:`run_fg_a_builder_from_runtime_config`. ``15m`` is the batch's own delta, ``1h`` the last 4 delta
partitions, ``24h`` the last 96; missing partitions are skipped and reported as ``windows_coverage``. The feature
catalogue and columns: ``docs/datasets.md``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.interface.feature_spec import FeatureSpecBody, load_feature_spec, parse_duration, slices
from ndr_jobs.runtime.config import BatchRuntime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PERIODIC_FEATURES = ("periodic_max_score", "periodic_top_fill", "periodic_top_cv", "periodic_pairs")


def batch_window(runtime: BatchRuntime) -> tuple[datetime, datetime]:
    """The batch's [start, end), checked to be one 15-minute slice on a slice boundary."""
    start, end = contract.parse_utc(runtime.batch_start_ts), contract.parse_utc(runtime.batch_end_ts)
    if end - start != layout.BATCH:
        raise ValueError(f"batch {runtime.batch_start_ts} .. {runtime.batch_end_ts} is not 15 minutes")
    if start.minute % 15 or start.second or start.microsecond:
        raise ValueError(f"batch start {runtime.batch_start_ts} is not on a 15-minute boundary")
    return start, end


def window_starts(end: datetime, window: str) -> list[datetime]:
    """The 15-minute slice starts of a window ending at ``end``."""
    return layout.batch_starts(end - parse_duration(window), end)


def _ts(moment: datetime) -> str:
    """A SQL timestamp literal of an instant (UTC, whatever the session time zone)."""
    return f"TIMESTAMP '{contract.iso(moment)}'"


def _str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(column: str, values: list[int] | list[str]) -> str:
    """``column IN (values)`` as SQL (false, or null for a null column, when there are no values)."""
    if not values:
        return f"(CASE WHEN {column} IS NOT NULL THEN false END)"
    return f"{column} IN ({', '.join(_str(v) if isinstance(v, str) else str(int(v)) for v in values)})"


def is_dns(spec: FeatureSpecBody) -> str:
    """SQL: the delta row is DNS (one of the spec's DNS ports or applications)."""
    protocol = spec.fg_a.protocol
    ports, apps = _in("dst_port", list(protocol.dns_ports)), _in("app", list(protocol.dns_apps))
    return f"(coalesce({ports}, false) OR coalesce({apps}, false))"


def app_port_mismatch(spec: FeatureSpecBody) -> str:
    """SQL: the row's application is one of ``fg_a.protocol.app_ports`` and its port is not one of that app's."""
    app_ports = spec.fg_a.protocol.app_ports
    if not app_ports:
        return "false"
    whens = " ".join(f"WHEN {_str(app)} THEN NOT {_in('dst_port', sorted(set(ports)))}"
                     for app, ports in sorted(app_ports.items()))  # fmt: skip
    return f"coalesce(CASE app {whens} ELSE false END, false)"


def rare_values(
    rows: DataFrame, spec: FeatureSpecBody, start: datetime, end: datetime
) -> tuple[list[int], list[str], list[str], int]:
    """The rare destination ports and apps and the estate's DNS resolvers over the rarity reference window, and
    the hosts of the batch.

    One aggregation (distinct hosts per port, per app, per DNS destination, overall, with DNS and in the batch
    slice) and one collect; the last count is the number of FG-A rows of the batch (hosts with delta rows in
    it). Resolvers: :class:`ndr_jobs.interface.feature_spec.Protocol`.
    """
    from pyspark.sql import functions as F

    rarity, protocol = spec.fg_a.rarity, spec.fg_a.protocol
    in_ref = f"slice_ts >= {_ts(end - parse_duration(spec.fg_a.rarity_window))}"
    in_batch = f"slice_ts = {_ts(start)}"
    dns = f"{in_ref} AND {is_dns(spec)}"
    found = (
        rows.where(f"{in_ref} OR {in_batch}")
        .selectExpr(f"""explode(array(
            CASE WHEN {in_ref} THEN named_struct('kind', 'port', 'value', CAST(dst_port AS STRING)) END,
            CASE WHEN {in_ref} AND app IS NOT NULL THEN named_struct('kind', 'app', 'value', app) END,
            CASE WHEN {dns} THEN named_struct('kind', 'dns', 'value', dst_ip) END,
            CASE WHEN {dns} THEN named_struct('kind', 'dns_hosts', 'value', '') END,
            CASE WHEN {in_ref} THEN named_struct('kind', 'hosts', 'value', '') END,
            CASE WHEN {in_batch} THEN named_struct('kind', 'batch_hosts', 'value', '') END
        )) AS k""", "host_ip")
        .where("k IS NOT NULL")
        .groupBy("k.kind", "k.value")
        .agg(F.expr("count(DISTINCT host_ip) AS n"))
        .where("kind != 'dns' OR n >= 2")  # a one-host DNS destination is never a resolver
        .collect()
    )  # fmt: skip
    n_hosts = next((r["n"] for r in found if r["kind"] == "hosts"), 0)
    dns_hosts = next((r["n"] for r in found if r["kind"] == "dns_hosts"), 0)
    batch_hosts = next((r["n"] for r in found if r["kind"] == "batch_hosts"), 0)
    port_limit = max(rarity.port_max_hosts, rarity.host_fraction * n_hosts)
    app_limit = max(rarity.app_max_hosts, rarity.host_fraction * n_hosts)
    ports = sorted(int(r["value"]) for r in found if r["kind"] == "port" and r["n"] <= port_limit)
    apps = sorted(r["value"] for r in found if r["kind"] == "app" and r["n"] <= app_limit)
    resolver_limit = min(
        max(protocol.resolver_min_hosts, protocol.resolver_host_fraction * n_hosts), max(2, -(-dns_hosts // 2))
    )
    resolvers = {r["value"] for r in found if r["kind"] == "dns" and r["n"] >= resolver_limit}
    return ports, apps, sorted(resolvers | set(spec.network.dns_resolvers)), batch_hosts


def build_fg_a(
    spark: SparkSession,
    delta: DataFrame | None,
    spec: FeatureSpecBody,
    start: datetime,
    end: datetime,
    covered: list[datetime],
    cached: list[DataFrame] | None = None,
) -> tuple[DataFrame, int]:
    """FG-A rows (``docs/datasets.md``) from the delta rows of the longest window (``batch_start_ts`` column),
    and their number (hosts of the batch).

    ``covered`` lists the slice starts whose delta partitions exist (for periodicity spans); frames this
    persists are appended to ``cached`` for the caller to unpersist.

    One shuffle: the (internal-source) rows are hash-partitioned by host and cached, so that every later
    aggregation is local to a partition. The rarity pre-pass (one more shuffle, one collect) also counts
    the batch's hosts. Then the rows are summed per (host, dst_ip, slice); from that, per (host, dst_ip)
    with one conditional sum per window, the last slice seen (a destination is in a window when its last
    slice is) and the periodicity aggregates of the series per window (the scores of
    :func:`ndr_jobs.features.common.pair_periodicity`); then per host, where a distinct count over a window
    is a count of the (host, dst_ip) rows whose last slice is in it, and the best periodic series is a
    ``max_by``. Ports go the same way through (host, dst_port), joined on the co-partitioned host key. The
    expressions are SQL text in DataFrame calls (``F.expr``), not ``spark.sql(..., rows=df)``: that re-plans
    its DataFrame arguments through a temporary view and never reads the cached rows. The host partitioning
    asks for the session's default parallelism explicitly: a bare ``repartition(col)`` lets adaptive
    execution coalesce a small batch into one partition, i.e. one core.
    """

    from pyspark.sql import functions as F

    from ndr_jobs.features.common import is_internal

    fg_a = spec.fg_a
    columns = fg_a.columns()
    out_schema = "host_ip STRING, " + ", ".join(f"{c} DOUBLE" for c in columns)
    out_schema += ", batch_start_ts TIMESTAMP, batch_end_ts TIMESTAMP"
    if delta is None:
        return spark.createDataFrame([], out_schema), 0

    network = spec.network
    rows = (
        delta.selectExpr(
            "src_ip AS host_ip", "dst_ip", "dst_port", "app",
            "coalesce(sessions, 0) AS sessions", "coalesce(deny_count, 0) AS deny_count",
            "coalesce(bytes_sent, 0) AS bytes_sent", "coalesce(bytes_received, 0) AS bytes_received",
            "batch_start_ts AS slice_ts",
        )
        .where(is_internal("host_ip", network))
        .repartition(spark.sparkContext.defaultParallelism, "host_ip")
    )  # fmt: skip
    if cached is not None:
        rows = rows.persist()
        cached.append(rows)
    rare_ports, rare_apps, resolvers, n_hosts = rare_values(rows, spec, start, end)

    zero = "CAST(0 AS BIGINT)"
    rare_app = f"coalesce({_in('app', rare_apps)}, false)" if rare_apps else "false"
    per_slice = [
        "sum(sessions) AS sessions", "sum(bytes_sent) AS bytes_sent", "sum(bytes_received) AS bytes_received",
        "sum(deny_count) AS deny_count",
        f"sum(CASE WHEN {_in('dst_port', rare_ports)} THEN sessions ELSE {zero} END) AS rare_port_sessions",
        f"sum(CASE WHEN {rare_app} THEN sessions ELSE {zero} END) AS rare_app_sessions",
        f"max({_in('dst_port', list(network.admin_ports))}) AS admin",
        f"sum(CASE WHEN {is_dns(spec)} THEN sessions ELSE {zero} END) AS dns_sessions",
        f"sum(CASE WHEN {app_port_mismatch(spec)} THEN sessions ELSE {zero} END) AS mismatch_sessions",
        f"sum(CASE WHEN sessions > deny_count AND bytes_sent + bytes_received <= "
        f"{int(fg_a.protocol.small_flow_max_bytes)} * sessions THEN sessions - deny_count ELSE {zero} END)"
        " AS small_sessions",
    ]  # fmt: skip

    windows = fg_a.windows
    since = {w: _ts(end - parse_duration(w)) for w in windows}
    wanted = {(f.name, w) for f in fg_a.features for w in f.windows}
    periodic_windows = [w for w in windows if any((n, w) in wanted for n in PERIODIC_FEATURES)]
    summed = ("sessions", "bytes_sent", "bytes_received", "deny_count", "rare_port_sessions", "rare_app_sessions",
              "dns_sessions", "mismatch_sessions", "small_sessions")  # fmt: skip
    per_dst_aggs = [
        f"sum(CASE WHEN slice_ts >= {since[w]} THEN {c} ELSE {zero} END) AS {c}_{w}" for w in windows for c in summed
    ]
    count = "CAST(sessions AS DOUBLE)"
    for w in periodic_windows:
        in_w = f"slice_ts >= {since[w]}"
        per_dst_aggs += [
            f"min(CASE WHEN {in_w} THEN slice_ts END) AS _p_first_{w}",
            f"count(CASE WHEN {in_w} THEN 1 END) AS _p_active_{w}",
            f"sum(CASE WHEN {in_w} THEN {count} END) AS _p_total_{w}",
            f"sum(CASE WHEN {in_w} THEN {count} * {count} END) AS _p_total_sq_{w}",
        ]
    per_dst = (
        rows.groupBy("host_ip", "dst_ip", "slice_ts")
        .agg(*map(F.expr, per_slice))
        .groupBy("host_ip", "dst_ip")
        .agg(*map(F.expr, ["max(slice_ts) AS last", "max(CASE WHEN admin THEN slice_ts END) AS last_admin",
                          *per_dst_aggs]))
        .withColumn("internal", is_internal("dst_ip", network))
    )  # fmt: skip

    scored = ["*"]
    for w in periodic_windows:  # as pair_periodicity, for the window's external series (null for the others)
        starts = ", ".join(_ts(s) for s in sorted(s for s in covered if s >= end - parse_duration(w)))
        first, active = f"_p_first_{w}", f"_p_active_{w}"
        span = f"CAST(greatest(size(filter(array({starts}), s -> s >= {first})), {active}) AS DOUBLE)"
        mean = f"(_p_total_{w} / {span})"
        var = f"greatest(_p_total_sq_{w} / {span} - {mean} * {mean}, 0.0D)"
        cv = f"(CASE WHEN {mean} > 0 THEN sqrt({var}) / {mean} ELSE 0.0D END)"
        fill = f"(CAST({active} AS DOUBLE) / {span})"
        score = (
            f"CASE WHEN {active} >= {int(fg_a.periodicity.min_active_slices)} THEN {fill} / (1.0D + {cv}) ELSE 0.0D END"
        )
        series = f"(NOT internal AND {active} > 0)"
        for name, expr in (
            ("active_slices", f"CAST({active} AS DOUBLE)"),
            ("fill", fill),
            ("cv", cv),
            ("score", score),
        ):
            scored.append(f"CASE WHEN {series} THEN {expr} END AS _p_{name}_{w}")

    def count_if(cond: str) -> str:
        return f"CAST(sum(CASE WHEN {cond} THEN 1 ELSE 0 END) AS DOUBLE)"

    def total(col: str, cond: str | None = None) -> str:
        value = col if cond is None else f"CASE WHEN {cond} THEN {col} ELSE {zero} END"
        return f"CAST(coalesce(sum({value}), {zero}) AS DOUBLE)"

    def ratio(num: str, den: str) -> str:  # as ndr_jobs.features.common.ratio
        return f"CASE WHEN coalesce({den}, 0) > 0 THEN CAST({num} AS DOUBLE) / CAST({den} AS DOUBLE) ELSE 0.0D END"

    offnet = f"NOT {_in('dst_ip', resolvers)}" if resolvers else "true"
    metrics: dict[tuple[str, str], str] = {}
    for w in windows:
        seen = f"last >= {since[w]}"
        sent, received, n = total(f"bytes_sent_{w}"), total(f"bytes_received_{w}"), total(f"sessions_{w}")
        metrics |= {
            ("sessions", w): n,
            ("fan_out", w): count_if(seen),
            ("internal_fan_out", w): count_if(f"{seen} AND internal"),
            ("external_fan_out", w): count_if(f"{seen} AND NOT internal"),
            ("admin_port_fan_out", w): count_if(f"last_admin >= {since[w]} AND internal"),
            ("bytes_out_log", w): f"log1p({sent})",
            ("bytes_in_log", w): f"log1p({received})",
            ("out_in_ratio", w): ratio(sent, f"({sent} + {received})"),
            ("max_dst_bytes_out_log", w): f"log1p(CAST(coalesce(max(bytes_sent_{w}), {zero}) AS DOUBLE))",
            ("external_bytes_out_log", w): f"log1p({total(f'bytes_sent_{w}', 'NOT internal')})",
            ("deny_ratio", w): ratio(total(f"deny_count_{w}"), n),
            ("rare_port_sessions", w): total(f"rare_port_sessions_{w}"),
            ("rare_app_sessions", w): total(f"rare_app_sessions_{w}"),
            ("internal_internal_sessions", w): total(f"sessions_{w}", "internal"),
            ("dns_sessions", w): total(f"dns_sessions_{w}"),
            ("offnet_dns_sessions", w): total(f"dns_sessions_{w}", offnet),
            ("offnet_dns_share", w): ratio(total(f"dns_sessions_{w}", offnet), total(f"dns_sessions_{w}")),
            ("app_port_mismatch_sessions", w): total(f"mismatch_sessions_{w}"),
            ("small_flow_burst", w): f"CAST(coalesce(max(CASE WHEN NOT internal THEN small_sessions_{w} END), "
            f"{zero}) AS DOUBLE)",
        }
    host_metrics = [f"{e} AS {n}_{w}" for (n, w), e in metrics.items() if (n, w) in wanted]
    for w in periodic_windows:
        score = f"_p_score_{w}"
        best = (
            f"max_by(named_struct('score', {score}, 'fill', _p_fill_{w}, 'cv', _p_cv_{w}), "
            f"CASE WHEN {score} IS NOT NULL THEN struct({score}, _p_active_slices_{w}, dst_ip) END)"
        )
        values = {
            "periodic_max_score": f"{best}.score",
            "periodic_top_fill": f"CASE WHEN {best}.score > 0 THEN {best}.fill END",
            "periodic_top_cv": f"CASE WHEN {best}.score > 0 THEN {best}.cv END",
            "periodic_pairs": count_if(f"{score} >= CAST('{float(fg_a.periodicity.score_threshold)!r}' AS DOUBLE)"),
        }
        host_metrics += [f"{values[n]} AS {n}_{w}" for n in PERIODIC_FEATURES if (n, w) in wanted]

    frame = per_dst.selectExpr(*scored).groupBy("host_ip").agg(*map(F.expr, ["max(last) AS _last", *host_metrics]))
    port_windows = [w for w in windows if ("distinct_dst_ports", w) in wanted]
    if port_windows:
        ports = (
            rows.groupBy("host_ip", "dst_port")
            .agg(F.expr("max(slice_ts) AS last"))
            .groupBy("host_ip")
            .agg(*(F.expr(count_if(f"last >= {since[w]}") + f" AS distinct_dst_ports_{w}") for w in port_windows))
        )
        frame = frame.join(ports, "host_ip", "left")
    frame = frame.where(f"_last = {_ts(start)}").selectExpr(
        "host_ip", *(f"coalesce(CAST({c} AS DOUBLE), 0.0D) AS {c}" for c in columns),
        f"{_ts(start)} AS batch_start_ts", f"{_ts(end)} AS batch_end_ts",
    )  # fmt: skip
    return frame, n_hosts


def run_fg_a_builder_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Build and write the batch's FG-A partition; print and return the summary."""
    from ndr_jobs.runtime.spark import ONE_LEVEL_AGGREGATE_MAP, UNCOMPRESSED_CACHE, spark_session, sql_conf
    from ndr_jobs.runtime.summary import Phases, batch_header, emit

    phase = Phases()
    start, end = batch_window(runtime)
    spec = load_feature_spec(runtime.feature_spec_version)
    root = layout.storage_root()
    fsv = runtime.feature_spec_version
    spark = spark_session("ndr-fg-a-builder")
    phase("spark_session")

    longest = window_starts(end, spec.fg_a.max_window)
    present = [s for s in layout.existing_batches(root, layout.DELTA, fsv) if longest[0] <= s < end]
    coverage = {
        w: round(sum(1 for s in present if s >= end - parse_duration(w)) / slices(w), 6) for w in spec.fg_a.windows
    }
    delta = layout.read_batches(spark, root, layout.DELTA, fsv, present) if present else None
    cached: list[DataFrame] = []
    with sql_conf(spark, {**UNCOMPRESSED_CACHE, **ONE_LEVEL_AGGREGATE_MAP}):
        try:
            frame, hosts = build_fg_a(spark, delta, spec, start, end, present, cached)
            phase("features")
            written = storage.write_partition(
                frame, root, layout.FG_A, layout.batch_partition(fsv, start), ["host_ip"],
                storage.files_for(hosts, 200_000), hosts,
            )  # fmt: skip
            phase("write")
        finally:
            for cached_frame in cached:
                cached_frame.unpersist()
    return emit(
        {
            **batch_header("fg_a_builder", runtime, start, end),
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
