"""The lines of a raw mini-batch, read where they are parsed: in the Python workers.

``spark.read.text`` would hand every line (650 bytes of a PAN-OS TRAFFIC line) from the JVM to the Python
parser over a socket, and the JVM would spend as much time reading and converting the lines as the parser
spends parsing them. Instead the driver cuts the batch's objects into splits (:func:`plan_splits`), Spark
runs a task per group of consecutive splits (:func:`splits_frame`), and each task's Python worker reads its
splits' bytes straight from the file or S3 object (:func:`read_lines`): the lines never enter the JVM.

Lines are what Spark's text source (Hadoop's line reader) makes of the bytes: each ends at ``\\n``, ``\\r\\n``
or ``\\r`` (not part of the line), and the last one with or without an ending; an empty line between two
endings is a line. Lines are UTF-8; an invalid sequence becomes U+FFFD, as the JVM decodes it. A compressed
object (``.gz``, ``.bz2``, ``.deflate``) is one split, read and decompressed as a stream (:data:`STREAM_BYTES`
at a time) up to a cap on its decompressed size (:func:`decompressed_cap`): past it, reading stops with
:class:`DecompressedTooLargeError` after the lines before it were handed out. A plain object is cut every
``max_bytes`` bytes, and a split owns the lines that start inside it (the last of them read past its end), so
that every line is read once whatever the cut.
"""

from __future__ import annotations

import bz2
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from ndr_jobs.datasets import storage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: the codec by file name ending (as Hadoop picks it); other objects are plain text
CODECS: dict[str, str] = {".gz": "gzip", ".bz2": "bzip2", ".deflate": "zlib"}
#: compressed bytes read, and decompressed bytes produced, at a time
STREAM_BYTES = 8 << 20
#: the largest decompressed size of one compressed raw object (bytes), and the variable that sets it
DEFAULT_DECOMPRESSED_CAP = 4 << 30
DECOMPRESSED_CAP_ENV = "NDR_RAW_MAX_DECOMPRESSED_BYTES"
#: the quarantine reason of the reader (not the parser's): the rest of an object past the cap
TOO_LARGE_REASON = "decompressed_too_large"


class DecompressedTooLargeError(ValueError):
    """A compressed raw object decompresses to more than the cap (a decompression bomb, or a cap set too low)."""

    def __init__(self, path: str, cap: int, lines: int) -> None:
        super().__init__(
            f"{path} decompresses to more than {cap} bytes (${DECOMPRESSED_CAP_ENV}); {lines} line(s) before the cap "
            "were read, the rest of the object was not"
        )
        self.path, self.cap, self.lines = path, cap, lines
        self.detail = f"more than {cap} bytes decompressed; the {lines} line(s) before the cap were read"


class CorruptCompressedError(ValueError):
    """A compressed raw object is not valid for its codec (truncated or not compressed at all)."""


def decompressed_cap() -> int:
    """``$NDR_RAW_MAX_DECOMPRESSED_BYTES`` (a whole number of bytes, at least 1 MiB) or 4 GiB."""
    raw = os.environ.get(DECOMPRESSED_CAP_ENV, "").strip()
    if not raw:
        return DEFAULT_DECOMPRESSED_CAP
    if not raw.isdigit() or int(raw) < 1 << 20:
        raise ValueError(f"{DECOMPRESSED_CAP_ENV} must be a whole number of bytes >= 1048576, not {raw!r}")
    return int(raw)


#: the default split size (Spark's ``spark.sql.files.maxPartitionBytes`` default)
DEFAULT_SPLIT_BYTES = 128 << 20
#: lines per Arrow batch handed to the parser
BATCH_LINES = 10_000
#: bytes read past a split's end at first, to finish its last line (doubled while that is not enough)
_READ_PAST = 64 << 10
_LF, _CR = 10, 13


