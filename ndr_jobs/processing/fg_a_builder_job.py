"""Build FG-A current-behaviour windowed features."""

from __future__ import annotations

from ndr_jobs.runtime import BatchRuntime, JobNotImplementedError


def run_fg_a_builder_from_runtime_config(runtime: BatchRuntime) -> None:
    raise JobNotImplementedError("fg_a_builder is not implemented yet (issue #6)")
