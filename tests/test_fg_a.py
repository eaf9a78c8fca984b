"""FG-A on hand-made delta partitions: exact feature values per window, coverage of missing partitions,
periodicity, hosts (internal sources active in the batch only), cold start and idempotent re-runs."""

from __future__ import annotations

import contextlib
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.interface.feature_spec import load_feature_spec
from ndr_jobs.processing.delta_builder_job import DELTA_COLUMNS
from ndr_jobs.processing.fg_a_builder_job import run_fg_a_builder_from_runtime_config
from ndr_jobs.runtime.config import BatchRuntime
from tests.conftest import committed, committed_rows

A, B, C, S, FILES = "10.0.0.1", "10.0.0.9", "10.0.0.7", "10.0.0.2", "10.0.0.3"
OUTSIDER, BEACON = "203.0.113.5", "9.9.9.9"
NOON = datetime(2026, 10, 1, 12, tzinfo=UTC)
SLICE = timedelta(minutes=15)
_STRINGS = ("src_ip", "dst_ip", "protocol", "app", "action", "from_zone", "to_zone")


def _sql_type(column: str) -> str:
    if column in _STRINGS:
        return "STRING"
    if column == "dst_port":
        return "INT"
    return "TIMESTAMP" if column.endswith(("_seen", "_ts")) else "BIGINT"


DELTA_SCHEMA = ", ".join(f"{c} {_sql_type(c)}" for c in DELTA_COLUMNS)


def d(src: str, dst: str, port: int, app: str, sessions: int, sent: int, received: int, deny: int = 0,
      action: str = "allow", minute: int = 1) -> dict:  # fmt: skip
    """A delta row (its slice is set by :func:`write_delta`); ``minute``: first/last seen within the slice."""
    row = dict.fromkeys(DELTA_COLUMNS, 0)
    row.update(src_ip=src, dst_ip=dst, dst_port=port, protocol="tcp", app=app, action=action, from_zone="trust",
               to_zone="untrust", sessions=sessions, log_records=sessions, bytes_sent=sent, bytes_received=received,
               deny_count=deny, first_seen=minute, last_seen=minute + 2,
               active_minutes=(1 << minute) | (1 << (minute + 2)))  # fmt: skip
    return row


def write_delta(spark, store: Path, start: datetime, rows: list[dict]) -> None:  # noqa: ANN001
    """Write one delta partition as the delta builder would."""
    full = []
    for r in rows:
        full.append({**r, "first_seen": start + timedelta(minutes=r["first_seen"]),
                     "last_seen": start + timedelta(minutes=r["last_seen"]), "batch_start_ts": start,
                     "batch_end_ts": start + SLICE})  # fmt: skip
    frame = spark.createDataFrame([tuple(r[c] for c in DELTA_COLUMNS) for r in full], DELTA_SCHEMA)
    storage.write_partition(frame, str(store), "delta", layout.batch_partition("v1", start), ["src_ip", "dst_ip"])


def batch(start: datetime = NOON) -> BatchRuntime:
    end = start + SLICE
    return BatchRuntime("ndr-prod", "v1", f"acme-ndr-prod-v1-{layout.stamp(start)}", contract.iso(start),
                        contract.iso(end))  # fmt: skip


#: the current batch (12:00): A talks to a server (two apps on one port), DNS, a denied SMTP and a beacon;
#: B to the server (reset) and DNS; an outside address hits the server (not a host)
NOW_ROWS = [
    d(A, S, 443, "ssl", 2, 300, 3000),
    d(A, S, 443, "web-browsing", 1, 10, 20),
    d(A, "8.8.8.8", 53, "dns-base", 1, 70, 150),
    d(A, "1.2.3.4", 25, "smtp", 3, 74, 0, deny=3, action="deny"),
    d(A, BEACON, 443, "ssl", 4, 400, 800),
    d(B, S, 443, "ssl", 1, 5, 6, deny=1, action="reset-both"),
    d(B, "8.8.4.4", 53, "dns-base", 1, 60, 0),
    d(OUTSIDER, S, 443, "ssl", 1, 1, 1),
]
#: 11:45 (in the 1h window): A to the file server on SMB; C (not active now) to the server and DNS
EARLIER_ROWS = [d(A, FILES, 445, "ms-ds-smb-base", 2, 1000, 500), d(C, S, 443, "ssl", 1, 1, 1),
                d(C, "8.8.8.8", 53, "dns-base", 1, 1, 1)]  # fmt: skip
#: 10:00 .. 10:45 (24h window only): A's beacon, two sessions a slice
BEACON_ROWS = [d(A, BEACON, 443, "ssl", 2, 200, 400)]


