"""run_backfill_windows: a range of manifest windows in one job commits exactly the rows the window-by-window
pipeline commits; it stops at a failing window (the earlier ones kept), resumes from its report, reruns with
force, and refuses manifests, windows and reports that are not the ones it was given."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.devtools.synth.generator import SynthConfig, generate
from ndr_jobs.processing import backfill_windows_job as job
from ndr_jobs.processing.chain import FEATURE_CHAIN
from ndr_jobs.processing.historical_windows_extractor_job import run_historical_windows_extractor_from_runtime_config
from ndr_jobs.runtime.config import BackfillRangeRuntime, BackfillRuntime
from ndr_jobs.scripts import run_backfill_windows
from tests.conftest import committed_rows

START = datetime(2026, 10, 1, 11, 0, tzinfo=UTC)
STARTS = [f"2026-10-01T11:{m:02d}:00Z" for m in (0, 15, 30)]
FSV = "v1"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated windows (45 minutes, a few hosts) and the extractor's manifest of them."""
    base = tmp_path_factory.mktemp("backfill")
    generate(SynthConfig(start=START, hours=0.75, hosts=8, seed=5, files_per_batch=2), str(base / "raw"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NDR_RAW_ROOT", str(base / "raw"))
        mp.setenv("NDR_ORG_ID", "acme")
        with contextlib.redirect_stdout(io.StringIO()):
            run_historical_windows_extractor_from_runtime_config(BackfillRuntime(
                project_name="ndr-prod", feature_spec_version=FSV, start_ts=STARTS[0], end_ts="2026-10-01T11:45:00Z",
                manifest_uri=str(base / "windows.json"),
            ))  # fmt: skip
    return base


@pytest.fixture
def env(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NDR_RAW_ROOT", str(raw / "raw"))
    monkeypatch.setenv("NDR_ORG_ID", "acme")
    return tmp_path


def quiet(call, *args):  # noqa: ANN001, ANN201 - the jobs' JSON lines are not the test's output
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args)


def range_args(raw: Path, report: Path, *extra: str) -> list[str]:
    return ["--project-name", "ndr-prod", "--feature-spec-version", FSV, "--manifest-uri", str(raw / "windows.json"),
            "--report-uri", str(report), *extra]  # fmt: skip


def snapshot(store: Path) -> dict[tuple[str, str], list[tuple]]:
    """Every window partition's committed rows (sorted), by (dataset, window stamp)."""
    out = {}
    for dataset in job.WINDOW_DATASETS:
        for start in STARTS:
            stamp = layout.stamp(datetime.fromisoformat(start.replace("Z", "+00:00")))
            path = store / dataset / f"feature_spec_version={FSV}" / f"batch_start={stamp}"
            if storage.read_manifest(str(path)) is not None:
                out[dataset, stamp] = sorted(tuple(sorted(r.items())) for r in committed_rows(path))
    return out


def test_a_range_commits_the_rows_the_window_by_window_pipeline_commits(
    raw: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    manifest = json.loads((raw / "windows.json").read_text())
    assert [w["batch_start_ts"] for w in manifest["windows"]] == STARTS
    # the pipeline today: per window, the four steps' own command lines, in order
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(env / "one-by-one"))
    for w in manifest["windows"]:
        batch = ["--project-name", "ndr-prod", "--feature-spec-version", FSV, "--mini-batch-id", w["mini_batch_id"],
                 "--batch-start-ts-iso", w["batch_start_ts"], "--batch-end-ts-iso", w["batch_end_ts"]]  # fmt: skip
        for name in FEATURE_CHAIN:
            extra = ["--raw-batch-folder", w["batch_folder"]] if name == "delta_builder" else []
            quiet(importlib.import_module(f"ndr_jobs.scripts.run_{name}").main, [*batch, *extra])
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(env / "range"))
    report = env / "report.json"
    summary = quiet(job.run_backfill_windows_from_runtime_config, run_backfill_windows.parse_runtime(
        range_args(raw, report)))  # fmt: skip

    expected = snapshot(env / "one-by-one")
    assert len(expected) == len(job.WINDOW_DATASETS) * len(STARTS)
    assert sum(len(rows) for (d, _), rows in expected.items() if d == layout.FG_C) > 0
    assert snapshot(env / "range") == expected
    assert summary["windows_by_status"] == {"succeeded": 3, "resumed": 0, "failed": 0, "not_run": 0}
    doc = json.loads(report.read_text())
    assert doc["status"] == "succeeded" and doc["attempt"] == 1
    assert [(w["batch_start_ts"], w["status"], w["steps"]) for w in doc["windows"]] == [
        (s, "succeeded", list(FEATURE_CHAIN)) for s in STARTS
    ]

    # a rerun resumes: nothing runs again, every partition is still the run the report names
    before = {s: job.committed_runs(str(env / "range"), FSV, datetime.fromisoformat(s)) for s in STARTS}
    again = quiet(job.run_backfill_windows_from_runtime_config, run_backfill_windows.parse_runtime(
        range_args(raw, report)))  # fmt: skip
    assert again["windows_by_status"]["resumed"] == 3 and again["attempt"] == 2
    assert {s: job.committed_runs(str(env / "range"), FSV, datetime.fromisoformat(s)) for s in STARTS} == before

    # force: the last window runs again (new runs), same rows
    forced = quiet(job.run_backfill_windows_from_runtime_config, run_backfill_windows.parse_runtime(
        range_args(raw, report, "--force", "true", "--window-starts", json.dumps(STARTS[2:]))))  # fmt: skip
    assert forced["windows_by_status"]["succeeded"] == 1
    assert job.committed_runs(str(env / "range"), FSV, datetime.fromisoformat(STARTS[2]))[layout.FG_C] != before[
        STARTS[2]][layout.FG_C]  # fmt: skip
    assert snapshot(env / "range") == expected


def test_a_failing_window_stops_the_range_keeps_the_windows_before_it_and_a_rerun_resumes(
    raw: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(env / "store"))
    broken = raw / "raw" / "pan-traffic/acme/ndr-prod/v1/2026/10/01/1115"
    hidden = env / "hidden"
    shutil.move(broken, hidden)  # the second window's raw objects are gone (after the manifest listed them)
    report = env / "report.json"
    runtime = run_backfill_windows.parse_runtime(range_args(raw, report))
    try:
        with pytest.raises(job.BackfillWindowError) as failed:
            quiet(job.run_backfill_windows_from_runtime_config, runtime)
    finally:
        shutil.move(hidden, broken)
    message = str(failed.value)
    assert "window 2026-10-01T11:15:00Z (acme-ndr-prod-v1-20261001T1115) failed at delta_builder" in message
    assert "FileNotFoundError" in message and "1 window(s) before it are committed, 1 were not run" in message
    doc = json.loads(report.read_text())
    assert doc["status"] == "failed"
    assert [w["status"] for w in doc["windows"]] == ["succeeded", "failed", "not_run"]
    assert doc["windows"][1]["failed_step"] == "delta_builder"
    store = str(env / "store")
    assert layout.existing_batches(store, layout.FG_C, FSV) == [datetime.fromisoformat(s) for s in STARTS[:1]]
    assert layout.existing_batches(store, layout.DELTA, FSV) == [datetime.fromisoformat(s) for s in STARTS[:1]]

    # the raw data is back: the rerun runs the failed window and the one after it, not the committed ones
    summary = quiet(job.run_backfill_windows_from_runtime_config, runtime)
    assert summary["windows_by_status"] == {"succeeded": 2, "resumed": 1, "failed": 0, "not_run": 0}
    assert layout.existing_batches(store, layout.FG_C, FSV) == [datetime.fromisoformat(s) for s in STARTS]


def edited_manifest(raw: Path, tmp: Path, change) -> Path:  # noqa: ANN001
    doc = json.loads((raw / "windows.json").read_text())
    change(doc)
    path = tmp / "edited.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d["windows"][1].update(batch_folder=d["windows"][1]["batch_folder"] + "../1200/"),
         "is not an s3:// URI or an absolute path"),
        (lambda d: d["windows"][1].update(batch_folder=d["windows"][2]["batch_folder"]), "is not the window's folder"),
        (lambda d: d["windows"][0].update(mini_batch_id="other-ndr-prod-v1-20261001T1100"), "is not 'acme-ndr-prod"),
        (lambda d: d["windows"][0].update(batch_end_ts="2026-10-01T11:30:00Z"), "is not 15 minutes after"),
        (lambda d: d["windows"][0].update(batch_start_ts="2026-10-01T11:05:00Z"), "15-minute boundary"),
        (lambda d: d.update(project_name="other"), "manifest project_name 'other'"),
        (lambda d: d["windows"].append(dict(d["windows"][0])), "more than once"),
        (lambda d: d.update(windows=[]), "has no window to run"),
        (lambda d: d.update(manifest_version=2), "is not a version 1 window manifest"),
    ],
)
def test_a_manifest_that_is_not_the_extractors_is_refused_before_anything_runs(
    raw: Path, env: Path, monkeypatch: pytest.MonkeyPatch, change, error: str  # noqa: ANN001
) -> None:
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(env / "store"))
    runtime = BackfillRangeRuntime("ndr-prod", FSV, str(edited_manifest(raw, env, change)), str(env / "r.json"))
    with pytest.raises(job.BackfillManifestError, match=error.replace("(", r"\(")):
        job.run_backfill_windows_from_runtime_config(runtime)
    assert not (env / "store").exists() and not (env / "r.json").exists()


