"""The value types of every inbound event field and job argument, defined once.

The state machines' intake (JSONata, rendered by the compiler from :data:`TYPES`), the JSON Schemas in
``generated/schema/events/`` and the jobs' argument parsers all check values against these definitions, so
a value a state machine accepts is a value every job accepts. The module imports nothing but the standard
library: the compiler reads it as part of the job library's declared interface.

Every pattern is written in the subset of regular expressions that Python's ``re``, ECMAScript (JSONata
in Step Functions) and JSON Schema share. No type admits whitespace, quotes, ``$``, backquotes, ``;`` or
``|``, a leading ``-`` (which a command-line parser would read as a flag) or a ``.``/``..`` path segment.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: the length of a mini-batch window
WINDOW = timedelta(minutes=15)
WINDOW_MINUTES = 15
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: the years a timestamp may name (epoch milliseconds, four digits)
MIN_YEAR, MAX_YEAR = 1970, 9999

_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_SEGMENT = r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]{0,254}"

ID_PATTERN = rf"^{_ID}$"
RUN_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=+@-]{0,79}$"
TIMESTAMP_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.0{1,9})?(Z|[+]00:00)$"
MONTH_PATTERN = r"^(\d{4})-(0[1-9]|1[0-2])$"
#: a share from 0 to 1 in plain decimals (no exponent, sign, nan or spaces)
RATIO_PATTERN = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$"
S3_URI_PATTERN = rf"^s3://{_BUCKET}(/{_SEGMENT})*/?$"
#: ``s3://<raw-bucket>/pan-traffic/<org_id>/<project_name>/<feature_spec_version>/YYYY/MM/DD/HHMM/``
BATCH_FOLDER_PATTERN = rf"^s3://({_BUCKET})/pan-traffic/({_ID})/({_ID})/({_ID})/(\d{{4}})/(\d{{2}})/(\d{{2}})/(\d{{2}})(\d{{2}})/?$"
#: an absolute local path (the storage layer's local mode), same segment rules as S3 keys
LOCAL_PATH_PATTERN = rf"^(/{_SEGMENT})+/?$"
CONTROL_CHARACTERS = r"[\u0000-\u001f\u007f]"


class ContractError(argparse.ArgumentTypeError, ValueError):
    """A value that is not of its declared type; the message says which rule (argparse prints it as is)."""


@dataclass(frozen=True)
class ValueType:
    """One declared type: what it accepts, in words and as a JSON Schema."""

    name: str
    summary: str
    schema: dict[str, Any]
    pattern: str | None = None
    #: fields a value of this type binds besides itself (``batch_folder``: org, project, window...)
    binds: tuple[str, ...] = field(default=())


TYPES: dict[str, ValueType] = {
    t.name: t
    for t in [
        ValueType("id", "an identifier: a letter or digit, then up to 63 letters, digits, '.', '_' or '-'",
                  {"type": "string", "pattern": ID_PATTERN}, ID_PATTERN),
        ValueType("run_key", "a run key: a letter or digit, then up to 79 letters, digits or . _ = + @ -",
                  {"type": "string", "pattern": RUN_KEY_PATTERN}, RUN_KEY_PATTERN),
        ValueType("timestamp", "an ISO-8601 UTC time to the second (YYYY-MM-DDTHH:MM:SSZ; '+00:00' and a zero "
                               "fraction are accepted)",
                  {"type": "string", "pattern": TIMESTAMP_PATTERN, "format": "date-time"}, TIMESTAMP_PATTERN),
        ValueType("window_start", f"a timestamp on a {WINDOW_MINUTES}-minute boundary (minute 00, 15, 30 or 45, "
                                  "second 00)",
                  {"type": "string", "pattern": TIMESTAMP_PATTERN, "format": "date-time"}, TIMESTAMP_PATTERN),
        ValueType("month", "a month, YYYY-MM", {"type": "string", "pattern": MONTH_PATTERN}, MONTH_PATTERN),
        ValueType("s3_uri", "an S3 URI s3://bucket/key whose key segments are letters, digits and . _ = + - "
                            "(no segment starts with '.')",
                  {"type": "string", "pattern": S3_URI_PATTERN, "maxLength": 1024}, S3_URI_PATTERN),
        ValueType("batch_folder", "a raw mini-batch folder s3://<bucket>/pan-traffic/<org_id>/<project_name>/"
                                  "<feature_spec_version>/YYYY/MM/DD/HHMM/ whose HHMM starts a 15-minute window",
                  {"type": "string", "pattern": BATCH_FOLDER_PATTERN, "maxLength": 1024}, BATCH_FOLDER_PATTERN,
                  binds=("raw_bucket", "org_id", "project_name", "feature_spec_version", "batch_start_ts",
                         "batch_end_ts", "mini_batch_id")),
        ValueType("text", "text without control characters", {"type": "string", "maxLength": 256}),
        ValueType("boolean", "true or false", {"type": "boolean"}),
        ValueType("count", "a whole number >= 0", {"type": "integer", "minimum": 0}),
    ]
}
#: what a list's items may be
LIST_ITEM_TYPES = ("id", "timestamp", "window_start", "month")


# -- Python checks (the jobs' argument types, tests) ---------------------------------------------------


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= 100 else text[:100] + "...")


def _matched(pattern: str, value: Any, what: str) -> re.Match[str]:
    match = re.match(pattern, value, re.ASCII) if isinstance(value, str) else None
    if match is None or match.end() != len(value):
        raise ContractError(f"{_show(value)} is not {what}")
    return match


def identifier(value: Any) -> str:
    """argparse type: an id (org, project, feature spec version, mini-batch id)."""
    return _matched(ID_PATTERN, value, TYPES["id"].summary).group(0)


def run_key(value: Any) -> str:
    return _matched(RUN_KEY_PATTERN, value, TYPES["run_key"].summary).group(0)


def parse_timestamp(value: Any) -> datetime:
    """An ISO-8601 UTC timestamp as an aware datetime; :class:`ContractError` otherwise."""
    m = _matched(TIMESTAMP_PATTERN, value, TYPES["timestamp"].summary)
    year = int(m.group(1))
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ContractError(f"{_show(value)} is not a time from {MIN_YEAR} to {MAX_YEAR}")
    try:
        return datetime(*(int(g) for g in m.groups()[:6]), tzinfo=UTC)
    except ValueError as exc:
        raise ContractError(f"{_show(value)} is not a calendar time: {exc}") from None


def iso(moment: datetime) -> str:
    """``2026-10-01T12:00:00Z``."""
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def parse_utc(value: str, name: str = "timestamp") -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime (naive values are UTC); a clear error otherwise.

    Lenient where :func:`parse_timestamp` is strict: for values the jobs wrote themselves or already checked.
    """
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO-8601 timestamp") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def timestamp(value: Any) -> str:
    """argparse type: an ISO-8601 UTC timestamp, returned in its canonical form YYYY-MM-DDTHH:MM:SSZ."""
    return iso(parse_timestamp(value))


