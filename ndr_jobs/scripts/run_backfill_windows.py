"""``python -m ndr_jobs.scripts.run_backfill_windows``: the 15-minute chain over a range of backfill windows, in one
Spark session."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.interface import contract, entrypoints
from ndr_jobs.runtime.config import BackfillRangeRuntime
from ndr_jobs.scripts._cli import run

MODULE = "ndr_jobs.scripts.run_backfill_windows"


def build_parser() -> argparse.ArgumentParser:
    return entrypoints.build_parser(MODULE, __doc__)


def parse_runtime(argv: Sequence[str] | None = None) -> BackfillRangeRuntime:
    parser = build_parser()
    a = parser.parse_args(argv)
    starts = a.window_starts
    if (a.first_window is None) != (a.window_mask is None):
        parser.error("--first-window and --window-mask go together")
    if a.window_mask is not None:
        if starts:
            parser.error("--window-starts and --window-mask exclude each other")
        starts = contract.masked_window_starts(a.first_window, a.window_mask)
        if not starts:
            parser.error("--window-mask selects no window")
    return BackfillRangeRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        manifest_uri=a.manifest_uri,
        report_uri=a.report_uri,
        window_starts=starts,
        max_quarantine_ratio=a.max_quarantine_ratio,
        force=a.force == "true",
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.backfill_windows_job import run_backfill_windows_from_runtime_config

    run_backfill_windows_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
