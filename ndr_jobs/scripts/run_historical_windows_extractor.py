"""``python -m ndr_jobs.scripts.run_historical_windows_extractor``: write the backfill window manifest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.interface import entrypoints
from ndr_jobs.runtime.config import BackfillRuntime
from ndr_jobs.scripts._cli import run


def build_parser() -> argparse.ArgumentParser:
    return entrypoints.build_parser("ndr_jobs.scripts.run_historical_windows_extractor", __doc__)


def parse_runtime(argv: Sequence[str] | None = None) -> BackfillRuntime:
    a = build_parser().parse_args(argv)
    return BackfillRuntime(
        project_name=a.project_name,
        feature_spec_version=a.feature_spec_version,
        start_ts=a.start_ts_iso,
        end_ts=a.end_ts_iso,
        manifest_uri=a.manifest_uri,
        raw_prefix=a.raw_prefix,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.historical_windows_extractor_job import HistoricalWindowsExtractorJob

    HistoricalWindowsExtractorJob(parse_runtime(argv)).run()


if __name__ == "__main__":
    sys.exit(run(main))
