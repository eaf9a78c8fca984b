"""``python -m ndr_jobs.scripts.run_if_training --stage ...``: one stage of the Isolation Forest lifecycle."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.interface import entrypoints
from ndr_jobs.runtime.config import TrainingRuntime
from ndr_jobs.scripts._cli import run


def build_parser() -> argparse.ArgumentParser:
    return entrypoints.build_parser("ndr_jobs.scripts.run_if_training", __doc__)


def parse_runtime(argv: Sequence[str] | None = None) -> TrainingRuntime:
    a = build_parser().parse_args(argv)
    return TrainingRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        stage=a.stage,
        training_start_ts=a.training_start_ts_iso,
        training_end_ts=a.training_end_ts_iso,
        run_key=a.run_key,
        missing_windows_override=list(a.missing_windows_override),
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.if_training_job import run_if_training_from_runtime_config

    run_if_training_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