def window_start(value: Any) -> str:
    """argparse type: a timestamp on a 15-minute boundary (canonical form)."""
    moment = parse_timestamp(value)
    if moment.minute % WINDOW_MINUTES or moment.second:
        raise ContractError(f"{_show(value)} is not on a {WINDOW_MINUTES}-minute boundary")
    return iso(moment)


def window(start: Any, end: Any) -> tuple[str, str]:
    """A mini-batch window: an aligned start and end = start + 15 minutes (canonical forms)."""
    s = window_start(start)
    e = timestamp(end)
    if parse_timestamp(e) - parse_timestamp(s) != WINDOW:
        raise ContractError(f"window end {_show(end)} is not {WINDOW_MINUTES} minutes after its start {_show(start)}")
    return s, e


def month(value: Any) -> str:
    """argparse type: YYYY-MM."""
    return _matched(MONTH_PATTERN, value, TYPES["month"].summary).group(0)


def s3_uri(value: Any) -> str:
    return _matched(S3_URI_PATTERN, value, TYPES["s3_uri"].summary).group(0)


def storage_uri(value: Any) -> str:
    """argparse type: an S3 URI, or an absolute local path (the storage layer's local mode); same rules."""
    if isinstance(value, str) and value.startswith("s3://"):
        return s3_uri(value)
    return _matched(LOCAL_PATH_PATTERN, value, "an s3:// URI or an absolute path of safe segments").group(0)