def test_a_bad_manifest_item_fails_the_job_only_when_it_would_run(raw: Path, env: Path) -> None:
    """The machine fails a bad item alone and names the others in the mask: the job runs those."""
    manifest = str(edited_manifest(raw, env, lambda d: d["windows"].append("not a window")))
    named = BackfillRangeRuntime("ndr-prod", FSV, manifest, str(env / "r.json"), window_starts=STARTS[1:])
    assert [w.batch_start_ts for w in job.load_windows(named)] == STARTS[1:]
    with pytest.raises(job.BackfillManifestError, match="manifest window 3 is not an object"):
        job.load_windows(BackfillRangeRuntime("ndr-prod", FSV, manifest, str(env / "r.json")))
    stray = BackfillRangeRuntime("ndr-prod", FSV, manifest, str(env / "r.json"), window_starts=["2026-10-01T12:00:00Z"])
    with pytest.raises(job.BackfillManifestError, match=r"not in the manifest \(its invalid items: manifest window 3"):
        job.load_windows(stray)


def test_windows_not_in_the_manifest_and_a_foreign_report_are_refused(raw: Path, env: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(env / "store"))
    runtime = BackfillRangeRuntime("ndr-prod", FSV, str(raw / "windows.json"), str(env / "r.json"),
                                   window_starts=["2026-10-01T12:00:00Z"])  # fmt: skip
    with pytest.raises(job.BackfillManifestError, match="2026-10-01T12:00:00Z are not in the manifest"):
        job.run_backfill_windows_from_runtime_config(runtime)
    (env / "r.json").write_text(json.dumps({"format": job.REPORT_FORMAT, "project_name": "ndr-prod",
                                            "feature_spec_version": FSV, "manifest_uri": "/else/windows.json"}))
    runtime = BackfillRangeRuntime("ndr-prod", FSV, str(raw / "windows.json"), str(env / "r.json"))
    with pytest.raises(job.BackfillReportError, match="belongs to another backfill"):
        job.run_backfill_windows_from_runtime_config(runtime)
    same = BackfillRangeRuntime("ndr-prod", FSV, str(raw / "windows.json"), str(raw / "windows.json"))
    with pytest.raises(job.BackfillReportError, match="must not be the manifest"):
        job.run_backfill_windows_from_runtime_config(same)


