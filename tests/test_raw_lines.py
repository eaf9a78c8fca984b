"""Raw mini-batch lines read in the workers: line endings, splits, compressed objects, S3 ranges."""

from __future__ import annotations

import bz2
import gzip
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pytest

from ndr_jobs.datasets import storage
from ndr_jobs.parsing import raw_lines
from ndr_jobs.parsing.raw_lines import Split


def lines_of(split: Split, batch_lines: int = raw_lines.BATCH_LINES) -> list[bytes]:
    return [line.as_py().encode() for batch in raw_lines.read_lines(split, batch_lines) for line in batch]


def read_all(path: Path, max_bytes: int) -> list[bytes]:
    splits = raw_lines.plan_splits([storage.ObjectInfo(str(path), path.stat().st_size)], max_bytes)
    return [line for split in splits for line in lines_of(split)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb\n", [b"a", b"b"]),
        (b"a\nb", [b"a", b"b"]),  # the last line without an ending
        (b"a\r\nb\r\n", [b"a", b"b"]),
        (b"a\rb\r", [b"a", b"b"]),
        (b"a\r\r\nb\n\n\nc", [b"a", b"", b"b", b"", b"", b"c"]),  # empty lines are lines
        (b"", []),
        (b"\n", [b""]),
        (b" \t\n", [b" \t"]),
    ],
)
def test_lines_end_as_in_spark_text_source(tmp_path: Path, data: bytes, expected: list[bytes]) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(data)
    assert read_all(path, 1 << 20) == expected == data.splitlines()


def test_every_cut_reads_every_line_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    pieces = [b"x" * rng.randint(0, 9) + rng.choice([b"\n", b"\r\n", b"\r", b"\r\r\n", b"\n\r"]) for _ in range(80)]
    data = b"".join(pieces) + b"tail"
    path = tmp_path / "x.log"
    path.write_bytes(data)
    for max_bytes in (1, 2, 3, 5, 8, 13, 64, len(data) - 1, len(data)):
        assert read_all(path, max_bytes) == data.splitlines(), max_bytes


def test_a_line_longer_than_the_read_past_margin_is_read_whole(tmp_path: Path) -> None:
    long = b"y" * (3 * 64 * 1024 + 5)
    path = tmp_path / "x.log"
    path.write_bytes(b"a\n" + long + b"\nb\n")
    assert read_all(path, 4) == [b"a", long, b"b"]


def test_batches_split_the_lines_and_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(25)))
    split = raw_lines.plan_splits([storage.ObjectInfo(str(path), path.stat().st_size)])[0]
    assert [len(b) for b in raw_lines.read_lines(split, batch_lines=10)] == [10, 10, 5]
    assert lines_of(split, 10) == [b"%d" % i for i in range(25)]


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress),
                                                  (".deflate", zlib.compress)])  # fmt: skip
def test_a_compressed_object_is_one_split_read_whole(tmp_path: Path, suffix: str, compress: object) -> None:
    data = b"".join(b"line %d\r\n" % i for i in range(1000))
    path = tmp_path / f"x.log{suffix}"
    path.write_bytes(compress(data))  # type: ignore[operator]
    splits = raw_lines.plan_splits([storage.ObjectInfo(str(path), path.stat().st_size)], max_bytes=16)
    assert len(splits) == 1
    assert lines_of(splits[0]) == data.splitlines()


def test_splits_follow_the_objects_and_go_to_tasks_in_order(tmp_path: Path, spark) -> None:  # noqa: ANN001
    objects = [storage.ObjectInfo(str(tmp_path / "a.log"), 25), storage.ObjectInfo(str(tmp_path / "b.log.gz"), 99)]
    splits = raw_lines.plan_splits(objects, 10)
    assert [(s.file_index, s.start, s.end) for s in splits] == [(1, 0, 10), (1, 10, 20), (1, 20, 25), (2, 0, 99)]
    with pytest.raises(ValueError, match="split size"):
        raw_lines.plan_splits(objects, 0)
    # by bytes: 124 bytes in 2 tasks: the 99-byte object alone
    tasks = raw_lines.splits_frame(spark, splits, 2).rdd.glom().collect()
    assert [[(r.file_index, r.start) for r in task] for task in tasks] == [[(1, 0), (1, 10), (1, 20)], [(2, 0)]]
    assert raw_lines.splits_frame(spark, splits).rdd.getNumPartitions() == 4
    many = raw_lines.pack(splits, 10)
    assert len(many) <= 10 and all(many) and sum(many, []) == splits  # no empty task, every split once, in order
    even = [Split(1, "x", i, i + 1, 9) for i in range(9)]
    assert [len(g) for g in raw_lines.pack(even, 3)] == [3, 3, 3]


def test_blank_lines_are_empty_or_spaces_and_tabs() -> None:
    lines = pa.array(["", " ", "\t \t", " x ", "x", " " * 100, " " * 99 + "x", "\u00a0"])
    assert raw_lines.blank(lines).tolist() == [True, True, True, False, False, True, False, False]
    assert raw_lines.blank(lines.slice(3, 3)).tolist() == [False, False, True]
    assert raw_lines.blank(pa.array(["", None], pa.string())).tolist() == [True, True]


