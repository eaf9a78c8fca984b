"""A group-by in compiled code (numba) for Arrow batches: keys of text and integer columns, int64 aggregates.

:class:`HashAggregator` adds batch after batch to one open-addressing hash table and hands back its groups as an
Arrow batch when asked (:meth:`HashAggregator.flush`) or when the table is full (:meth:`HashAggregator.add`
returns the groups it had to flush to make room). The delta builder uses it in its Python workers so that each
Spark task sends one row per key it saw instead of one per log line.

A row's key is written once into an arena of bytes (each text column as a 4-byte length, -1 for null, then its
UTF-8 bytes; each integer column as 8 bytes; zero-padded to 8-byte words) and found again by a 64-bit hash of its
words (FNV-1a steps with a shift) and a word-by-word comparison, so two keys are one group exactly when all
their values are equal (nulls equal to nulls and distinct from empty text, as in SQL's GROUP BY).
Aggregates are int64: :data:`SUM` (overflow raises, as Spark's ANSI sum does), :data:`MIN`, :data:`MAX` and
:data:`OR` (bitwise). Inputs carry no nulls in aggregated columns (the caller passes only rows whose values
are all present).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numba import njit

from ndr_jobs.parsing.panos_scan import gather

SUM, MIN, MAX, OR = 0, 1, 2, 3
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True)
def _put_int(arena, at, value, width):  # type: ignore[no-untyped-def]
    """Write ``value`` as ``width`` little-endian bytes (two's complement) at ``at``."""
    v = np.uint64(value)
    for b in range(width):
        arena[at + b] = np.uint8((v >> np.uint64(8 * b)) & np.uint64(0xFF))


@njit(cache=True, nogil=True)
def _get_int(arena, at, width):  # type: ignore[no-untyped-def]
    """The signed little-endian integer of ``width`` bytes (4 or 8) at ``at``."""
    v = np.uint64(0)
    for b in range(width):
        v |= np.uint64(arena[at + b]) << np.uint64(8 * b)
    if width == 4:
        value = np.int64(v)
        return value - (1 << 32) if value >= (1 << 31) else value
    return np.int64(v)


@njit(cache=True, nogil=True)
def _accumulate(slots, key_at, key_size, arena, words, used, aggregates, ops,
                data, starts, lengths, numbers, values, first):  # type: ignore[no-untyped-def]  # fmt: skip
    """Add rows ``first..`` to the table; return the row it stopped at (all rows: ``n``; full: that row) and
    ``-1 - row`` when a sum overflows at that row. ``used`` holds (groups, arena bytes) in use; ``words`` is the
    arena seen as uint64 (keys start on 8-byte boundaries and are zero-padded to them); a slot is (group, hash)."""
    n = starts.shape[1]
    n_text = starts.shape[0]
    n_numbers = numbers.shape[0]
    n_values = values.shape[1]
    mask = slots.shape[0] - 1
    for i in range(first, n):
        size = 8 * n_numbers
        for k in range(n_text):
            size += 4 + (lengths[k, i] if lengths[k, i] > 0 else 0)
        size = (size + 7) // 8 * 8
        at = used[1]
        if used[0] == len(key_at) or at + size > len(arena):
            return i
        # the key, written where a new group's key goes (kept only if the group is new)
        words[(at + size) // 8 - 1] = 0
        p = at
        for k in range(n_text):
            length = lengths[k, i]
            _put_int(arena, p, length if length >= 0 else -1, 4)
            p += 4
            s = starts[k, i]
            for j in range(length if length > 0 else 0):
                arena[p + j] = data[s + j]
            p += length if length > 0 else 0
        for k in range(n_numbers):
            _put_int(arena, p, numbers[k, i], 8)
            p += 8
        first_word, n_words = at // 8, size // 8
        h = _FNV_OFFSET
        for w in range(first_word, first_word + n_words):
            h = (h ^ words[w]) * _FNV_PRIME
            h ^= h >> np.uint64(29)
        h_signed = np.int64(h)
        slot = np.int64(h & np.uint64(mask))
        while True:
            g = slots[slot, 0]
            if g < 0:  # a new group
                g = used[0]
                slots[slot, 0] = g
                slots[slot, 1] = h_signed
                key_at[g] = at
                key_size[g] = size
                used[0] += 1
                used[1] += size
                for v in range(n_values):
                    aggregates[g, v] = values[i, v]
                break
            if slots[slot, 1] == h_signed and key_size[g] == size:
                other = key_at[g] // 8
                same = True
                for w in range(n_words):
                    if words[other + w] != words[first_word + w]:
                        same = False
                        break
                if same:
                    for v in range(n_values):
                        x, a = values[i, v], aggregates[g, v]
                        op = ops[v]
                        if op == 0:
                            if (x > 0 and a > _INT64_MAX - x) or (x < 0 and a < _INT64_MIN - x):
                                return -1 - i
                            aggregates[g, v] = a + x
                        elif op == 1:
                            aggregates[g, v] = min(a, x)
                        elif op == 2:
                            aggregates[g, v] = max(a, x)
                        else:
                            aggregates[g, v] = a | x
                    break
            slot = (slot + 1) & mask
    return n


@njit(cache=True, nogil=True)
def _split_keys(arena, key_at, n_groups, n_text, n_numbers):  # type: ignore[no-untyped-def]
    """Each group's text fields as (first byte in the arena, length or -1) and its integer fields."""
    starts = np.zeros((n_text, n_groups), np.int64)
    lengths = np.zeros((n_text, n_groups), np.int64)
    numbers = np.zeros((n_numbers, n_groups), np.int64)
    for g in range(n_groups):
        p = key_at[g]
        for k in range(n_text):
            length = _get_int(arena, p, 4)
            p += 4
            starts[k, g] = p
            lengths[k, g] = length
            p += length if length > 0 else 0
        for k in range(n_numbers):
            numbers[k, g] = _get_int(arena, p, 8)
            p += 8
    return starts, lengths, numbers


def text_spans(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, starts, lengths) of an Arrow string array: its bytes, each value's first byte and length (-1: null)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.string())
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + n + 1].astype(np.int64)
    data_buffer = column.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if column.null_count:
        lengths[column.is_null().to_numpy(zero_copy_only=False)] = -1
    return data, offsets[:-1], lengths


class HashAggregator:
    """Group rows by text columns ``text`` and integer columns ``numbers``; aggregate int64 ``values`` by ``ops``.

    ``max_groups`` bounds the table (its memory: about ``max_groups x (len(values) + 4) x 8`` bytes plus the
    key arena, ``arena_bytes``); when it is full, :meth:`add` flushes and goes on.
    """

    def __init__(
        self, text: Sequence[str], numbers: Sequence[str], values: Sequence[tuple[str, int]],
        max_groups: int = 1 << 19, arena_bytes: int = 64 << 20,
    ) -> None:  # fmt: skip
        self.text, self.numbers = tuple(text), tuple(numbers)
        self.values = tuple(name for name, _ in values)
        self.ops = np.array([op for _, op in values], dtype=np.int8)
        self.slots = np.empty((1 << max(int(max_groups * 2 - 1).bit_length(), 1), 2), dtype=np.int64)
        self.key_at = np.empty(max_groups, dtype=np.int64)
        self.key_size = np.empty(max_groups, dtype=np.int64)
        self.words = np.empty(-(-arena_bytes // 8), dtype=np.uint64)
        self.arena = self.words.view(np.uint8)
        self.aggregates = np.empty((max_groups, len(self.values)), dtype=np.int64)
        self.used = np.zeros(2, dtype=np.int64)
        self.slots[:, 0] = -1

    def __len__(self) -> int:
        return int(self.used[0])

    def add(self, text: Sequence[pa.Array], numbers: np.ndarray, values: np.ndarray) -> list[pa.RecordBatch]:
        """Add rows: their text columns (in :attr:`text` order), integer columns (one row of ``numbers`` per
        :attr:`numbers` name) and values (one row per value). Returns the groups flushed to make room (usually none)."""
        spans = [text_spans(column) for column in text]
        n = values.shape[1] if values.ndim == 2 else 0
        data = np.concatenate([d for d, _, _ in spans]) if spans else np.zeros(0, np.uint8)
        bases = np.cumsum([0, *(len(d) for d, _, _ in spans)])[:-1]
        starts = np.zeros((len(spans), n), np.int64)
        lengths = np.zeros((len(spans), n), np.int64)
        for k, ((_, first, length), base) in enumerate(zip(spans, bases, strict=True)):
            starts[k], lengths[k] = first + base, length
        numbers = np.asarray(numbers, dtype=np.int64).reshape(len(self.numbers), n)
        values = np.ascontiguousarray(np.asarray(values, dtype=np.int64).T)
        flushed: list[pa.RecordBatch] = []
        row = 0
        while row < n:
            row = _accumulate(self.slots, self.key_at, self.key_size, self.arena, self.words, self.used,
                              self.aggregates, self.ops, data, starts, lengths, numbers, values, row)  # fmt: skip
            if row < 0:
                raise ArithmeticError(f"an aggregate sum overflows BIGINT (row {-1 - row} of a batch of {n})")
            if row < n:
                if not len(self):
                    raise ValueError(f"a key of row {row} is longer than the aggregator's arena")
                flushed.append(self.flush())
        return flushed

    def flush(self) -> pa.RecordBatch:
        """The groups so far (key columns, then values), in the order they were first seen; the table is emptied."""
        n = len(self)
        starts, lengths, numbers = _split_keys(self.arena, self.key_at, n, len(self.text), len(self.numbers))
        columns: list[pa.Array] = []
        for k in range(len(self.text)):
            data, offsets = gather(self.arena, starts[k], np.maximum(lengths[k], 0))
            validity = np.packbits(lengths[k] >= 0, bitorder="little")
            buffers = [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)]
            columns.append(pa.Array.from_buffers(pa.string(), n, buffers))
        columns += [pa.array(numbers[k]) for k in range(len(self.numbers))]
        columns += [pa.array(self.aggregates[:n, v].copy()) for v in range(len(self.values))]
        self.slots[:, 0] = -1
        self.used[:] = 0
        return pa.RecordBatch.from_arrays(columns, names=[*self.text, *self.numbers, *self.values])
