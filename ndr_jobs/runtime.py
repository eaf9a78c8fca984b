"""Typed runtime configurations, built from a script's command line (and, later, project parameters)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime


def iso_timestamp(value: str) -> str:
    """argparse type: an ISO-8601 UTC timestamp such as 2026-10-01T12:00:00Z."""
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    return value


def year_month(value: str) -> str:
    """argparse type: YYYY-MM."""
    try:
        datetime.strptime(value, "%Y-%m")
    except ValueError:
        raise ValueError(f"not a YYYY-MM month: {value!r}") from None
    return value


def json_list(value: str) -> list[str]:
    """argparse type: a JSON array of strings (empty string: [])."""
    if not value.strip():
        return []
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise ValueError("expected a JSON array of strings")
    return parsed


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