def test_s3_objects_are_read_by_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv(storage.LOCAL_S3_ENV, raising=False)
    data = b"".join(b"row %d\n" % i for i in range(500))
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="raw")
        boto3.client("s3").put_object(Bucket="raw", Key="b/x.log", Body=data)
        assert storage.read_range("s3://raw/b/x.log", 5, 12) == data[5:12]
        splits = raw_lines.plan_splits(storage.list_objects("s3://raw/b/"), 100)
        assert len(splits) == len(data) // 100 + 1
        assert [line for s in splits for line in lines_of(s)] == data.splitlines()


def test_lines_that_are_not_utf8_arrive_as_text_with_replacement_characters(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"ok\nbad \xff\xfe end\n\xc3\n")
    splits = raw_lines.plan_splits([storage.ObjectInfo(str(path), path.stat().st_size)])
    assert [line for batch in raw_lines.read_lines(splits[0]) for line in batch.to_pylist()] == [
        "ok", "bad \ufffd\ufffd end", "\ufffd"
    ]  # fmt: skip


# --- streaming decompression and its cap --------------------------------------------------------------------


def one_split(path: Path) -> Split:
    return raw_lines.plan_splits([storage.ObjectInfo(str(path), path.stat().st_size)])[0]


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress),
                                                  (".deflate", zlib.compress)])  # fmt: skip
@pytest.mark.parametrize("stream_bytes", [1, 7, 64, 4096])
def test_a_compressed_object_streams_in_chunks_with_the_same_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, compress: object, stream_bytes: int
) -> None:
    rng = random.Random(stream_bytes)
    endings = [b"\n", b"\r\n", b"\r", b"\r\r\n", b"\n\r"]
    data = b"".join(b"z" * rng.randint(0, 40) + rng.choice(endings) for _ in range(400)) + b"tail\r"
    path = tmp_path / f"x.log{suffix}"
    path.write_bytes(compress(data))  # type: ignore[operator]
    monkeypatch.setattr(raw_lines, "STREAM_BYTES", stream_bytes)  # chunk edges fall inside lines and \r\n pairs
    assert lines_of(one_split(path)) == data.splitlines()


def test_concatenated_streams_and_zero_padding_are_read_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw_lines, "STREAM_BYTES", 16)
    gz, bz = tmp_path / "x.log.gz", tmp_path / "x.log.bz2"
    gz.write_bytes(gzip.compress(b"a\nb\n") + gzip.compress(b"c\n") + b"\0" * 40)
    bz.write_bytes(bz2.compress(b"a\nb\n") + bz2.compress(b"c\nd"))
    assert lines_of(one_split(gz)) == [b"a", b"b", b"c"]
    assert lines_of(one_split(bz)) == [b"a", b"b", b"c", b"d"]


def test_a_decompression_bomb_stops_at_the_cap_with_a_named_error(tmp_path: Path) -> None:
    data = b"".join(b"line %06d\n" % i for i in range(1000)) + b"\n" * (64 << 20)  # 64 MiB of line endings
    path = tmp_path / "bomb.log.gz"
    path.write_bytes(gzip.compress(data, compresslevel=9))
    assert path.stat().st_size < 200_000  # a ratio over 300:1
    got: list[bytes] = []
    with pytest.raises(raw_lines.DecompressedTooLargeError, match="bomb.log.gz decompresses to more than 1048576") as e:
        for batch in raw_lines.read_lines(one_split(path), cap=1 << 20):
            got.extend(line.as_py().encode() for line in batch)
    assert got[:1000] == [b"line %06d" % i for i in range(1000)]  # the lines before the cap were handed out
    assert e.value.lines == len(got) and e.value.cap == 1 << 20
    assert len(got) < (1 << 20)  # and reading stopped near the cap, not at the end of the object


def test_the_cap_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert raw_lines.decompressed_cap() == raw_lines.DEFAULT_DECOMPRESSED_CAP
    monkeypatch.setenv(raw_lines.DECOMPRESSED_CAP_ENV, str(8 << 20))
    assert raw_lines.decompressed_cap() == 8 << 20
    for bad in ("12", "1e9", "-5", "lots"):
        monkeypatch.setenv(raw_lines.DECOMPRESSED_CAP_ENV, bad)
        with pytest.raises(ValueError, match=raw_lines.DECOMPRESSED_CAP_ENV):
            raw_lines.decompressed_cap()


@pytest.mark.parametrize(("name", "data"), [("cut.log.gz", gzip.compress(b"a\n" * 1000, mtime=0)[:-30]),
                                            ("plain.log.gz", b"not compressed\n"),
                                            ("garbage-after.log.bz2", bz2.compress(b"a\n") + b"junk")])  # fmt: skip
def test_a_corrupt_compressed_object_is_a_named_error(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(raw_lines.CorruptCompressedError, match=f"{name} is not valid"):
        lines_of(one_split(path))
