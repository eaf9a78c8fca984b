"""Join predictions with their features and publish them (``s3`` or staged ``redshift``).

Entry: :func:`run_prediction_feature_join_from_runtime_config`. Target ``redshift`` stages Parquet, then deletes
the window's rows and loads the staged files in one transaction (Redshift in AWS, ``NDR_PUBLICATION_DUCKDB``
locally). Columns: ``docs/datasets.md``; design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ndr_jobs.datasets import layout, redshift, storage
from ndr_jobs.interface import contract
from ndr_jobs.model.features import FG_C_PREFIX, KEYS, NON_FEATURES, FeatureDataError
from ndr_jobs.runtime.config import PublicationRuntime
from ndr_jobs.runtime.summary import batch_header, emit

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

STAGED_DATASET = "publication_staged"
TABLE_ENV = "NDR_PUBLICATION_TABLE"
DUCKDB_ENV = "NDR_PUBLICATION_DUCKDB"
DEFAULT_TABLE = "ndr_publication"
PREDICTION_PART: tuple[str, ...] = (
    "host_ip", "batch_start_ts", "batch_end_ts", "score", "rank", "alert", "detector", "model_version",
    "model_run_key", "top_features_json",
)  # fmt: skip
#: how long the load may run before it is cancelled, unless NDR_REDSHIFT_TIMEOUT_SECONDS says otherwise
REDSHIFT_TIMEOUT_SECONDS = 600.0


class PublicationError(RuntimeError):
    """The publication could not be loaded into its target."""


def table_name() -> str:
    return redshift.check_table(os.environ.get(TABLE_ENV, DEFAULT_TABLE), TABLE_ENV)


def _features(spark: SparkSession, root: str, dataset: str, fsv: str, start: Any) -> DataFrame:
    df = layout.read_batches(spark, root, dataset, fsv, [start])
    if df is None:
        raise FeatureDataError(
            f"{dataset} has no partition for window {contract.iso(start)}: run the 15-minute features pipeline first"
        )
    return df


def joined(spark: SparkSession, root: str, fsv: str, start: Any) -> DataFrame:
    """The publication rows of a window (``docs/datasets.md``)."""
    from pyspark.sql import functions as F

    predictions = layout.read_batches(spark, root, layout.PREDICTIONS, fsv, [start])
    if predictions is None:
        raise FeatureDataError(
            f"predictions has no partition for window {contract.iso(start)}: run inference_predictions first"
        )
    fg_a = _features(spark, root, layout.FG_A, fsv, start)
    fg_c = _features(spark, root, layout.FG_C, fsv, start)
    a_cols = sorted(c for c in fg_a.columns if c not in NON_FEATURES)
    c_cols = sorted(c for c in fg_c.columns if c not in NON_FEATURES)
    c_names = {c: (FG_C_PREFIX + c if c in a_cols or c in PREDICTION_PART else c) for c in c_cols}
    a_names = {c: (f"fg_a__{c}" if c in PREDICTION_PART else c) for c in a_cols}
    left = predictions.select(
        *[F.col(c) for c in PREDICTION_PART if c != "top_features_json"],
        F.to_json(F.col("top_features")).alias("top_features_json"),
    )
    a = fg_a.select(*[F.col(k) for k in KEYS], *[F.col(c).alias(a_names[c]) for c in a_cols])
    c = fg_c.select(*[F.col(k) for k in KEYS], *[F.col(c).alias(c_names[c]) for c in c_cols])
    out = left.join(a, list(KEYS), "left").join(c, list(KEYS), "left")
    return out.select(*PREDICTION_PART, *[a_names[x] for x in a_cols], *[c_names[x] for x in c_cols])


# --- redshift targets ----------------------------------------------------------------------------------------


def load_duckdb(database: str, table: str, staged: list[str], fsv: str, batch_start: str) -> int:
    """Replace the window's rows of ``table`` by the staged files, in one transaction; the rows loaded."""
    import duckdb

    if not staged:
        raise PublicationError("no staged Parquet files to load")
    files = [str(storage.local_path(storage.backing(f))) for f in staged]
    con = duckdb.connect(database)
    try:
        con.execute("BEGIN TRANSACTION")
        source = "read_parquet(?, hive_partitioning = false)"
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {source} LIMIT 0", [files])
        con.execute(f"DELETE FROM {table} WHERE feature_spec_version = ? AND batch_start = ?", [fsv, batch_start])
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {source}", [files])
        row = con.execute(
            f"SELECT count(*) FROM {table} WHERE feature_spec_version = ? AND batch_start = ?", [fsv, batch_start]
        ).fetchone()
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return int(row[0]) if row else 0


