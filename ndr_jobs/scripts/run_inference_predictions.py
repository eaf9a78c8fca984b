"""``python -m ndr_jobs.scripts.run_inference_predictions``: score the mini-batch window with the promoted model."""

from __future__ import annotations

import sys

from ndr_jobs.scripts._cli import BatchScript, run

SCRIPT = BatchScript(
    __name__.replace("__main__", "ndr_jobs.scripts.run_inference_predictions"),
    __doc__,
    "ndr_jobs.processing.inference_predictions_job",
    "run_inference_predictions_from_runtime_config",
)
build_parser, parse_runtime, main = SCRIPT.build_parser, SCRIPT.parse_runtime, SCRIPT.main

if __name__ == "__main__":
    sys.exit(run(main))
