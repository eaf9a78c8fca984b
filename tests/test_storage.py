"""The commit protocol of dataset partitions (``ndr_jobs.datasets.storage``, ``docs/datasets.md``): a crash at each
point of a commit, on the local disk (Spark writes) and on moto's S3 over HTTP (pyarrow writes: no Spark talks to
moto); two writers of one partition at once; the janitor; manifests that are not the protocol's."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.model.features import read_partitions
from tests.conftest import committed, committed_rows

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 10, 1, 12, tzinfo=UTC)
PART = layout.batch_partition("v1", START)
OLD = pa.table({"host_ip": [f"10.0.0.{i}" for i in range(30)], "sessions": [float(i) for i in range(30)]})
NEW = pa.table({"host_ip": [f"10.0.1.{i}" for i in range(45)], "sessions": [float(-i) for i in range(45)]})
ROWS_PER_FILE = 20  # NEW is three files, OLD two: a crash "mid data" has some of them in place

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A storage root on moto's S3 in server mode: boto3 over real HTTP (conditional writes included)."""
    monkeypatch.delenv(storage.LOCAL_S3_ENV, raising=False)
    boto3.client("s3").create_bucket(Bucket="store")
    return "s3://store/ndr"


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3")


def partition(root: str) -> str:
    return storage.partition_path(root, "fg_a", PART)


def write(table: pa.Table, root: str) -> storage.PartitionWrite:
    return storage.write_table(table, root, "fg_a", PART, rows_per_file=ROWS_PER_FILE)


def crash_at(point: str) -> Callable[[str, str], None]:
    def hook(at: str, _partition: str) -> None:
        if at == point:
            raise storage.InjectedFault(at)

    return hook


def seen(root: str) -> list[dict] | None:
    """What every reader without Spark sees of the partition (they must agree); None when it does not exist."""
    listed = START in layout.existing_batches(root, "fg_a", "v1")
    files = storage.committed_files(partition(root))
    if files is None:
        assert not listed and layout.partition_rows(root, "fg_a", "v1", START) is None
        assert read_partitions(root, "fg_a", "v1", [START]) is None
        return None
    rows = committed_rows(partition(root))
    assert listed and layout.partition_rows(root, "fg_a", "v1", START) == len(rows)
    table = read_partitions(root, "fg_a", "v1", [START])  # the training/inference reader
    assert table is not None and table.drop_columns(["batch_start_ts"]).to_pylist() == rows
    return rows


def runs(root: str) -> list[str]:
    prefix = storage.join(partition(root), storage.RUNS_DIR)
    return sorted({o.path[len(prefix) + 1 :].split("/", 1)[0] for o in storage.list_objects(prefix)})


def normalized(root: str) -> dict[str, Any]:
    """The manifest without what differs between runs (run id, writer, the prefix named after the run)."""
    body = json.loads(storage.read_bytes(storage.join(partition(root), storage.MANIFEST)))
    return {k: v for k, v in body.items() if k not in ("run_id", "writer", "prefix")}


# --- crashes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", storage.COMMIT_POINTS)
def test_a_crash_at_any_point_leaves_the_whole_old_or_the_whole_new_partition(root: str, point: str):
    clean_root = storage.join(root, "clean")
    write(NEW, clean_root)  # what a run that never crashed writes
    old = write(OLD, root)
    with storage.commit_hook(crash_at(point)), pytest.raises(storage.InjectedFault):
        write(NEW, root)
    crashed = runs(root)
    if point == "after_pointer":
        assert seen(root) == NEW.to_pylist()
    else:
        assert seen(root) == OLD.to_pylist()  # never a mix, whatever the crashed run left
    if point in ("mid_data", "before_pointer"):
        assert len(crashed) == 2 and old.run_id in crashed  # its files are there, and nobody reads them

    rerun = write(NEW, root)
    assert seen(root) == NEW.to_pylist()
    assert committed(partition(root)) == committed(partition(clean_root))  # byte for byte
    assert normalized(root) == normalized(clean_root)
    assert len(committed(partition(root))) == 3
    # the janitor, once the grace period is over, leaves the committed run only
    later = time.time() + 3600
    assert storage.sweep_partition(partition(root), grace=60, now=later) == sorted(set(crashed) - {rerun.run_id})
    assert runs(root) == [rerun.run_id] and seen(root) == NEW.to_pylist()


