"""Failure drills: the generated state machines drive the real jobs on a small synthetic estate (moto for
AWS, local Spark in one warm worker), and things go wrong on purpose.

One platform per module (building it is the expensive part): a backfill over N windows in one chunk job (which also
provides the training features), training through the training orchestrator, then live batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ndr_local.demo import DemoConfig, LocalRun
from tests.conftest import GENERATED, SPECS, committed_rows

HISTORY = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
HISTORY_HOURS = 2
LIVE = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
BATCH = timedelta(minutes=15)


def digest(root: Path, skip: str = "") -> str:
    """Every file's path and bytes under ``root`` (partitions whose path contains ``skip`` left out)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not (skip and skip in str(p))):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def batch_id(start: datetime) -> str:
    return f"acme-ndr-prod-v1-{start:%Y%m%dT%H%M}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    config = DemoConfig(workdir=tmp_path_factory.mktemp("drills") / "run", specs=SPECS, generated=GENERATED,
                        hosts=10, seed=11, wait_scale=0.05)
    with LocalRun(config, echo=lambda _m: None) as local:
        local.generate("history", HISTORY, HISTORY_HOURS)
        local.generate("live", LIVE, 1.0, noise_rate=0.05)
        local.backfill_result = local.backfill(HISTORY, HISTORY + timedelta(hours=HISTORY_HOURS))
        local.backfill_events = local.platform.events()
        local.train(HISTORY, HISTORY + timedelta(hours=HISTORY_HOURS))
        local.platform.events()
        local.first_runs = {}
        yield local


def first_run(run: LocalRun, start: datetime, what: str) -> Any:
    """The first execution of the batch at ``start`` on this platform, run now if no case has run it yet: cases
    that need a processed batch do not depend on the order (or the worker) they run in."""
    if start not in run.first_runs:
        run.first_runs[start] = run.execute("sfn_ndr_15m_features_inference", run.batch_event(start), what)
    return run.first_runs[start]


def test_a_backfill_over_n_windows_runs_them_in_one_chunk_job_and_emits_its_reconciliation(run: LocalRun):
    windows = [HISTORY + i * BATCH for i in range(HISTORY_HOURS * 4)]
    (extract, chunk) = run.pipelines.runs[:2]
    assert extract[0] == "backfill_historical_extractor"
    spec, params, result = chunk  # every window in one job (a chunk is 96 windows by default)
    assert spec == "backfill_windows" and result.status == "Succeeded"
    assert (params["FirstWindow"], params["WindowMask"]) == (f"{HISTORY:%Y-%m-%dT%H:%M:%SZ}", "1" * len(windows))
    (summary,) = [s.summary for s in result.steps]
    assert summary["windows_by_status"]["succeeded"] == len(windows)
    assert (summary["first_window"], summary["last_window"]) == (params["FirstWindow"],
                                                                 f"{windows[-1]:%Y-%m-%dT%H:%M:%SZ}")
    (reconciled,) = [e for e in run.backfill_events if e["detail-type"] == "NDR Backfill Reconciled"]
    detail = reconciled["detail"]
    counts = (detail["windows_total"], detail["windows_succeeded"], detail["windows_failed"])
    assert counts == (len(windows), len(windows), 0)
    assert detail["status"] == "COMPLETE"
    for w in windows:  # every window has its features
        assert (run.dataset("fg_a") / "feature_spec_version=v1" / f"batch_start={w:%Y%m%dT%H%M}").is_dir()


def test_a_malformed_batch_quarantines_its_bad_lines_and_the_workflow_succeeds(run: LocalRun):
    result = first_run(run, LIVE, "malformed batch")
    assert result.status == "SUCCEEDED"
    (features,) = [
        r for spec, p, r in run.pipelines.runs if spec == "features_15m" and p["MiniBatchId"] == batch_id(LIVE)
    ]
    summary = features.steps[0].summary
    assert summary["rows_quarantined"] > 0
    labels = [json.loads(line) for line in (run.work / "labels-live.jsonl").read_text().splitlines()]
    assert labels == []  # no attacks in this span: every quarantined line is one the generator damaged
    quarantine = run.dataset("quarantine") / "feature_spec_version=v1" / f"batch_start={LIVE:%Y%m%dT%H%M}"
    assert len(committed_rows(quarantine)) == summary["rows_quarantined"]
    published = run.dataset("publication") / "feature_spec_version=v1" / f"batch_start={LIVE:%Y%m%dT%H%M}"
    assert len(committed_rows(published)) > 0  # the batch was still scored and published


def test_a_job_that_raises_fails_the_workflow_releases_the_lock_and_the_next_batch_runs(run: LocalRun):
    failing, following = LIVE + BATCH, LIVE + 2 * BATCH
    before = digest(run.dataset(""), skip=f"batch_start={failing:%Y%m%dT%H%M}")
    os.environ["NDR_FEATURE_SPEC_DIR"] = str(run.work / "no-such-dir")  # FG-A cannot load its feature spec
    try:
        result = run.execute("sfn_ndr_15m_features_inference", run.batch_event(failing), "failing batch", expect=None)
    finally:
        del os.environ["NDR_FEATURE_SPEC_DIR"]
    assert result.status == "FAILED"
    assert result.path[-2:] == ["ReleaseMiniBatchLockOnFailure", "WorkflowFailed"]
    cause = json.loads(result.cause)
    assert cause["error"] == "NDR.PipelineFailed"
    assert "FGABuilderStep" in cause["cause"] and "unknown feature spec version" in cause["cause"]
    assert run.platform.lock(batch_id(failing)) is None  # released: the batch can be announced again
    assert digest(run.dataset(""), skip=f"batch_start={failing:%Y%m%dT%H%M}") == before  # other windows untouched

    nxt = run.execute("sfn_ndr_15m_features_inference", run.batch_event(following), "next batch")
    assert nxt.status == "SUCCEEDED"
    retry = run.execute("sfn_ndr_15m_features_inference", run.batch_event(failing), "failed batch again")
    assert retry.status == "SUCCEEDED"  # announced again once the fault is gone, it runs


def test_the_same_batch_event_again_is_a_duplicate_and_writes_nothing(run: LocalRun):
    first_run(run, LIVE, "malformed batch")
    before = digest(run.s3)
    again = run.execute("sfn_ndr_15m_features_inference", run.batch_event(LIVE), "duplicate", expect="FAILED")
    assert "DuplicateMiniBatch" in again.path
    assert digest(run.s3) == before


def test_an_aborted_execution_is_cleaned_up_by_the_janitor_and_the_batch_runs_again(run: LocalRun):
    target = LIVE + 3 * BATCH
    aborted, janitors, rerun = run.abort_and_recover(target)
    assert aborted["status"] == "ABORTED"
    (janitor,) = [j for j in janitors if (j.output or {}).get("execution_arn") == aborted["executionArn"]]
    assert janitor.status == "SUCCEEDED", janitor.cause
    assert janitor.output["locks_released"] == 1
    assert [p["status"] for p in janitor.output["pipelines"]] == ["Stopped"]  # stopped before it finished
    stopped = [r for spec, p, r in run.pipelines.runs
               if spec == "features_15m" and p["MiniBatchId"] == batch_id(target)]
    assert stopped[0].status == "Stopped" and stopped[0].steps[-1].status == "NotStarted"
    assert rerun.status == "SUCCEEDED"  # announced again, the batch runs to the end
    assert stopped[-1].status == "Succeeded"
    assert (run.dataset("publication") / "feature_spec_version=v1" / f"batch_start={target:%Y%m%dT%H%M}").is_dir()
