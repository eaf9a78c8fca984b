"""The compiled group-by behind the delta builder's per-task aggregation, against Arrow's own group-by."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest

from ndr_jobs.features.hash_agg import MAX, MIN, OR, SUM, HashAggregator

VALUES = (("total", SUM), ("low", MIN), ("high", MAX), ("bits", OR))


def rows(n: int, seed: int) -> tuple[list[pa.Array], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # nulls, empty strings and values of several lengths, so that keys differ by length as well as by bytes
    words = [None, "", "a", "ab", "abc", "10.0.0.1", "10.0.0.10", "x" * 300, "é", "ä,b"]
    a = pa.array([words[i] for i in rng.integers(0, len(words), n)], pa.string())
    b = pa.array([words[i] for i in rng.integers(0, 4, n)], pa.string())
    numbers = rng.integers(-3, 3, (1, n))
    values = np.stack([rng.integers(-1000, 1000, n), rng.integers(-50, 50, n), rng.integers(0, 10**12, n),
                       np.left_shift(1, rng.integers(0, 63, n))])  # fmt: skip
    return [a, b], numbers, values


def expected(text: list[pa.Array], numbers: np.ndarray, values: np.ndarray) -> dict[tuple, tuple]:
    out: dict[tuple, list[int]] = {}
    merge = {SUM: lambda x, y: x + y, MIN: min, MAX: max, OR: lambda x, y: x | y}
    for i, key in enumerate(zip(text[0].to_pylist(), text[1].to_pylist(), numbers[0].tolist(), strict=True)):
        row = [int(v) for v in values[:, i]]
        out[key] = [merge[op](a, b) for (_, op), a, b in zip(VALUES, out[key], row, strict=True)] if key in out else row
    return {k: tuple(v) for k, v in out.items()}


def merged(batches: list[pa.RecordBatch]) -> dict[tuple, tuple]:
    """The flushed groups merged again (a key flushed twice appears twice), as the delta job's Spark step does."""
    out: dict[tuple, tuple] = {}
    merge = {SUM: lambda x, y: x + y, MIN: min, MAX: max, OR: lambda x, y: x | y}
    for batch in batches:
        for r in batch.to_pylist():
            key, row = (r["a"], r["b"], r["n"]), tuple(r[name] for name, _ in VALUES)
            if key in out:
                row = tuple(merge[op](x, y) for (_, op), x, y in zip(VALUES, out[key], row, strict=True))
            out[key] = row
    return out


@pytest.mark.parametrize(("max_groups", "batch"), [(1 << 12, 1000), (7, 333), (1, 5000)])
def test_groups_equal_a_reference_group_by_however_often_the_table_fills(max_groups: int, batch: int) -> None:
    text, numbers, values = rows(5000, seed=max_groups)
    table = HashAggregator(["a", "b"], ["n"], VALUES, max_groups=max_groups, arena_bytes=1 << 16)
    out: list[pa.RecordBatch] = []
    for at in range(0, 5000, batch):
        out += table.add([c[at : at + batch] for c in text], numbers[:, at : at + batch], values[:, at : at + batch])
    out.append(table.flush())
    assert len(table) == 0
    assert merged(out) == expected(text, numbers, values)
    if max_groups >= 1 << 12:  # nothing flushed early: one row per key
        assert len(out) == 1 and out[0].num_rows == len(expected(text, numbers, values))
    else:
        assert all(b.num_rows <= max_groups for b in out)


def test_null_and_empty_text_are_different_keys_and_columns_come_back_typed() -> None:
    table = HashAggregator(["a"], [], [("total", SUM)])
    table.add([pa.array([None, "", None, "", "x"], pa.string())], np.zeros((0, 5)), np.array([[1, 2, 3, 4, 5]]))
    out = table.flush()
    assert out.schema == pa.schema([("a", pa.string()), ("total", pa.int64())])
    assert out.to_pylist() == [{"a": None, "total": 4}, {"a": "", "total": 6}, {"a": "x", "total": 5}]


def test_a_sum_past_bigint_raises_instead_of_wrapping() -> None:
    table = HashAggregator(["a"], [], [("total", SUM)])
    big = np.iinfo(np.int64).max
    with pytest.raises(ArithmeticError, match="overflows BIGINT"):
        table.add([pa.array(["k", "k"])], np.zeros((0, 2)), np.array([[big, 1]]))


def test_or_keeps_every_bit() -> None:
    table = HashAggregator([], ["n"], [("bits", OR)])
    bits = np.left_shift(1, np.arange(64, dtype=np.int64))
    table.add([], np.zeros((1, 64), np.int64), bits[None, :])
    assert table.flush().column("bits").to_pylist() == [functools.reduce(lambda x, y: x | y, bits.tolist())]
