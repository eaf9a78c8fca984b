"""One path layer for S3 and local directories, and the atomic partition writer of every dataset.

Paths are ``s3://``, ``file://`` or plain local strings; with ``NDR_LOCAL_S3_ROOT`` set, ``s3://bucket/key`` is a
local directory. :func:`write_partition` writes to a staging directory and swaps it in (renames locally,
copy-then-delete on S3, which is not atomic for a concurrent reader). Design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import os
import re
import shutil
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
STAGING_DIR = "_staging"
TRASH_DIR = "_trash"


@dataclass(frozen=True)
class ObjectInfo:
    """An object (file) under a prefix: its full path and size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class PartitionWrite:
    """What :func:`write_partition` wrote: the partition path, its data files (sorted names) and rows."""

    path: str
    files: tuple[str, ...]
    rows: int | None


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


def _s3_client() -> Any:
    import boto3

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


# --- partitions ----------------------------------------------------------------------------------------


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


def _final_names(staging_files: list[str]) -> dict[str, str]:
    """Spark's part files (``part-00003-<uuid>-c000.snappy.parquet``) -> ``part-00000.snappy.parquet``, ..."""
    parts = sorted(f for f in staging_files if Path(f).name.startswith("part-"))
    names = {}
    for i, source in enumerate(parts):
        name = Path(source).name
        suffix = name[name.index(".") :] if "." in name else ""
        names[source] = f"part-{i:05d}{suffix}"
    return names


def _partition_paths(root: str, dataset: str, partition: list[tuple[str, str]]) -> tuple[str, str, str]:
    """(target, staging parent, trash) of a partition."""
    target = partition_path(root, dataset, partition)
    relative = target[len(join(root, dataset)) + 1 :]
    return target, join(root, dataset, STAGING_DIR, relative), join(root, dataset, TRASH_DIR, relative)


def recover_partition(root: str, dataset: str, partition: list[tuple[str, str]]) -> bool:
    """Repair a local swap interrupted between its two renames; True if the previous partition was restored.

    The next :func:`write_partition` of the partition calls this first. On S3 there is nothing to repair.
    """
    target_path, _, trash_path = (backing(p) for p in _partition_paths(root, dataset, partition))
    if is_s3(target_path):
        return False
    target, trash = local_path(target_path), local_path(trash_path)
    if not trash.is_dir():
        return False
    leftovers = sorted(trash.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    restored = bool(leftovers) and not target.exists()
    if restored:
        target.parent.mkdir(parents=True, exist_ok=True)
        leftovers[-1].rename(target)
    shutil.rmtree(trash, ignore_errors=True)
    _prune_empty(trash.parent, stop=local_path(backing(join(root, dataset))))
    return restored


def _swap_local(staging: str, target_path: str, trash_path: str, run_id: str) -> None:
    staging_dir, target, trash = local_path(staging), local_path(target_path), local_path(trash_path)
    for file in staging_dir.rglob("*"):
        if file.name.endswith(".crc"):
            file.unlink()
    for source, final in _final_names([str(p) for p in staging_dir.iterdir()]).items():
        Path(source).rename(staging_dir / final)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        trash.mkdir(parents=True, exist_ok=True)
        target.rename(trash / run_id)
    staging_dir.rename(target)
    shutil.rmtree(trash, ignore_errors=True)


def _swap_s3(staging: str, target: str) -> None:
    client = _s3_client()
    s_bucket, s_key = _split_s3(staging)
    t_bucket, t_key = _split_s3(target)
    staged = [o.path for o in list_objects(staging, include_hidden=True)]
    renames = _final_names(staged)
    wanted: dict[str, str] = {}
    for source in staged:
        name = renames.get(source, Path(source).name)
        if not name.endswith(".crc"):
            wanted[join(t_key, name)] = _split_s3(source)[1]
    for key, source_key in sorted(wanted.items()):
        client.copy({"Bucket": s_bucket, "Key": source_key}, t_bucket, key)
    for obj in list_objects(target, include_hidden=True):
        key = _split_s3(obj.path)[1]
        if key not in wanted:
            client.delete_object(Bucket=t_bucket, Key=key)
    delete_prefix(staging)


def swap_in(staging: str, target: str, trash: str, run_id: str) -> None:
    """Replace the partition ``target`` by the staging directory (``docs/design/jobs.md``, Datasets)."""
    staging, target, trash = backing(staging), backing(target), backing(trash)
    if is_s3(target):
        _swap_s3(staging, target)
    else:
        _swap_local(staging, target, trash, run_id)


def write_partition(
    df: DataFrame,
    root: str,
    dataset: str,
    partition: list[tuple[str, str]],
    sort_by: list[str],
    num_files: int = 1,
    rows: int | None = None,
    count: bool = False,
    partitioned: bool = False,
) -> PartitionWrite:
    """Replace one partition of ``<root>/<dataset>`` by ``df`` as Parquet, atomically and deterministically.

    Rows go to ``num_files`` files by a hash of ``sort_by`` (fewer if a hash bucket gets no row) and are sorted
    by it within each file, so that the same input gives the same files and a reader filtering on the leading
    key can skip row groups by their min/max statistics.
    (Files by key range would let it skip whole files too, but the range partitioner
    samples the input first: one more pass over the plan below, 5 s of the 5M-line delta's write.)
    ``rows`` (when the caller knows it) is reported back; with ``count`` the write counts the rows it writes.
    With ``partitioned`` the caller has already spread the rows that way (``df.repartition(n, *sort_by)``, or a
    frame derived from one without moving rows): ``df``'s partitions become the files and ``num_files`` is not
    used, which spares a shuffle.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    target, staging_parent, trash = _partition_paths(root, dataset, partition)
    run_id = uuid.uuid4().hex
    staging = join(staging_parent, run_id)
    recover_partition(root, dataset, partition)
    # repartition, not coalesce: coalesce(1) would run the whole plan since the last shuffle in one task
    ordered = df if partitioned else df.repartition(max(num_files, 1), *sort_by)
    observed = Observation(dataset) if count else None
    if observed is not None:
        ordered = ordered.observe(observed, F.count(F.lit(1)).alias("rows"))
    try:
        ordered.sortWithinPartitions(*sort_by).write.mode("errorifexists").parquet(spark_uri(staging))
        if observed is not None:
            rows = int(observed.get["rows"])
        swap_in(staging, target, trash, run_id)
    finally:
        if exists(staging):
            delete_prefix(staging)
        if not is_s3(backing(target)):
            top = local_path(backing(join(root, dataset)))
            _prune_empty(local_path(backing(staging)).parent, stop=top)
            _prune_empty(local_path(backing(trash)), stop=top)
    files = tuple(o.path for o in list_objects(target))
    return PartitionWrite(target, files, rows)


def write_counted(
    df: DataFrame, root: str, dataset: str, partition: list[tuple[str, str]], sort_by: list[str],
    bound: int | None, rows_per_file: int = 1_000_000,
) -> tuple[PartitionWrite, int]:  # fmt: skip
    """:func:`write_partition` of a frame whose row count is not known yet; the write and its row count.

    With ``bound`` (an upper bound of the rows, e.g. the input partition's) the file count is
    :func:`files_for` the bound and the write counts the rows it writes: one pass, no separate count job (a
    bound just over a file boundary may give one file more than the exact count would; the same input always
    gives the same files). Without one the frame is cached, counted, written and uncached.
    """
    if bound is not None:
        written = write_partition(df, root, dataset, partition, sort_by, files_for(bound, rows_per_file), count=True)
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
        except OSError:  # not empty (another writer's staging), or already gone
            if path.exists():
                return
        path = path.parent