def test_a_crash_of_the_first_write_leaves_no_partition(root: str):
    with storage.commit_hook(crash_at("before_pointer")), pytest.raises(storage.InjectedFault):
        write(NEW, root)
    orphans = runs(root)
    assert seen(root) is None and len(orphans) == 1
    assert storage.sweep_partition(partition(root), grace=60, now=time.time() + 3600) == orphans
    assert runs(root) == [] and seen(root) is None


@pytest.mark.parametrize("point", storage.COMMIT_POINTS)
def test_a_spark_write_crashed_at_any_point_reads_old_or_new_through_spark(spark, tmp_path: Path, point: str):  # noqa: ANN001
    """The Spark writer (``write_partition``: Spark's part files renamed in the run prefix, three of them) and the
    Spark reader (``layout.read_batches``) on the local disk."""
    root = str(tmp_path / "store")

    def put(table: pa.Table, at: str = root) -> storage.PartitionWrite:
        frame = spark.createDataFrame(table.to_pandas())
        return storage.write_partition(frame, at, "fg_a", PART, ["host_ip"], num_files=3)

    def read() -> list[tuple[str, float]]:
        frame = layout.read_batches(spark, root, "fg_a", "v1", [START])
        assert frame is not None and frame.columns == ["host_ip", "sessions", "batch_start_ts"]
        return sorted((r.host_ip, r.sessions) for r in frame.collect())

    put(NEW, str(tmp_path / "clean"))
    put(OLD)
    with storage.commit_hook(crash_at(point)), pytest.raises(storage.InjectedFault):
        put(NEW)
    expected = NEW if point == "after_pointer" else OLD
    assert read() == sorted(zip(expected["host_ip"].to_pylist(), expected["sessions"].to_pylist(), strict=True))
    put(NEW)
    assert read() == sorted(zip(NEW["host_ip"].to_pylist(), NEW["sessions"].to_pylist(), strict=True))
    clean = partition(str(tmp_path / "clean"))
    assert committed(partition(root)) == committed(clean) and len(committed(clean)) == 3


def test_rows_other_than_the_caller_counted_commit_nothing(spark, tmp_path: Path):  # noqa: ANN001
    root = str(tmp_path)
    frame = spark.createDataFrame(OLD.to_pandas())
    storage.write_partition(frame, root, "fg_a", PART, ["host_ip"], 1, OLD.num_rows)
    before = committed(partition(root)), runs(root)
    with pytest.raises(storage.RowCountMismatch, match="the run wrote 30 rows, its caller counted 31"):
        storage.write_partition(frame, root, "fg_a", PART, ["host_ip"], 1, 31)
    assert (committed(partition(root)), runs(root)) == before


