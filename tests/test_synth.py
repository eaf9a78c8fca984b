"""The synthetic PAN-OS generator: determinism, the raw batch layout, labels and the injected attacks."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import numpy as np
import pyarrow as pa
import pytest

from ndr_jobs.devtools.synth import ATTACK_CLASSES, SynthConfig, generate
from ndr_jobs.devtools.synth import cli as synth_cli
from ndr_jobs.devtools.synth.generator import FIELD_COUNT, background, build_network
from ndr_jobs.parsing import panos
from ndr_jobs.parsing.panos import QuarantineRecord, TrafficRecord

START = datetime(2026, 10, 1, 8, tzinfo=UTC)  # a Thursday: office hours ramp up
CONFIG = SynthConfig(start=START, hours=2, hosts=50, seed=7, attacks=ATTACK_CLASSES, gzip=True)
PREFIX = "pan-traffic/acme/ndr-prod/v1"


def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode().splitlines()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict], list[TrafficRecord]]:
    out = tmp_path_factory.mktemp("synth")
    result = generate(CONFIG, str(out)).as_dict()
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    lines = [line for f in sorted((out / PREFIX).rglob("*.log.gz")) for line in read_lines(f)]
    records = panos.to_records(panos.parse_arrow(pa.array(lines)))
    assert all(isinstance(r, TrafficRecord) for r in records)  # no noise asked: every line parses
    return out, result, labels, records  # type: ignore[return-value]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_traffic(generated, tmp_path: Path) -> None:  # noqa: ANN001
    out, *_ = generated
    generate(CONFIG, str(tmp_path / "again"))
    assert tree(tmp_path / "again") == tree(out)
    generate(SynthConfig(**{**CONFIG.__dict__, "seed": 8}), str(tmp_path / "other"))
    other = tree(tmp_path / "other")
    assert other.keys() == tree(out).keys() and other != tree(out)


def test_one_folder_per_15_minutes_in_the_contract_layout(generated) -> None:  # noqa: ANN001
    out, result, _, _ = generated
    folders = sorted(p for p in (out / PREFIX).rglob("*") if p.is_dir() and len(p.relative_to(out / PREFIX).parts) == 4)
    stamps = [(START + timedelta(minutes=15 * i)) for i in range(8)]
    assert [str(f.relative_to(out / PREFIX)) for f in folders] == [f"{s:%Y/%m/%d/%H%M}" for s in stamps]
    for folder, stamp in zip(folders, stamps, strict=True):
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"traffic-{stamp:%Y%m%dT%H%M}-{i:02d}.log.gz" for i in range(CONFIG.files_per_batch)]
        events = [r.event_time for f in names for r in panos.parse_lines(read_lines(folder / f))]
        assert events == sorted(events) and stamp <= events[0] and events[-1] < stamp + timedelta(minutes=15)
    assert (result["batches"], result["files"]) == (8, 24)
    assert result["rows"] == sum(len(read_lines(f)) for f in (out / PREFIX).rglob("*.gz"))


def test_lines_look_like_panos_11(generated) -> None:  # noqa: ANN001
    out, _, _, records = generated
    first = read_lines(sorted((out / PREFIX).rglob("*.gz"))[0])
    with_header = [line for line in first if line.startswith("<14>")]
    assert with_header and len(with_header) < len(first)  # fw01 sends a syslog header, fw02 does not
    assert {len(next(csv.reader([panos.strip_header(line)]))) for line in first} == {FIELD_COUNT}
    quoted = [line for line in first if '"' in line]  # app characteristics with commas are quoted
    assert len(quoted) > len(first) / 2 and all(line.count('"') == 2 for line in quoted)
    zones = {(r.from_zone, r.to_zone) for r in records}
    assert {("trust", "untrust"), ("trust", "servers"), ("servers", "servers"), ("untrust", "untrust")} <= zones
    assert {r.device_name for r in records} == {"fw01", "fw02"}
    denies = [r for r in records if r.action != "allow"]
    assert denies and all(r.session_end_reason in ("policy-deny", "tcp-rst-from-server") or r.action == "allow"
                          for r in denies)  # fmt: skip
    assert {r.app for r in records} >= {"dns-base", "ssl", "ms-office365-base", "ldap", "kerberos", "mssql-db"}


def test_workstations_follow_office_hours_and_have_favourite_servers() -> None:
    net = build_network(50, seed=7)
    night = len(background(net, 7, int(datetime(2026, 10, 1, 3, tzinfo=UTC).timestamp() * 1000))["t"])
    noon = len(background(net, 7, int(datetime(2026, 10, 1, 13, tzinfo=UTC).timestamp() * 1000))["t"])
    saturday = len(background(net, 7, int(datetime(2026, 10, 3, 13, tzinfo=UTC).timestamp() * 1000))["t"])
    assert noon > 3 * night and noon > 2 * saturday
    cols = background(net, 7, int(datetime(2026, 10, 1, 13, tzinfo=UTC).timestamp() * 1000))
    services = np.concatenate(list(net.fixed.values()))  # Office 365, NTP, git, updates, internal servers
    browsing = (cols["action"] == 0) & np.isin(cols["dst"], net.internet) & ~np.isin(cols["dst"], services)
    for i, host in enumerate(net.host_ids[:5].tolist()):
        visited = set(cols["dst"][browsing & (cols["src"] == host)].tolist())
        assert visited and visited <= set(net.favourites[i].tolist())


def test_labels_describe_the_injected_sessions_exactly(generated) -> None:  # noqa: ANN001
    _, result, labels, records = generated
    assert {label["attack"] for label in labels} == set(ATTACK_CLASSES)
    assert [label["start"] for label in labels] == sorted(label["start"] for label in labels)
    assert set(labels[0]) == {"attack_id", "attack", "src_ip", "dst_ip", "dst_ports", "start", "end", "sessions",
                              "bytes_sent"}  # fmt: skip
    by_pair = defaultdict(list)
    for r in records:
        by_pair[(r.src_ip, r.dst_ip)].append(r)
    for label in labels:
        start, end = (datetime.fromisoformat(label[k].replace("Z", "+00:00")) for k in ("start", "end"))
        sessions = [r for r in by_pair[(label["src_ip"], label["dst_ip"])] if start <= r.event_time <= end]
        assert len(sessions) >= label["sessions"]  # (background may share the pair, never the attack's ports)
        attack = [r for r in sessions if r.dst_port in label["dst_ports"]]
        assert min(r.event_time for r in attack) == start and max(r.event_time for r in attack) == end
    per_class = Counter()
    for label in labels:
        per_class[label["attack"]] += label["sessions"]
    assert dict(per_class) == result["attack_rows"]


def attack(labels: list[dict], name: str) -> list[dict]:
    return [label for label in labels if label["attack"] == name]


def sessions_of(records: list[TrafficRecord], label: dict) -> list[TrafficRecord]:
    return sorted((r for r in records if (r.src_ip, r.dst_ip) == (label["src_ip"], label["dst_ip"])
                   and r.dst_port in label["dst_ports"]), key=lambda r: r.event_time)  # fmt: skip


def test_each_attack_has_its_signature(generated) -> None:  # noqa: ANN001
    _, _, labels, records = generated
    (scan,) = attack(labels, "portscan")
    probes = sessions_of(records, scan)
    assert len({r.dst_port for r in probes}) >= 600 and probes[-1].event_time - probes[0].event_time <= timedelta(
        minutes=5
    )
    assert sum(r.action == "deny" for r in probes) > len(probes) / 2

    (beacon,) = attack(labels, "beacon")
    gaps = np.diff([r.event_time.timestamp() for r in sessions_of(records, beacon)])
    period = min((60, 120, 300, 600), key=lambda p: abs(median(gaps) - p))
    assert np.all(np.abs(gaps / period - 1) <= 0.21) and gaps.std() > 0  # periodic, with jitter

    (fast,) = attack(labels, "exfil_fast")
    uploads = sessions_of(records, fast)
    assert sum(r.bytes_sent for r in uploads) > 1e9 and uploads[-1].event_time - uploads[0].event_time <= timedelta(
        minutes=25
    )
    assert all(r.bytes_sent > 20 * r.bytes_received for r in uploads)

    (slow,) = attack(labels, "exfil_slow")
    gaps = np.diff([r.event_time.timestamp() for r in sessions_of(records, slow)])
    assert len(gaps) >= 2 and gaps.min() >= 16 * 60 and gaps.max() <= 48 * 60

    lateral = attack(labels, "lateral")
    assert 8 <= len(lateral) <= 20 and len({label["src_ip"] for label in lateral}) == 1
    assert all(label["dst_ip"].startswith("10.") and set(label["dst_ports"]) <= {445, 135, 3389} for label in lateral)
    sources = {label["src_ip"] for label in labels}
    assert len(sources) == len(ATTACK_CLASSES)  # one compromised host per attack


def test_noise_lines_are_quarantined_by_kind(tmp_path: Path) -> None:
    config = SynthConfig(start=datetime(2026, 10, 1, 12, tzinfo=UTC), hours=0.5, hosts=30, seed=1, noise_rate=0.02)
    result = generate(config, str(tmp_path))
    lines = [line for f in sorted(tmp_path.rglob("*.log")) for line in f.read_text().splitlines()]
    reasons = Counter(r.reason for r in panos.parse_lines(lines) if isinstance(r, QuarantineRecord))
    assert dict(reasons) == {k: v for k, v in result.noise_rows.items() if v} and sum(reasons.values()) > 20


def test_cli_writes_batches_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--start", "2026-10-01T00:00:00Z", "--hours", "0.5", "--hosts", "10",
            "--seed", "7", "--attacks", "beacon,portscan", "--files-per-batch", "2"]  # fmt: skip
    assert synth_cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["batches"], summary["files"], sorted(summary["attack_rows"])) == (2, 4, ["beacon", "portscan"])
    assert len(list((tmp_path / PREFIX).rglob("*.log"))) == 4 and (tmp_path / "labels.jsonl").exists()
    with pytest.raises(SystemExit) as exc:
        synth_cli.main([*args[:-4], "--attacks", "ddos"])
    assert exc.value.code == 2


def test_new_attacks_have_their_signatures(generated) -> None:  # noqa: ANN001
    _, _, labels, records = generated
    resolvers = {"10.20.0.11"}
    (tunnel,) = attack(labels, "dns_tunnel")
    queries = sessions_of(records, tunnel)
    assert not tunnel["dst_ip"].startswith("10.") and tunnel["dst_ip"] not in resolvers
    assert tunnel["dst_ports"] == [53] and len(queries) >= 60
    assert all(r.protocol == "udp" and r.app == "dns-base" and r.bytes_sent + r.bytes_received < 1000
               for r in queries)  # fmt: skip
    attackers = {label["src_ip"] for label in labels}
    background_dns = {r.dst_ip for r in records if r.dst_port == 53 and r.src_ip not in attackers}
    assert background_dns == resolvers  # the estate's hosts use its resolver; the tunnel goes around it

    slow = attack(labels, "portscan_slow")
    probes = sorted((r for label in slow for r in sessions_of(records, label)), key=lambda r: r.event_time)
    gaps = np.diff([r.event_time.timestamp() for r in probes])
    assert len({label["src_ip"] for label in slow}) == 1 and all(label["dst_ip"].startswith("10.") for label in slow)
    assert len({r.dst_port for r in probes}) >= 40 and np.median(gaps) >= 20  # (background shares ports 443, 445)
    assert probes[-1].event_time - probes[0].event_time >= timedelta(hours=1)
    fast_scan = sessions_of(records, attack(labels, "portscan")[0])
    assert len(probes) / (probes[-1].event_time - probes[0].event_time).total_seconds() < 0.1 * len(fast_scan) / (
        (fast_scan[-1].event_time - fast_scan[0].event_time).total_seconds()
    )  # an order of magnitude slower than the fast scan

    moves = attack(labels, "lateral_slow")
    assert 1 <= len(moves) <= 6 and len({label["src_ip"] for label in moves}) == 1
    ports = {p for label in moves for p in label["dst_ports"]}
    dynamic = {p for p in ports if p >= 49152}
    assert {445, 135} <= ports and dynamic and ports <= {445, 135, 3389} | dynamic
    firsts = sorted(datetime.fromisoformat(label["start"].replace("Z", "+00:00")) for label in moves)
    assert all(b - a >= timedelta(minutes=15) for a, b in zip(firsts, firsts[1:], strict=False))

    (slow_beacon,) = attack(labels, "beacon_slow")
    checkins = sessions_of(records, slow_beacon)
    gaps = np.diff([r.event_time.timestamp() for r in checkins])
    period = min((900, 1800, 3600), key=lambda p: abs(np.median(gaps) - p)) if len(gaps) else 0
    assert len(checkins) >= 2 and all(0.5 * period <= g <= 1.5 * period for g in gaps)
    assert {r.app for r in checkins} <= {"ssl", "web-browsing"} and {r.dst_port for r in checkins} == {443}


SEGMENTED = SynthConfig(start=datetime(2026, 10, 1, 4, tzinfo=UTC), hours=1, hosts=60, seed=5, estate="segmented",
                        attacks=("dns_tunnel",))  # fmt: skip


def test_segmented_estate_has_sites_resolvers_and_time_zones(tmp_path: Path) -> None:
    net = build_network(60, 5, "segmented")
    hosts = [net.ips[h] for h in net.host_ids.tolist()]
    assert {".".join(ip.split(".")[:2]) for ip in hosts} == {"10.10", "10.11", "10.12", "10.30", "10.20"}
    roles = Counter(net.host_role.tolist())
    assert roles[2] == 12 and roles[1] == 6  # 20 % servers, 10 % developers
    # 04:00 UTC is noon at the +8 h site: its workstations are busy while the others sleep
    at_four = background(net, 5, int(datetime(2026, 10, 1, 4, tzinfo=UTC).timestamp() * 1000))
    site = Counter(net.ips[s].rsplit(".", 2)[0].split(".", 1)[1] for s in at_four["src"].tolist())
    per_host = {k: site[k] / sum(ip.startswith(f"10.{k}.") for ip in hosts) for k in ("10", "12")}
    assert per_host["12"] > 3 * per_host["10"]
    result = generate(SEGMENTED, str(tmp_path / "a"))
    generate(SEGMENTED, str(tmp_path / "b"))
    assert tree(tmp_path / "a") == tree(tmp_path / "b") and result.attack_rows["dns_tunnel"] > 0
    lines = [line for f in sorted(tmp_path.joinpath("a").rglob("*.log")) for line in f.read_text().splitlines()]
    records = panos.to_records(panos.parse_arrow(pa.array(lines)))
    dns = Counter(r.dst_ip for r in records if r.dst_port == 53)
    site_hosts = {ip for ip in hosts if ip.startswith("10.12.")}
    tunnel = json.loads((tmp_path / "a" / "labels.jsonl").read_text().splitlines()[0])
    site_dns = Counter(r.dst_ip for r in records if r.dst_port == 53 and r.src_ip in site_hosts - {tunnel["src_ip"]})
    assert {"10.20.0.11", "10.20.0.13"} <= set(dns) and site_dns.most_common(1)[0][0] == "10.12.0.11"
    public = net.ips[net.public_dns]
    assert all(r.src_ip.startswith("10.30.") for r in records if r.dst_ip == public)  # developers only
    with pytest.raises(ValueError, match="unknown estate"):
        SynthConfig(start=START, hours=1, hosts=10, seed=1, estate="mesh")