@pytest.mark.parametrize(
    "bad",
    [["--window-starts", '["2026-10-01T11:05:00Z"]'], ["--window-starts", "{}"], ["--force", "yes"],
     ["--max-quarantine-ratio", "2"], ["--report-uri", "relative/report.json"],
     ["--window-mask", "101"], ["--first-window", "2026-10-01T12:00:00Z"],
     ["--first-window", "2026-10-01T12:05:00Z", "--window-mask", "1"],
     ["--first-window", "2026-10-01T12:00:00Z", "--window-mask", "12"],
     ["--first-window", "2026-10-01T12:00:00Z", "--window-mask", "1" * 193],
     ["--first-window", "2026-10-01T12:00:00Z", "--window-mask", "000"],
     ["--first-window", "2026-10-01T12:00:00Z", "--window-mask", "1", "--window-starts", '["2026-10-01T12:00:00Z"]']],
)
def test_bad_arguments_are_refused_by_the_parser(raw: Path, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stderr(io.StringIO()):
        run_backfill_windows.parse_runtime(range_args(raw, Path("/tmp/r.json")) + bad)
    assert exit_.value.code == 2


def test_a_window_mask_names_the_windows_to_run_compactly(raw: Path) -> None:
    """What the backfill machine passes for a chunk: its first window and one bit per window after it."""
    runtime = run_backfill_windows.parse_runtime(range_args(
        raw, Path("/tmp/r.json"), "--first-window", "2026-10-01T23:30:00Z", "--window-mask", "1011"))
    assert runtime.window_starts == ["2026-10-01T23:30:00Z", "2026-10-02T00:00:00Z", "2026-10-02T00:15:00Z"]
    full = run_backfill_windows.parse_runtime(range_args(
        raw, Path("/tmp/r.json"), "--first-window", "2026-10-01T00:00:00Z", "--window-mask", "1" * 192))
    assert len(full.window_starts) == 192 and len("1" * 192) <= 256  # a container argument's limit


def test_the_month_cost_model() -> None:
    from ndr_jobs.devtools.bench import MONTH_WINDOWS, BackfillCost, BackfillResult, backfill_cost, render_month

    today = backfill_cost(MONTH_WINDOWS, 10.0, None, session_s=5.0, startup_s=180.0)
    assert today == BackfillCost("window by window: 4 jobs each", 11_520, 600.0, 600.0)  # (11,520 x 185 + 28,800) s
    day = backfill_cost(MONTH_WINDOWS, 10.0, 96, session_s=5.0, startup_s=180.0, instances=2)
    assert (day.jobs, day.hours, day.instance_hours) == (30, 9.54, 19.08)  # (30 x 185 + 28,800) s, two instances
    assert backfill_cost(MONTH_WINDOWS, 10.0, 384, 5.0, 180.0).jobs == 8  # the last job runs the 192 left
    for bad in ({"chunk": 0}, {"windows": 0}, {"per_window_s": -1.0}):
        with pytest.raises(ValueError):
            backfill_cost(**{"windows": 10, "per_window_s": 1.0, "chunk": 4, **bad})
    result = BackfillResult(8, 40, 1000, 1, range_seconds=85.0, range_session_seconds=5.0)
    table = render_month(result)
    assert "Per window 10.0 s of work" in table[2]
    assert table[6] == "| window by window: 4 jobs each | 11,520 | 600.0 | 600.0 |"
    assert render_month(BackfillResult(8, 40, 1000, 1, range_detail="failed")) == []