@dataclass(frozen=True)
class Split:
    """A byte range ``[start, end)`` of one raw object; ``file_index``: the object's 1-based position."""

    file_index: int
    path: str  # where the bytes are: a local path or ``s3://`` (already through ``storage.backing``)
    start: int
    end: int
    size: int  # the object's size

    @property
    def compressed(self) -> bool:
        return self.path.endswith(tuple(CODECS))


#: the Spark schema of a frame of splits (:func:`splits_frame`)
SPLIT_SCHEMA = "file_index INT, path STRING, start BIGINT, end BIGINT, size BIGINT"


def plan_splits(objects: Sequence[storage.ObjectInfo], max_bytes: int = DEFAULT_SPLIT_BYTES) -> list[Split]:
    """The splits of ``objects`` (in their order): a compressed object whole, a plain one every ``max_bytes``."""
    if max_bytes < 1:
        raise ValueError(f"split size must be positive, not {max_bytes}")
    out: list[Split] = []
    for index, o in enumerate(objects, start=1):
        path = storage.backing(o.path)
        if path.endswith(tuple(CODECS)) or o.size <= max_bytes:
            out.append(Split(index, path, 0, o.size, o.size))
        else:
            out.extend(Split(index, path, s, min(s + max_bytes, o.size), o.size) for s in range(0, o.size, max_bytes))
    return out


@njit(cache=True, nogil=True)
def _endings(buf, at_eof):  # type: ignore[no-untyped-def]
    """Positions in ``buf`` of the last byte of each line ending (``\\n``, ``\\r`` alone, the ``\\n`` of ``\\r\\n``),
    ascending: one compiled pass.

    A ``\\r`` in the last byte ends a line only ``at_eof`` (otherwise a ``\\n`` may follow, unread).
    """
    n = len(buf)
    count = 0
    for i in range(n):  # two passes (count, then fill): cheaper than growing the output
        b = buf[i]
        if b == _LF or (b == _CR and (buf[i + 1] != _LF if i + 1 < n else at_eof)):
            count += 1
    out = np.empty(count, np.int64)
    count = 0
    for i in range(n):
        b = buf[i]
        if b == _LF or (b == _CR and (buf[i + 1] != _LF if i + 1 < n else at_eof)):
            out[count] = i
            count += 1
    return out


def _line_endings(data: bytes, at_eof: bool) -> np.ndarray:
    """:func:`_endings` of ``data``; when it holds no ``\\r`` (the usual case, found by one ``memchr``), its
    ``\\n`` positions by a vectorised compare, twice as fast."""
    buf = np.frombuffer(data, dtype=np.uint8)
    return _endings(buf, at_eof) if b"\r" in data else np.flatnonzero(buf == _LF)


