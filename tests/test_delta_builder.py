"""The 15-minute delta builder on a hand-made batch: exact aggregates, window, quarantine, idempotence,
failed writes, the storage layer (local and S3) and the real script in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.parsing import raw_lines
from ndr_jobs.processing.delta_builder_job import (
    DELTA_COLUMNS,
    QUARANTINE_COLUMNS,
    QuarantineRatioExceededError,
    RawPathError,
    confine_objects,
    delta_files,
    raw_batch_folder,
    run_delta_builder_from_runtime_config,
    task_bytes,
)
from ndr_jobs.runtime.config import BatchRuntime, DeltaRuntime
from ndr_jobs.runtime.spark import sql_conf
from tests.conftest import committed, committed_rows
from tests.test_panos import traffic_line

ROOT = Path(__file__).resolve().parents[1]
START, END = "2026-10-01T12:00:00Z", "2026-10-01T12:15:00Z"
BATCH_ID = "acme-ndr-prod-v1-20261001T1200"
PARTITION = "feature_spec_version=v1/batch_start=20261001T1200"
A, B, SERVER = "10.0.0.1", "10.0.0.9", "10.0.0.2"


def session(src: str, dst: str, port: int, at: str, **fields: str | int) -> str:
    """A TRAFFIC line of one session at ``at`` (high-resolution time, ``HH:MM:SS.fff`` on 2026-10-01)."""
    values = {
        7: src, 8: dst, 25: port, 102: f"2026-10-01T{at}+00:00", 29: "tcp", 14: "ssl", 30: "allow", 16: "trust",
        17: "untrust", 23: 1, 32: 0, 33: 0, 31: 0, 34: 0, 44: 0, 45: 0, 36: 0, 46: "tcp-fin",
    }  # fmt: skip
    names = {"proto": 29, "app": 14, "action": 30, "repeat": 23, "sent": 32, "received": 33, "packets": 34,
             "pkts_sent": 44, "pkts_received": 45, "elapsed": 36, "end": 46}  # fmt: skip
    for name, value in fields.items():
        values[names[name]] = value
    values[31] = int(values[32]) + int(values[33])
    return traffic_line({k: str(v) for k, v in values.items()})


# A: 3 sessions to 2 destinations (two to SERVER:443, one DNS), plus a denied SMTP log repeated 3 times;
# B: a reset session to SERVER:443 and a DNS session whose end reason is not one of the named ones.
IN_WINDOW = [
    session(A, SERVER, 443, "12:01:00.000", sent=100, received=1000, packets=10, pkts_sent=4, pkts_received=6,
            elapsed=5, end="tcp-fin"),
    session(A, SERVER, 443, "12:05:30.500", sent=200, received=2000, packets=20, pkts_sent=8, pkts_received=12,
            elapsed=7, end="tcp-rst-from-server"),
    session(A, "8.8.8.8", 53, "12:14:59.999", proto="udp", app="dns-base", sent=70, received=150, packets=2,
            pkts_sent=1, pkts_received=1, end="aged-out"),
    session(A, "1.2.3.4", 25, "12:07:00.000", app="smtp", action="deny", repeat=3, sent=74, packets=1, pkts_sent=1,
            end="policy-deny"),
    session(B, SERVER, 443, "12:10:00.000", action="reset-both", sent=5, received=6, packets=2, pkts_sent=1,
            pkts_received=1, elapsed=1, end="threat"),
    session(B, "8.8.4.4", 53, "12:11:00.000", proto="udp", app="dns-base", sent=60, received=0, packets=1,
            pkts_sent=1, end="n/a"),
]  # fmt: skip
OUT_OF_WINDOW = [
    session(A, SERVER, 443, "11:59:59.999", sent=1, received=1),  # late arrival: before the window
    session(A, SERVER, 443, "12:15:00.000", sent=1, received=1),  # the window is half-open: after it
]
MALFORMED = [
    (traffic_line(n_fields=30), "too_few_fields", "30"),
    (traffic_line({3: "THREAT"}), "not_traffic", "THREAT"),
    (traffic_line({25: "https"}), "bad_number", "dst_port"),
    (traffic_line({6: "2026/13/01 00:00:00"}), "bad_timestamp", "generated_time"),
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def delta_row(src: str, dst: str, port: int, proto: str, app: str, action: str, **values: object) -> dict:
    row = dict.fromkeys(DELTA_COLUMNS, 0)
    row.update(src_ip=src, dst_ip=dst, dst_port=port, protocol=proto, app=app, action=action, from_zone="trust",
               to_zone="untrust", batch_start_ts=utc(2026, 10, 1, 12), batch_end_ts=utc(2026, 10, 1, 12, 15))
    row.update(values)
    return row


EXPECTED_DELTA = [
    delta_row(A, "1.2.3.4", 25, "tcp", "smtp", "deny", sessions=3, log_records=1, bytes_sent=74, packets=1,
              packets_sent=1, deny_count=3, end_policy_deny=3, first_seen=utc(2026, 10, 1, 12, 7),
              last_seen=utc(2026, 10, 1, 12, 7), active_minutes=1 << 7),
    delta_row(A, SERVER, 443, "tcp", "ssl", "allow", sessions=2, log_records=2, bytes_sent=300, bytes_received=3000,
              packets=30, packets_sent=12, packets_received=18, duration_sum=12, duration_max=7, end_tcp_fin=1,
              end_tcp_rst_from_server=1, first_seen=utc(2026, 10, 1, 12, 1),
              last_seen=utc(2026, 10, 1, 12, 5, 30, 500000), active_minutes=(1 << 1) | (1 << 5)),
    delta_row(A, "8.8.8.8", 53, "udp", "dns-base", "allow", sessions=1, log_records=1, bytes_sent=70,
              bytes_received=150, packets=2, packets_sent=1, packets_received=1, end_aged_out=1,
              first_seen=utc(2026, 10, 1, 12, 14, 59, 999000), last_seen=utc(2026, 10, 1, 12, 14, 59, 999000),
              active_minutes=1 << 14),
    delta_row(B, SERVER, 443, "tcp", "ssl", "reset-both", sessions=1, log_records=1, bytes_sent=5, bytes_received=6,
              packets=2, packets_sent=1, packets_received=1, deny_count=1, duration_sum=1, duration_max=1,
              end_threat=1, first_seen=utc(2026, 10, 1, 12, 10), last_seen=utc(2026, 10, 1, 12, 10),
              active_minutes=1 << 10),
    delta_row(B, "8.8.4.4", 53, "udp", "dns-base", "allow", sessions=1, log_records=1, bytes_sent=60, packets=1,
              packets_sent=1, end_other=1, first_seen=utc(2026, 10, 1, 12, 11), last_seen=utc(2026, 10, 1, 12, 11),
              active_minutes=1 << 11),
]  # fmt: skip


def write_batch(folder: Path) -> None:
    """The hand-made batch in two files (one gzipped), blank lines and a hidden file that must be ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    first = [*IN_WINDOW[:4], "", OUT_OF_WINDOW[0], MALFORMED[0][0], MALFORMED[1][0], MALFORMED[1][0]]
    second = [*IN_WINDOW[4:], "   ", OUT_OF_WINDOW[1], MALFORMED[2][0], MALFORMED[3][0]]
    (folder / "traffic-00.log").write_text("\n".join(first) + "\n")
    (folder / "traffic-01.log.gz").write_bytes(gzip.compress(("\n".join(second) + "\n").encode(), mtime=0))
    (folder / "_SUCCESS").write_text("")
    (folder / ".upload.tmp").write_text("not a log line\n")


