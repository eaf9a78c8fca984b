"""PAN-OS TRAFFIC parsing: positions, quoting, long rows, time formats, quarantine; both engines agree."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from ndr_jobs.parsing import panos
from ndr_jobs.parsing.panos import QuarantineRecord, TrafficRecord

#: the values of a well-formed row, by position (everything else empty)
BASE: dict[int, str] = {
    0: "1", 1: "2026/10/01 12:00:05", 2: "013201001234", 3: "TRAFFIC", 4: "end", 5: "2561",
    6: "2026/10/01 12:00:04", 7: "10.0.0.1", 8: "10.0.0.2", 9: "203.0.113.10", 10: "0.0.0.0", 11: "allow-web",
    12: "acme\\alice", 14: "ssl", 15: "vsys1", 16: "trust", 17: "untrust", 22: "4242", 23: "1", 24: "50000",
    25: "443", 29: "tcp", 30: "allow", 31: "3000", 32: "1000", 33: "2000", 34: "12", 35: "2026/10/01 12:00:00",
    36: "4", 37: "any", 41: "10.0.0.0-10.255.255.255", 42: "United States", 44: "5", 45: "7", 46: "tcp-fin",
    52: "fw01", 102: "2026-10-01T12:00:04.250+00:00", 109: '"able-to-transfer-file,has-known-vulnerability"',
}  # fmt: skip
HEADER = "<14>Oct  1 12:00:05 fw01 "


def traffic_line(overrides: dict[int, str] | None = None, n_fields: int = 115, header: str = "") -> str:
    """A TRAFFIC CSV line of ``n_fields`` fields: :data:`BASE` with ``overrides`` (values as written)."""
    fields = [""] * n_fields
    for position, value in {**BASE, **(overrides or {})}.items():
        if position < n_fields:
            fields[position] = value
    return header + ",".join(fields)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


EXPECTED = TrafficRecord(
    receive_time=utc(2026, 10, 1, 12, 0, 5), serial="013201001234", log_type="TRAFFIC", subtype="end",
    generated_time=utc(2026, 10, 1, 12, 0, 4), src_ip="10.0.0.1", dst_ip="10.0.0.2", nat_src_ip="203.0.113.10",
    nat_dst_ip="0.0.0.0", rule="allow-web", src_user="acme\\alice", dst_user=None, app="ssl", from_zone="trust",
    to_zone="untrust", session_id=4242, repeat_count=1, src_port=50000, dst_port=443, protocol="tcp",
    action="allow", bytes=3000, bytes_sent=1000, bytes_received=2000, packets=12,
    start_time=utc(2026, 10, 1, 12, 0, 0), elapsed_seconds=4, category="any",
    src_location="10.0.0.0-10.255.255.255", dst_location="United States", packets_sent=5, packets_received=7,
    session_end_reason="tcp-fin", device_name="fw01", high_res_time=utc(2026, 10, 1, 12, 0, 4, 250000),
    event_time=utc(2026, 10, 1, 12, 0, 4, 250000),
)  # fmt: skip


def both(line: str) -> TrafficRecord | QuarantineRecord:
    """Parse with both engines, check they agree, return the result."""
    reference = panos.parse_line(line)
    vectorised = panos.to_records(panos.parse_arrow(pa.array([line])))
    assert vectorised == [reference]
    return reference


def replace(record: TrafficRecord, **changes: object) -> TrafficRecord:
    return TrafficRecord(**{**record.__dict__, **changes})


# --- well-formed rows --------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["", HEADER, "<14>1 2026-10-01T12:00:05Z fw01.acme.example - - - - "])
def test_every_field_by_position_with_or_without_a_syslog_header(header: str) -> None:
    assert both(traffic_line(header=header)) == EXPECTED


def test_quoted_fields_keep_their_commas_and_the_positions_after_them() -> None:
    line = traffic_line({12: '"acme\\smith, john"', 11: '"allow ""web"", ok"'}, header=HEADER)
    assert both(line) == replace(EXPECTED, src_user="acme\\smith, john", rule='allow "web", ok')


def test_a_brace_wrapped_link_switches_field_is_one_field() -> None:
    line = traffic_line({69: "{wan1,tag1,ethernet1/3}", 102: "2026-10-01T12:00:04.999+00:00"})
    record = both(line)
    assert isinstance(record, TrafficRecord) and record.high_res_time == utc(2026, 10, 1, 12, 0, 4, 999000)


def test_longer_rows_are_accepted() -> None:
    assert both(traffic_line({129: "future-field"}, n_fields=130)) == EXPECTED


def test_the_shortest_row_reaches_device_name_and_has_no_high_resolution_time() -> None:
    record = both(traffic_line(n_fields=53))
    assert record == replace(EXPECTED, high_res_time=None, event_time=utc(2026, 10, 1, 12, 0, 4))


def test_empty_text_fields_are_null() -> None:
    record = both(traffic_line({12: "", 14: "", 52: ""}))
    assert isinstance(record, TrafficRecord) and (record.src_user, record.app, record.device_name) == (None,) * 3


@pytest.mark.parametrize(
    ("overrides", "expected_event_time"),
    [
        ({}, utc(2026, 10, 1, 12, 0, 4, 250000)),  # high-resolution ISO time wins over the generated time
        ({102: "2026-10-01T14:00:04.250+02:00"}, utc(2026, 10, 1, 12, 0, 4, 250000)),  # offset applied
        ({102: "2026-10-01T12:00:04.123456789Z"}, utc(2026, 10, 1, 12, 0, 4, 123456)),  # nanoseconds truncated
        ({102: "2026-10-01T12:00:04"}, utc(2026, 10, 1, 12, 0, 4)),  # no offset: UTC
        ({102: ""}, utc(2026, 10, 1, 12, 0, 4)),  # no high-resolution time: the generated time
        ({102: "", 6: "2026-10-01T12:00:03.5Z"}, utc(2026, 10, 1, 12, 0, 3, 500000)),  # ISO in a legacy field
        ({102: "2026/10/01 12:00:09"}, utc(2026, 10, 1, 12, 0, 9)),  # legacy in the ISO field
    ],
)
def test_both_time_formats(overrides: dict[int, str], expected_event_time: datetime) -> None:
    record = both(traffic_line(overrides))
    assert isinstance(record, TrafficRecord) and record.event_time == expected_event_time


# --- malformed lines ---------------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(traffic_line(n_fields=30), "too_few_fields", "30", id="truncated"),
    pytest.param("hello world", "too_few_fields", "1", id="garbage"),
    pytest.param("1,2,3", "too_few_fields", "3", id="three-fields"),
    pytest.param(HEADER + "", "too_few_fields", "1", id="header-only"),
    pytest.param(traffic_line({3: "THREAT"}), "not_traffic", "THREAT", id="threat-log"),
    pytest.param(traffic_line({3: "SYSTEM"}, n_fields=40), "not_traffic", "SYSTEM", id="short-system-log"),
    pytest.param(traffic_line({12: '"unterminated, quote'}), "bad_quoting", "", id="odd-quotes"),
    pytest.param(traffic_line({7: "10.0.0.256"}), "bad_ip", "src_ip", id="src-octet"),
    pytest.param(traffic_line({8: ""}), "bad_ip", "dst_ip", id="dst-empty"),
    pytest.param(traffic_line({25: "https"}), "bad_number", "dst_port", id="port-text"),
    pytest.param(traffic_line({24: "70000"}), "bad_number", "src_port", id="port-range"),
    pytest.param(traffic_line({32: "-1"}), "bad_number", "bytes_sent", id="negative"),
    pytest.param(traffic_line({36: "4.5"}), "bad_number", "elapsed_seconds", id="decimal"),
    pytest.param(traffic_line({31: "1234567890123456789"}), "bad_number", "bytes", id="19-digits"),
    pytest.param(traffic_line({22: ""}), "bad_number", "session_id", id="empty-number"),
    pytest.param(traffic_line({6: "2026/13/01 00:00:00"}), "bad_timestamp", "generated_time", id="month-13"),
    pytest.param(traffic_line({1: "2026/02/30 00:00:00"}), "bad_timestamp", "receive_time", id="feb-30"),
    pytest.param(traffic_line({35: "2026/10/01 1:00:00"}), "bad_timestamp", "start_time", id="unpadded"),
    pytest.param(traffic_line({102: "2026-10-01T25:00:00Z"}), "bad_timestamp", "high_res_time", id="hour-25"),
    pytest.param(traffic_line({102: "2026-10-01 12:00:04Z"}), "bad_timestamp", "high_res_time", id="iso-space"),
    pytest.param(traffic_line({102: "2026/10/01 12:00:04Z"}), "bad_timestamp", "high_res_time", id="legacy+z"),
    pytest.param(traffic_line({6: "", 102: ""}), "bad_timestamp", "event_time", id="no-event-time"),
    pytest.param(traffic_line({102: "0001-01-01T00:00:00+01:00"}), "bad_timestamp", "high_res_time", id="year-0"),
    pytest.param(traffic_line({102: "2026-10-01T12:00:04+24:00"}), "bad_timestamp", "high_res_time", id="offset"),
    pytest.param(traffic_line({102: "２026-10-01T12:00:04Z"}), "bad_timestamp", "high_res_time", id="non-ascii"),
    pytest.param(traffic_line({7: "x", 25: "y", 6: "z"}), "bad_ip", "src_ip", id="first-reason-wins"),
    pytest.param(traffic_line({24: "x", 25: "y"}), "bad_number", "src_port", id="first-field-wins"),
]


@pytest.mark.parametrize(("line", "reason", "detail"), MALFORMED)
def test_malformed_lines_are_quarantined_with_their_reason(line: str, reason: str, detail: str) -> None:
    assert both(line) == QuarantineRecord(reason, detail, line)


def test_reason_codes_are_the_documented_ones() -> None:
    assert {p.values[1] for p in MALFORMED} == set(panos.QUARANTINE_REASONS)


# --- the engines agree -------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    hand_made = [p.values[0] for p in MALFORMED] + [
        traffic_line(header=HEADER),
        traffic_line({12: '"acme\\smith, john"'}),
        traffic_line({69: "{a,b}"}),
        traffic_line(n_fields=53),
        traffic_line({102: "2026-10-01T14:00:04.250+02:00"}, n_fields=130),
    ]
    return hand_made


def test_vectorised_engine_matches_the_reference_row_by_row_in_order(tmp_path: Path) -> None:
    from ndr_jobs.devtools.synth import SynthConfig, generate

    config = SynthConfig(start=utc(2026, 10, 1, 12), hours=0.5, hosts=20, seed=3, noise_rate=0.05,
                         attacks=("portscan", "lateral"), files_per_batch=1)  # fmt: skip
    generate(config, str(tmp_path))
    synthetic = [line for f in sorted(tmp_path.rglob("*.log")) for line in f.read_text().splitlines()]
    lines = synthetic + _corpus() * 3
    random.Random(1).shuffle(lines)  # plain and quoted-early lines interleaved: order must survive the split
    records = panos.to_records(panos.parse_arrow(pa.array(lines)))
    assert records == [panos.parse_line(line) for line in lines]
    reasons = {r.reason for r in records if isinstance(r, QuarantineRecord)}
    assert reasons == set(panos.QUARANTINE_REASONS)


def test_asking_for_fewer_columns_changes_no_asked_column_and_no_verdict(tmp_path: Path) -> None:
    """``parse_arrow(lines, columns)`` skips unasked text fields, never a check: same quarantine, same values."""
    lines = _corpus() + [traffic_line({23: "1" * 18}), traffic_line({23: "1" * 19}), traffic_line({25: "65535"}),
                         traffic_line({25: "65536"}), traffic_line({25: "00443"}), traffic_line({31: "12a"}),
                         traffic_line({31: ""}), traffic_line({24: "-1"}), traffic_line({36: "0"})]  # fmt: skip
    full = panos.parse_arrow(pa.array(lines))
    assert panos.to_records(full) == [panos.parse_line(line) for line in lines]
    asked = ("quarantine_reason", "quarantine_detail", "raw_line", "src_ip", "dst_port", "repeat_count", "event_time")
    few = panos.parse_arrow(pa.array(lines), asked)
    for name in asked:
        assert few.column(name).equals(full.column(name)), name
    assert {r["quarantine_detail"] for r in full.to_pylist()} >= {"repeat_count", "dst_port", "bytes", "src_port"}


def test_parse_lines_skips_blank_lines() -> None:
    assert panos.parse_lines(["", "  ", traffic_line()]) == [EXPECTED]
    assert panos.to_records(panos.parse_table(["", " \t", traffic_line()])) == [EXPECTED]


def test_parse_traffic_runs_the_same_parser_in_spark_and_keeps_other_columns(spark) -> None:  # noqa: ANN001
    lines = _corpus()
    df = spark.createDataFrame([(f"file-{i}", line) for i, line in enumerate(lines)], "source STRING, value STRING")
    # PySpark 3.5 has no public DataFrame.toArrow(): its Arrow collect, as 4.0's toArrow() is built on it
    parsed = pa.Table.from_batches(panos.parse_traffic(df)._collect_as_arrow()).sort_by("source")
    assert parsed.column_names == ["source", *(name for name, _ in panos.RESULT_COLUMNS)]
    by_source = dict(zip(parsed.column("source").to_pylist(), panos.to_records(parsed), strict=True))
    assert [by_source[f"file-{i}"] for i in range(len(lines))] == [panos.parse_line(line) for line in lines]


# --- property: the engines agree on any mutation of a valid row --------------------------------------------

TRICKY = ["", '"', '""', '"a,b"', '"x""y"', "{p,q}", "{", "}", ",", "TRAFFIC", "THREAT", "0", "65535", "65536",
          "-1", "1e3", "007", "2026/10/01 12:00:00", "2026-10-01T12:00:00.5+01:00", "2026-02-29T00:00:00Z",
          "10.1.2.3", "::1", "fe80::1:2", "1.2.3", "é", " ", "\t"]  # fmt: skip


def test_the_engines_agree_on_mutated_rows() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(alphabet=',"{} a1:/-TZ.é\t', max_size=12)
    edit = st.tuples(st.integers(0, 120), st.one_of(st.sampled_from(TRICKY), text))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(edit, max_size=4), st.integers(0, 125), st.booleans())
    def check(edits: list[tuple[int, str]], n_fields: int, header: bool) -> None:
        line = traffic_line(dict(edits), n_fields=max(n_fields, max((p + 1 for p, _ in edits), default=0)),
                            header=HEADER if header else "")  # fmt: skip
        both(line)

    check()


def test_the_compiled_checks_agree_with_the_reference_on_edge_values() -> None:
    """Times, addresses and numbers near and across their limits, many lines in one batch: the compiled
    scanner's verdicts and values (``ndr_jobs.parsing.panos_scan``) are the reference parser's, line for line."""
    rng = random.Random(7)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    def date_and_clock(sep: str, mid: str) -> str:
        if rng.random() < 0.6:  # a valid one, anywhere in datetime's range
            moment = datetime(1, 1, 1) + (datetime(9999, 12, 31) - datetime(1, 1, 1)) * rng.random()
            return moment.strftime(f"%Y{sep}%m{sep}%d{mid}%H:%M:%S").zfill(19)
        date = rng.choice(["0000-01-01", "0001-01-01", "9999-12-31", "2000-02-29", "1900-02-29", "2024-02-29",
                           "2026-02-29", "2026-04-31", "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-32",
                           f"{digits(4)}-{digits(2)}-{digits(2)}"])  # fmt: skip
        clock = rng.choice(["00:00:00", "23:59:59", "24:00:00", "23:60:00", "23:59:60", "23:59:61", "12:00:00",
                            f"{digits(2)}:{digits(2)}:{digits(2)}"])  # fmt: skip
        return f"{date.replace('-', sep)}{mid}{clock}"

    def time_value() -> str:
        if rng.random() < 0.5:
            return date_and_clock("/", " ")
        fraction = rng.choice(["", "", ".", ".5", ".123456", ".1234567", ".123456789", ".1234567890"])
        zone = rng.choice(["", "Z", "+00:00", "-00:00", "+05:30", "-23:59", "+14:00", "z", "+24:00", "+05:60", "+0530"])
        return date_and_clock("-", "T") + fraction + zone

    def address() -> str:
        if rng.random() < 0.7:
            return ".".join(str(rng.randint(0, 255)) for _ in range(4))
        octets = [rng.choice(["0", "00", "01", "9", "10", "99", "100", "199", "249", "255", "256", "300", "1000"])
                  for _ in range(rng.choice([3, 4, 4, 4, 5]))]  # fmt: skip
        return rng.choice([".".join(octets), ".".join(octets) + ".", "::ffff:" + ".".join(octets), "fe80::1"])

    def number() -> str:
        if rng.random() < 0.7:
            return str(rng.randint(0, 65535))
        return rng.choice(["", "0", "00", "65535", "65536", "99999", "100000", "1" * 18, "1" * 19, digits(3) + "x"])

    lines = []
    for _ in range(4000):
        edits = {p: time_value() for p in rng.sample([1, 6, 35, 102], rng.randint(0, 4))}
        edits |= {p: address() for p in rng.sample([7, 8], rng.randint(0, 2))}
        edits |= {p: number() for p in rng.sample([22, 23, 24, 25, 31, 36], rng.randint(0, 2))}
        lines.append(traffic_line(edits, n_fields=rng.choice([103, 115])))
    records = panos.to_records(panos.parse_arrow(pa.array(lines)))
    assert records == [panos.parse_line(line) for line in lines]
    verdicts = Counter(r.reason if isinstance(r, QuarantineRecord) else "ok" for r in records)
    assert set(verdicts) == {"ok", "bad_ip", "bad_number", "bad_timestamp"} and verdicts["ok"] > 1000, verdicts
