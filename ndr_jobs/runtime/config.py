"""Typed runtime configurations, built from a script's command line (and, later, project parameters).

The command lines check every value against ``ndr_jobs.interface.contract`` (the state machines' rules); a batch
runtime also checks its window, so a job called directly gets the same guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndr_jobs.interface import contract
from ndr_jobs.interface.entrypoints import DEFAULT_MAX_QUARANTINE_RATIO


@dataclass(frozen=True)
class ProjectRuntime:
    project_name: str
    feature_spec_version: str


@dataclass(frozen=True)
class BatchRuntime(ProjectRuntime):
    """A 15-minute mini-batch window [batch_start_ts, batch_end_ts)."""

    mini_batch_id: str
    batch_start_ts: str
    batch_end_ts: str
    raw_batch_folder: str = ""

    def __post_init__(self) -> None:
        contract.window(self.batch_start_ts, self.batch_end_ts)


@dataclass(frozen=True)
class DeltaRuntime(BatchRuntime):
    """The delta builder's batch: and the quarantined share past which the batch fails."""

    max_quarantine_ratio: float = DEFAULT_MAX_QUARANTINE_RATIO

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.max_quarantine_ratio) <= 1.0:
            raise ValueError(f"max_quarantine_ratio must be in [0, 1], not {self.max_quarantine_ratio!r}")


@dataclass(frozen=True)
class PublicationRuntime(BatchRuntime):
    publication_target: str = "s3"


@dataclass(frozen=True)
class MonthlyRuntime(ProjectRuntime):
    reference_month: str
    baseline_mode: str = "regular"


@dataclass(frozen=True)
class TrainingRuntime(ProjectRuntime):
    stage: str
    training_start_ts: str
    training_end_ts: str
    run_key: str
    missing_windows_override: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackfillRuntime(ProjectRuntime):
    start_ts: str
    end_ts: str
    manifest_uri: str
    raw_prefix: str = ""


@dataclass(frozen=True)
class BackfillRangeRuntime(ProjectRuntime):
    """A range of the manifest's windows, run in one job (``run_backfill_windows``)."""

    manifest_uri: str
    report_uri: str
    window_starts: list[str] = field(default_factory=list)
    max_quarantine_ratio: float = DEFAULT_MAX_QUARANTINE_RATIO
    force: bool = False
