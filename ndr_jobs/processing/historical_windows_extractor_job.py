"""Enumerate historical mini-batch objects, derive their windows, write the backfill window manifest."""

from __future__ import annotations

from ndr_jobs.runtime import BackfillRuntime, JobNotImplementedError


class HistoricalWindowsExtractorJob:
    def __init__(self, runtime: BackfillRuntime) -> None:
        self.runtime = runtime

    def run(self) -> None:
        raise JobNotImplementedError("historical_windows_extractor is not implemented yet (issue #7)")
