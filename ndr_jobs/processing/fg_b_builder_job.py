"""FG-B baseline build for regular and backfill modes."""

from __future__ import annotations

from ndr_jobs.runtime import JobNotImplementedError, MonthlyRuntime


def run_fg_b_builder_from_runtime_config(runtime: MonthlyRuntime) -> None:
    raise JobNotImplementedError("fg_b_builder is not implemented yet (issue #6)")
