"""One path layer for S3 and local directories, and the commit protocol of every dataset partition.

Paths are ``s3://``, ``file://`` or plain local strings; with ``NDR_LOCAL_S3_ROOT`` set, ``s3://bucket/key`` is a
local directory. :func:`commit_partition` writes a run's files under a fresh prefix of the partition and then
its manifest, the one pointer readers follow (:func:`committed_files`). Protocol: ``docs/datasets.md``;
design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

S3_SCHEMES = ("s3", "s3a", "s3n")
#: a local directory standing in for S3 (one sub-directory per bucket)
LOCAL_S3_ENV = "NDR_LOCAL_S3_ROOT"
#: partition values must be plain path segments (no escaping needed, same on S3 and locally)
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class ObjectInfo:
    """An object (file) under a prefix: its full path and size in bytes."""

    path: str
    size: int


# --- paths ---------------------------------------------------------------------------------------------


def is_s3(path: str) -> bool:
    """True for ``s3://``, ``s3a://`` and ``s3n://`` paths."""
    return urlparse(path).scheme in S3_SCHEMES


def _split_s3(path: str) -> tuple[str, str]:
    parsed = urlparse(path)
    if not parsed.netloc:
        raise ValueError(f"not an S3 path with a bucket: {path!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def backing(path: str) -> str:
    """Where a path really is: itself, or under ``$NDR_LOCAL_S3_ROOT`` for an S3 path when that is set."""
    root = os.environ.get(LOCAL_S3_ENV)
    if root and is_s3(path):
        bucket, key = _split_s3(path)
        return join(root, bucket, key)
    return path


def local_path(path: str) -> Path:
    """The local file-system path of a plain path or a ``file://`` URI."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(path)
    raise ValueError(f"not a local path: {path!r}")


def join(base: str, *parts: str) -> str:
    """Join path segments with ``/`` (no normalisation; a trailing slash of ``base`` is absorbed)."""
    out = base.rstrip("/") if base not in ("/", "") else base
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}" if out and not out.endswith("/") else f"{out}{part}"
    return out


def spark_uri(path: str) -> str:
    """The URI Spark reads and writes: ``s3a://`` for S3, an absolute ``file://`` URI for local paths."""
    path = backing(path)
    if is_s3(path):
        bucket, key = _split_s3(path)
        return f"s3a://{bucket}/{key}"
    return f"file://{local_path(path).resolve()}"  # not as_uri(): Hadoop takes '%3D' literally, not as '='"


_CLIENT_LOCK = threading.Lock()


def _s3_client() -> Any:
    import boto3

    with _CLIENT_LOCK:  # boto3's default session is not safe to build clients from in several threads at once
        return boto3.client("s3")


# --- objects -------------------------------------------------------------------------------------------


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def list_objects(prefix: str, include_hidden: bool = False) -> list[ObjectInfo]:
    """Every object (file) under ``prefix``, recursively, sorted by path.

    Files and directories whose name starts with ``_`` or ``.`` (``_SUCCESS``, ``.crc``, staging) are left
    out unless ``include_hidden``. A missing prefix lists as empty.
    """
    out: list[ObjectInfo] = []
    real = backing(prefix)
    if is_s3(real):
        bucket, key = _split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        scheme = urlparse(prefix).scheme
        for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                relative = item["Key"][len(key) :]
                if relative and (include_hidden or not any(_hidden(p) for p in relative.split("/"))):
                    out.append(ObjectInfo(f"{scheme}://{bucket}/{item['Key']}", int(item["Size"])))
    else:
        root = local_path(real)
        if root.is_file():
            return [ObjectInfo(str(prefix), root.stat().st_size)]
        for dirpath, dirnames, filenames in os.walk(root):
            if not include_hidden:
                dirnames[:] = [d for d in dirnames if not _hidden(d)]
            for name in filenames:
                if include_hidden or not _hidden(name):
                    file = Path(dirpath) / name
                    out.append(ObjectInfo(join(prefix, str(file.relative_to(root))), file.stat().st_size))
    return sorted(out, key=lambda o: o.path)


def exists(path: str) -> bool:
    """True if ``path`` is a file/object or a non-empty prefix/directory."""
    path = backing(path)
    if is_s3(path):
        bucket, key = _split_s3(path)
        response = _s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return response.get("KeyCount", 0) > 0
    return local_path(path).exists()


def read_bytes(path: str) -> bytes:
    """The bytes of one file/object."""
    path = backing(path)
    if is_s3(path):
        bucket, key = _split_s3(path)
        return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return local_path(path).read_bytes()


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of one file/object (fewer where it ends sooner)."""
    if end <= start:
        return b""
    path = backing(path)
    if is_s3(path):
        bucket, key = _split_s3(path)
        return _s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read()
    with local_path(path).open("rb") as f:
        f.seek(start)
        return f.read(end - start)


def read_if_exists(path: str) -> bytes | None:
    """The bytes of one file/object, or None when it does not exist."""
    real = backing(path)
    if is_s3(real):
        bucket, key = _split_s3(real)
        client = _s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    try:
        return local_path(real).read_bytes()
    except FileNotFoundError:
        return None


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The text of one file/object."""
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    """Write one file/object (locally through a temporary file and a rename: never half-written)."""
    path = backing(path)
    if is_s3(path):
        bucket, key = _split_s3(path)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Write one text file/object."""
    write_bytes(path, text.encode(encoding))


def delete_prefix(prefix: str) -> None:
    """Delete everything under ``prefix`` (a missing prefix is fine)."""
    prefix = backing(prefix)
    if is_s3(prefix):
        bucket, key = _split_s3(prefix)
        key = key.rstrip("/") + "/"
        client = _s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        return
    target = local_path(prefix)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


# --- partitions: the commit protocol (docs/datasets.md, docs/design/jobs.md) -------------------------------

#: the pointer of a partition: the one object whose (atomic) write makes a run's files the partition
MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "ndr-partition/1"
#: every run writes its files under ``<partition>/_runs/<run id>/``, a prefix no other run uses
RUNS_DIR = "_runs"
#: seconds a superseded or uncommitted run prefix is kept for readers and in-flight writers
GRACE_ENV = "NDR_DATASET_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 6 * 3600
#: ``<point>`` or ``<point>@<dataset>``: the writer kills its own process there (crash drills)
FAULT_ENV = "NDR_COMMIT_FAULT"
FAULT_EXIT_CODE = 86
#: ``<dataset>/_janitor/<run id>.json``: run prefixes that may become garbage (in flight, or superseded)
JOURNAL_DIR = "_janitor"
#: journal entries a write settles before its own commit (the rest wait for the next write)
JOURNAL_BATCH = 32
COMMIT_POINTS = ("before_data", "mid_data", "before_pointer", "after_pointer")
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")
_DATA_FILE = re.compile(r"^part-[0-9]{5}(\.[A-Za-z0-9]+)*\.parquet$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CommitConflict(RuntimeError):
    """Another writer replaced the partition's pointer between this writer's read of it and its commit."""


class ManifestError(ValueError):
    """A partition manifest that is not one this protocol wrote."""


class InjectedFault(BaseException):  # noqa: N818 - not an error of the program: a simulated crash
    """Raised by a commit hook to stop a write the way a crash would (no clean-up runs)."""


@dataclass(frozen=True)
class DataFile:
    """One committed data file: its name in the run prefix, size, rows and SHA-256."""

    name: str
    bytes: int
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A partition's pointer: which run's files are the partition (``docs/datasets.md``)."""

    dataset: str
    partition: str
    run_id: str
    writer: str
    files: tuple[DataFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def prefix(self) -> str:
        return f"{RUNS_DIR}/{self.run_id}/"

    def content(self) -> tuple[DataFile, ...]:
        """What two runs must agree on to have written the same partition (run id and writer aside)."""
        return self.files

    def to_bytes(self) -> bytes:
        import json

        body = {
            "format": MANIFEST_FORMAT, "dataset": self.dataset, "partition": self.partition,
            "run_id": self.run_id, "writer": self.writer, "prefix": self.prefix, "rows": self.rows,
            "files": [{"name": f.name, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256} for f in self.files],
        }  # fmt: skip
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse and check a manifest: every name is a plain data file name under the run's own prefix."""
        import json

        try:
            body = json.loads(data)
            files = tuple(
                DataFile(str(f["name"]), int(f["bytes"]), int(f["rows"]), str(f["sha256"])) for f in body["files"]
            )
            names = (str(body["dataset"]), str(body["partition"]), str(body["run_id"]), str(body["writer"]))
            manifest = cls(*names, files)
            fmt, prefix, rows = body["format"], body["prefix"], body["rows"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: not a partition manifest ({type(exc).__name__}: {exc})") from exc
        if fmt != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format {fmt!r}, expected {MANIFEST_FORMAT!r}")
        if not _RUN_ID.match(manifest.run_id) or prefix != manifest.prefix:
            raise ManifestError(f"{where}: run id {manifest.run_id!r} / prefix {prefix!r} are not a run prefix")
        for f in files:
            if not _DATA_FILE.match(f.name) or not _SHA256.match(f.sha256) or f.bytes < 0 or f.rows < 0:
                raise ManifestError(f"{where}: bad file entry {f}")
        if len({f.name for f in files}) != len(files) or rows != manifest.rows:
            raise ManifestError(f"{where}: duplicate file names or a row total that is not the files' sum")
        return manifest


@dataclass(frozen=True)
class PartitionWrite:
    """What a commit made visible: the partition path, its data files (full paths, sorted), rows and run."""

    path: str
    files: tuple[str, ...]
    rows: int | None
    run_id: str = ""

    @property
    def data_prefix(self) -> str:
        """The committed run's prefix (``<partition>/_runs/<run id>/``): exactly the partition's files."""
        return join(self.path, RUNS_DIR, self.run_id) + "/"


def partition_path(root: str, dataset: str, partition: list[tuple[str, str]]) -> str:
    """``<root>/<dataset>/<k1>=<v1>/...``, with every key and value checked to be a plain segment."""
    if not partition:
        raise ValueError("a partition needs at least one key=value")
    segments = []
    for key, value in partition:
        for part in (key, value):
            if not _SEGMENT.match(part):
                raise ValueError(f"partition segment {part!r} must match {_SEGMENT.pattern}")
        segments.append(f"{key}={value}")
    if not _SEGMENT.match(dataset):
        raise ValueError(f"dataset {dataset!r} must match {_SEGMENT.pattern}")
    return join(root, dataset, *segments)


def files_for(rows: int, rows_per_file: int = 1_000_000) -> int:
    """How many files hold ``rows`` rows at ``rows_per_file`` per file (at least one)."""
    return max(1, -(-rows // rows_per_file))


# --- reading through the pointer ---


def _read_pointer(partition: str, client: Any = None) -> tuple[bytes, str] | None:
    """(manifest bytes, version token) of a partition, or None: S3's ETag, locally the bytes' SHA-256."""
    real = backing(join(partition, MANIFEST))
    if is_s3(real):
        bucket, key = _split_s3(real)
        client = client or _s3_client()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return None
        return response["Body"].read(), str(response["ETag"])
    data = read_if_exists(real)
    return None if data is None else (data, _sha256(data))


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_manifest(partition: str, client: Any = None) -> Manifest | None:
    """The committed manifest of a partition directory, or None when nothing was ever committed there."""
    pointer = _read_pointer(partition, client)
    return None if pointer is None else Manifest.from_bytes(pointer[0], join(partition, MANIFEST))


def committed_files(partition: str, client: Any = None) -> list[str] | None:
    """The full paths of a partition's committed data files (sorted), or None when it has no manifest.

    Every reader of a dataset lists its files here: files under the partition that the manifest does not
    name (an older run, a crashed or concurrent writer's) are never read.
    """
    manifest = read_manifest(partition, client)
    if manifest is None:
        return None
    return [join(partition, manifest.prefix, f.name) for f in manifest.files]


def committed_files_many(partitions: list[str]) -> list[list[str] | None]:
    """:func:`committed_files` of each partition, in order; S3 manifests are read by up to 16 threads (one
    client each): FG-B's 30-day horizon reads 2,880 of them."""
    if len(partitions) < 2 or not any(is_s3(backing(p)) for p in partitions):
        return [committed_files(p) for p in partitions]
    from concurrent.futures import ThreadPoolExecutor

    clients = threading.local()

    def one(partition: str) -> list[str] | None:
        if not hasattr(clients, "s3"):
            clients.s3 = _s3_client()
        return committed_files(partition, clients.s3)

    with ThreadPoolExecutor(max_workers=min(16, len(partitions))) as pool:
        return list(pool.map(one, partitions))


def committed_partitions(base: str) -> list[str]:
    """Every partition directory under ``base`` (at any depth) that has a manifest, sorted."""
    out = []
    for obj in list_objects(base, include_hidden=True):
        rest = obj.path[len(base.rstrip("/")) :].strip("/")
        parts = rest.split("/")
        if parts[-1] == MANIFEST and not any(_hidden(p) for p in parts[:-1]):
            out.append(join(base, *parts[:-1]))
    return sorted(out)


# --- writing: data under a fresh prefix, then the pointer ---

_commit_hook: Any = None


class commit_hook:  # noqa: N801 - used as a context manager, like a function
    """Within the block, ``hook(point, partition)`` runs at each of :data:`COMMIT_POINTS` of every commit (tests:
    raise :class:`InjectedFault` to crash there, or wait on a barrier to interleave two writers)."""

    def __init__(self, hook: Any) -> None:
        self.hook, self.saved = hook, None

    def __enter__(self) -> None:
        global _commit_hook
        self.saved, _commit_hook = _commit_hook, self.hook

    def __exit__(self, *exc: object) -> None:
        global _commit_hook
        _commit_hook = self.saved


def _checkpoint(point: str, partition: str, dataset: str) -> None:
    if _commit_hook is not None:
        _commit_hook(point, partition)
    fault = os.environ.get(FAULT_ENV, "")
    if fault:
        where, _, only = fault.partition("@")
        if where not in COMMIT_POINTS:
            raise ValueError(f"{FAULT_ENV}={fault!r}: the point must be one of {', '.join(COMMIT_POINTS)}")
        if where == point and only in ("", dataset):
            os._exit(FAULT_EXIT_CODE)  # a crash: no finally, no clean-up


def new_run_id() -> str:
    """A run id: UTC time (to the second) and 64 random bits; sorts by start time, unique per run."""
    from datetime import UTC, datetime

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:16]}"


def _writer() -> str:
    """Who wrote: the SageMaker processing job when there is one, else host and process."""
    import json
    import socket

    config = Path("/opt/ml/config/processingjobconfig.json")
    try:
        return f"sagemaker:{json.loads(config.read_text())['ProcessingJobName']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _final_names(staging_files: list[str]) -> dict[str, str]:
    """Spark's part files (``part-00003-<uuid>-c000.snappy.parquet``) -> ``part-00000.snappy.parquet``, ...

    Other writers' ``*.parquet`` files (an UNLOAD's ``0000_part_00.parquet``) are numbered the same way.
    """
    parts = sorted(f for f in staging_files if Path(f).name.endswith(".parquet") and not _hidden(Path(f).name))
    names = {}
    for i, source in enumerate(parts):
        name = Path(source).name
        suffix = name[name.index(".") :] if name.startswith("part-") else ".parquet"
        names[source] = f"part-{i:05d}{suffix}"
    return names


def _finalize(prefix: str, partition: str, dataset: str) -> list[DataFile]:
    """Give the run's files their deterministic names, drop markers and checksums; the manifest entries."""
    import io

    import pyarrow.parquet as pq

    staged = [o.path for o in list_objects(prefix, include_hidden=True)]
    renames = {s: f for s, f in _final_names(staged).items() if Path(s).name != f}
    if {Path(s).name for s in staged} & set(renames.values()):  # a final name taken by another file: two steps
        moved = {s: join(prefix, f"_moving-{i:05d}") for i, s in enumerate(sorted(renames))}
        for source, temporary in moved.items():
            _rename(source, temporary)
        renames = {moved[s]: f for s, f in renames.items()}
    for i, (source, final) in enumerate(sorted(renames.items(), key=lambda kv: kv[1])):
        _rename(source, join(prefix, final))
        if i == 0:  # one file in its final place, the others not yet
            _checkpoint("mid_data", partition, dataset)
    finals = set(_final_names(staged).values())
    for obj in list_objects(prefix, include_hidden=True):
        if obj.path[len(prefix) + 1 :] not in finals:
            delete_file(obj.path)  # _SUCCESS, .crc, anything else the engine left
    entries = []
    for final in sorted(finals):
        data = read_bytes(join(prefix, final))
        rows = pq.read_metadata(io.BytesIO(data)).num_rows
        entries.append(DataFile(final, len(data), rows, _sha256(data)))
    return entries


def delete_file(path: str) -> None:
    real = backing(path)
    if is_s3(real):
        bucket, key = _split_s3(real)
        _s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        local_path(real).unlink(missing_ok=True)


def _rename(source: str, target: str) -> None:
    source_real, target_real = backing(source), backing(target)
    if is_s3(source_real):
        client = _s3_client()
        s_bucket, s_key = _split_s3(source_real)
        t_bucket, t_key = _split_s3(target_real)
        client.copy({"Bucket": s_bucket, "Key": s_key}, t_bucket, t_key)
        client.delete_object(Bucket=s_bucket, Key=s_key)
    else:
        local_path(source_real).rename(local_path(target_real))


def _put_pointer(partition: str, data: bytes, expected: str | None) -> None:
    """Write the manifest only if the pointer is still the version read before the write (``expected``, None
    for none): S3 conditional writes (``If-Match`` / ``If-None-Match: *``), locally a lock and a rename."""
    real = backing(join(partition, MANIFEST))
    if is_s3(real):
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(real)
        condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            _s3_client().put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **condition)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412):
                raise CommitConflict(f"{partition}: the pointer changed since this run read it ({code})") from exc
            raise
        return
    import fcntl

    directory = local_path(real).parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = _sha256(local_path(real).read_bytes())
        except FileNotFoundError:
            current = None
        if current != expected:
            raise CommitConflict(f"{partition}: the pointer changed since this run read it")
        write_bytes(real, data)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def grace_seconds() -> float:
    """``$NDR_DATASET_GRACE_SECONDS`` (default six hours): how long old run prefixes stay."""
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return float(DEFAULT_GRACE_SECONDS)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{GRACE_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{GRACE_ENV}={raw!r} must not be negative")
    return value


def _modified(prefix: str) -> dict[str, float]:
    """Every object under ``prefix`` (hidden ones too) -> its last-modified time (epoch seconds)."""
    real = backing(prefix)
    out: dict[str, float] = {}
    if is_s3(real):
        bucket, key = _split_s3(real)
        key = key.rstrip("/") + "/"
        for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                out[item["Key"][len(key) :]] = item["LastModified"].timestamp()
        return out
    root = local_path(real)
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            file = Path(dirpath) / name
            try:
                out[str(file.relative_to(root))] = file.stat().st_mtime
            except FileNotFoundError:
                continue
    return out


def sweep_partition(partition: str, grace: float | None = None, now: float | None = None) -> list[str]:
    """The janitor: delete the run prefixes of a partition that its manifest does not name; the ids removed.

    A prefix goes only when its newest object is older than ``grace`` (not an in-flight writer's) and the
    manifest was replaced more than ``grace`` ago (a reader that read the previous manifest has had that
    long to read its files). Without a manifest, unreferenced prefixes go on their age alone.
    """
    import time

    grace = grace_seconds() if grace is None else grace
    now = time.time() if now is None else now
    objects = _modified(partition)
    try:
        manifest = read_manifest(partition)
    except ManifestError:
        return []  # which run is referenced is unknown: delete nothing (the next commit replaces the manifest)
    pointer_age = now - objects[MANIFEST] if MANIFEST in objects else float("inf")
    newest: dict[str, float] = {}
    for relative, modified in objects.items():
        parts = relative.split("/")
        if len(parts) >= 3 and parts[0] == RUNS_DIR:
            newest[parts[1]] = max(newest.get(parts[1], 0.0), modified)
    removed = []
    for run_id, modified in sorted(newest.items()):
        if manifest is not None and run_id == manifest.run_id:
            continue
        if now - modified >= grace and pointer_age >= grace:
            delete_prefix(join(partition, RUNS_DIR, run_id))
            removed.append(run_id)
    runs = backing(join(partition, RUNS_DIR))
    if not is_s3(runs) and local_path(runs).is_dir():  # directories left empty (deleted runs, crashed writers)
        for run in sorted(local_path(runs).iterdir()):
            empty = not any(p.is_file() for p in run.rglob("*"))
            if run.name not in newest and empty and now - run.stat().st_mtime >= grace:
                shutil.rmtree(run, ignore_errors=True)
    return removed


# --- the dataset journal: garbage found without listing the dataset ---


def _journal_entry(root: str, dataset: str, run_id: str) -> str:
    return join(root, dataset, JOURNAL_DIR, f"{run_id}.json")


def _journal_put(root: str, dataset: str, run_id: str, relative: str) -> None:
    """Record that ``<relative>/_runs/<run id>/`` may become garbage: a run starting, or a run superseded."""
    import json

    body = {"partition": relative, "run_id": run_id}
    for attempt in range(3):
        try:
            write_bytes(_journal_entry(root, dataset, run_id), (json.dumps(body, sort_keys=True) + "\n").encode())
            return
        except FileNotFoundError:  # locally, another writer removed the empty journal directory just then
            if attempt == 2:
                raise


def _journal_drop(root: str, dataset: str, run_id: str) -> None:
    """Drop a run's entry; locally also the journal directory once empty (datasets list as they did)."""
    entry = _journal_entry(root, dataset, run_id)
    delete_file(entry)
    if not is_s3(backing(entry)):
        with contextlib.suppress(OSError):  # other entries (or already gone)
            local_path(backing(entry)).parent.rmdir()


def _journal_target(root: str, dataset: str, data: bytes, where: str) -> tuple[str, str] | None:
    """(partition path, run id) of an entry, or None when it is not one this protocol wrote."""
    import json

    try:
        body = json.loads(data)
        relative, run_id = str(body["partition"]), str(body["run_id"])
    except (ValueError, KeyError, TypeError):
        return None
    segments = relative.split("/")
    pairs = [segment.split("=") for segment in segments]
    if not _RUN_ID.match(run_id) or not all(len(p) == 2 and all(_SEGMENT.match(x) for x in p) for p in pairs):
        return None
    return join(root, dataset, *segments), run_id


def sweep_journal(
    root: str, dataset: str, grace: float | None = None, now: float | None = None, limit: int | None = JOURNAL_BATCH
) -> list[str]:
    """Settle the dataset's journal entries older than ``grace`` (at most ``limit``); the partitions swept.

    Every run records its prefix before it writes data and drops the record once committed or discarded;
    a commit that replaces a manifest records the run it superseded. An entry older than the grace is thus a
    crashed run or a superseded one: its partition is swept (:func:`sweep_partition`) and the entry goes
    once that run's prefix is gone or is the committed one. Every write runs this before its own, so a
    partition rewritten once is cleaned up within a grace period and a write, wherever the next write lands.
    """
    import time

    grace = grace_seconds() if grace is None else grace
    now = time.time() if now is None else now
    journal = join(root, dataset, JOURNAL_DIR)
    due = sorted(name for name, modified in _modified(journal).items() if now - modified >= grace)
    swept = []
    for name in due[:limit]:
        entry = join(journal, name)
        data = read_if_exists(entry)
        if data is None:
            continue  # another janitor settled it
        target = _journal_target(root, dataset, data, entry)
        if target is None or not name.endswith(".json") or target[1] != name[: -len(".json")]:
            delete_file(entry)  # not an entry of this protocol: it names nothing to delete
            continue
        partition, run_id = target
        sweep_partition(partition, grace, now)
        try:
            manifest = read_manifest(partition)
        except ManifestError:
            continue  # which run is current is unknown: keep the entry
        current = manifest is not None and manifest.run_id == run_id
        if current or not list_objects(join(partition, RUNS_DIR, run_id), include_hidden=True):
            delete_file(entry)
        swept.append(partition)
    return swept


class RowCountMismatch(RuntimeError):
    """The files a run wrote do not hold the rows its caller counted: nothing is committed."""


def commit_partition(
    root: str, dataset: str, partition: list[tuple[str, str]], write: Any, expect_rows: int | None = None
) -> PartitionWrite:
    """Write one partition through the commit protocol; ``write(prefix)`` puts the Parquet files under ``prefix``.

    1. the janitor sweeps the partition (:func:`sweep_partition`) and the dataset's due journal entries
       (:func:`sweep_journal`), the current pointer's version is read, and the run is recorded in the journal;
    2. ``write`` fills a fresh prefix ``<partition>/_runs/<run id>/``; its files get deterministic names and
       are checksummed (a failure here deletes the prefix and leaves the partition as it was; so does a row
       count other than ``expect_rows`` when the caller counted them);
    3. the manifest is written only if the pointer is still the version read in 1 (S3 conditional write),
       which makes the new files the partition in one step. When another writer committed in between, a
       commit of the same files (same names, rows and SHA-256) converges on it; other content raises
       :class:`CommitConflict`. Either way this run's prefix is deleted (no reader can have seen it).
    4. the run's journal entry is replaced by one for the run it superseded (garbage after the grace).
    """
    target = partition_path(root, dataset, partition)
    relative = target[len(join(root, dataset)) + 1 :]
    sweep_partition(target)
    sweep_journal(root, dataset)
    pointer = _read_pointer(target)
    expected = None if pointer is None else pointer[1]
    run_id = new_run_id()
    prefix = join(target, RUNS_DIR, run_id)
    _journal_put(root, dataset, run_id, relative)
    try:
        _checkpoint("before_data", target, dataset)
        write(prefix)
        files = _finalize(prefix, target, dataset)
        manifest = Manifest(dataset, relative, run_id, _writer(), tuple(files))
        if expect_rows is not None and manifest.rows != expect_rows:
            raise RowCountMismatch(f"{target}: the run wrote {manifest.rows} rows, its caller counted {expect_rows}")
        _checkpoint("before_pointer", target, dataset)
        try:
            _put_pointer(target, manifest.to_bytes(), expected)
        except CommitConflict:
            winner = read_manifest(target)
            if winner is None or winner.content() != manifest.content():
                raise
            manifest = winner  # the same partition, committed by the other writer
            _discard(prefix, target)
    except Exception:
        _discard(prefix, target)
        _journal_drop(root, dataset, run_id)
        raise
    _checkpoint("after_pointer", target, dataset)
    previous = _previous_run(pointer, target)
    if previous is not None and previous != manifest.run_id:
        _journal_put(root, dataset, previous, relative)
    _journal_drop(root, dataset, run_id)
    paths = tuple(join(target, manifest.prefix, f.name) for f in manifest.files)
    return PartitionWrite(target, paths, manifest.rows, manifest.run_id)


def _previous_run(pointer: tuple[bytes, str] | None, target: str) -> str | None:
    """The run id of the manifest a commit replaced (None: none, or one that was not the protocol's)."""
    if pointer is None:
        return None
    try:
        return Manifest.from_bytes(pointer[0], join(target, MANIFEST)).run_id
    except ManifestError:
        return None


def _discard(prefix: str, target: str) -> None:
    """Delete a run prefix no manifest names (and, locally, the directories it leaves empty)."""
    delete_prefix(prefix)
    if not is_s3(backing(prefix)):
        _prune_empty(local_path(backing(prefix)), stop=local_path(backing(target)).parent)


def write_table(
    table: Any, root: str, dataset: str, partition: list[tuple[str, str]], rows_per_file: int = 1_000_000
) -> PartitionWrite:
    """Commit a pyarrow Table (in its row order, :func:`files_for` its rows files) without Spark: small
    driver-side outputs, and the protocol's tests on S3, where no Spark runs."""
    import io

    import pyarrow.parquet as pq

    target = partition_path(root, dataset, partition)
    n = files_for(table.num_rows, rows_per_file)

    def put(prefix: str) -> None:
        for i in range(n):
            buffer = io.BytesIO()
            pq.write_table(table.slice(i * rows_per_file, rows_per_file), buffer, compression="snappy")
            write_bytes(join(prefix, f"part-{i:05d}.snappy.parquet"), buffer.getvalue())
            if i == 0:
                _checkpoint("mid_data", target, dataset)

    return commit_partition(root, dataset, partition, put)


def write_partition(
    df: DataFrame,
    root: str,
    dataset: str,
    partition: list[tuple[str, str]],
    sort_by: list[str],
    num_files: int = 1,
    rows: int | None = None,
    partitioned: bool = False,
) -> PartitionWrite:
    """Replace one partition of ``<root>/<dataset>`` by ``df`` as Parquet, atomically and deterministically.

    Rows go to ``num_files`` files by a hash of ``sort_by`` (fewer if a hash bucket gets no row) and are sorted
    by it within each file, so that the same input gives the same files and a reader filtering on the leading
    key can skip row groups by their min/max statistics.
    (Files by key range would let it skip whole files too, but the range partitioner
    samples the input first: one more pass over the plan below, 5 s of the 5M-line delta's write.)
    The files are committed by :func:`commit_partition`, which counts their rows from the footers: ``rows``,
    when the caller counted them, must agree (else :class:`RowCountMismatch` and nothing is committed).
    With ``partitioned`` the caller has already spread the rows that way (``df.repartition(n, *sort_by)``, or a
    frame derived from one without moving rows): ``df``'s partitions become the files and ``num_files`` is not
    used, which spares a shuffle.
    """
    # repartition, not coalesce: coalesce(1) would run the whole plan since the last shuffle in one task
    ordered = df if partitioned else df.repartition(max(num_files, 1), *sort_by)

    def put(prefix: str) -> None:
        ordered.sortWithinPartitions(*sort_by).write.mode("errorifexists").parquet(spark_uri(prefix))

    return commit_partition(root, dataset, partition, put, rows)


def write_counted(
    df: DataFrame, root: str, dataset: str, partition: list[tuple[str, str]], sort_by: list[str],
    bound: int | None, rows_per_file: int = 1_000_000,
) -> tuple[PartitionWrite, int]:  # fmt: skip
    """:func:`write_partition` of a frame whose row count is not known yet; the write and its row count.

    With ``bound`` (an upper bound of the rows, e.g. the input partition's) the file count is
    :func:`files_for` the bound: one pass, the rows counted from the written files' footers (a bound just
    over a file boundary may give one file more than the exact count would; the same input always gives the
    same files). Without one the frame is cached, counted, written and uncached.
    """
    if bound is not None:
        written = write_partition(df, root, dataset, partition, sort_by, files_for(bound, rows_per_file))
        return written, written.rows or 0
    cached = df.persist()
    try:
        rows = cached.count()
        return write_partition(cached, root, dataset, partition, sort_by, files_for(rows, rows_per_file), rows), rows
    finally:
        cached.unpersist()


def _prune_empty(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty directories, up to (not including) ``stop``."""
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:  # not empty (another writer's files), or already gone
            if path.exists():
                return
        path = path.parent
