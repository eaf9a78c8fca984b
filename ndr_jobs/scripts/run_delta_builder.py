"""``python -m ndr_jobs.scripts.run_delta_builder``: build the 15-minute delta tables from PAN-OS TRAFFIC logs."""

from __future__ import annotations

import argparse
import sys

from ndr_jobs import contract
from ndr_jobs.scripts._cli import BatchScript, run


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-batch-folder", default="", type=contract.optional(contract.storage_uri),
                        help="the mini-batch folder of raw logs")


SCRIPT = BatchScript(
    __name__.replace("__main__", "ndr_jobs.scripts.run_delta_builder"),
    __doc__,
    "ndr_jobs.processing.delta_builder_job",
    "run_delta_builder_from_runtime_config",
    extra=_extra,
    fields=lambda a: {"raw_batch_folder": a.raw_batch_folder},
)
build_parser, parse_runtime, main = SCRIPT.build_parser, SCRIPT.parse_runtime, SCRIPT.main

if __name__ == "__main__":
    sys.exit(run(main))
