"""Unload the machines active in a reference month (Redshift UNLOAD in AWS; a DuckDB file locally).

Entry: :func:`run_machine_inventory_unload_from_runtime_config`. Configured by ``NDR_INVENTORY_QUERY``,
``NDR_INVENTORY_TABLE``, ``NDR_INVENTORY_DUCKDB`` and the ``NDR_REDSHIFT_*`` settings of
:mod:`ndr_jobs.datasets.redshift`. Both engines write into the run's fresh prefix of the partition, the files are
checked, then committed (:func:`ndr_jobs.datasets.storage.commit_partition`). Design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ndr_jobs.datasets import redshift, storage
from ndr_jobs.runtime.config import MonthlyRuntime
from ndr_jobs.runtime.summary import emit

INVENTORY_DATASET = "inventory"
INVENTORY_COLUMNS: tuple[str, ...] = ("ip_address", "hostname", "segment", "zone", "os", "role", "criticality")
DEFAULT_TABLE = "machine_inventory"

DUCKDB_ENV = "NDR_INVENTORY_DUCKDB"
TABLE_ENV = "NDR_INVENTORY_TABLE"
QUERY_ENV = "NDR_INVENTORY_QUERY"
#: how long the UNLOAD may run before it is cancelled, unless NDR_REDSHIFT_TIMEOUT_SECONDS says otherwise
TIMEOUT_SECONDS = 1800.0


# --- the query ------------------------------------------------------------------------------------------


def month_bounds(reference_month: str) -> tuple[date, date]:
    """``YYYY-MM`` -> (first day of the month, first day of the next month)."""
    try:
        first = datetime.strptime(reference_month, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"reference month {reference_month!r} is not YYYY-MM") from None
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following


def _date_literal(day: date) -> str:
    return f"CAST('{day.isoformat()}' AS DATE)"


def source_query(reference_month: str) -> str:
    """The inner SELECT: ``$NDR_INVENTORY_QUERY`` (placeholders filled) or the default over the table."""
    start, end = month_bounds(reference_month)
    custom = os.environ.get(QUERY_ENV, "").strip()
    if custom:
        return (
            custom.rstrip(";")
            .replace("{reference_month}", f"'{reference_month}'")
            .replace("{month_start}", _date_literal(start))
            .replace("{month_end}", _date_literal(end))
        )
    table = redshift.check_table(os.environ.get(TABLE_ENV, "").strip() or DEFAULT_TABLE, TABLE_ENV)
    return (
        f"SELECT * FROM {table} WHERE valid_from < {_date_literal(end)} "
        f"AND (valid_to IS NULL OR valid_to > {_date_literal(start)})"
    )


def inventory_select(reference_month: str) -> str:
    """The full SELECT both engines run: the seven columns as strings, sorted by ``ip_address``."""
    columns = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in INVENTORY_COLUMNS)
    return f"SELECT {columns} FROM ({source_query(reference_month)}) AS inventory ORDER BY ip_address"


def unload_sql(select: str, s3_prefix: str, config: redshift.RedshiftConfig) -> str:
    """The Redshift UNLOAD of ``select`` to ``s3_prefix`` (an ``s3://`` key prefix) as one Parquet file."""
    return (
        f"UNLOAD ({redshift.quote_literal(select)}) TO {redshift.quote_literal(redshift.check_s3_uri(s3_prefix))} "
        f"{config.iam_role_clause()} FORMAT PARQUET PARALLEL OFF ALLOWOVERWRITE"
    )


# --- Redshift -------------------------------------------------------------------------------------------


def _s3_uri(path: str) -> str:
    parsed = urlparse(path)
    return f"s3://{parsed.netloc}{parsed.path}"


def _unload_redshift(select: str, staging: str, client: Any, sleep: Callable[[float], None],
                     clock: Callable[[], float]) -> dict[str, Any]:  # fmt: skip
    config = redshift.RedshiftConfig.from_env(
        TIMEOUT_SECONDS, f"machine_inventory_unload: for a local run set {DUCKDB_ENV} to a DuckDB file instead"
    )
    if not storage.is_s3(staging) or not storage.is_s3(storage.backing(staging)):
        raise ValueError(
            f"Redshift UNLOAD writes to S3 only, but the inventory would go to {storage.backing(staging)} "
            f"(NDR_STORAGE_ROOT / NDR_LOCAL_S3_ROOT); for a local run set {DUCKDB_ENV}"
        )
    sql = unload_sql(select, _s3_uri(storage.join(staging, "part-")), config)
    described = redshift.execute(client or redshift.data_client(), config, sql, sleep=sleep, clock=clock)
    return {"engine": "redshift", "source": config.describe(), "statement_id": described.get("Id"),
            "redshift_result_rows": described.get("ResultRows")}  # fmt: skip


# --- DuckDB ---------------------------------------------------------------------------------------------


def _unload_duckdb(select: str, staging: str, database: str) -> dict[str, Any]:
    import duckdb

    if not Path(database).is_file():
        raise FileNotFoundError(f"{DUCKDB_ENV}={database}: no such DuckDB file")
    work = Path(tempfile.mkdtemp(prefix="ndr-inventory-"))
    try:
        out = work / "part-00000.parquet"
        con = duckdb.connect(database, read_only=True)
        try:
            con.execute(f"COPY ({select}) TO {redshift.quote_literal(str(out))} (FORMAT parquet)")
        except duckdb.Error as exc:
            raise ValueError(f"the inventory query failed in DuckDB {database}: {exc}\nquery: {select}") from exc
        finally:
            con.close()
        storage.write_bytes(storage.join(staging, out.name), out.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"engine": "duckdb", "source": f"duckdb {database}"}


# --- staging, checks, swap ------------------------------------------------------------------------------


def check_staged(staging: str) -> tuple[int, list[str]]:
    """(rows, files) of the staged Parquet files, after checking columns, rows and ``ip_address``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [o.path for o in storage.list_objects(staging)]
    if not files:
        raise ValueError(f"the unload wrote no files under {staging}: the inventory query returned no rows?")
    tables = []
    for path in files:
        table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
        if tuple(table.column_names) != INVENTORY_COLUMNS:
            raise ValueError(f"{path}: columns {table.column_names}, expected {list(INVENTORY_COLUMNS)}")
        wrong = [f.name for f in table.schema if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
        if wrong:
            raise ValueError(f"{path}: columns {wrong} are not strings")
        tables.append(table.select(["ip_address"]).cast(pa.schema([("ip_address", pa.string())])))
    ips = pa.concat_tables(tables).column("ip_address")
    if len(ips) == 0:
        raise ValueError(f"the inventory query returned no rows (staged under {staging}); previous partition kept")
    if ips.null_count:
        raise ValueError(f"{ips.null_count} inventory rows have no ip_address")
    duplicates = sorted(ip for ip, n in Counter(ips.to_pylist()).items() if n > 1)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (", ..." if len(duplicates) > 5 else "")
        raise ValueError(f"{len(duplicates)} ip_address values appear more than once in the inventory: {shown}")
    return len(ips), files


def unload_inventory(
    runtime: MonthlyRuntime,
    redshift_client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The job (``docs/design/jobs.md``); the Redshift client and the clock can be given (tests)."""
    began = time.perf_counter()
    month_bounds(runtime.reference_month)
    root = os.environ.get("NDR_STORAGE_ROOT")
    if not root:
        raise ValueError("NDR_STORAGE_ROOT is not set")
    partition = [("feature_spec_version", runtime.feature_spec_version), ("reference_month", runtime.reference_month)]
    select = inventory_select(runtime.reference_month)
    duckdb_file = os.environ.get(DUCKDB_ENV, "").strip()
    done: dict[str, Any] = {}

    def unload(prefix: str) -> None:  # into the run's fresh prefix, checked before the commit
        if duckdb_file:
            done["source"] = _unload_duckdb(select, prefix, duckdb_file)
        else:
            done["source"] = _unload_redshift(select, prefix, redshift_client, sleep, clock)
        done["rows"], _ = check_staged(prefix)

    written = storage.commit_partition(root, INVENTORY_DATASET, partition, unload)
    source, rows, target, files = done["source"], done["rows"], written.path, written.files
    summary: dict[str, Any] = {
        "job": "machine_inventory_unload",
        "project_name": runtime.project_name,
        "feature_spec_version": runtime.feature_spec_version,
        "reference_month": runtime.reference_month,
        **source,
        "query": select,
        "rows": rows,
        "output": target,
        "output_files": len(files),
        "seconds": round(time.perf_counter() - began, 3),
    }
    emit(summary)
    return summary


def run_machine_inventory_unload_from_runtime_config(runtime: MonthlyRuntime) -> dict[str, Any]:
    """Unload the reference month's active machines into the inventory partition; print and return the summary."""
    return unload_inventory(runtime)