def runtime(folder: Path | str = "") -> BatchRuntime:
    return BatchRuntime(project_name="ndr-prod", feature_spec_version="v1", mini_batch_id=BATCH_ID,
                        batch_start_ts=START, batch_end_ts=END, raw_batch_folder=str(folder))  # fmt: skip


def use(monkeypatch: pytest.MonkeyPatch, base: Path) -> dict[str, Path]:
    """Point the job at ``base/raw`` and ``base/store``."""
    raw, store = base / "raw", base / "store"
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    monkeypatch.setenv("NDR_RAW_ROOT", str(raw))
    monkeypatch.delenv("NDR_ORG_ID", raising=False)
    return {"raw": raw, "store": store, "folder": raw / "pan-traffic/acme/ndr-prod/v1/2026/10/01/1200"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The hand-made batch in its contract folder, nothing built yet."""
    paths = use(monkeypatch, tmp_path)
    write_batch(paths["folder"])
    return paths


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:  # noqa: ANN001
    """One run of the job on the hand-made batch: (its base directory, its summary, what it printed)."""
    import contextlib
    import io

    base = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as monkeypatch:
        paths = use(monkeypatch, base)
        write_batch(paths["folder"])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            summary = run_delta_builder_from_runtime_config(runtime(paths["folder"]))
    return base, summary, out.getvalue()


@pytest.fixture
def rebuilt(built: tuple[Path, dict, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private copy of the built batch (raw and output), for tests that change it."""
    import shutil

    shutil.copytree(built[0], tmp_path / "copy")
    return use(monkeypatch, tmp_path / "copy")


def read(path: Path) -> list[dict]:
    """A Parquet file's rows, or a partition's (through its manifest)."""
    return pq.read_table(path).to_pylist() if path.is_file() else committed_rows(path)


def read_quarantine(path: Path) -> list[dict]:
    """Quarantine rows, with each source file's name only (copies of a batch live in other directories)."""
    return [{**r, "source_file": Path(r["source_file"]).name} for r in read(path)]


def files(path: Path) -> dict[str, bytes]:
    """A partition's committed data files and its runs (one: no failed or earlier run left behind)."""
    return {**committed(path), "runs": ",".join(sorted(p.name for p in (path / storage.RUNS_DIR).iterdir())).encode()}


# --- the job -----------------------------------------------------------------------------------------------


def test_exact_delta_rows_and_summary(built: tuple[Path, dict, str]) -> None:
    base, summary, printed = built
    store, folder = base / "store", base / "raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200"
    assert json.loads(printed.strip().splitlines()[-1]) == summary
    assert {k: v for k, v in summary.items() if k not in ("seconds", "phase_seconds", "raw_bytes")} == {
        "job": "delta_builder",
        "mini_batch_id": BATCH_ID,
        "project_name": "ndr-prod",
        "feature_spec_version": "v1",
        "batch_start_ts": START,
        "batch_end_ts": END,
        "raw_batch_folder": str(folder),
        "raw_files": 2,
        "rows_read": 13,
        "blank_lines": 2,
        "rows_parsed": 8,
        "rows_quarantined": 5,
        "quarantined_by_reason": {"bad_number": 1, "bad_timestamp": 1, "not_traffic": 2, "too_few_fields": 1},
        "rows_in_window": 6,
        "rows_before_window": 1,
        "rows_after_window": 1,
        "delta_rows": 5,
        "quarantine_ratio": round(5 / 13, 6),
        "max_quarantine_ratio": 0.5,
        "quarantine_guard": "passed",
        "outputs": {name: f"{store}/{name}/{PARTITION}" for name in ("delta", "quarantine")},
        "output_files": {"delta": 1, "quarantine": 1},
    }
    delta = store / "delta" / PARTITION
    assert sorted(p.name for p in delta.iterdir()) == ["_manifest.json", "_runs"]
    (data,) = storage.committed_files(str(delta)) or []
    assert data.endswith("/part-00000.snappy.parquet")  # only the data file: no _SUCCESS, no checksum file
    assert pq.read_schema(data).names == list(DELTA_COLUMNS)
    assert read(delta) == EXPECTED_DELTA  # sorted by the key columns
    assert sorted(p.name for p in (store / "delta").iterdir()) == ["feature_spec_version=v1"]  # no staging left


def test_quarantine_keeps_each_malformed_line_with_its_reason(built: tuple[Path, dict, str]) -> None:
    rows = read(built[0] / "store" / "quarantine" / PARTITION)
    assert [tuple(r[c] for c in QUARANTINE_COLUMNS if c != "source_file") for r in rows] == sorted(
        (reason, detail, line, BATCH_ID) for line, reason, detail in [*MALFORMED, MALFORMED[1]]
    )  # the THREAT line came twice: it is quarantined twice
    assert {Path(r["source_file"]).name for r in rows} == {"traffic-00.log", "traffic-01.log.gz"}


def test_rerun_replaces_never_duplicates(rebuilt: dict[str, Path]) -> None:
    delta, quarantine = rebuilt["store"] / "delta" / PARTITION, rebuilt["store"] / "quarantine" / PARTITION
    first = read(delta), read_quarantine(quarantine), committed(delta)
    run_delta_builder_from_runtime_config(runtime(rebuilt["folder"]))
    assert (read(delta), read_quarantine(quarantine), committed(delta)) == first  # the same bytes
    # the batch is re-delivered without its second file: the partitions shrink to what is left
    (rebuilt["folder"] / "traffic-01.log.gz").unlink()
    summary = run_delta_builder_from_runtime_config(runtime(rebuilt["folder"]))
    assert summary["delta_rows"] == 3 and summary["rows_quarantined"] == 3
    assert read(delta) == [r for r in EXPECTED_DELTA if r["src_ip"] == A]
    assert [r["reason"] for r in read(quarantine)] == ["not_traffic", "not_traffic", "too_few_fields"]


def test_a_failing_run_leaves_the_previous_output(rebuilt: dict[str, Path]) -> None:
    delta, quarantine = rebuilt["store"] / "delta" / PARTITION, rebuilt["store"] / "quarantine" / PARTITION
    before = files(delta), files(quarantine)
    (rebuilt["folder"] / "traffic-02.log.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")  # a torn upload
    with pytest.raises(Exception, match="(?i)gzip|header|EOF|corrupt"):
        run_delta_builder_from_runtime_config(runtime(rebuilt["folder"]))
    assert (files(delta), files(quarantine)) == before
    assert sorted(p.name for p in (rebuilt["store"] / "delta").iterdir()) == ["feature_spec_version=v1"]


def test_a_write_that_fails_midway_leaves_the_partition_and_no_staging(spark, tmp_path: Path) -> None:  # noqa: ANN001
    from pyspark.sql import functions as F

    part = [("feature_spec_version", "v1"), ("batch_start", "20261001T1200")]
    good = spark.range(100).select(F.col("id"), (F.col("id") * 2).alias("twice"))
    written = storage.write_partition(good, str(tmp_path), "demo", part, ["id"])
    target = Path(written.path)
    before = files(target)
    failing = spark.range(100).select(
        F.col("id"), F.when(F.col("id") == 57, F.raise_error(F.lit("boom"))).otherwise(F.col("id")).alias("twice")
    )
    with pytest.raises(Exception, match="boom"):
        storage.write_partition(failing, str(tmp_path), "demo", part, ["id"])
    assert files(target) == before
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["feature_spec_version=v1"]
    # more rows than one file holds: several files, each in key order, the same ones on every write
    again = storage.write_partition(good, str(tmp_path), "demo", part, ["id"], num_files=3, rows=100)
    assert [Path(f).name for f in again.files] == [f"part-0000{i}.snappy.parquet" for i in range(3)]
    ids = [[r["id"] for r in read(Path(f))] for f in again.files]
    assert all(i == sorted(i) and i for i in ids) and sorted(sum(ids, [])) == list(range(100))
    three = committed(target)
    storage.write_partition(good.orderBy(F.desc("id")), str(tmp_path), "demo", part, ["id"], num_files=3)
    assert committed(target) == three  # byte for byte, from another run prefix
    # rows the caller already spread by the same hash (as the delta builder's merge does) make the same files
    spread = good.repartition(3, "id").where("twice >= 0")
    storage.write_partition(spread, str(tmp_path), "demo", part, ["id"], num_files=1, partitioned=True)
    assert committed(target) == three


def test_a_counted_write_counts_each_row_once_in_one_file_or_several(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """``write_counted`` with a bound: files from the bound, rows counted by the write itself (once each);
    without one: cached and counted first."""
    part = [("feature_spec_version", "v1"), ("batch_start", "20261001T1200")]
    frame = spark.range(100).where("id % 4 != 0")  # 75 rows
    for bound, rows_per_file, n_files in ((100, 1000, 1), (100, 30, 4), (None, 30, 3)):
        written, rows = storage.write_counted(frame, str(tmp_path), "demo", part, ["id"], bound, rows_per_file)
        assert (rows, written.rows, len(written.files)) == (75, 75, n_files)
        assert sorted(r["id"] for r in read(Path(written.path))) == [i for i in range(100) if i % 4]


def test_a_batch_with_nothing_in_the_window_writes_empty_partitions_with_the_schema(
    spark, env: dict[str, Path]  # noqa: ANN001
) -> None:
    folder = env["raw"] / "quiet"
    folder.mkdir()
    (folder / "only-late.log").write_text(OUT_OF_WINDOW[0] + "\n")
    summary = run_delta_builder_from_runtime_config(runtime(folder))
    assert (summary["delta_rows"], summary["rows_before_window"], summary["rows_quarantined"]) == (0, 1, 0)
    for dataset, columns in (("delta", DELTA_COLUMNS), ("quarantine", QUARANTINE_COLUMNS)):
        table = layout.partition_table(str(env["store"] / dataset / PARTITION))
        assert table is not None and (table.num_rows, table.column_names) == (0, list(columns))


# --- where the raw batch is --------------------------------------------------------------------------------


def test_the_raw_folder_follows_the_contract_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    monkeypatch.setenv("NDR_RAW_ROOT", "s3://acme-ndr-raw")
    monkeypatch.delenv("NDR_ORG_ID", raising=False)
    expected = "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/"
    assert raw_batch_folder(runtime(), start) == expected
    with pytest.raises(RawPathError, match="'s3://elsewhere/batch/' is not s3://<bucket>/pan-traffic/<org>/ndr-prod"):
        raw_batch_folder(runtime("s3://elsewhere/batch/"), start)
    other_bucket = "s3://elsewhere/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/"  # the layout, not the routed bucket
    with pytest.raises(RawPathError, match="not this batch's folder under NDR_RAW_ROOT"):
        raw_batch_folder(runtime(other_bucket), start)
    assert raw_batch_folder(runtime(expected), start) == expected
    for wrong in ("s3://acme-ndr-raw/pan-traffic/acme/other-project/v1/2026/10/01/1200/",
                  "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1215/"):  # fmt: skip
        with pytest.raises(RawPathError):
            raw_batch_folder(runtime(wrong), start)
    odd = BatchRuntime("ndr-prod", "v1", "my-org-ndr-prod-v1-20261001T1200", START, END)
    assert raw_batch_folder(odd, start) == expected.replace("/acme/", "/my-org/")  # dashes in the org id
    mismatched = BatchRuntime("ndr-prod", "v1", "acme-ndr-prod-v1-20261001T1215", START, END)
    with pytest.raises(ValueError, match="cannot tell the org id"):
        raw_batch_folder(mismatched, start)
    monkeypatch.setenv("NDR_ORG_ID", "globex")
    assert raw_batch_folder(mismatched, start) == expected.replace("/acme/", "/globex/")
    monkeypatch.delenv("NDR_RAW_ROOT")
    with pytest.raises(ValueError, match="NDR_RAW_ROOT"):
        raw_batch_folder(runtime(), start)


def test_the_script_runs_in_a_subprocess_on_the_contract_layout(tmp_path: Path) -> None:
    """The real script, its folder derived from the mini-batch (NDR_RAW_ROOT), S3 standing in as a directory."""
    s3 = tmp_path / "s3"
    write_batch(s3 / "acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200")
    env = {**os.environ, "NDR_LOCAL_S3_ROOT": str(s3), "NDR_RAW_ROOT": "s3://acme-ndr-raw",
           "NDR_STORAGE_ROOT": "s3://acme-ndr-features/ndr-prod"}  # fmt: skip
    env.pop("NDR_ORG_ID", None)
    args = ["--project-name", "ndr-prod", "--feature-spec-version", "v1", "--mini-batch-id", BATCH_ID,
            "--batch-start-ts-iso", START, "--batch-end-ts-iso", END]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "ndr_jobs.scripts.run_delta_builder", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["raw_batch_folder"], summary["delta_rows"], summary["rows_quarantined"]) == (
        "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/", 5, 5,
    )  # fmt: skip
    assert summary["outputs"]["delta"] == f"s3://acme-ndr-features/ndr-prod/delta/{PARTITION}"
    assert read(s3 / "acme-ndr-features/ndr-prod/delta" / PARTITION) == EXPECTED_DELTA


# --- the storage layer on S3 (moto) ------------------------------------------------------------------------


def test_s3_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="store")
        root = "s3://store/ndr"
        storage.write_text(f"{root}/raw/b/1.log", "one\n")
        storage.write_bytes(f"{root}/raw/a.log", b"two\n")
        storage.write_text(f"{root}/raw/_SUCCESS", "")
        assert [o.path for o in storage.list_objects(f"{root}/raw")] == [f"{root}/raw/a.log", f"{root}/raw/b/1.log"]
        assert storage.read_text(f"{root}/raw/b/1.log") == "one\n" and storage.exists(f"{root}/raw/b")
        assert storage.spark_uri(f"{root}/x") == "s3a://store/ndr/x"

        storage.delete_prefix(f"{root}/raw")
        assert storage.list_objects(f"{root}/raw") == []


