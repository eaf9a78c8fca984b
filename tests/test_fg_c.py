"""FG-C on hand-made FG-A, pair counts and the FG-B snapshot of tests/test_fg_b.py: exact robust z-scores,
pair novelty, prevalence, periodicity to a new destination, cold-start flags, snapshot choice, re-runs."""

from __future__ import annotations

import contextlib
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.interface.feature_spec import FG_C_CATALOGUE
from ndr_jobs.processing.fg_b_builder_job import run_fg_b_builder_from_runtime_config
from ndr_jobs.processing.fg_c_builder_job import latest_snapshot, run_fg_c_builder_from_runtime_config
from ndr_jobs.runtime.config import BatchRuntime
from tests.conftest import committed, committed_rows
from tests.test_fg_b import (
    DNS,
    FG_A_ROWS,
    HOST_A,
    HOST_B,
    PAIR_ROWS,
    monthly,
    write_fg_a,
    write_pairs,
    write_spec,
)

NEW_HOST, C2, BLOCKED, TUNNEL = "10.10.0.99", "5.5.5.5", "6.6.6.6", "7.7.7.7"
NOON = datetime(2026, 10, 1, 12, tzinfo=UTC)
SLICE = timedelta(minutes=15)
PARTITION = "fg_c/feature_spec_version=t1/batch_start=20261001T1200"
#: the batch's FG-A rows (host, start, sessions, fan-out)
BATCH_FG_A = [(HOST_A, NOON, 10, 3), (HOST_B, NOON, 4, 1), (NEW_HOST, NOON, 1, 1)]
#: the batch's pair counts (src, dst, port, start, sessions, bytes sent); the blocked SMTP is a deny
BATCH_PAIRS = [
    (HOST_A, DNS, 53, NOON, 2, 100), (HOST_A, HOST_B, 445, NOON, 1, 10), (HOST_A, C2, 443, NOON, 2, 1000),
    (HOST_A, DNS, 80, NOON, 1, 7), (HOST_A, BLOCKED, 25, NOON, 1, 74),
    (HOST_B, DNS, 53, NOON, 1, 5), (NEW_HOST, DNS, 53, NOON, 1, 5), (NEW_HOST, TUNNEL, 53, NOON, 3, 90),
]  # fmt: skip
#: A's check-ins to C2 in the three slices before (the 1h periodicity window)
EARLIER_PAIRS = [(HOST_A, C2, 443, NOON - k * SLICE, 2, 1000) for k in (1, 2, 3)]


def batch() -> BatchRuntime:
    return BatchRuntime("ndr-prod", "t1", "acme-ndr-prod-t1-20261001T1200", contract.iso(NOON),
                        contract.iso(NOON + SLICE))  # fmt: skip


def write_batch(spark, store: Path) -> None:  # noqa: ANN001
    write_fg_a(spark, store, BATCH_FG_A)
    write_pairs(spark, store, BATCH_PAIRS + EARLIER_PAIRS)
    # the pair counts as written mark the deny: rewrite the batch with deny_count set for the blocked pair
    from pyspark.sql import functions as F

    from ndr_jobs.datasets import storage

    part = layout.batch_partition("t1", NOON)
    path = storage.partition_path(str(store), "pair_counts", part)
    frame = layout.read_partition(spark, path).withColumn(
        "deny_count", F.when(F.col("dst_ip") == BLOCKED, F.lit(1)).otherwise(F.col("deny_count")).cast("BIGINT")
    ).localCheckpoint()
    storage.write_partition(frame, str(store), "pair_counts", part, ["src_ip", "dst_ip", "dst_port"])


