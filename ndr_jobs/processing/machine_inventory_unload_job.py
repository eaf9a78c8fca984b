"""Unload the active machine inventory (Redshift -> S3; DuckDB locally)."""

from __future__ import annotations

from ndr_jobs.runtime import JobNotImplementedError, MonthlyRuntime


def run_machine_inventory_unload_from_runtime_config(runtime: MonthlyRuntime) -> None:
    raise JobNotImplementedError("machine_inventory_unload is not implemented yet (issue #7)")
