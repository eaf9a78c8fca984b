"""Count (src_ip, dst_ip, dst_port) per 15-minute slice."""

from __future__ import annotations

from ndr_jobs.runtime import BatchRuntime, JobNotImplementedError


def run_pair_counts_builder_from_runtime_config(runtime: BatchRuntime) -> None:
    raise JobNotImplementedError("pair_counts_builder is not implemented yet (issue #6)")
