"""``python -m ndr_jobs.scripts.run_fg_b_builder``: FG-B baselines (host, segment, pair, IP metadata)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.interface import entrypoints
from ndr_jobs.runtime.config import MonthlyRuntime
from ndr_jobs.scripts._cli import run


def build_parser() -> argparse.ArgumentParser:
    return entrypoints.build_parser("ndr_jobs.scripts.run_fg_b_builder", __doc__)


def parse_runtime(argv: Sequence[str] | None = None) -> MonthlyRuntime:
    a = build_parser().parse_args(argv)
    return MonthlyRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        reference_month=a.reference_month,
        baseline_mode=a.baseline_mode,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.fg_b_builder_job import run_fg_b_builder_from_runtime_config

    run_fg_b_builder_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
