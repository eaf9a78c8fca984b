"""Pair counts on a hand-made delta partition: exact rows, an empty batch, a missing delta, idempotent re-run."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ndr_jobs.datasets import layout
from ndr_jobs.processing.pair_counts_builder_job import (
    PAIR_COUNTS_COLUMNS,
    run_pair_counts_builder_from_runtime_config,
)
from tests.conftest import committed, committed_rows
from tests.test_fg_a import BEACON, NOON, NOW_ROWS, OUTSIDER, SLICE, A, B, S, batch, write_delta

PARTITION = "pair_counts/feature_spec_version=v1/batch_start=20261001T1200"


def run() -> tuple[dict, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run_pair_counts_builder_from_runtime_config(batch())
    return summary, out.getvalue()


def row(src: str, dst: str, port: int, sessions: int, sent: int, received: int, deny: int, first: int,
        last: int) -> dict:  # fmt: skip
    return dict(zip(PAIR_COUNTS_COLUMNS, (src, dst, port, sessions, sent, received, deny,
                                          NOON + timedelta(minutes=first), NOON + timedelta(minutes=last),
                                          (1 << first) | (1 << last), NOON, NOON + SLICE), strict=True))  # fmt: skip


EXPECTED = [
    row(A, "1.2.3.4", 25, 3, 74, 0, 3, 1, 3),
    row(A, S, 443, 3, 310, 3020, 0, 1, 3),  # ssl + web-browsing on one port: one pair
    row(A, "8.8.8.8", 53, 1, 70, 150, 0, 1, 3),
    row(A, BEACON, 443, 4, 400, 800, 0, 1, 3),
    row(B, S, 443, 1, 5, 6, 1, 1, 3),
    row(B, "8.8.4.4", 53, 1, 60, 0, 0, 1, 3),
    row(OUTSIDER, S, 443, 1, 1, 1, 0, 1, 3),  # every source, internal or not
]


def test_exact_rows_and_rerun(spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    store = tmp_path / "store"
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    write_delta(spark, store, NOON, NOW_ROWS)
    summary, printed = run()
    assert json.loads(printed.strip().splitlines()[-1]) == summary
    assert summary["pairs"] == 7 and summary["output"] == str(store / PARTITION)
    table = layout.partition_table(str(store / PARTITION))
    assert table is not None and table.column_names == list(PAIR_COUNTS_COLUMNS)
    assert table.to_pylist() == EXPECTED
    first = committed(store / PARTITION)
    run()
    assert committed_rows(store / PARTITION) == EXPECTED
    assert committed(store / PARTITION) == first and list(first) == ["part-00000.snappy.parquet"]
    # re-delivered smaller: the partition is replaced, not appended to
    write_delta(spark, store, NOON, [r for r in NOW_ROWS if r["src_ip"] == B])
    assert run()[0]["pairs"] == 2
    assert committed_rows(store / PARTITION) == [r for r in EXPECTED if r["src_ip"] == B]


def test_an_empty_delta_gives_an_empty_partition_and_a_missing_one_an_error(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    with pytest.raises(FileNotFoundError, match="no delta partition for 20261001T1200"):
        run()
    write_delta(spark, store, NOON, [])
    assert run()[0]["pairs"] == 0
    table = layout.partition_table(str(store / PARTITION))
    assert table is not None and (table.num_rows, table.column_names) == (0, list(PAIR_COUNTS_COLUMNS))
