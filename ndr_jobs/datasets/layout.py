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
    """The window starts that have a (non-empty or empty but written) partition, sorted."""
    base = dataset_dir(root, dataset, feature_spec_version)
    found: set[datetime] = set()
    for obj in storage.list_objects(base):
        rest = obj.path[len(base) :].lstrip("/")
        first = rest.split("/", 1)[0]
        if first.startswith("batch_start="):
            try:
                found.add(from_stamp(first.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(found)


def read_batches(
    spark: SparkSession, root: str, dataset: str, feature_spec_version: str, starts: Sequence[datetime]
) -> DataFrame | None:
    """The partitions of ``starts`` that exist, unioned, with ``batch_start_ts`` (timestamp) added; None if none.

    Partitions written empty (a window with no rows) count as existing and contribute no rows.
    """
    from pyspark.sql import functions as F

    wanted = {stamp(s) for s in starts}
    present = [s for s in existing_batches(root, dataset, feature_spec_version) if stamp(s) in wanted]
    if not present:
        return None
    base = dataset_dir(root, dataset, feature_spec_version)
    paths = [storage.spark_uri(storage.join(base, f"batch_start={stamp(s)}")) for s in present]
    frame = spark.read.option("basePath", storage.spark_uri(base)).parquet(*paths)
    return frame.withColumn(
        "batch_start_ts", F.to_timestamp(F.col("batch_start").cast("string"), "yyyyMMdd'T'HHmm")
    ).drop("batch_start")


def partition_rows(root: str, dataset: str, feature_spec_version: str, start: datetime) -> int | None:
    """The rows of a 15-minute partition from its Parquet footers, without Spark; None when unknown.

    Only for local storage (or S3 backed by a local directory): elsewhere reading the footers would cost
    more than the Spark count it saves, and the caller counts with Spark.
    """
    path = storage.backing(storage.partition_path(root, dataset, batch_partition(feature_spec_version, start)))
    if storage.is_s3(path):
        return None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    objects = [o for o in storage.list_objects(path) if o.path.endswith(".parquet")]
    if not objects:
        return None
    return sum(pq.read_metadata(str(storage.local_path(o.path))).num_rows for o in objects)