def test_local_paths_and_file_uris(tmp_path: Path) -> None:
    storage.write_text(str(tmp_path / "a" / "x.txt"), "hi")
    uri = f"file://{tmp_path}/a"
    assert [o.path for o in storage.list_objects(uri)] == [f"{uri}/x.txt"]
    assert storage.read_text(f"{uri}/x.txt") == "hi" and storage.exists(uri)
    assert storage.spark_uri(str(tmp_path / "k=v")) == f"file://{tmp_path}/k=v"
    with pytest.raises(ValueError, match="partition segment"):
        storage.partition_path(str(tmp_path), "delta", [("batch_start", "../escape")])


def test_a_local_directory_can_stand_in_for_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(storage.LOCAL_S3_ENV, str(tmp_path))
    storage.write_text("s3://bucket/raw/x.log", "line\n")
    assert (tmp_path / "bucket/raw/x.log").read_text() == "line\n"
    assert [o.path for o in storage.list_objects("s3://bucket/raw/")] == ["s3://bucket/raw/x.log"]
    assert storage.read_text("s3://bucket/raw/x.log") == "line\n" and storage.exists("s3://bucket/raw")
    assert storage.spark_uri("s3://bucket/raw") == f"file://{tmp_path}/bucket/raw"
    storage.delete_prefix("s3://bucket/raw")
    assert not (tmp_path / "bucket/raw").exists()