def test_a_killed_writer_process_leaves_the_old_partition(s3: str):
    """``NDR_COMMIT_FAULT`` kills the writing process itself (no finally, no clean-up) just before the pointer."""
    write(OLD, s3)
    script = ("import pyarrow as pa; from ndr_jobs.datasets import storage; from tests.test_storage import NEW, write; "
              f"write(NEW, {s3!r})")  # fmt: skip
    env = {**os.environ, storage.FAULT_ENV: "before_pointer@fg_a", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == storage.FAULT_EXIT_CODE, done.stderr[-2000:]
    assert seen(s3) == OLD.to_pylist() and len(runs(s3)) == 2  # the killed run's three files are orphans
    env[storage.FAULT_ENV] = "before_pointer@delta"  # another dataset's fault: this write goes through
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert seen(s3) == NEW.to_pylist()


# --- two writers ------------------------------------------------------------------------------------------


def race(root: str, first: pa.Table, second: pa.Table) -> dict[str, Any]:
    """Two threads write the partition; both read the pointer and write their data before either commits,
    then the first commits and the second tries to."""
    both_staged = threading.Barrier(2, timeout=60)
    first_committed = threading.Event()
    results: dict[str, Any] = {}

    def hook(at: str, _partition: str) -> None:
        name = threading.current_thread().name
        if at == "before_pointer":
            both_staged.wait()
            if name == "second":
                assert first_committed.wait(60)
        if at == "after_pointer" and name == "first":
            first_committed.set()

    def writer(name: str, table: pa.Table) -> None:
        try:
            results[name] = write(table, root)
        except storage.CommitConflict as exc:
            results[name] = exc
        finally:
            if name == "first":
                first_committed.set()

    with storage.commit_hook(hook):
        threads = [threading.Thread(target=writer, args=a, name=a[0]) for a in (("first", first), ("second", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    return results


@pytest.mark.parametrize("previous", [False, True], ids=["first-write", "rewrite"])
def test_two_writers_with_different_data_one_wins_the_other_fails_cleanly(root: str, previous: bool):
    if previous:
        write(OLD, root)
    results = race(root, NEW, OLD.slice(0, 5))
    assert isinstance(results["first"], storage.PartitionWrite)
    assert isinstance(results["second"], storage.CommitConflict)
    assert "the pointer changed since this run read it" in str(results["second"])
    assert seen(root) == NEW.to_pylist()  # the winner's, whole
    assert results["first"].run_id in runs(root)
    assert len(runs(root)) == (2 if previous else 1)  # the loser's prefix is gone; the old one waits for the janitor


def test_two_writers_of_the_same_data_converge(root: str):
    results = race(root, NEW, NEW)
    first, second = results["first"], results["second"]
    assert isinstance(first, storage.PartitionWrite) and isinstance(second, storage.PartitionWrite)
    assert second.run_id == first.run_id and second.files == first.files  # the second adopts the first's commit
    assert runs(root) == [first.run_id] and seen(root) == NEW.to_pylist()


# --- the janitor ------------------------------------------------------------------------------------------


def test_the_janitor_waits_out_the_grace_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = str(tmp_path)
    first, second = write(OLD, root), write(NEW, root)
    now = time.time()
    assert storage.sweep_partition(partition(root), grace=600, now=now) == []  # a reader may hold the old manifest
    assert runs(root) == sorted([first.run_id, second.run_id])
    # an hour later for the pointer and both runs, but a run prefix written just now (a writer in flight): kept
    for path in Path(partition(root)).rglob("*"):
        os.utime(path, (now - 3600, now - 3600))
    in_flight = Path(partition(root)) / storage.RUNS_DIR / "20261001T120000Z-00000000000000ff"
    in_flight.mkdir()
    (in_flight / "part-00000.snappy.parquet").write_bytes(b"partial")
    assert storage.sweep_partition(partition(root), grace=600, now=now) == [first.run_id]
    assert runs(root) == sorted([in_flight.name, second.run_id])
    assert storage.sweep_partition(partition(root), grace=600, now=now + 3600) == [in_flight.name]
    assert runs(root) == [second.run_id] and seen(root) == NEW.to_pylist()
    # every write sweeps its partition first, with $NDR_DATASET_GRACE_SECONDS
    monkeypatch.setenv(storage.GRACE_ENV, "0")
    third = write(OLD, root)
    assert runs(root) == sorted([second.run_id, third.run_id])  # the one it replaced stays until the next write
    assert sorted(p.name for p in (Path(partition(root)) / storage.RUNS_DIR).iterdir()) == runs(root)


def test_bad_settings_are_named_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(storage.GRACE_ENV, "an hour")
    with pytest.raises(ValueError, match="NDR_DATASET_GRACE_SECONDS='an hour' is not a number"):
        write(OLD, str(tmp_path))
    monkeypatch.setenv(storage.GRACE_ENV, "-1")
    with pytest.raises(ValueError, match="must not be negative"):
        write(OLD, str(tmp_path))
    monkeypatch.delenv(storage.GRACE_ENV)
    monkeypatch.setenv(storage.FAULT_ENV, "halfway")
    with pytest.raises(ValueError, match="NDR_COMMIT_FAULT='halfway': the point must be one of before_data"):
        write(OLD, str(tmp_path))
    assert seen(str(tmp_path)) is None and runs(str(tmp_path)) == []


def test_many_manifests_are_read_at_once_in_order(root: str):
    starts = [START.replace(minute=15 * i) for i in range(4)]
    for i, start in enumerate(starts):
        if i != 2:  # one window never written
            storage.write_table(OLD.slice(0, i + 1), root, "fg_a", layout.batch_partition("v1", start))
    partitions = [storage.partition_path(root, "fg_a", layout.batch_partition("v1", s)) for s in starts]
    many = storage.committed_files_many(partitions)
    assert many == [storage.committed_files(p) for p in partitions] and many[2] is None
    assert [len(f or []) for f in many] == [1, 1, 0, 1]
    assert layout.existing_batches(root, "fg_a", "v1") == [s for i, s in enumerate(starts) if i != 2]


# --- manifests --------------------------------------------------------------------------------------------


def test_the_manifest_names_the_run_its_files_rows_and_checksums(tmp_path: Path):
    import hashlib

    written = write(NEW, str(tmp_path))
    body = json.loads((Path(written.path) / storage.MANIFEST).read_text())
    assert body["format"] == storage.MANIFEST_FORMAT and body["dataset"] == "fg_a"
    assert body["partition"] == "feature_spec_version=v1/batch_start=20261001T1200"
    assert body["prefix"] == f"_runs/{written.run_id}/" and body["rows"] == 45 == written.rows
    assert [(f["name"], f["rows"]) for f in body["files"]] == [
        ("part-00000.snappy.parquet", 20), ("part-00001.snappy.parquet", 20), ("part-00002.snappy.parquet", 5)]
    for f, path in zip(body["files"], written.files, strict=True):
        data = Path(path).read_bytes()
        assert (f["bytes"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert written.data_prefix == f"{written.path}/_runs/{written.run_id}/"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b["files"][0].update(name="../../../../etc/passwd"), "bad file entry"),
        (lambda b: b.update(run_id="../elsewhere", prefix="_runs/../elsewhere/"), "are not a run prefix"),
        (lambda b: b.update(prefix="_runs/"), "are not a run prefix"),
        (lambda b: b.update(rows=1), "row total"),
        (lambda b: b["files"].append(dict(b["files"][0])), "duplicate file names"),
        (lambda b: b.update(format="delta"), "format 'delta'"),
        (lambda b: b.pop("files"), "not a partition manifest"),
    ],
)  # fmt: skip
def test_a_manifest_that_is_not_the_protocols_is_refused_by_readers(tmp_path: Path, change: Callable, error: str):
    written = write(NEW, str(tmp_path))
    manifest = Path(written.path) / storage.MANIFEST
    body = json.loads(manifest.read_text())
    change(body)
    manifest.write_text(json.dumps(body))
    with pytest.raises(storage.ManifestError, match=error):
        storage.committed_files(written.path)
    with pytest.raises(storage.ManifestError, match=error):
        layout.partition_rows(str(tmp_path), "fg_a", "v1", START)
    rerun = write(OLD, str(tmp_path))  # a rerun replaces it (the janitor deletes nothing while it cannot tell)
    assert seen(str(tmp_path)) == OLD.to_pylist() and rerun.run_id in runs(str(tmp_path))


# --- the dataset journal and the operator's janitor ---------------------------------------------------------


def other_partition(root: str) -> list[tuple[str, str]]:
    return layout.batch_partition("v1", START.replace(hour=13))


def test_a_rewritten_partition_is_cleaned_by_the_next_write_anywhere_in_the_dataset(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    first = write(OLD, root)
    second = write(NEW, root)  # supersedes the first run: journalled
    with storage.commit_hook(crash_at("before_pointer")), pytest.raises(storage.InjectedFault):
        write(OLD, root)  # a crashed run: its journal entry stays
    assert len(runs(root)) == 3 and first.run_id in runs(root)
    journal = storage.join(root, "fg_a", storage.JOURNAL_DIR)
    assert len(storage.list_objects(journal, include_hidden=True)) == 2  # the superseded run, the crashed one
    # within the grace period another partition's write leaves them
    storage.write_table(OLD, root, "fg_a", other_partition(root))
    assert len(runs(root)) == 3
    # past it, the next write of any partition of the dataset removes both, and settles its journal
    monkeypatch.setenv(storage.GRACE_ENV, "0")
    storage.write_table(NEW, root, "fg_a", other_partition(root))
    assert runs(root) == [second.run_id] and seen(root) == NEW.to_pylist()
    (left,) = storage.list_objects(journal, include_hidden=True)  # the other partition's first run: superseded
    entry = json.loads(storage.read_bytes(left.path))  # by the write that swept, so not yet due
    assert left.path.endswith(f"/{entry['run_id']}.json") and not entry["partition"].endswith("T1200")


def test_a_journal_entry_that_is_not_the_protocols_deletes_nothing(tmp_path: Path):
    root = str(tmp_path)
    write(OLD, root)
    journal = Path(root) / "fg_a" / storage.JOURNAL_DIR
    journal.mkdir(parents=True, exist_ok=True)
    hostile = {"partition": "../../elsewhere", "run_id": "20261001T120000Z-00000000000000aa"}
    (journal / "20261001T120000Z-00000000000000aa.json").write_text(json.dumps(hostile))
    (journal / "garbage.json").write_text("{not json")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep")
    assert storage.sweep_journal(root, "fg_a", grace=0) == []
    assert (tmp_path / "elsewhere" / "keep.txt").exists() and seen(root) == OLD.to_pylist()
    assert not journal.exists() or not any(journal.iterdir())  # dropped: they name nothing to delete


def test_the_janitor_command_adopts_old_layout_partitions_and_verifies_checksums(
    root: str, capsys: pytest.CaptureFixture[str]
):
    from ndr_jobs.datasets import janitor

    write(OLD, root)
    # a partition in the layout before the commit protocol: loose Parquet files, no manifest
    legacy = storage.partition_path(root, "fg_a", other_partition(root))
    for i in range(2):
        import io

        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(NEW.slice(i * 30, 30), buffer)
        storage.write_bytes(storage.join(legacy, f"part-0000{i}-abc.snappy.parquet"), buffer.getvalue())
    assert storage.committed_files(legacy) is None  # invisible to readers
    assert janitor.main([root]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["legacy_left"] == [legacy] and report["legacy_adopted"] == []
    assert janitor.main([root, "--adopt-legacy", "--verify"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["legacy_adopted"] == [legacy] and report["verify_failures"] == []
    assert committed_rows(legacy) == NEW.to_pylist()
    assert [o.path for o in storage.list_objects(legacy)] == []  # the loose files are gone (all under _runs/)
    # a committed file changed behind the manifest's back
    victim = storage.committed_files(partition(root))[0]
    storage.write_bytes(victim, storage.read_bytes(victim)[:-8] + b"tampered")
    assert janitor.main([root, "--verify"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["verify_failures"] == [
        f"{victim}: {len(storage.read_bytes(victim))} bytes and a SHA-256 other than the manifest's"
    ]
    assert victim in captured.err
