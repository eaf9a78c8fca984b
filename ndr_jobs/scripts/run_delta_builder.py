"""``python -m ndr_jobs.scripts.run_delta_builder``: build the 15-minute delta tables from PAN-OS TRAFFIC logs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.runtime import BatchRuntime
from ndr_jobs.scripts._cli import batch_arguments, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.scripts.run_delta_builder", description=__doc__)
    batch_arguments(parser)
    parser.add_argument("--raw-batch-folder", default="", help="the mini-batch folder of raw logs")
    return parser


def parse_runtime(argv: Sequence[str] | None = None) -> BatchRuntime:
    a = build_parser().parse_args(argv)
    return BatchRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        mini_batch_id=a.mini_batch_id,
        batch_start_ts=a.batch_start_ts_iso,
        batch_end_ts=a.batch_end_ts_iso,
        raw_batch_folder=a.raw_batch_folder,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.delta_builder_job import run_delta_builder_from_runtime_config

    run_delta_builder_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