def test_the_read_is_split_per_core_within_bounds_and_the_session_gets_its_settings_back(spark) -> None:  # noqa: ANN001
    cores = spark.sparkContext.defaultParallelism
    mib = 1 << 20
    assert task_bytes(spark, 10 * mib) == 128 * mib
    assert task_bytes(spark, 300 * mib * cores) == 300 * mib
    assert task_bytes(spark, 100 * 1024 * mib) == 1024 * mib
    # the delta's files (and the merge's partitions): one per 256 MiB of raw bytes, at most one per core
    assert delta_files(spark, 10 * mib) == 1
    assert delta_files(spark, 257 * mib) == min(2, cores)
    assert delta_files(spark, 100 * 1024 * mib) == cores
    key, unset = "spark.sql.files.maxPartitionBytes", "spark.sql.ndr.test.unset"
    before = spark.conf.get(key)
    with pytest.raises(RuntimeError), sql_conf(spark, {key: "12345", unset: "x"}):
        assert spark.conf.get(key) == "12345" and spark.conf.get(unset) == "x"
        raise RuntimeError("a failing job")
    assert spark.conf.get(key) == before and spark.conf.get(unset, None) is None


def test_the_merge_puts_records_in_their_delta_file_and_spreads_malformed_lines(spark) -> None:  # noqa: ANN001
    """``merge_partials`` partitions as the delta's files (a hash of the key, as ``repartition(n, *DELTA_KEYS)``)
    and spreads quarantined lines (null keys) by their text instead of piling them in one partition."""
    from pyspark.sql import functions as F

    from ndr_jobs.processing.delta_builder_job import (
        _SQL_TYPES,
        DELTA_KEYS,
        PARTIAL_VALUES,
        _partial_schema,
        merge_partials,
    )

    names = [f.name for f in _partial_schema()]
    values = dict.fromkeys(c for c, _ in PARTIAL_VALUES)
    records = [
        {**dict.fromkeys(names), **values, "status": "in_window", "src_ip": f"10.0.0.{i}", "dst_ip": "10.9.9.9",
         "dst_port": 443, "log_records": 1}
        for i in range(40)
    ] + [
        {**dict.fromkeys(names), **values, "status": "quarantined", "quarantine_reason": "TOO_FEW_FIELDS",
         "raw_line": f"garbage {i}", "file_index": 1, "log_records": 1}
        for i in range(40)
    ]  # fmt: skip
    ddl = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in _partial_schema())
    partials = spark.createDataFrame([tuple(r[n] for n in names) for r in records], ddl)
    start, end = datetime(2026, 10, 1, 12, tzinfo=UTC), datetime(2026, 10, 1, 12, 15, tzinfo=UTC)
    merged = merge_partials(partials, start, end, 4).withColumn("part", F.spark_partition_id())
    expected = partials.repartition(4, *DELTA_KEYS).withColumn("part", F.spark_partition_id())
    where = {r["src_ip"]: r["part"] for r in merged.where("status = 'in_window'").collect()}
    assert where == {r["src_ip"]: r["part"] for r in expected.where("status = 'in_window'").collect()}
    assert len({r["part"] for r in merged.where("status = 'quarantined'").collect()}) > 1


