"""Build the 15-minute delta tables from PAN-OS TRAFFIC logs."""

from __future__ import annotations

from ndr_jobs.runtime import BatchRuntime, JobNotImplementedError


def run_delta_builder_from_runtime_config(runtime: BatchRuntime) -> None:
    raise JobNotImplementedError("delta_builder is not implemented yet (issue #6)")
