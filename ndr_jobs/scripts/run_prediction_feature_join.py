"""``python -m ndr_jobs.scripts.run_prediction_feature_join``: join predictions with their features and publish them."""

from __future__ import annotations

import sys

from ndr_jobs.runtime.config import PublicationRuntime
from ndr_jobs.scripts._cli import BatchScript, run

SCRIPT = BatchScript(
    __name__.replace("__main__", "ndr_jobs.scripts.run_prediction_feature_join"),
    __doc__,
    "ndr_jobs.processing.prediction_feature_join_job",
    "run_prediction_feature_join_from_runtime_config",
    runtime=PublicationRuntime,
    fields=lambda a: {"publication_target": a.publication_target},
)
build_parser, parse_runtime, main = SCRIPT.build_parser, SCRIPT.parse_runtime, SCRIPT.main

if __name__ == "__main__":
    sys.exit(run(main))