# --- guards: the quarantined share, decompression bombs, paths outside the batch -----------------------------


def test_the_quarantine_guard_fails_a_batch_whose_format_changed(
    spark, env: dict[str, Path], capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    folder = env["raw"] / "pan-traffic/acme/ndr-prod/v1/2026/10/01/1200"
    # a PAN-OS upgrade moved a field: every line but one fails to parse
    lines = [traffic_line({25: "https"})] * 6 + [traffic_line({6: "2026/13/01 00:00:00"})] * 3 + [IN_WINDOW[0], ""]
    for f in folder.iterdir():
        f.unlink()
    (folder / "traffic-00.log").write_text("\n".join(lines) + "\n")
    strict = DeltaRuntime("ndr-prod", "v1", BATCH_ID, START, END, str(folder), max_quarantine_ratio=0.5)
    with pytest.raises(
        QuarantineRatioExceededError,
        match=r"9 of 10 lines quarantined \(90\.0% > max_quarantine_ratio "
        r"0\.5\): the delta was not written.*bad_number: 6, bad_timestamp: 3.*sample: bad_number \(dst_port\)",
    ):
        run_delta_builder_from_runtime_config(strict)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["quarantine_ratio"], summary["quarantine_guard"]) == (0.9, "tripped")
    assert summary["outputs"]["delta"] is None
    assert [x["reason"] for x in summary["quarantine_sample"]] == ["bad_number", "bad_timestamp"]  # distinct lines
    assert not (env["store"] / "delta" / PARTITION).exists()  # what the next steps read is not written
    assert len(read(env["store"] / "quarantine" / PARTITION)) == 9  # the evidence is
    lenient = DeltaRuntime("ndr-prod", "v1", BATCH_ID, START, END, str(folder), max_quarantine_ratio=1.0)
    summary = run_delta_builder_from_runtime_config(lenient)
    assert (summary["quarantine_guard"], summary["delta_rows"]) == ("passed", 1)


