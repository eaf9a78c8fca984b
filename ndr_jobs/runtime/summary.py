"""Every job's summary: one JSON line on stdout (the local runner and the step logs read it), printed here only."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ndr_jobs.interface import contract

if TYPE_CHECKING:
    from ndr_jobs.runtime.config import BatchRuntime


class Phases:
    """Seconds spent per named phase of a job."""

    def __init__(self) -> None:
        self.began = self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.mark, 3)
        self.mark = now

    def total(self) -> float:
        return round(time.perf_counter() - self.began, 3)


def batch_header(job: str, runtime: BatchRuntime, start: datetime, end: datetime) -> dict[str, Any]:
    """The fields a batch job's summary starts with: the job, the batch and its window."""
    return {
        "job": job,
        "mini_batch_id": runtime.mini_batch_id,
        "project_name": runtime.project_name,
        "feature_spec_version": runtime.feature_spec_version,
        "batch_start_ts": contract.iso(start),
        "batch_end_ts": contract.iso(end),
    }


def emit(summary: dict[str, Any]) -> dict[str, Any]:
    """Print the summary as one JSON line on stdout and return it."""
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return summary
