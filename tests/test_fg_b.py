"""FG-B on hand-made FG-A and pair-count partitions under a small feature spec: exact statistics per host,
segment, pair and address, the horizon boundaries, inventory segments, cold start and idempotent re-runs."""

from __future__ import annotations

import contextlib
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.processing.fg_b_builder_job import horizon_end, run_fg_b_builder_from_runtime_config
from ndr_jobs.processing.pair_counts_builder_job import PAIR_COUNTS_COLUMNS
from ndr_jobs.runtime.config import MonthlyRuntime
from tests.conftest import committed_rows

#: a small spec: two FG-A features over 15m only, horizons of one and two days, periodicity over 1h
MINI_SPEC = """\
apiVersion: ndr/v1
kind: FeatureSpec
metadata: {name: t1, description: test spec}
spec:
  network:
    segments:
      - {cidr: 10.10.0.0/16, segment: corp}
      - {cidr: 10.20.0.0/16, segment: dc}
    admin_ports: [445]
  fg_a:
    windows: [15m, 1h]
    features:
      - {name: sessions, windows: [15m]}
      - {name: fan_out, windows: [15m]}
  fg_b: {horizons: [1d, 2d], windows: [15m], min_windows: 2}
  fg_c:
    baseline_horizon: 1d
    zscore: {windows: [15m], min_scale: 1.0, clip: 20.0}
    novelty: {low_prevalence_max_hosts: 1, periodicity_window: 1h}
"""
HOST_A, HOST_B, DNS, OUTSIDER = "10.10.0.5", "10.20.0.5", "8.8.8.8", "198.51.100.7"
DAY = datetime(2026, 9, 30, tzinfo=UTC)
SLICE = timedelta(minutes=15)
FG_A_SCHEMA = (
    "host_ip STRING, sessions_15m DOUBLE, fan_out_15m DOUBLE, batch_start_ts TIMESTAMP, batch_end_ts TIMESTAMP"
)
PAIR_SCHEMA = ("src_ip STRING, dst_ip STRING, dst_port INT, sessions BIGINT, bytes_sent BIGINT, bytes_received BIGINT, "
               "deny_count BIGINT, first_seen TIMESTAMP, last_seen TIMESTAMP, active_minutes BIGINT, "
               "batch_start_ts TIMESTAMP, batch_end_ts TIMESTAMP")  # fmt: skip

#: FG-A rows (host, slice start, sessions, fan-out): A four times on 30 Sep, once on 29 Sep, once after the month
FG_A_ROWS = [
    (HOST_A, DAY + timedelta(hours=10), 1, 1), (HOST_A, DAY + timedelta(hours=10, minutes=15), 2, 1),
    (HOST_A, DAY + timedelta(hours=10, minutes=30), 3, 1), (HOST_A, DAY + timedelta(hours=10, minutes=45), 10, 1),
    (HOST_B, DAY + timedelta(hours=11), 4, 2),
    (HOST_A, DAY - timedelta(hours=12), 100, 1),  # in the 2d horizon only
    (HOST_A, DAY + timedelta(days=1), 1000, 9),  # 1 Oct: after the horizon
]  # fmt: skip
#: pair counts (src, dst, port, slice start, sessions, bytes sent)
PAIR_ROWS = [
    (HOST_A, DNS, 53, DAY + timedelta(hours=10), 2, 100),
    (HOST_A, DNS, 53, DAY + timedelta(hours=10, minutes=15), 4, 300),
    (HOST_B, DNS, 53, DAY + timedelta(hours=11), 1, 50), (HOST_A, HOST_B, 445, DAY + timedelta(hours=10), 1, 5000),
    (OUTSIDER, HOST_B, 443, DAY + timedelta(hours=10), 1, 60),
]  # fmt: skip


def write_spec(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "t1.yaml").write_text(MINI_SPEC)
    monkeypatch.setenv("NDR_FEATURE_SPEC_DIR", str(directory))


def write_fg_a(spark, store: Path, rows: list[tuple]) -> None:  # noqa: ANN001
    """FG-A partitions of the mini spec, one per slice."""
    by_slice: dict[datetime, list[tuple]] = {}
    for host, start, sessions, fan_out in rows:
        by_slice.setdefault(start, []).append((host, float(sessions), float(fan_out), start, start + SLICE))
    for start, items in by_slice.items():
        frame = spark.createDataFrame(items, FG_A_SCHEMA)
        storage.write_partition(frame, str(store), "fg_a", layout.batch_partition("t1", start), ["host_ip"])


