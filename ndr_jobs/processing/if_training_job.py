"""Isolation Forest lifecycle: verify, remediate, reverify, train, publish, attributes, deploy."""

from __future__ import annotations

from ndr_jobs.runtime import JobNotImplementedError, TrainingRuntime


def run_if_training_from_runtime_config(runtime: TrainingRuntime) -> None:
    raise JobNotImplementedError(f"if_training stage '{runtime.stage}' is not implemented yet (issue #7)")
