"""PAN-OS 10.x/11.x TRAFFIC logs (CSV syslog): one set of rules, a reference parser and a fast one.

Fields are read by position (:data:`FIELDS`). :func:`parse_line` is the reference (one line, pure Python);
:func:`parse_arrow` gives the same results for an Arrow array through a compiled scanner and falls back to
:func:`parse_line` for lines it cannot settle; :func:`parse_traffic` runs it in Spark. A line is never dropped:
it is a typed record or a quarantine record (:data:`QUARANTINE_REASONS`). Rules: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ndr_jobs.parsing import panos_scan

if TYPE_CHECKING:  # Spark is imported lazily: the scripts import this module's callers without Spark.
    from pyspark.sql import DataFrame

# --- the field table -------------------------------------------------------------------------------------

#: kinds: ``str`` text (empty -> null); ``ip`` an IPv4/IPv6 address (required); ``int`` a required
#: non-negative integer (up to 18 digits); ``port`` a required integer 0..65535; ``ts`` a timestamp in
#: either format (empty -> null).
FIELDS: tuple[tuple[int, str, str], ...] = (
    (1, "receive_time", "ts"),
    (2, "serial", "str"),
    (3, "log_type", "str"),
    (4, "subtype", "str"),
    (6, "generated_time", "ts"),
    (7, "src_ip", "ip"),
    (8, "dst_ip", "ip"),
    (9, "nat_src_ip", "str"),
    (10, "nat_dst_ip", "str"),
    (11, "rule", "str"),
    (12, "src_user", "str"),
    (13, "dst_user", "str"),
    (14, "app", "str"),
    (16, "from_zone", "str"),
    (17, "to_zone", "str"),
    (22, "session_id", "int"),
    (23, "repeat_count", "int"),
    (24, "src_port", "port"),
    (25, "dst_port", "port"),
    (29, "protocol", "str"),
    (30, "action", "str"),
    (31, "bytes", "int"),
    (32, "bytes_sent", "int"),
    (33, "bytes_received", "int"),
    (34, "packets", "int"),
    (35, "start_time", "ts"),
    (36, "elapsed_seconds", "int"),
    (37, "category", "str"),
    (41, "src_location", "str"),
    (42, "dst_location", "str"),
    (44, "packets_sent", "int"),
    (45, "packets_received", "int"),
    (46, "session_end_reason", "str"),
    (52, "device_name", "str"),
    (102, "high_res_time", "ts"),
)
#: a TRAFFIC row must reach device_name (position 52); position 102 and later are optional
MIN_FIELDS = 53
#: positions that can matter (0..102): the parsers never look further
CSV_WIDTH = 103
TYPE_POSITION = 3

SQL_TYPES = {"str": "STRING", "ip": "STRING", "int": "BIGINT", "port": "INT", "ts": "TIMESTAMP"}

#: the typed record: name and Spark SQL type, in order (``event_time`` is derived)
TRAFFIC_COLUMNS: tuple[tuple[str, str], ...] = (
    *((name, SQL_TYPES[kind]) for _, name, kind in FIELDS),
    ("event_time", "TIMESTAMP"),
)

#: quarantine reason codes, in the order they are tested (the first that matches is reported)
QUARANTINE_REASONS: tuple[str, ...] = (
    "bad_quoting",  # an odd number of double quotes: an unterminated quoted field
    "too_few_fields",  # fewer than 4 fields, or a TRAFFIC row with fewer than MIN_FIELDS
    "not_traffic",  # field 3 is not TRAFFIC (THREAT, SYSTEM, ...)
    "bad_ip",  # src_ip or dst_ip is not an IPv4/IPv6 address
    "bad_number",  # a required integer is empty, not digits, too long, or a port above 65535
    "bad_timestamp",  # a time field in neither format or out of range, or no event time at all
)

# --- regular expressions (Python's re and Arrow's RE2 read these the same way) ----------------------------

#: the syslog header: up to the last space/tab before the first comma
HEADER_RE = r"^[^,]*[ \t]"
#: a brace-wrapped unquoted field, quoted so that the CSV reader keeps its commas
BRACE_RE = r'(^|,)(\{[^{}"]*\})(?=,|$)'
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{0,4}"
IP_RE = rf"^({_IPV4}|{_H16}(:{_H16}){{2,7}}|{_H16}(:{_H16}){{1,6}}:{_IPV4})$"
INT_RE = r"^[0-9]{1,18}$"
PORT_RE = r"^[0-9]{1,5}$"
LEGACY_TS_RE = r"^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
ISO_TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?$"
MAX_PORT = 65535

_HEADER = re.compile(HEADER_RE)
_BRACE = re.compile(BRACE_RE)
_IP = re.compile(IP_RE)
_INT = re.compile(INT_RE)
_PORT = re.compile(PORT_RE)
_LEGACY_TS = re.compile(LEGACY_TS_RE)
_ISO_TS = re.compile(ISO_TS_RE)


# --- the pure-Python engine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficRecord:
    """One parsed TRAFFIC log line (text fields are ``None`` when empty; times are UTC-aware)."""

    receive_time: datetime | None
    serial: str | None
    log_type: str | None
    subtype: str | None
    generated_time: datetime | None
    src_ip: str
    dst_ip: str
    nat_src_ip: str | None
    nat_dst_ip: str | None
    rule: str | None
    src_user: str | None
    dst_user: str | None
    app: str | None
    from_zone: str | None
    to_zone: str | None
    session_id: int
    repeat_count: int
    src_port: int
    dst_port: int
    protocol: str | None
    action: str | None
    bytes: int
    bytes_sent: int
    bytes_received: int
    packets: int
    start_time: datetime | None
    elapsed_seconds: int
    category: str | None
    src_location: str | None
    dst_location: str | None
    packets_sent: int
    packets_received: int
    session_end_reason: str | None
    device_name: str | None
    high_res_time: datetime | None
    event_time: datetime


@dataclass(frozen=True)
class QuarantineRecord:
    """A line that is not a usable TRAFFIC record: why (a :data:`QUARANTINE_REASONS` code) and the raw line."""

    reason: str
    detail: str
    raw_line: str


def strip_header(line: str) -> str:
    """The CSV body of a line: the syslog header, if any, removed."""
    return _HEADER.sub("", line, count=1)


def protect_braces(body: str) -> str:
    """Quote brace-wrapped unquoted fields (``{a,b}`` -> ``"{a,b}"``) so their commas are not separators."""
    return _BRACE.sub(r'\1"\2"', body) if "{" in body else body


def parse_timestamp(value: str) -> datetime | None:
    """A PAN-OS time in either format as an aware UTC datetime (microseconds); ``None`` when invalid."""
    try:
        if _LEGACY_TS.fullmatch(value):
            return datetime.strptime(value, "%Y/%m/%d %H:%M:%S").replace(tzinfo=UTC)
        if _ISO_TS.fullmatch(value):
            parsed = datetime.fromisoformat(value)  # 3.11: 'Z', any number of fraction digits (truncated)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # out-of-range fields; an offset that leaves datetime's range
        return None
    return None


def parse_line(line: str) -> TrafficRecord | QuarantineRecord:
    """Parse one log line (without its line terminator) into a record or a quarantine record."""
    body = strip_header(line)
    if body.count('"') % 2:
        return QuarantineRecord("bad_quoting", "", line)
    tokens = next(csv.reader([protect_braces(body)], delimiter=",", quotechar='"', doublequote=True, strict=False))
    n_fields = len(tokens) or 1  # csv yields no token for an empty body: one empty field

    def raw(position: int) -> str | None:
        value = tokens[position] if position < len(tokens) else None
        return value if value else None

    if n_fields < 4:
        return QuarantineRecord("too_few_fields", str(n_fields), line)
    log_type = raw(TYPE_POSITION)
    if log_type != "TRAFFIC":
        return QuarantineRecord("not_traffic", log_type or "", line)
    if n_fields < MIN_FIELDS:
        return QuarantineRecord("too_few_fields", str(n_fields), line)

    values: dict[str, Any] = {}
    bad: dict[str, str] = {}  # reason -> first bad field
    for position, name, kind in FIELDS:
        value = raw(position)
        if kind == "str":
            values[name] = value
        elif kind == "ip":
            if value is None or not _IP.fullmatch(value):
                bad.setdefault("bad_ip", name)
            values[name] = value
        elif kind in ("int", "port"):
            pattern = _PORT if kind == "port" else _INT
            if value is None or not pattern.fullmatch(value) or (kind == "port" and int(value) > MAX_PORT):
                bad.setdefault("bad_number", name)
                values[name] = None
            else:
                values[name] = int(value)
        else:  # ts
            parsed = parse_timestamp(value) if value is not None else None
            if value is not None and parsed is None:
                bad.setdefault("bad_timestamp", name)
            values[name] = parsed
    event_time = values["high_res_time"] or values["generated_time"]
    if event_time is None:
        bad.setdefault("bad_timestamp", "event_time")
    for reason in QUARANTINE_REASONS:
        if reason in bad:
            return QuarantineRecord(reason, bad[reason], line)
    return TrafficRecord(**values, event_time=event_time)


def parse_lines(lines: Iterable[str]) -> list[TrafficRecord | QuarantineRecord]:
    """Parse lines, skipping blank ones (as the Spark job does)."""
    return [parse_line(line) for line in lines if line.strip()]


# --- the vectorised engine (Arrow) ------------------------------------------------------------------------

_ARROW_TYPES = {"STRING": pa.string(), "BIGINT": pa.int64(), "INT": pa.int32(),
                "TIMESTAMP": pa.timestamp("us", tz="UTC")}  # fmt: skip
#: what the parser adds to the input columns, in order
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("quarantine_reason", "STRING"),
    ("quarantine_detail", "STRING"),
    ("raw_line", "STRING"),
    *TRAFFIC_COLUMNS,
)
RESULT_SCHEMA = pa.schema([(name, _ARROW_TYPES[t]) for name, t in RESULT_COLUMNS])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TAIL_BASE = "2000-01-01T00:00:00"
_TAIL_BASE_US = 946_684_800_000_000


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_MIN_US, _MAX_US = _micros(datetime.min.replace(tzinfo=UTC)), _micros(datetime.max.replace(tzinfo=UTC))


@functools.lru_cache(maxsize=1 << 16)  # a worker parses batch after batch of the same seconds
def _head_value(head: str) -> dict[str, int | None]:
    """Epoch micros (or None) and kind of the first 19 characters of a time: kind 1 legacy, 2 ISO, 0 neither."""
    if _LEGACY_TS.fullmatch(head):
        kind = 1
    elif _ISO_TS.fullmatch(head):
        kind = 2
    else:
        return {"us": None, "kind": 0}
    parsed = parse_timestamp(head)
    return {"us": _micros(parsed) if parsed else None, "kind": kind}


@functools.lru_cache(maxsize=1 << 16)
def _tail_value(tail: str) -> int | None:
    """The microseconds an ISO tail (``.123+05:30``) adds to its head, or None if invalid."""
    parsed = parse_timestamp(_TAIL_BASE + tail)
    return None if parsed is None else _micros(parsed) - _TAIL_BASE_US


def _by_value(values: pa.Array, fn: Any, arrow_type: pa.DataType) -> pa.Array:
    """``fn`` applied once per distinct value (in Python), mapped back to every row (nulls stay null)."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    results = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], type=arrow_type)
    return results.take(encoded.indices)