def build_store(spark, store: Path) -> None:  # noqa: ANN001
    """Delta partitions for 10:00-10:45, 11:45 and 12:00 (11:00-11:30 missing)."""
    for k in range(4):
        write_delta(spark, store, NOON - timedelta(hours=2) + k * SLICE, BEACON_ROWS)
    write_delta(spark, store, NOON - SLICE, EARLIER_ROWS)
    write_delta(spark, store, NOON, NOW_ROWS)


def run(runtime: BatchRuntime) -> tuple[dict, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run_fg_a_builder_from_runtime_config(runtime)
    return summary, out.getvalue()


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:  # noqa: ANN001
    store = tmp_path_factory.mktemp("fga") / "store"
    build_store(spark, store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NDR_STORAGE_ROOT", str(store))
        summary, printed = run(batch())
    return store, summary, printed


def read_rows(store: Path, start: datetime = NOON) -> dict[str, dict]:
    path = store / "fg_a" / f"feature_spec_version=v1/batch_start={layout.stamp(start)}"
    return {r["host_ip"]: r for r in committed_rows(path)}


def test_columns_follow_the_spec(built: tuple[Path, dict, str]) -> None:
    store = built[0]
    path = store / "fg_a/feature_spec_version=v1/batch_start=20261001T1200"
    (data,) = storage.committed_files(str(path)) or []
    schema = pq.read_schema(data)
    columns = load_feature_spec("v1").fg_a.columns()
    assert schema.names == ["host_ip", *columns, "batch_start_ts", "batch_end_ts"]
    assert all(str(schema.field(c).type) == "double" for c in columns)
    rows = committed_rows(path)
    assert [r["host_ip"] for r in rows] == [A, B]  # sorted; C idle now, the outsider is not internal
    assert all(r[c] is not None for r in rows for c in columns)


def test_summary_reports_coverage_of_missing_partitions(built: tuple[Path, dict, str]) -> None:
    _, summary, printed = built
    assert json.loads(printed.strip().splitlines()[-1]) == summary
    assert summary["hosts"] == 2 and summary["delta_partitions_read"] == 6
    assert summary["windows_coverage"] == {"15m": 1.0, "1h": 0.5, "24h": 0.0625}


def test_exact_15m_features(built: tuple[Path, dict, str]) -> None:
    a, b = read_rows(built[0])[A], read_rows(built[0])[B]
    sent, received = 300 + 10 + 70 + 74 + 400, 3000 + 20 + 150 + 800
    assert {k: v for k, v in a.items() if k.endswith("_15m")} == pytest.approx({
        "sessions_15m": 11, "fan_out_15m": 4, "distinct_dst_ports_15m": 3, "internal_fan_out_15m": 1,
        "external_fan_out_15m": 3, "admin_port_fan_out_15m": 0, "bytes_out_log_15m": math.log1p(sent),
        "bytes_in_log_15m": math.log1p(received), "out_in_ratio_15m": sent / (sent + received),
        "max_dst_bytes_out_log_15m": math.log1p(400), "external_bytes_out_log_15m": math.log1p(70 + 74 + 400),
        "deny_ratio_15m": 3 / 11,
        "rare_port_sessions_15m": 3,  # port 25: A only (443 and 53: A, B, C)
        "rare_app_sessions_15m": 4,  # smtp and web-browsing: A only
        "internal_internal_sessions_15m": 3,
        # 8.8.8.8 is queried by A and C (2 of 3 hosts with DNS): a resolver
        "dns_sessions_15m": 1, "offnet_dns_sessions_15m": 0, "offnet_dns_share_15m": 0,
        "app_port_mismatch_sessions_15m": 1,  # web-browsing on 443
        "small_flow_burst_15m": 4,  # the beacon's 4 sessions of 300 bytes (the SMTP was denied)
    })  # fmt: skip
    assert (b["sessions_15m"], b["fan_out_15m"], b["deny_ratio_15m"], b["out_in_ratio_15m"]) == (2, 2, 0.5, 65 / 71)
    assert (b["rare_port_sessions_15m"], b["internal_internal_sessions_15m"], b["external_fan_out_15m"]) == (0, 1, 1)


def test_exact_1h_and_24h_features(built: tuple[Path, dict, str]) -> None:
    a, b = read_rows(built[0])[A], read_rows(built[0])[B]
    assert (a["sessions_1h"], a["fan_out_1h"], a["distinct_dst_ports_1h"], a["internal_fan_out_1h"]) == (13, 5, 4, 2)
    assert (a["admin_port_fan_out_1h"], a["rare_port_sessions_1h"], a["internal_internal_sessions_1h"]) == (1, 5, 5)
    assert a["bytes_out_log_1h"] == pytest.approx(math.log1p(854 + 1000))
    assert a["max_dst_bytes_out_log_1h"] == pytest.approx(math.log1p(1000))
    assert (a["sessions_24h"], a["fan_out_24h"], a["external_fan_out_24h"]) == (21, 5, 3)
    assert a["bytes_out_log_24h"] == pytest.approx(math.log1p(854 + 1000 + 4 * 200))
    assert (b["sessions_1h"], b["sessions_24h"]) == (2, 2)


def test_periodicity_of_the_beacon(built: tuple[Path, dict, str]) -> None:
    a, b = read_rows(built[0])[A], read_rows(built[0])[B]
    # the beacon's series over the 6 covered slices from its first (10:00): 2, 2, 2, 2, 0 (11:45), 4 (12:00)
    mean, fill = 12 / 6, 5 / 6
    cv = math.sqrt((4 * 4 + 16) / 6 - mean**2) / mean
    assert a["periodic_top_fill_24h"] == pytest.approx(fill)
    assert a["periodic_top_cv_24h"] == pytest.approx(cv)
    assert a["periodic_max_score_24h"] == pytest.approx(fill / (1 + cv))
    assert a["periodic_pairs_24h"] == 0  # 0.528 < the 0.6 threshold
    assert (b["periodic_max_score_24h"], b["periodic_top_fill_24h"]) == (0, 0)  # no series with 4 active slices


def test_rerun_replaces_the_partition(built: tuple[Path, dict, str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, spark) -> None:  # noqa: ANN001  # fmt: skip
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built[0], store)
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    before = read_rows(store)
    run(batch())
    assert read_rows(store) == before
    # the batch's delta is re-delivered with B only: the partition shrinks to B
    write_delta(spark, store, NOON, [r for r in NOW_ROWS if r["src_ip"] == B])
    summary, _ = run(batch())
    assert summary["hosts"] == 1 and list(read_rows(store)) == [B]
    part = store / "fg_a/feature_spec_version=v1/batch_start=20261001T1200"
    assert list(committed(part)) == ["part-00000.snappy.parquet"]


def test_cold_start_without_any_delta_writes_an_empty_partition(spark, tmp_path: Path,  # noqa: ANN001
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(tmp_path))
    summary, _ = run(batch())
    assert summary["hosts"] == 0 and summary["windows_coverage"] == {"15m": 0.0, "1h": 0.0, "24h": 0.0}
    table = layout.partition_table(str(tmp_path / "fg_a/feature_spec_version=v1/batch_start=20261001T1200"))
    assert table is not None and table.num_rows == 0 and table.column_names[0] == "host_ip"


def test_a_batch_that_is_not_15_minutes_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The runtime itself refuses it (ndr_jobs.interface.contract), before any job can run on it."""
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="not 15 minutes"):
        run_fg_a_builder_from_runtime_config(
            BatchRuntime("ndr-prod", "v1", "m", "2026-10-01T12:00:00Z", "2026-10-01T12:30:00Z"))
    with pytest.raises(ValueError, match="15-minute boundary"):
        run_fg_a_builder_from_runtime_config(
            BatchRuntime("ndr-prod", "v1", "m", "2026-10-01T12:05:00Z", "2026-10-01T12:20:00Z"))


def test_in_cidr_agrees_with_ipaddress(spark) -> None:  # noqa: ANN001
    """The string tests of ``in_cidr`` against Python's ``ipaddress`` on edge addresses of each network."""
    import ipaddress

    from ndr_jobs.features.common import in_cidr

    cidrs = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "10.1.2.0/23", "10.1.2.128/25",
             "203.0.113.7/32", "0.0.0.0/0", "128.0.0.0/1"]  # fmt: skip
    addresses = ["10.0.0.1", "100.0.0.1", "1.10.0.0", "172.15.255.255", "172.16.0.0", "172.31.255.255", "172.32.0.0",
                 "172.160.0.1", "192.168.1.1", "192.169.0.1", "100.63.1.1", "100.64.0.0", "100.127.9.9", "100.128.0.0",
                 "10.1.1.255", "10.1.2.0", "10.1.3.255", "10.1.4.0", "10.1.2.127", "10.1.2.200", "203.0.113.7",
                 "203.0.113.70", "127.0.0.1", "255.255.255.255", "fe80::1", "::ffff:10.0.0.1",
                 "2001:db8::10"]  # fmt: skip
    frame = spark.createDataFrame([(a,) for a in addresses], "ip STRING")
    got = frame.select("ip", *(in_cidr("ip", c).alias(f"c{i}") for i, c in enumerate(cidrs))).collect()
    for row in got:
        address = ipaddress.ip_address(row["ip"])
        for i, cidr in enumerate(cidrs):
            network = ipaddress.ip_network(cidr)
            expected = address.version == 4 and address in network
            assert row[f"c{i}"] is expected, (row["ip"], cidr)


# -- protocol- and service-aware features ------------------------------------------------------------------

P1, P2, P3, P4 = "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"
RESOLVER, TUNNEL, WEB, HTTP_C2, NTP = "10.0.0.53", "198.51.100.9", "93.184.216.34", "203.0.113.80", "192.0.2.1"
#: 12:00: P1 tunnels DNS straight out (40 small queries) besides its resolver and talks HTTP on 443; P2 runs
#: TLS on 8080 and small NTP; P3's small SMTP is denied; P4 only ever queries 9.9.9.9, alone
PROTOCOL_NOW = [
    d(P1, RESOLVER, 53, "dns-base", 10, 700, 1500), d(P1, TUNNEL, 53, "dns-base", 40, 6400, 8800),
    d(P1, WEB, 443, "ssl", 3, 3000, 30000), d(P1, HTTP_C2, 443, "web-browsing", 2, 1300, 3800),
    d(P2, RESOLVER, 53, "dns-base", 4, 280, 600), d(P2, NTP, 123, "ntp-base", 5, 450, 450),
    d(P2, "10.0.0.2", 8080, "ssl", 1, 1000, 1000),
    d(P3, RESOLVER, 53, "dns-base", 2, 140, 300), d(P3, "203.0.113.99", 25, "smtp", 3, 222, 0, deny=3, action="deny"),
    d(P4, "9.9.9.9", 53, "dns-base", 2, 100, 100),
]  # fmt: skip
#: 11:45: more of P1's tunnel
PROTOCOL_EARLIER = [d(P1, TUNNEL, 53, "dns-base", 20, 3000, 4000)]


@pytest.fixture(scope="module")
def protocol_rows(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:  # noqa: ANN001
    store = tmp_path_factory.mktemp("fga-protocol") / "store"
    write_delta(spark, store, NOON - SLICE, PROTOCOL_EARLIER)
    write_delta(spark, store, NOON, PROTOCOL_NOW)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NDR_STORAGE_ROOT", str(store))
        run(batch())
    return read_rows(store)


PROTOCOL_FEATURES = ("dns_sessions", "offnet_dns_sessions", "offnet_dns_share", "app_port_mismatch_sessions",
                     "small_flow_burst")  # fmt: skip


def test_protocol_features_on_a_hand_made_batch(protocol_rows: dict[str, dict]) -> None:
    def values(host: str, window: str) -> tuple[float, ...]:
        return tuple(protocol_rows[host][f"{f}_{window}"] for f in PROTOCOL_FEATURES)

    # the resolver: 3 of the 4 hosts with DNS query it (limit min(max(3, 5 % of 4), max(2, 4 / 2)) = 2);
    # the tunnel and 9.9.9.9 have one host each
    assert values(P1, "15m") == pytest.approx((50, 40, 0.8, 2, 40))
    assert values(P1, "1h") == pytest.approx((70, 60, 60 / 70, 2, 60))
    assert values(P2, "15m") == pytest.approx((4, 0, 0, 1, 5))  # TLS on 8080; NTP's 5 small flows
    assert values(P3, "15m") == pytest.approx((2, 0, 0, 0, 0))  # denied flows are no burst
    assert values(P4, "15m") == pytest.approx((2, 2, 1.0, 0, 2))


def test_declared_resolvers_and_the_sql_helpers() -> None:
    from ndr_jobs.interface.feature_spec import Network, Protocol
    from ndr_jobs.processing.fg_a_builder_job import app_port_mismatch, is_dns

    spec = load_feature_spec("v1")
    assert "dst_port IN (53)" in is_dns(spec) and "'dns-base'" in is_dns(spec)
    mismatch = app_port_mismatch(spec)
    assert "WHEN 'ssl' THEN NOT dst_port IN (443," in mismatch and "'msrpc-base'" not in mismatch
    assert app_port_mismatch(spec.model_copy(update={"fg_a": spec.fg_a.model_copy(
        update={"protocol": Protocol()})})) == "false"  # fmt: skip
    assert Network(dns_resolvers=["10.0.0.53"]).dns_resolvers == ["10.0.0.53"]
    for bad in ("10.0.0.053", "resolver'; DROP", "::1"):
        with pytest.raises(ValueError, match="dns_resolvers|IP address"):
            Network(dns_resolvers=[bad])
    with pytest.raises(ValueError, match="pattern"):
        Protocol(app_ports={"ssl' OR true --": [443]})
    with pytest.raises(ValueError, match="list no port"):
        Protocol(app_ports={"ssl": []})
