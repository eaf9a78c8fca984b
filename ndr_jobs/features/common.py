"""Column expressions and small building blocks of the feature jobs (Spark; imported only when a job runs).

* Addresses: :func:`in_cidr` (string tests, no parsing), :func:`is_internal` (in one of the spec's internal
  networks), :func:`cidr_segment` (the spec's CIDR -> segment map, longest prefix first:
  ``external`` for non-internal addresses, ``unknown`` for internal ones no CIDR matches).
* Segments: :func:`with_segment` takes the month's machine inventory first (``inventory`` dataset,
  ``ip_address -> segment``), then the CIDR map.
* Periodicity of a (host, destination) series over a window of 15-minute slices: :func:`pair_periodicity`.
* :class:`Phases` times a job's phases; :func:`batch_header` is how a batch job's summary starts; :func:`emit`
  prints a job summary as one JSON line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface.feature_spec import Network, Periodicity

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession



def in_cidr(col: str | Column, cidr: str) -> Column:
    """True when the address is in the IPv4 network ``cidr`` (false for IPv6), by string tests alone.

    The network's whole octets are a prefix (``10.0.0.0/8`` -> ``10.``) and a partial octet a range
    (``172.16.0.0/12`` -> ``172.`` then 16..31). Exact for the addresses the PAN-OS parser accepts (dotted
    quads without leading signs or spaces, or IPv6, whose embedded IPv4 part never comes first); a string the
    parser would reject may match. Five times faster than parsing the address into an integer with ``split``
    and a validating regular expression (0.25 s against 1.35 s for 197k rows on 2 cores).
    """
    from pyspark.sql import functions as F

    c = F.col(col) if isinstance(col, str) else col
    net = ipaddress.ip_network(cidr)
    whole, bits = divmod(net.prefixlen, 8)
    octets = str(net.network_address).split(".")
    if whole == 4:
        return F.coalesce(c == str(net.network_address), F.lit(False))
    prefix = "".join(f"{o}." for o in octets[:whole])
    cond = c.startswith(prefix) if prefix else ~c.contains(":")
    if bits:
        low = int(octets[whole])
        octet = F.substring_index(F.substring(c, len(prefix) + 1, 4), ".", 1)
        nxt = F.when(octet.rlike("^[0-9]{1,3}$"), octet.cast("int"))  # a cast that cannot fail (ANSI mode)
        cond = cond & nxt.between(low, low + (1 << (8 - bits)) - 1)
    return F.coalesce(cond, F.lit(False))


def in_cidrs(col: str | Column, cidrs: Sequence[str]) -> Column:
    """True when the address is in one of the IPv4 networks ``cidrs`` (see :func:`in_cidr`)."""
    from pyspark.sql import functions as F

    out = F.lit(False)
    for cidr in cidrs:
        out = out | in_cidr(col, cidr)
    return out


def is_internal(col: str | Column, network: Network) -> Column:
    return in_cidrs(col, network.internal_networks)


def cidr_segment(col: str | Column, network: Network) -> Column:
    """The segment of an address by the spec's CIDR map (longest prefix wins)."""
    from pyspark.sql import functions as F

    ordered = sorted(network.segments, key=lambda s: (-ipaddress.ip_network(s.cidr).prefixlen, s.cidr))
    expr = F.when(~is_internal(col, network), F.lit("external"))
    for seg in ordered:
        expr = expr.when(in_cidr(col, seg.cidr), F.lit(seg.segment))
    return expr.otherwise(F.lit("unknown"))


def read_inventory(spark: SparkSession, root: str, feature_spec_version: str, month: str) -> DataFrame | None:
    """``inventory/feature_spec_version=<v>/reference_month=<YYYY-MM>/`` as (ip_address, segment), or None."""
    from pyspark.sql import functions as F

    path = storage.join(root, layout.INVENTORY, f"feature_spec_version={feature_spec_version}",
                        f"reference_month={month}")  # fmt: skip
    frame = layout.read_partition(spark, path)
    if frame is None:
        return None
    if "ip_address" not in frame.columns or "segment" not in frame.columns:
        return None
    return (
        frame.where(F.col("ip_address").isNotNull() & F.col("segment").isNotNull())
        .groupBy("ip_address")
        .agg(F.min("segment").alias("_inventory_segment"))
    )