def _timestamps(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(timestamps, bad) of a time column (nulls allowed): exactly :func:`parse_timestamp`, vectorised.

    A time is split into its first 19 characters (few distinct values per batch: one per second) and the
    rest (fraction and offset of ISO times: at most a few thousand distinct values). Each distinct part is
    parsed once by the reference parser; the parts are recombined with integer arithmetic.
    """
    heads = pc.utf8_slice_codeunits(values, 0, 19)
    tails = pc.utf8_slice_codeunits(values, 19, 1 << 30)
    head_pairs = _by_value(heads, _head_value, pa.struct([("us", pa.int64()), ("kind", pa.int8())]))
    head_us = pc.struct_field(head_pairs, "us")
    kind = pc.fill_null(pc.struct_field(head_pairs, "kind"), 0)
    tail_us = _by_value(tails, _tail_value, pa.int64())
    empty_tail = pc.equal(tails, "")
    no_value = pa.scalar(None, pa.int64())
    total = pc.if_else(pc.equal(kind, 1), pc.if_else(empty_tail, head_us, no_value), pc.add(head_us, tail_us))
    total = pc.if_else(pc.equal(kind, 0), no_value, total)
    in_range = pc.and_(pc.greater_equal(total, _MIN_US), pc.less_equal(total, _MAX_US))  # as datetime's
    total = pc.if_else(_flag(in_range), total, no_value)
    bad = pc.and_(pc.is_valid(values), pc.is_null(total))
    return pc.cast(total, pa.timestamp("us", tz="UTC")), bad


def _flag(values: pa.Array) -> pa.Array:
    return pc.fill_null(values, False)


def _first(checks: list[tuple[str, pa.Array]], n: int) -> pa.Array:
    """Per row, the name of the first check that is true (null if none)."""
    out = pa.nulls(n, pa.string())
    for name, bad in reversed(checks):
        out = pc.if_else(bad, pa.scalar(name), out)
    return out


#: the field positions the parsers read (the type and every :data:`FIELDS` position), ascending
_POSITIONS = np.array(sorted({TYPE_POSITION, *(p for p, _, _ in FIELDS)}), dtype=np.int64)
_COLUMN_OF = {int(p): i for i, p in enumerate(_POSITIONS)}


@dataclass(frozen=True)
class _Layout:
    """Where each line's fields are: one compiled pass over a batch's bytes (:func:`panos_scan.scan_lines`)."""

    data: np.ndarray  # the lines' UTF-8 bytes (the Arrow data buffer)
    n_commas: np.ndarray  # per line, how many commas it holds (counted up to the 103rd; plain lines only)
    plain_prefix: np.ndarray  # fields 0..102 hold no quote or brace (and the line has more fields)
    plain: np.ndarray  # plain_prefix, or no quote or brace anywhere: split on commas as is
    rest_quotes: np.ndarray  # per line, the double quotes after its 103rd comma (fields 103..)
    field_start: np.ndarray  # per _POSITIONS entry (rows), each line's first byte of that field
    field_length: np.ndarray  # the same, its length (0 where the field is empty or missing)

    def span(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """(first byte, length) of field ``position`` in every line (length 0 where it is empty or missing)."""
        row = _COLUMN_OF[position]
        return self.field_start[row], self.field_length[row]

    def field(self, position: int, rows: np.ndarray | None = None) -> pa.Array:
        """Field ``position`` of every line (or of ``rows``) as strings, null where it is empty or missing."""
        start, lengths = self.span(position)
        if rows is not None:
            start, lengths = start[rows], lengths[rows]
        return _strings(*panos_scan.gather(self.data, start, lengths), lengths)

    def integer(self, position: int, max_digits: int) -> tuple[np.ndarray, np.ndarray]:
        """(value, ok) of field ``position`` read as 1..``max_digits`` ASCII digits (``INT_RE``), from the bytes:
        ``ok`` is false (and the value meaningless) otherwise."""
        return panos_scan.unsigned_integers(self.data, *self.span(position), max_digits)

    def ip_ok(self, position: int, values: pa.Array) -> np.ndarray:
        """Whether field ``position`` (``values``, as strings) matches ``IP_RE``: IPv4 in compiled code, the rest
        with the regular expression."""
        ok = panos_scan.ipv4(self.data, *self.span(position))
        undecided = np.flatnonzero(~ok)
        if len(undecided):
            matched = _flag(pc.match_substring_regex(values.take(pa.array(undecided)), IP_RE))
            ok[undecided] = matched.to_numpy(zero_copy_only=False)
        return ok

    def timestamp(self, position: int) -> tuple[pa.Array, np.ndarray]:
        """(timestamps, bad) of time field ``position``: exactly :func:`parse_timestamp`. Times are read in
        compiled code; what it leaves undecided (odd shapes, extreme years) goes through :func:`_timestamps`."""
        start, lengths = self.span(position)
        micros, state = panos_scan.times(self.data, start, lengths)
        valid, bad = state == panos_scan.TIME_OK, state == panos_scan.TIME_BAD
        other = np.flatnonzero(state == panos_scan.TIME_OTHER)
        if len(other):
            values, other_bad = _timestamps(self.field(position, other))
            micros[other] = pc.fill_null(values.cast(pa.int64()), 0).to_numpy()
            valid[other] = values.is_valid().to_numpy(zero_copy_only=False)
            bad[other] = _flag(other_bad).to_numpy(zero_copy_only=False)
        return pa.array(micros, mask=~valid).cast(pa.timestamp("us", tz="UTC")), bad


def _strings(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """An Arrow string array from its bytes and offsets (null where the length is 0)."""
    validity = np.packbits(lengths > 0, bitorder="little")
    buffers = [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), len(lengths), buffers)


def _layout(lines: pa.Array) -> _Layout:
    """The comma layout of non-null string ``lines`` (see :class:`_Layout`)."""
    n = len(lines)
    offsets_buffer, data_buffer = lines.buffers()[1], lines.buffers()[2]
    line_offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[lines.offset : lines.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, dtype=np.uint8)
    scanned = panos_scan.scan_lines(data, line_offsets[:-1], line_offsets[1:], _POSITIONS, CSV_WIDTH)
    return _Layout(data, *scanned)


def _parse_plain(lines: pa.Array, layout: _Layout, wanted: frozenset[str]) -> pa.RecordBatch:
    """The vectorised parse of lines whose fields 0..102 need no CSV unquoting (see :func:`parse_arrow`)."""
    n = len(lines)
    texts = {p for p, name, kind in FIELDS if kind == "ip" or (kind == "str" and name in wanted)}
    value = {p: layout.field(p) for p in sorted(texts | {TYPE_POSITION})}
    odd_quotes = pa.array(layout.rest_quotes % 2 == 1)
    # the field count: exact for lines without quotes/braces, at least 104 for the others
    n_fields = pa.array(np.where(layout.plain_prefix, CSV_WIDTH + 1, layout.n_commas + 1))

    columns: dict[str, pa.Array] = {}
    bad: dict[str, list[tuple[str, pa.Array]]] = {"bad_ip": [], "bad_number": [], "bad_timestamp": []}
    for position, name, kind in FIELDS:
        v = value.get(position)
        if kind == "str":
            columns[name] = v if v is not None else pa.nulls(n, pa.string())
        elif kind == "ip":
            columns[name] = v
            bad["bad_ip"].append((name, pa.array(~layout.ip_ok(position, v))))
        elif kind in ("int", "port"):  # as INT_RE / PORT_RE, read from the bytes
            number, ok = layout.integer(position, 5 if kind == "port" else 18)
            if kind == "port":
                ok &= number <= MAX_PORT
            columns[name] = pa.array(number, mask=~ok).cast(_ARROW_TYPES[SQL_TYPES[kind]])
            bad["bad_number"].append((name, pa.array(~ok)))
        else:
            columns[name], is_bad = layout.timestamp(position)
            bad["bad_timestamp"].append((name, pa.array(is_bad)))
    event_time = pc.coalesce(columns["high_res_time"], columns["generated_time"])
    bad["bad_timestamp"].append(("event_time", pc.is_null(event_time)))
    first_bad = {reason: _first(checks, n) for reason, checks in bad.items()}

    log_type = pc.fill_null(value[TYPE_POSITION], "")
    count_text = pc.cast(n_fields, pa.string())
    rules: list[tuple[pa.Array, str, pa.Array | pa.Scalar]] = [
        (odd_quotes, "bad_quoting", pa.scalar("")),
        (pc.less(n_fields, 4), "too_few_fields", count_text),
        (pc.not_equal(log_type, "TRAFFIC"), "not_traffic", log_type),
        (pc.less(n_fields, MIN_FIELDS), "too_few_fields", count_text),
        *((pc.is_valid(first_bad[r]), r, first_bad[r]) for r in ("bad_ip", "bad_number", "bad_timestamp")),
    ]
    reason, detail = pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    for condition, code, why in reversed(rules):
        reason = pc.if_else(condition, pa.scalar(code), reason)
        detail = pc.if_else(condition, why, detail)
    good = pc.is_null(reason)
    every = reason.null_count == n  # the usual batch: nothing to mask
    raw_line = pa.nulls(n, pa.string()) if every else pc.if_else(good, pa.scalar(None, pa.string()), lines)
    arrays = [reason, detail, raw_line]
    for name, _ in TRAFFIC_COLUMNS:
        column = event_time if name == "event_time" else columns[name]
        arrays.append(column if every else pc.if_else(good, column, pa.scalar(None, column.type)))
    return pa.RecordBatch.from_arrays(arrays, schema=RESULT_SCHEMA)


def _records_batch(lines: list[str]) -> pa.RecordBatch:
    """The reference parse (:func:`parse_line`) of lines, as a batch of :data:`RESULT_SCHEMA`."""
    rows: dict[str, list[Any]] = {name: [] for name, _ in RESULT_COLUMNS}
    for line in lines:
        record = parse_line(line)
        if isinstance(record, QuarantineRecord):
            rows["quarantine_reason"].append(record.reason)
            rows["quarantine_detail"].append(record.detail)
            rows["raw_line"].append(line)
            for name, _ in TRAFFIC_COLUMNS:
                rows[name].append(None)
        else:
            for key in ("quarantine_reason", "quarantine_detail", "raw_line"):
                rows[key].append(None)
            for name, _ in TRAFFIC_COLUMNS:
                rows[name].append(getattr(record, name))
    return pa.RecordBatch.from_pydict(rows, schema=RESULT_SCHEMA)


def parse_arrow(lines: pa.Array, columns: Iterable[str] | None = None) -> pa.RecordBatch:
    """Parse an Arrow array of lines into a batch of :data:`RESULT_SCHEMA` (one row per line, same order).

    Results are those of :func:`parse_line` (the tests hold the two to it). Lines whose fields 0..102 hold
    no quote or brace — every line PAN-OS writes unless a quoted user or rule name comes early — are split
    and converted with Arrow kernels; the others go through :func:`parse_line` one by one. ``raw_line`` is
    kept for quarantined lines only (null for parsed ones), and the typed columns for parsed lines only.
    With ``columns``, text fields not among them may be left null (they are not needed to tell good lines from
    bad ones, so they are not extracted); every other column is as without.
    """
    wanted = frozenset(columns) if columns is not None else frozenset(name for name, _ in RESULT_COLUMNS)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    lines = pc.fill_null(lines.cast(pa.string()), "")
    layout = _layout(lines)
    if layout.plain.all():
        return _parse_plain(lines, layout, wanted)
    fast_rows, slow_rows = np.flatnonzero(layout.plain), np.flatnonzero(~layout.plain)
    fast_lines = lines.take(pa.array(fast_rows))
    fast = _parse_plain(fast_lines, _layout(fast_lines), wanted)
    slow = _records_batch(lines.take(pa.array(slow_rows)).to_pylist())
    table = pa.Table.from_batches([fast, slow], schema=RESULT_SCHEMA)
    order = np.empty(len(lines), dtype=np.int64)
    order[np.concatenate([fast_rows, slow_rows])] = np.arange(len(lines))
    return table.take(pa.array(order)).combine_chunks().to_batches()[0]


def parse_table(lines: Iterable[str]) -> pa.Table:
    """:func:`parse_arrow` over Python strings (blank lines skipped), as a table."""
    kept = [line for line in lines if line.strip(" \t")]
    return pa.Table.from_batches([parse_arrow(pa.array(kept, type=pa.string()))], schema=RESULT_SCHEMA)


def to_records(table: pa.Table | pa.RecordBatch) -> list[TrafficRecord | QuarantineRecord]:
    """The rows of a :data:`RESULT_SCHEMA` table (from :func:`parse_arrow` or Spark) as records."""
    out: list[TrafficRecord | QuarantineRecord] = []
    for row in table.to_pylist():
        if row["quarantine_reason"] is not None:
            out.append(QuarantineRecord(row["quarantine_reason"], row["quarantine_detail"], row["raw_line"]))
        else:
            out.append(TrafficRecord(**{name: row[name] for name, _ in TRAFFIC_COLUMNS}))
    return out


# --- the Spark engine ------------------------------------------------------------------------------------


def _result_spark_schema(df: DataFrame, line_col: str, columns: tuple[str, ...]) -> Any:
    from pyspark.sql.types import StructType, _parse_datatype_string

    fields = [f for f in df.schema.fields if f.name != line_col]
    types = dict(RESULT_COLUMNS)
    result = _parse_datatype_string(", ".join(f"{name} {types[name]}" for name in columns))
    return StructType([*fields, *result.fields])


def parse_traffic(df: DataFrame, line_col: str = "value", columns: Iterable[str] | None = None) -> DataFrame:
    """Parse a DataFrame of log lines (column ``line_col``, e.g. from ``spark.read.text``) with :func:`parse_arrow`.

    Returns the other input columns followed by :data:`RESULT_COLUMNS` (or only ``columns`` of them, in
    that order: what is not asked for never leaves the Python workers): ``quarantine_reason`` and
    ``quarantine_detail`` (null for a parsed record), ``raw_line`` (quarantined lines only) and the typed
    columns. Blank lines are parsed like any other (``too_few_fields``): filter them first.
    """
    others = [f.name for f in df.schema.fields if f.name != line_col]
    wanted = tuple(columns) if columns is not None else tuple(name for name, _ in RESULT_COLUMNS)
    unknown = sorted(set(wanted) - {name for name, _ in RESULT_COLUMNS})
    if unknown:
        raise ValueError(f"not parser columns: {', '.join(unknown)}")

    def parse_batches(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        for batch in batches:
            parsed = parse_arrow(batch.column(line_col), wanted)
            yield pa.RecordBatch.from_arrays(
                [*(batch.column(c) for c in others), *(parsed.column(c) for c in wanted)], names=[*others, *wanted]
            )

    return df.mapInArrow(parse_batches, _result_spark_schema(df, line_col, wanted))