def _owned(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, first byte of each line the split owns, end of its last line including the ending), positions
    relative to the bytes. Reads past the split's end until its last line's ending (or the object's end)."""
    low = max(split.start - 1, 0)  # one byte early: does the split begin a line?
    past = _READ_PAST
    while True:
        high = min(split.end + past, split.size)
        data = storage.read_range(split.path, low, high)
        buf = np.frombuffer(data, dtype=np.uint8)
        endings = _line_endings(data, at_eof=high == split.size)
        starts = endings + 1 if low else np.concatenate([[0], endings + 1])
        starts = starts[(starts >= split.start - low) & (starts < split.end - low)]
        if not len(starts):
            return buf, starts, np.array(0)
        last = endings[np.searchsorted(endings, starts[-1]) :]
        if len(last):
            return buf, starts, np.array(last[0] + 1)
        if high == split.size:  # the object's last line, without an ending
            return buf, starts, np.array(len(buf))
        past *= 2


def _decompressor(codec: str) -> Any:
    if codec == "bzip2":
        return bz2.BZ2Decompressor()
    return zlib.decompressobj(31 if codec == "gzip" else 15)


def _outputs(engine: Any, data: bytes) -> Iterator[bytes]:
    """Everything ``engine`` makes of ``data``, at most :data:`STREAM_BYTES` at a time."""
    out = engine.decompress(data, STREAM_BYTES)
    yield out
    if isinstance(engine, bz2.BZ2Decompressor):
        while not engine.eof and not engine.needs_input:
            yield engine.decompress(b"", STREAM_BYTES)
    else:
        while engine.unconsumed_tail and not engine.eof:
            yield engine.decompress(engine.unconsumed_tail, STREAM_BYTES)


def _decompressed(split: Split, cap: int) -> Iterator[bytes]:
    """The decompressed bytes of a compressed object, at most :data:`STREAM_BYTES` at a time; concatenated
    streams (``cat a.gz b.gz``) are read on, trailing zero padding is ignored. Holds a chunk of each side at a
    time; raises :class:`DecompressedTooLargeError` (``lines`` 0) once past ``cap``."""
    codec = CODECS[next(c for c in CODECS if split.path.endswith(c))]
    engine, total, offset, data = _decompressor(codec), 0, 0, b""
    if split.size == 0:
        return
    while offset < split.size or data:
        if not data:
            data = storage.read_range(split.path, offset, min(offset + STREAM_BYTES, split.size))
            offset += len(data)
        if engine.eof:
            if not data.strip(b"\0"):
                data = b""
                continue
            engine = _decompressor(codec)
        try:
            for out in _outputs(engine, data):
                total += len(out)
                if total > cap:  # hand out what fits (its whole lines are read), then stop
                    yield out[: len(out) - (total - cap)]
                    raise DecompressedTooLargeError(split.path, cap, 0)
                if out:
                    yield out
        except (OSError, zlib.error, EOFError) as exc:
            raise CorruptCompressedError(f"{split.path} is not valid {codec}: {exc}") from None
        data = engine.unused_data if engine.eof else b""
    if not engine.eof:
        raise CorruptCompressedError(f"{split.path} is not valid {codec}: it ends inside a compressed stream")


def _compressed_lines(split: Split, cap: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(bytes, line starts, end) per decompressed chunk of a compressed object, as :func:`_owned` gives."""
    carry = b""
    lines = 0
    try:
        for chunk in _decompressed(split, cap):
            data = carry + chunk
            endings = _line_endings(data, at_eof=False)
            if not len(endings):
                carry = data
                continue
            buf = np.frombuffer(data, dtype=np.uint8)
            starts = np.concatenate([[0], endings[:-1] + 1])
            lines += len(starts)
            yield buf, starts, np.array(endings[-1] + 1)
            carry = data[endings[-1] + 1 :]
    except DecompressedTooLargeError as exc:
        raise DecompressedTooLargeError(exc.path, exc.cap, lines) from None
    if carry:  # the last line(s): a \r at the very end ends a line now
        buf = np.frombuffer(carry, dtype=np.uint8)
        endings = _line_endings(carry, at_eof=True)
        starts = np.concatenate([[0], endings + 1])
        yield buf, starts[starts < len(buf)], np.array(len(buf))


def read_lines(split: Split, batch_lines: int = BATCH_LINES, cap: int | None = None) -> Iterator[pa.Array]:
    """The split's lines (without their endings) as Arrow string arrays of at most ``batch_lines`` lines.

    A line that is not valid UTF-8 has each invalid sequence replaced by U+FFFD (as the JVM decodes one), so it
    reaches the parser as text and is parsed or quarantined like any other line. A compressed object is
    streamed; past ``cap`` decompressed bytes (default :func:`decompressed_cap`) it raises
    :class:`DecompressedTooLargeError`, after yielding the lines before it.
    """
    if split.compressed:
        for buf, starts, end in _compressed_lines(split, decompressed_cap() if cap is None else cap):
            yield from _arrays(buf, starts, end, batch_lines)
        return
    yield from _arrays(*_owned(split), batch_lines)


@dataclass(frozen=True)
class Unread:
    """What the reader could not read of an object: one quarantine record (a reason, a detail)."""

    reason: str
    detail: str


def read_split(split: Split, cap: int, batch_lines: int = BATCH_LINES) -> Iterator[pa.Array | Unread]:
    """:func:`read_lines` with the delta builder's policy: an object past ``cap`` ends with an :class:`Unread`
    record (quarantined and counted; its lines before the cap are read) instead of failing the batch. A corrupt
    object still fails it (:class:`CorruptCompressedError`): a torn upload is retried, not half ingested."""
    try:
        yield from read_lines(split, batch_lines, cap)
    except DecompressedTooLargeError as exc:
        yield Unread(TOO_LARGE_REASON, exc.detail)


def _arrays(buf: np.ndarray, starts: np.ndarray, end: np.ndarray, batch_lines: int) -> Iterator[pa.Array]:
    if not len(starts):
        return
    offsets = np.append(starts, end) - starts[0]
    data = pa.py_buffer(buf[starts[0] : int(end)])
    wide = offsets[-1] >= 1 << 31
    every = pa.Array.from_buffers(
        pa.large_string() if wide else pa.string(),
        len(starts),
        [None, pa.py_buffer(offsets.astype(np.int64 if wide else np.int32)), data],
    )
    for first in range(0, len(starts), batch_lines):
        # each line still holds its ending: no line holds a line break anywhere else
        lines = pc.ascii_rtrim(every.slice(first, batch_lines), "\r\n").cast(pa.string())
        try:
            lines.validate(full=True)
        except pa.ArrowInvalid:
            raw = lines.cast(pa.binary()).to_pylist()
            lines = pa.array([line.decode("utf-8", "replace") for line in raw], pa.string())
        yield lines


def blank(lines: pa.Array) -> np.ndarray:
    """Which lines are blank: empty, or spaces and tabs only."""
    lines = pc.fill_null(lines, "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    first = np.frombuffer(data, dtype=np.uint8)[np.minimum(offsets[:-1], len(data) - 1)] if data else None
    out = offsets[1:] == offsets[:-1]
    if first is not None:  # only a line that starts with a space or a tab can be blank: the regex checks those
        maybe = np.flatnonzero(~out & ((first == 32) | (first == 9)))
        if len(maybe):
            out[maybe] = pc.fill_null(pc.match_substring_regex(lines.take(pa.array(maybe)), r"^[ \t]*$"), False)
    return out


def pack(splits: Sequence[Split], tasks: int) -> list[list[Split]]:
    """``splits`` in at most ``tasks`` groups of consecutive splits with about as many bytes each (none empty):
    a split goes to the group its middle byte falls in."""
    tasks = max(tasks, 1)
    share = sum(s.end - s.start for s in splits) / tasks or 1
    groups: list[list[Split]] = []
    done = 0
    for split in splits:
        size = split.end - split.start
        if not groups or min(int((done + size / 2) // share), tasks - 1) >= len(groups):
            groups.append([])
        groups[-1].append(split)
        done += size
    return groups


def splits_frame(spark: SparkSession, splits: Sequence[Split], tasks: int | None = None) -> DataFrame:
    """A frame of ``splits`` (:data:`SPLIT_SCHEMA`): ``tasks`` partitions of consecutive splits with about as
    many bytes each (:func:`pack`; default: a partition per split)."""
    groups = pack(splits, tasks) if tasks else [[s] for s in splits]
    rows = spark.sparkContext.parallelize([[astuple(s) for s in g] for g in groups], max(len(groups), 1))
    return spark.createDataFrame(rows.flatMap(lambda group: group), SPLIT_SCHEMA)


def splits_of(batch: pa.RecordBatch) -> Iterator[Split]:
    """The splits in a batch of a :func:`splits_frame` (inside a worker)."""
    columns = [batch.column(name).to_pylist() for name in ("file_index", "path", "start", "end", "size")]
    for values in zip(*columns, strict=True):
        yield Split(*values)
