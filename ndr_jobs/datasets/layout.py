"""Where each dataset lives and how jobs read time ranges of its partitions (see ``docs/datasets.md``).

Writes go through :func:`ndr_jobs.datasets.storage.write_partition`; this module names the partitions and reads
them back: a job that needs the last 24 hours of ``delta`` asks for the 15-minute ``batch_start`` values
of that range and gets one DataFrame of the partitions that exist, with ``batch_start_ts`` (the window
start, a timestamp) as a column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ndr_jobs.datasets import storage

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

BATCH = timedelta(minutes=15)
STAMP_FORMAT = "%Y%m%dT%H%M"

DELTA = "delta"
QUARANTINE = "quarantine"
FG_A = "fg_a"
PAIR_COUNTS = "pair_counts"
FG_B = "fg_b"
FG_C = "fg_c"
INVENTORY = "inventory"
MODELS = "models"
PREDICTIONS = "predictions"
PUBLICATION = "publication"


def storage_root() -> str:
    """``$NDR_STORAGE_ROOT``: the root every dataset lives under."""
    root = os.environ.get("NDR_STORAGE_ROOT")
    if not root:
        raise ValueError("NDR_STORAGE_ROOT is not set")
    return root


def stamp(moment: datetime) -> str:
    """A ``batch_start`` partition value: ``YYYYMMDDTHHMM`` (UTC)."""
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def from_stamp(value: str) -> datetime:
    return datetime.strptime(value, STAMP_FORMAT).replace(tzinfo=UTC)


def batch_starts(start: datetime, end: datetime, step: timedelta = BATCH) -> list[datetime]:
    """The window starts in ``[start, end)``, every ``step`` from ``start``."""
    out, moment = [], start
    while moment < end:
        out.append(moment)
        moment += step
    return out


def batch_partition(feature_spec_version: str, start: datetime) -> list[tuple[str, str]]:
    """The partition of a 15-minute dataset for one window."""
    return [("feature_spec_version", feature_spec_version), ("batch_start", stamp(start))]


def dataset_dir(root: str, dataset: str, feature_spec_version: str) -> str:
    return storage.join(root, dataset, f"feature_spec_version={feature_spec_version}")


def existing_batches(root: str, dataset: str, feature_spec_version: str) -> list[datetime]:
    """The window starts that have a committed partition (a manifest; an empty partition counts), sorted."""
    base = dataset_dir(root, dataset, feature_spec_version)
    found: set[datetime] = set()
    for path in storage.committed_partitions(base):
        rest = path[len(base) :].strip("/")
        if rest.startswith("batch_start=") and "/" not in rest:
            try:
                found.add(from_stamp(rest.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(found)


def batch_files(root: str, dataset: str, feature_spec_version: str, start: datetime) -> list[str] | None:
    """The committed data files of one window's partition (read through its manifest), or None."""
    return storage.committed_files(storage.join(dataset_dir(root, dataset, feature_spec_version),
                                                f"batch_start={stamp(start)}"))  # fmt: skip


def read_batches(
    spark: SparkSession, root: str, dataset: str, feature_spec_version: str, starts: Sequence[datetime]
) -> DataFrame | None:
    """The partitions of ``starts`` that exist, unioned, with ``batch_start_ts`` (timestamp) added; None if none.

    Each partition's files are the ones its manifest names. Partitions written empty (a window with no rows:
    one Parquet file with the schema and no row) count as existing and contribute no rows.
    """
    from pyspark.sql import functions as F

    base = dataset_dir(root, dataset, feature_spec_version)
    partitions = [storage.join(base, f"batch_start={stamp(s)}") for s in sorted(set(starts))]
    paths = [storage.spark_uri(f) for files in storage.committed_files_many(partitions) for f in files or []]
    if not paths:
        return None
    frame = spark.read.option("basePath", storage.spark_uri(base)).parquet(*paths)
    return frame.withColumn(
        "batch_start_ts", F.to_timestamp(F.col("batch_start").cast("string"), "yyyyMMdd'T'HHmm")
    ).drop("batch_start")


def read_partition(spark: SparkSession, partition: str) -> DataFrame | None:
    """One committed partition (any dataset) as a DataFrame without partition columns; None when it has no
    manifest or no file."""
    files = storage.committed_files(partition)
    if not files:
        return None
    return spark.read.option("basePath", storage.spark_uri(partition)).parquet(*map(storage.spark_uri, files))


def partition_table(partition: str) -> pa.Table | None:
    """One committed partition as an Arrow table (no partition columns), without Spark; None when missing."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    files = storage.committed_files(partition)
    if files is None:
        return None
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(f))) for f in files]
    return pa.concat_tables(tables) if tables else None


def partition_rows(root: str, dataset: str, feature_spec_version: str, start: datetime) -> int | None:
    """The rows of a 15-minute partition from its manifest, without Spark; None when it has none."""
    path = storage.partition_path(root, dataset, batch_partition(feature_spec_version, start))
    manifest = storage.read_manifest(path)
    return None if manifest is None else manifest.rows
