"""Score the mini-batch window with the promoted model."""

from __future__ import annotations

from ndr_jobs.runtime import BatchRuntime, JobNotImplementedError


def run_inference_predictions_from_runtime_config(runtime: BatchRuntime) -> None:
    raise JobNotImplementedError("inference_predictions is not implemented yet (issue #7)")