def ratio(value: Any) -> float:
    """argparse type: a share in [0, 1] written as a plain decimal (``0.5``, ``1``)."""
    return float(_matched(RATIO_PATTERN, value, "a share from 0 to 1 as a plain decimal (0, 0.25, 1)").group(0))


def optional(check: Any) -> Any:
    """argparse type: ``check``, or the empty string (an optional argument the pipeline passes empty)."""

    def parse(value: str) -> str:
        return "" if value == "" else check(value)

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


def window_list(value: Any) -> list[str]:
    """argparse type: a JSON array of window starts (the empty string is [])."""
    if isinstance(value, str) and not value.strip():
        return []
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise ContractError(f"{_show(value)} is not a JSON array") from None
    if not isinstance(parsed, list):
        raise ContractError(f"{_show(value)} is not a JSON array")
    return [window_start(v) for v in parsed]


#: the most windows one ``--window-mask`` selects (a container argument is at most 256 characters)
MAX_MASK_WINDOWS = 192
_MASK = re.compile(rf"^[01]{{1,{MAX_MASK_WINDOWS}}}$")


def window_mask(value: Any) -> str:
    """argparse type: one ``1`` (run) or ``0`` (skip) per consecutive window, at most ``MAX_MASK_WINDOWS``."""
    if not isinstance(value, str) or not _MASK.match(value):
        raise ContractError(f"{_show(value)} is not a mask of 1 to {MAX_MASK_WINDOWS} '0'/'1' characters")
    return value


def masked_window_starts(first: str, mask: str) -> list[str]:
    """The window starts a mask selects, window ``i`` starting ``i`` windows after ``first``."""
    start = parse_timestamp(window_start(first))
    return [iso(start + i * WINDOW) for i, bit in enumerate(window_mask(mask)) if bit == "1"]


@dataclass(frozen=True)
class BatchFolder:
    raw_bucket: str
    org_id: str
    project_name: str
    feature_spec_version: str
    batch_start_ts: str
    batch_end_ts: str
    mini_batch_id: str


def batch_folder(value: Any) -> BatchFolder:
    """The parts of a raw mini-batch folder (the ingestion contract's layout)."""
    m = _matched(BATCH_FOLDER_PATTERN, value, TYPES["batch_folder"].summary)
    bucket, org, project, version, y, mo, d, h, mi = m.groups()
    start = window_start(f"{y}-{mo}-{d}T{h}:{mi}:00Z")
    end = iso(parse_timestamp(start) + WINDOW)
    return BatchFolder(bucket, org, project, version, start, end, mini_batch_id(org, project, version, start))


def mini_batch_id(org_id: str, project_name: str, feature_spec_version: str, batch_start_ts: str) -> str:
    """``<org_id>-<project_name>-<feature_spec_version>-<YYYYMMDDTHHMM>`` (the contract's format)."""
    stamp = parse_timestamp(batch_start_ts).strftime("%Y%m%dT%H%M")
    return f"{org_id}-{project_name}-{feature_spec_version}-{stamp}"


def lock_key(scope: str, *parts: str) -> str:
    """The lock table key the state machines build: ``<scope>#`` and the parts as a JSON array (unambiguous
    whatever the parts contain)."""
    return scope + "#" + json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
