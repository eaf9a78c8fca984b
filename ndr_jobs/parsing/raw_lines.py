"""The lines of a raw mini-batch, read where they are parsed: in the Python workers.

``spark.read.text`` would hand every line (650 bytes of a PAN-OS TRAFFIC line) from the JVM to the Python
parser over a socket, and the JVM would spend as much time reading and converting the lines as the parser
spends parsing them. Instead the driver cuts the batch's objects into splits (:func:`plan_splits`), Spark
runs a task per group of consecutive splits (:func:`splits_frame`), and each task's Python worker reads its
splits' bytes straight from the file or S3 object (:func:`read_lines`): the lines never enter the JVM.

Lines are what Spark's text source (Hadoop's line reader) makes of the bytes: each ends at ``\\n``, ``\\r\\n``
or ``\\r`` (not part of the line), and the last one with or without an ending; an empty line between two
endings is a line. Lines are UTF-8; an invalid sequence becomes U+FFFD, as the JVM decodes it. A compressed
object (``.gz``, ``.bz2``, ``.deflate``) is one split, decompressed whole; a plain one is cut every
``max_bytes`` bytes, and a split owns the lines that start inside it (the last of them read past its end), so
that every line is read once whatever the cut.
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from ndr_jobs.datasets import storage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: decompression by file name ending (as Hadoop picks its codec); other objects are plain text
CODECS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".deflate": zlib.decompress,
}
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
    if split.compressed:
        data = CODECS[next(c for c in CODECS if split.path.endswith(c))](storage.read_range(split.path, 0, split.size))
        buf = np.frombuffer(data, dtype=np.uint8)
        endings = _line_endings(data, at_eof=True)
        starts = np.concatenate([[0], endings + 1])
        starts = starts[starts < len(buf)]
        return buf, starts, np.array(len(buf))
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


def read_lines(split: Split, batch_lines: int = BATCH_LINES) -> Iterator[pa.Array]:
    """The split's lines (without their endings) as Arrow string arrays of at most ``batch_lines`` lines.

    A line that is not valid UTF-8 has each invalid sequence replaced by U+FFFD (as the JVM decodes one), so it
    reaches the parser as text and is parsed or quarantined like any other line.
    """
    buf, starts, end = _owned(split)
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