def with_segment(
    frame: DataFrame, ip_col: str, out_col: str, network: Network, inventory: DataFrame | None
) -> DataFrame:
    """Add ``out_col``: the inventory's segment of ``ip_col``, else the CIDR map's."""
    from pyspark.sql import functions as F

    if inventory is None:
        return frame.withColumn(out_col, cidr_segment(ip_col, network))
    joined = frame.join(
        F.broadcast(inventory.withColumnRenamed("ip_address", "_inventory_ip")),
        F.col(ip_col) == F.col("_inventory_ip"),
        "left",
    )
    return joined.withColumn(out_col, F.coalesce(F.col("_inventory_segment"), cidr_segment(ip_col, network))).drop(
        "_inventory_ip", "_inventory_segment"
    )


def ln1p(col: str | Column) -> Column:
    """ln(1 + max(x, 0)), 0 for null."""
    from pyspark.sql import functions as F

    c = F.col(col) if isinstance(col, str) else col
    return F.log1p(F.greatest(F.coalesce(c.cast("DOUBLE"), F.lit(0.0)), F.lit(0.0)))


def ratio(num: Column, den: Column) -> Column:
    """num / den as a double, 0 when den is 0 or null."""
    from pyspark.sql import functions as F

    return F.when(F.coalesce(den, F.lit(0)) > 0, num.cast("DOUBLE") / den.cast("DOUBLE")).otherwise(F.lit(0.0))


def periodicity_scores(
    first_slice: Column,
    active: Column,
    total: Column,
    total_sq: Column,
    covered: Sequence[datetime],
    settings: Periodicity,
) -> dict[str, Column]:
    """The periodicity columns of a series from its per-slice aggregates (see :func:`pair_periodicity`).

    ``first_slice`` (its first active slice), ``active`` (active slices, an integer), ``total`` and
    ``total_sq`` (sum of the per-slice session counts, as doubles, and of their squares) -> ``active_slices``,
    ``span_slices``, ``fill``, ``cv`` and ``score`` (doubles).
    """
    from pyspark.sql import functions as F

    slice_starts = F.array(*(F.lit(s).cast("TIMESTAMP") for s in sorted(covered)))
    # covered slices from the series' first to the window end (at least its active ones)
    covered_since = F.size(F.filter(slice_starts, lambda s: s >= first_slice))
    span = F.greatest(covered_since, active).cast("DOUBLE")
    mean = total / span
    var = F.greatest(total_sq / span - mean * mean, F.lit(0.0))
    cv = F.when(mean > 0, F.sqrt(var) / mean).otherwise(F.lit(0.0))
    fill = active.cast("DOUBLE") / span
    score = F.when(active >= settings.min_active_slices, fill / (1.0 + cv)).otherwise(F.lit(0.0))
    return {"active_slices": active.cast("DOUBLE"), "span_slices": span, "fill": fill, "cv": cv, "score": score}


def pair_periodicity(
    series: DataFrame,
    covered: Sequence[datetime],
    settings: Periodicity,
) -> DataFrame:
    """Periodicity of each (host_ip, dst_ip) series over the covered 15-minute slices.

    ``series`` has host_ip, dst_ip, slice_ts (a slice start) and sessions (any number of rows per slice).
    Per series: ``active_slices`` (slices with sessions), ``span_slices`` (covered slices from the first
    active one to the window end), ``fill`` = active / span, ``cv`` = std / mean of the per-slice session
    counts over the span (zeros included), and ``score`` = fill / (1 + cv) when the series was active in at
    least ``min_active_slices`` slices, else 0. A beacon checking in every few minutes fills every slice
    with nearly the same count (score near 1); ordinary browsing comes in bursts (low fill, high CV).
    """
    from pyspark.sql import functions as F

    per_slice = series.groupBy("host_ip", "dst_ip", "slice_ts").agg(F.sum("sessions").cast("DOUBLE").alias("c"))
    per_pair = per_slice.groupBy("host_ip", "dst_ip").agg(
        F.min("slice_ts").alias("first_slice"),
        F.count(F.lit(1)).alias("active_slices"),
        F.sum("c").alias("total"),
        F.sum(F.col("c") * F.col("c")).alias("total_sq"),
    )
    scores = periodicity_scores(
        F.col("first_slice"), F.col("active_slices"), F.col("total"), F.col("total_sq"), covered, settings
    )
    return per_pair.select("host_ip", "dst_ip", *(e.alias(n) for n, e in scores.items()))