def run() -> tuple[dict, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run_fg_c_builder_from_runtime_config(batch())
    return summary, out.getvalue()


def rows(store: Path) -> dict[str, dict]:
    return {r["host_ip"]: r for r in committed_rows(store / PARTITION)}


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:  # noqa: ANN001
    base = tmp_path_factory.mktemp("fgc")
    store = base / "store"
    with pytest.MonkeyPatch.context() as mp:
        write_spec(base / "specs", mp)
        mp.setenv("NDR_STORAGE_ROOT", str(store))
        write_fg_a(spark, store, FG_A_ROWS[:-1])  # the baseline month's FG-A (not the 1 Oct row)
        write_pairs(spark, store, PAIR_ROWS)
        with contextlib.redirect_stdout(io.StringIO()):
            run_fg_b_builder_from_runtime_config(monthly())
        write_batch(spark, store)
        summary, printed = run()
    return store, summary, printed


def test_columns_and_summary(built: tuple[Path, dict, str]) -> None:
    store, summary, printed = built
    assert json.loads(printed.strip().splitlines()[-1]) == summary
    assert (summary["hosts"], summary["baseline_reference_month"], summary["baselines_missing"]) == (3, "2026-09", [])
    assert summary["periodicity_window_coverage"] == 1.0
    (data,) = storage.committed_files(str(store / PARTITION)) or []
    schema = pq.read_schema(data)
    z = ["z_host_sessions_15m", "z_host_fan_out_15m", "z_segment_sessions_15m", "z_segment_fan_out_15m"]
    flags = ["host_baseline_missing", "segment_baseline_missing", "pair_baseline_missing", "ip_baseline_missing"]
    features = [*z, *FG_C_CATALOGUE, *flags]
    assert schema.names == ["host_ip", "segment", *features, "baseline_reference_month", "batch_start_ts",
                            "batch_end_ts"]  # fmt: skip
    assert all(str(schema.field(c).type) == "double" for c in features)
    assert list(rows(store)) == [HOST_A, NEW_HOST, HOST_B]  # sorted as strings


def test_robust_z_scores_against_host_and_segment(built: tuple[Path, dict, str]) -> None:
    a, b, new = (rows(built[0])[h] for h in (HOST_A, HOST_B, NEW_HOST))
    # A's baseline: sessions 1, 2, 3, 10 (median 2.5, MAD 1); fan-out always 1 (MAD and std 0: min_scale 1)
    assert (a["z_host_sessions_15m"], a["z_host_fan_out_15m"]) == pytest.approx(((10 - 2.5) / 1.4826, 2.0))
    assert (a["z_segment_sessions_15m"], a["z_segment_fan_out_15m"]) == pytest.approx(((10 - 2.5) / 1.4826, 2.0))
    assert (a["segment"], a["host_baseline_missing"], a["segment_baseline_missing"]) == ("corp", 0.0, 0.0)
    # B: one baseline window (< min_windows 2), host and segment alike: cold start, neutral z-scores
    assert (b["z_host_sessions_15m"], b["z_segment_sessions_15m"]) == (0.0, 0.0)
    assert (b["segment"], b["host_baseline_missing"], b["segment_baseline_missing"]) == ("dc", 1.0, 1.0)
    # a new host: no host baseline; its CIDR segment has one
    assert (new["segment"], new["host_baseline_missing"], new["segment_baseline_missing"]) == ("corp", 1.0, 0.0)
    assert (new["z_host_sessions_15m"], new["z_segment_sessions_15m"]) == pytest.approx((0.0, (1 - 2.5) / 1.4826))


def test_pair_novelty_prevalence_and_periodicity(built: tuple[Path, dict, str]) -> None:
    a = rows(built[0])[HOST_A]
    assert {k: a[k] for k in FG_C_CATALOGUE} == pytest.approx({
        "pairs": 5, "novel_pairs": 3,  # C2:443, DNS:80 and the blocked SMTP
        "novel_pair_fraction": 0.6, "novel_pair_bytes_out_log": math.log1p(1000 + 7 + 74),
        "novel_dsts": 1, "novel_external_dsts": 1,  # C2 (DNS is known; the deny is no contact)
        "novel_dst_bytes_out_log": math.log1p(1000),
        "segment_novel_pairs": 3,
        "max_dst_rarity": 1.0,  # C2 never seen
        "min_dst_prevalence_log": 0.0,
        "low_prevalence_dsts": 1, "low_prevalence_bytes_out_log": math.log1p(1000),
        "rare_dst_periodic_score": 1.0, "rare_dst_active_fraction": 1.0,  # 2 check-ins in each of 4 slices
        # ... at minutes 1 and 5 of each slice: active 1, 5, 16, 20, 31, 35, 46, 50 of the hour; gaps 4, 11,
        # 4, 11, 4, 11, 4 (mean 7, variance 12); persistence (50 - 1 + 1) / (60 - 1)
        "rare_dst_beacon_score": (50 / 59) / (1 + math.sqrt(12) / 7), "rare_dst_active_minutes": 8,
        "bytes_out_vs_host_p99": 0.0,  # the small spec has no bytes_out_log feature
        # A used ports 53 and 445 in the baseline, and so did its segment: 443, 80 and 25 are new to both
        "novel_port_sessions": 4, "novel_port_fan_out": 3, "segment_novel_ports": 3, "segment_novel_port_fan_out": 3,
        "rare_dns_dst_sessions": 0,  # its DNS server has prevalence 2 (> 1)
    })  # fmt: skip
    assert (a["pair_baseline_missing"], a["ip_baseline_missing"]) == (0.0, 0.0)
    b, new = rows(built[0])[HOST_B], rows(built[0])[NEW_HOST]
    assert (b["pairs"], b["novel_pairs"], b["pair_baseline_missing"]) == (1.0, 0.0, 0.0)
    assert (b["max_dst_rarity"], b["min_dst_prevalence_log"]) == pytest.approx((1 / 3, math.log(3)))
    assert (b["low_prevalence_dsts"], b["rare_dst_periodic_score"]) == (0.0, 0.0)
    # the new host has no pair baseline: neutral novelty, flagged; its segment knows DNS:53 (port 53, not TUNNEL)
    assert (new["pair_baseline_missing"], new["novel_pairs"], new["segment_novel_pairs"]) == (1.0, 0.0, 1.0)
    assert (new["novel_port_sessions"], new["segment_novel_ports"], new["segment_novel_port_fan_out"]) == (0, 0, 0)
    assert new["rare_dns_dst_sessions"] == 3  # three queries straight to an address the baseline never saw
    assert (a["novel_port_sessions"], b["novel_port_sessions"], b["rare_dns_dst_sessions"]) == (4, 0, 0)


def test_beacon_features_from_minute_masks(spark) -> None:  # noqa: ANN001
    from ndr_jobs.interface.feature_spec import load_feature_spec
    from ndr_jobs.processing.fg_c_builder_job import beacon_features

    spec = load_feature_spec("v1")  # beacon window 1h, at least 4 active minutes
    every_3 = sum(1 << m for m in range(0, 15, 3))  # minutes 0, 3, 6, 9, 12 of each slice
    burst = sum(1 << m for m in (5, 6, 7, 8))  # minutes 20..23 of the hour, then silence
    window = [
        *((HOST_A, C2, NOON - k * SLICE, every_3) for k in (3, 2, 1, 0)),
        (HOST_B, C2, NOON - 2 * SLICE, burst),
        (NEW_HOST, C2, NOON, (1 << 2) | (1 << 7) | (1 << 12)),  # 3 active minutes: too few to score
        (NEW_HOST, DNS, NOON, every_3),  # not a rare destination
        (HOST_A, C2, NOON - 4 * SLICE, every_3),  # before the window
    ]
    window_pairs = spark.createDataFrame(
        [(h, d, 443, 5, 0, m, s) for h, d, s, m in window],
        "src_ip STRING, dst_ip STRING, dst_port INT, sessions BIGINT, deny_count BIGINT, active_minutes BIGINT, "
        "batch_start_ts TIMESTAMP",
    )
    pairs = spark.createDataFrame(
        [(HOST_A, C2, True), (HOST_B, C2, True), (NEW_HOST, C2, True), (NEW_HOST, DNS, False)],
        "host_ip STRING, dst_ip STRING, _rare_dst BOOLEAN",
    )
    got = {r["host_ip"]: (r["rare_dst_beacon_score"], r["rare_dst_active_minutes"])
           for r in beacon_features(spark, pairs, window_pairs, spec, NOON + SLICE).collect()}  # fmt: skip
    assert sorted(got) == sorted([HOST_A, HOST_B, NEW_HOST])
    assert got[HOST_A] == pytest.approx((58 / 60, 20))  # every 3 minutes, 0 to 57: constant gaps
    assert got[HOST_B] == pytest.approx((4 / 40, 4))  # 4 straight minutes, then 36 silent: 4 / (60 - 20)
    assert got[NEW_HOST] == (0.0, 3)


def test_rerun_replaces_the_partition(built: tuple[Path, dict, str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built[0], store)
    write_spec(tmp_path / "specs", monkeypatch)
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    before = committed(store / PARTITION)
    run()
    assert committed(store / PARTITION) == before  # byte for byte
    assert list(before) == ["part-00000.snappy.parquet"]


def test_cold_start_without_baselines(spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    store = tmp_path / "store"
    write_spec(tmp_path / "specs", monkeypatch)
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    with pytest.raises(FileNotFoundError, match="no fg_a partition for 20261001T1200"):
        run()
    write_batch(spark, store)
    summary, _ = run()
    assert summary["baseline_reference_month"] is None and len(summary["baselines_missing"]) == 5
    for r in rows(store).values():
        assert [r[f] for f in ("host_baseline_missing", "segment_baseline_missing", "pair_baseline_missing",
                               "ip_baseline_missing")] == [1.0] * 4  # fmt: skip
        assert all(r[k] == 0.0 for k in r if k.startswith("z_"))
        assert (r["novel_pairs"], r["max_dst_rarity"], r["rare_dst_periodic_score"]) == (0.0, 0.0, 0.0)
        assert r["baseline_reference_month"] == ""
    assert rows(store)[HOST_A]["pairs"] == 5


def test_the_latest_snapshot_ending_before_the_batch_is_used(tmp_path: Path) -> None:
    base = tmp_path / "fg_b/host/feature_spec_version=v1/baseline_horizon=7d"
    for month in ("2026-08", "2026-09", "2026-10"):
        part = [("feature_spec_version", "v1"), ("baseline_horizon", "7d"), ("reference_month", month)]
        storage.write_table(pa.table({"host_ip": ["10.0.0.1"]}), str(tmp_path / "fg_b"), "host", part)
    (base / "reference_month=2026-11" / "_runs").mkdir(parents=True)  # a run that never committed: not a snapshot
    assert latest_snapshot(str(tmp_path), "v1", "7d", datetime(2026, 10, 1, 12, tzinfo=UTC)) == "2026-09"
    assert latest_snapshot(str(tmp_path), "v1", "7d", datetime(2026, 10, 1, tzinfo=UTC)) == "2026-09"
    assert latest_snapshot(str(tmp_path), "v1", "7d", datetime(2026, 9, 30, 23, 45, tzinfo=UTC)) == "2026-08"
    assert latest_snapshot(str(tmp_path), "v1", "7d", datetime(2026, 9, 1, tzinfo=UTC)) == "2026-08"
    assert latest_snapshot(str(tmp_path), "v1", "7d", datetime(2026, 8, 31, tzinfo=UTC)) is None
    assert latest_snapshot(str(tmp_path), "v1", "30d", datetime(2026, 12, 1, tzinfo=UTC)) is None
