"""``python -m ndr_jobs.scripts.run_prediction_feature_join``: join predictions with their features and publish them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.runtime import PublicationRuntime
from ndr_jobs.scripts._cli import batch_arguments, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.scripts.run_prediction_feature_join", description=__doc__)
    batch_arguments(parser)
    parser.add_argument("--publication-target", choices=["s3", "redshift"], default="s3")
    return parser


def parse_runtime(argv: Sequence[str] | None = None) -> PublicationRuntime:
    a = build_parser().parse_args(argv)
    return PublicationRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        mini_batch_id=a.mini_batch_id,
        batch_start_ts=a.batch_start_ts_iso,
        batch_end_ts=a.batch_end_ts_iso,
        publication_target=a.publication_target,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.prediction_feature_join_job import run_prediction_feature_join_from_runtime_config

    run_prediction_feature_join_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
