"""``python -m ndr_jobs.scripts.run_pair_counts_builder``: count (src_ip, dst_ip, dst_port) per 15-minute slice."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.runtime import BatchRuntime
from ndr_jobs.scripts._cli import batch_arguments, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.scripts.run_pair_counts_builder", description=__doc__)
    batch_arguments(parser)
    return parser


def parse_runtime(argv: Sequence[str] | None = None) -> BatchRuntime:
    a = build_parser().parse_args(argv)
    return BatchRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        mini_batch_id=a.mini_batch_id,
        batch_start_ts=a.batch_start_ts_iso,
        batch_end_ts=a.batch_end_ts_iso,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.pair_counts_builder_job import run_pair_counts_builder_from_runtime_config

    run_pair_counts_builder_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