def redshift_statements(table: str, staged_prefix: str, config: redshift.RedshiftConfig) -> list[str]:
    """The DELETE of one window (its values the ``:feature_spec_version`` and ``:batch_start`` parameters) and
    the COPY of the staged Parquet files."""
    s3 = redshift.check_s3_uri("s3://" + staged_prefix.split("://", 1)[1].rstrip("/") + "/")
    table = redshift.check_table(table)
    return [
        f"DELETE FROM {table} WHERE feature_spec_version = :feature_spec_version AND batch_start = :batch_start",
        f"COPY {table} FROM {redshift.quote_literal(s3)} {config.iam_role_clause()} FORMAT AS PARQUET",
    ]


def load_redshift(
    table: str, staged_prefix: str, fsv: str, batch_start: str, client: Any = None, sleep: Any = time.sleep,
    clock: Any = time.monotonic,
) -> dict[str, Any]:  # fmt: skip
    """Replace the window's rows of ``table`` by the staged files in one Redshift transaction, and wait."""
    config = redshift.RedshiftConfig.from_env(REDSHIFT_TIMEOUT_SECONDS)
    described = redshift.execute(
        client or redshift.data_client(), config, redshift_statements(table, staged_prefix, config),
        {"feature_spec_version": fsv, "batch_start": batch_start}, sleep, clock,
    )  # fmt: skip
    return {"statement_id": described["Id"], "status": described["Status"]}


# --- the job -------------------------------------------------------------------------------------------------


def run_prediction_feature_join_from_runtime_config(runtime: PublicationRuntime) -> dict[str, Any]:
    """Join the window's predictions with their features and publish them; print and return the summary."""
    from pyspark.sql import functions as F

    from ndr_jobs.runtime.spark import spark_session

    began = time.perf_counter()
    start, end = contract.parse_utc(runtime.batch_start_ts), contract.parse_utc(runtime.batch_end_ts)
    if end <= start:
        raise ValueError(f"batch end {runtime.batch_end_ts} is not after batch start {runtime.batch_start_ts}")
    target = runtime.publication_target
    if target not in ("s3", "redshift"):
        raise ValueError(f"publication target must be 's3' or 'redshift', not {target!r}")
    root = layout.storage_root()
    fsv = runtime.feature_spec_version
    spark = spark_session("ndr-prediction-feature-join")
    rows_df = joined(spark, root, fsv, start).cache()
    try:
        rows = rows_df.count()
        partition = layout.batch_partition(fsv, start)
        summary: dict[str, Any] = {
            **batch_header("prediction_feature_join", runtime, start, end), "publication_target": target,
            "rows": rows,
        }  # fmt: skip
        if target == "s3":
            out = storage.write_partition(rows_df, root, layout.PUBLICATION, partition, ["rank"], 1, rows)
            summary["output"] = out.path
        else:
            stamp = layout.stamp(start)
            staged_df = rows_df.withColumn("feature_spec_version", F.lit(fsv)).withColumn("batch_start", F.lit(stamp))
            staged = storage.write_partition(staged_df, root, STAGED_DATASET, partition, ["rank"], 1, rows)
            summary["staged"] = staged.path
            table = table_name()
            summary["table"] = table
            if redshift.configured():
                summary["redshift"] = load_redshift(table, staged.data_prefix, fsv, stamp)  # the run's files only
            elif os.environ.get(DUCKDB_ENV):
                data_files = [f for f in staged.files if f.endswith(".parquet")]
                summary["duckdb"] = os.environ[DUCKDB_ENV]
                summary["rows_in_table"] = load_duckdb(os.environ[DUCKDB_ENV], table, data_files, fsv, stamp)
            else:
                raise ValueError(
                    "the redshift target needs NDR_REDSHIFT_WORKGROUP / NDR_REDSHIFT_CLUSTER_ID (AWS) or "
                    f"{DUCKDB_ENV} (local DuckDB file)"
                )
    finally:
        rows_df.unpersist()
    summary["seconds"] = round(time.perf_counter() - began, 3)
    emit(summary)
    return summary