def write_pairs(spark, store: Path, rows: list[tuple]) -> None:  # noqa: ANN001
    by_slice: dict[datetime, list[tuple]] = {}
    for src, dst, port, start, sessions, sent in rows:
        item = (src, dst, port, sessions, sent, 0, 0, start + timedelta(minutes=1), start + timedelta(minutes=5),
                (1 << 1) | (1 << 5), start, start + SLICE)  # fmt: skip
        by_slice.setdefault(start, []).append(item)
    for start, items in by_slice.items():
        frame = spark.createDataFrame(items, PAIR_SCHEMA).select(*PAIR_COUNTS_COLUMNS)
        storage.write_partition(frame, str(store), "pair_counts", layout.batch_partition("t1", start), ["src_ip"])


def monthly(month: str = "2026-09", mode: str = "regular") -> MonthlyRuntime:
    return MonthlyRuntime("ndr-prod", "t1", month, mode)


def run(runtime: MonthlyRuntime) -> tuple[dict, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run_fg_b_builder_from_runtime_config(runtime)
    return summary, out.getvalue()


def snapshot(store: Path, table: str, horizon: str, month: str = "2026-09") -> list[dict]:
    path = store / "fg_b" / table / f"feature_spec_version=t1/baseline_horizon={horizon}/reference_month={month}"
    return committed_rows(path)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:  # noqa: ANN001
    base = tmp_path_factory.mktemp("fgb")
    with pytest.MonkeyPatch.context() as mp:
        write_spec(base / "specs", mp)
        mp.setenv("NDR_STORAGE_ROOT", str(base / "store"))
        write_fg_a(spark, base / "store", FG_A_ROWS)
        write_pairs(spark, base / "store", PAIR_ROWS)
        summary, printed = run(monthly())
    return base / "store", summary, printed


def test_horizon_ends_at_the_first_instant_of_the_next_month() -> None:
    assert horizon_end("2026-09") == datetime(2026, 10, 1, tzinfo=UTC)
    assert horizon_end("2026-12") == datetime(2027, 1, 1, tzinfo=UTC)


def test_summary(built: tuple[Path, dict, str]) -> None:
    store, summary, printed = built
    assert json.loads(printed.strip().splitlines()[-1]) == summary
    assert summary["rows"] == {
        "1d": {"host": 2, "segment": 2, "pair/host": 3, "pair/segment": 3, "ip_metadata": 4},
        "2d": {"host": 2, "segment": 2, "pair/host": 3, "pair/segment": 3, "ip_metadata": 4},
    }
    assert summary["horizon_coverage"]["1d"] == pytest.approx({"fg_a": 5 / 96, "pair_counts": 3 / 96}, abs=1e-6)
    assert (summary["horizon_end"], summary["segment_source"]) == ("2026-10-01T00:00:00Z", "cidr_map")
    assert summary["outputs"]["1d"]["pair/host"] == str(
        store / "fg_b/pair/host/feature_spec_version=t1/baseline_horizon=1d/reference_month=2026-09"
    )


def test_host_baseline_exact_statistics(built: tuple[Path, dict, str]) -> None:
    rows = {r["host_ip"]: r for r in snapshot(built[0], "host", "1d")}
    a = rows[HOST_A]
    assert (a["segment"], a["n_windows"], a["first_seen"], a["last_seen"]) == (
        "corp", 4, DAY + timedelta(hours=10), DAY + timedelta(hours=10, minutes=45))
    assert {k: a[k] for k in a if k.startswith("sessions_15m_")} == pytest.approx({
        "sessions_15m_mean": 4.0, "sessions_15m_std": math.sqrt(50 / 3), "sessions_15m_median": 2.5,
        "sessions_15m_p90": 7.9, "sessions_15m_p99": 9.79, "sessions_15m_mad": 1.0})  # fmt: skip
    assert (a["fan_out_15m_std"], a["fan_out_15m_mad"], a["fan_out_15m_median"]) == (0.0, 0.0, 1.0)
    b = rows[HOST_B]
    assert (b["segment"], b["n_windows"], b["sessions_15m_std"], b["sessions_15m_median"]) == ("dc", 1, 0.0, 4.0)
    assert a["horizon_start"] == DAY and a["horizon_end"] == DAY + timedelta(days=1)
    wide = {r["host_ip"]: r for r in snapshot(built[0], "host", "2d")}[HOST_A]
    assert (wide["n_windows"], wide["sessions_15m_median"], wide["first_seen"]) == (5, 3.0, DAY - timedelta(hours=12))


def test_segment_baseline(built: tuple[Path, dict, str]) -> None:
    rows = {r["segment"]: r for r in snapshot(built[0], "segment", "1d")}
    assert (rows["corp"]["n_hosts"], rows["corp"]["n_windows"], rows["corp"]["sessions_15m_median"]) == (1, 4, 2.5)
    assert (rows["dc"]["n_hosts"], rows["dc"]["fan_out_15m_mean"]) == (1, 2.0)


def test_pair_baselines(built: tuple[Path, dict, str]) -> None:
    pairs = {(r["src_ip"], r["dst_ip"], r["dst_port"]): r for r in snapshot(built[0], "pair/host", "1d")}
    assert set(pairs) == {(HOST_A, DNS, 53), (HOST_A, HOST_B, 445), (HOST_B, DNS, 53)}  # no external source
    dns = pairs[(HOST_A, DNS, 53)]
    assert (dns["windows_active"], dns["sessions_sum"], dns["sessions_max"], dns["bytes_sent_sum"]) == (2, 6, 4, 400)
    assert (dns["sessions_mean"], dns["sessions_std"]) == pytest.approx((3.0, math.sqrt(2)))
    assert dns["bytes_sent_mean"] == 200
    assert dns["first_seen"] == DAY + timedelta(hours=10, minutes=1)
    assert dns["last_seen"] == DAY + timedelta(hours=10, minutes=20)
    segments = {(r["src_segment"], r["dst_ip"], r["dst_port"]): r for r in snapshot(built[0], "pair/segment", "1d")}
    assert set(segments) == {("corp", DNS, 53), ("corp", HOST_B, 445), ("dc", DNS, 53)}
    assert (segments[("corp", HOST_B, 445)]["dst_segment"], segments[("corp", DNS, 53)]["dst_segment"]) == ("dc",
                                                                                                          "external")
    assert (segments[("corp", DNS, 53)]["src_hosts"], segments[("corp", DNS, 53)]["windows_active"]) == (1, 2)


def test_ip_metadata(built: tuple[Path, dict, str]) -> None:
    ips = {r["ip"]: r for r in snapshot(built[0], "ip_metadata", "1d")}
    assert {ip: (r["prevalence"], r["direction"], r["is_internal"], r["segment"]) for ip, r in ips.items()} == {
        DNS: (2, "dst_only", False, "external"),
        HOST_B: (1, "both", True, "dc"),  # A opened a session to it; the outside address does not count
        HOST_A: (0, "src_only", True, "corp"),
        OUTSIDER: (0, "src_only", False, "external"),
    }
    assert (ips[DNS]["sessions_as_dst"], ips[HOST_B]["sessions_as_src"], ips[HOST_B]["sessions_as_dst"]) == (7, 1, 2)


def test_inventory_segments_win_and_reruns_replace(built: tuple[Path, dict, str], spark, tmp_path: Path,  # noqa: ANN001
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built[0], store)
    write_spec(tmp_path / "specs", monkeypatch)
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    before = {t: snapshot(store, t, "1d") for t in ("host", "pair/host", "ip_metadata")}
    summary, _ = run(monthly(mode="backfill"))
    assert summary["baseline_mode"] == "backfill"
    assert {t: snapshot(store, t, "1d") for t in before} == before
    inventory = spark.createDataFrame(
        [(HOST_A, "ws-a", "vip", "corp", "windows", "workstation", "high")],
        "ip_address STRING, hostname STRING, segment STRING, zone STRING, os STRING, role STRING, criticality STRING",
    )
    month = [("feature_spec_version", "t1"), ("reference_month", "2026-09")]
    storage.write_partition(inventory, str(store), "inventory", month, ["ip_address"])
    summary, _ = run(monthly())
    assert summary["segment_source"] == "inventory"
    assert {r["host_ip"]: r["segment"] for r in snapshot(store, "host", "1d")} == {HOST_A: "vip", HOST_B: "dc"}
    assert sorted(r["segment"] for r in snapshot(store, "segment", "1d")) == ["dc", "vip"]


def test_cold_start_writes_empty_snapshots(spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    write_spec(tmp_path / "specs", monkeypatch)
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(tmp_path / "store"))
    summary, _ = run(monthly("2026-08"))
    assert summary["rows"]["1d"] == dict.fromkeys(("host", "segment", "pair/host", "pair/segment", "ip_metadata"), 0)
    assert snapshot(tmp_path / "store", "host", "2d", "2026-08") == []
    with pytest.raises(ValueError, match="baseline mode"):
        run_fg_b_builder_from_runtime_config(monthly(mode="sometimes"))