def test_a_decompression_bomb_is_cut_at_the_cap_and_quarantined(
    spark, env: dict[str, Path], monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    monkeypatch.setenv(raw_lines.DECOMPRESSED_CAP_ENV, str(1 << 20))
    folder = env["folder"]
    bomb = "\n".join(IN_WINDOW[:2]).encode() + b"\n" + b" " * (64 << 20)  # two lines, then 64 MiB of spaces
    (folder / "traffic-02.log.gz").write_bytes(gzip.compress(bomb, compresslevel=9, mtime=0))
    summary = run_delta_builder_from_runtime_config(runtime(folder))
    assert summary["quarantined_by_reason"]["decompressed_too_large"] == 1
    assert summary["rows_in_window"] == 6 + 2  # the lines before the cap were read
    rows = [r for r in read(env["store"] / "quarantine" / PARTITION) if r["reason"] == "decompressed_too_large"]
    assert [(Path(r["source_file"]).name, r["detail"]) for r in rows] == [
        ("traffic-02.log.gz", "more than 1048576 bytes decompressed; the 2 line(s) before the cap were read")
    ]


def test_raw_objects_outside_the_batch_folder_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = use(monkeypatch, tmp_path)
    folder = paths["folder"]
    folder.mkdir(parents=True)
    (folder / "a.log").write_text("x\n")
    assert [o.path for o in confine_objects(str(folder), storage.list_objects(str(folder)))] == [f"{folder}/a.log"]
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not yours\n")
    (folder / "b.log").symlink_to(secret)
    with pytest.raises(RawPathError, match="b.log' is outside the batch folder"):
        confine_objects(str(folder), storage.list_objects(str(folder)))
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    with pytest.raises(RawPathError, match="outside NDR_RAW_ROOT"):
        raw_batch_folder(runtime(secret.parent), start)
    with pytest.raises(ValueError, match="not an s3:// URI or an absolute path"):
        raw_batch_folder(runtime(f"{paths['raw']}/../elsewhere"), start)
