"""Join predictions with their features and publish them."""

from __future__ import annotations

from ndr_jobs.runtime import JobNotImplementedError, PublicationRuntime


def run_prediction_feature_join_from_runtime_config(runtime: PublicationRuntime) -> None:
    raise JobNotImplementedError("prediction_feature_join is not implemented yet (issue #7)")
