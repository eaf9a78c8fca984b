"""Run the 15-minute feature chain over a range of backfill windows in one job (one Spark session).

Entry: :func:`run_backfill_windows_from_runtime_config`. The windows come from the historical windows extractor's
manifest (every item checked by value again here: a bad one fails the job, unless ``window_starts`` names the
windows to run and not it), optionally narrowed to ``window_starts``; they run oldest first,
each as delta -> FG-A -> pair counts -> FG-C through the jobs' own functions (:mod:`ndr_jobs.processing.chain`),
so every partition is committed by its job as it completes. After each window the job rewrites its report
(``report_uri``): what ran, what failed, and the run ids of the partitions each window committed.

Failure: the first window that fails stops the job (a later window's FG-A reads the deltas of the windows before
it); the windows before it stay committed, and :class:`BackfillWindowError` names the window, the step and the
cause. A rerun with the same report resumes: a window the report records as succeeded, whose partitions are
still the runs it recorded, is not run again unless ``force``. Design: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.processing.chain import FEATURE_CHAIN, job_function
from ndr_jobs.runtime.config import BackfillRangeRuntime, DeltaRuntime

#: the manifest version this job reads (the extractor's ``MANIFEST_VERSION``)
MANIFEST_VERSION = 1
#: a manifest or report larger than this is refused before it is parsed
MAX_DOCUMENT_BYTES = 4 << 20
REPORT_FORMAT = "ndr-backfill-windows/1"
#: the partitions a window's chain commits, in the order they are committed
WINDOW_DATASETS: tuple[str, ...] = (layout.QUARANTINE, layout.DELTA, layout.FG_A, layout.PAIR_COUNTS, layout.FG_C)


class BackfillManifestError(ValueError):
    """A window manifest (or a requested window) that this job will not run: the message says which value."""


class BackfillReportError(ValueError):
    """A report at ``report_uri`` that belongs to another backfill, or is not a report of this job."""


class BackfillWindowError(RuntimeError):
    """A window's chain failed: the job stopped there; the windows before it are committed."""


@dataclass(frozen=True)
class Window:
    """One manifest item, checked."""

    mini_batch_id: str
    batch_start_ts: str
    batch_end_ts: str
    batch_folder: str

    @property
    def start(self) -> datetime:
        return contract.parse_timestamp(self.batch_start_ts)


def _document(uri: str, what: str, error: type[ValueError]) -> Any:
    data = storage.read_if_exists(uri)
    if data is None:
        return None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise error(f"{what} {uri} is {len(data)} bytes, over {MAX_DOCUMENT_BYTES}")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise error(f"{what} {uri} is not JSON: {exc}") from None


def _check_item(item: Any, index: int, org_id: str, runtime: BackfillRangeRuntime, raw_prefix: str) -> Window:
    """One manifest item as a :class:`Window`, every value checked against the contract and the manifest."""
    where = f"manifest window {index}"
    if not isinstance(item, dict):
        raise BackfillManifestError(f"{where} is not an object")
    try:
        start, end = contract.window(item.get("batch_start_ts"), item.get("batch_end_ts"))
        mini_batch_id = contract.identifier(item.get("mini_batch_id"))
        folder = contract.storage_uri(item.get("batch_folder"))
    except contract.ContractError as exc:
        raise BackfillManifestError(f"{where}: {exc}") from None
    want_id = contract.mini_batch_id(org_id, runtime.project_name, runtime.feature_spec_version, start)
    if mini_batch_id != want_id:
        raise BackfillManifestError(f"{where}: mini_batch_id {mini_batch_id!r} is not {want_id!r}")
    want_folder = storage.join(raw_prefix, contract.parse_timestamp(start).strftime("%Y/%m/%d/%H%M"))
    if folder.rstrip("/") != want_folder:
        raise BackfillManifestError(f"{where}: batch_folder {folder!r} is not the window's folder {want_folder}/")
    if storage.is_s3(folder):
        bound = contract.batch_folder(folder)  # the ingestion layout, bound to the window
        if (bound.org_id, bound.project_name, bound.feature_spec_version, bound.batch_start_ts) != (
            org_id, runtime.project_name, runtime.feature_spec_version, start
        ):  # fmt: skip
            raise BackfillManifestError(f"{where}: batch_folder {folder!r} is not this window's raw folder")
    return Window(mini_batch_id, start, end, want_folder + "/")


def load_windows(runtime: BackfillRangeRuntime) -> list[Window]:
    """The manifest's windows to run (``window_starts``, or all of them), oldest first; a clear error otherwise."""
    doc = _document(runtime.manifest_uri, "manifest", BackfillManifestError)
    if doc is None:
        raise BackfillManifestError(f"no manifest at {runtime.manifest_uri}")
    if not isinstance(doc, dict) or doc.get("manifest_version") != MANIFEST_VERSION:
        raise BackfillManifestError(f"{runtime.manifest_uri} is not a version {MANIFEST_VERSION} window manifest")
    for key in ("project_name", "feature_spec_version"):
        if doc.get(key) != getattr(runtime, key):
            raise BackfillManifestError(
                f"manifest {key} {doc.get(key)!r} is not the job's {getattr(runtime, key)!r}"
            )
    if doc.get("window_minutes") != contract.WINDOW_MINUTES or not isinstance(doc.get("windows"), list):
        raise BackfillManifestError(f"manifest {runtime.manifest_uri}: window_minutes or windows missing or wrong")
    try:
        org_id = contract.identifier(doc.get("org_id"))
        raw_prefix = contract.storage_uri(doc.get("raw_prefix")).rstrip("/")
    except contract.ContractError as exc:
        raise BackfillManifestError(f"manifest {runtime.manifest_uri}: {exc}") from None
    windows: list[Window] = []
    problems: list[str] = []  # with window_starts, a bad item the machine already failed alone is not run
    for i, item in enumerate(doc["windows"]):
        try:
            windows.append(_check_item(item, i, org_id, runtime, raw_prefix))
        except BackfillManifestError as exc:
            problems.append(str(exc))
    if problems and not runtime.window_starts:
        raise BackfillManifestError(problems[0])
    by_start = {w.batch_start_ts: w for w in windows}
    if len(by_start) != len(windows):
        raise BackfillManifestError(f"manifest {runtime.manifest_uri} lists a window more than once")
    if runtime.window_starts:
        missing = [s for s in runtime.window_starts if s not in by_start]
        if missing:
            raise BackfillManifestError(f"window(s) {', '.join(missing)} are not in the manifest"
                                        + (f" (its invalid items: {'; '.join(problems)})" if problems else ""))
        if len(set(runtime.window_starts)) != len(runtime.window_starts):
            raise BackfillManifestError("--window-starts names a window more than once")
        windows = [by_start[s] for s in runtime.window_starts]
    if not windows:
        raise BackfillManifestError(f"manifest {runtime.manifest_uri} has no window to run")
    return sorted(windows, key=lambda w: w.start)


def committed_runs(root: str, feature_spec_version: str, start: datetime) -> dict[str, str | None]:
    """The run id of each of a window's partitions (None: not committed)."""
    out: dict[str, str | None] = {}
    for dataset in WINDOW_DATASETS:
        manifest = storage.read_manifest(
            storage.partition_path(root, dataset, layout.batch_partition(feature_spec_version, start))
        )
        out[dataset] = None if manifest is None else manifest.run_id
    return out


def _identity(runtime: BackfillRangeRuntime) -> dict[str, str]:
    return {
        "format": REPORT_FORMAT,
        "project_name": runtime.project_name,
        "feature_spec_version": runtime.feature_spec_version,
        "manifest_uri": runtime.manifest_uri,
    }


def previous_successes(runtime: BackfillRangeRuntime) -> tuple[int, dict[str, dict[str, Any]]]:
    """(the attempts the report at ``report_uri`` records, its succeeded windows by start); (0, {}) with none."""
    doc = _document(runtime.report_uri, "report", BackfillReportError)
    if doc is None:
        return 0, {}
    identity = _identity(runtime)
    if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in identity.items()):
        found = {k: doc.get(k) for k in identity} if isinstance(doc, dict) else doc
        raise BackfillReportError(
            f"report {runtime.report_uri} belongs to another backfill ({found}, not {identity}): use another report URI"
        )
    done = {
        w["batch_start_ts"]: w
        for w in doc.get("windows", [])
        if isinstance(w, dict) and w.get("status") in ("succeeded", "resumed") and isinstance(w.get("runs"), dict)
    }
    attempts = doc.get("attempt", 0)
    return (attempts if isinstance(attempts, int) else 0), done


def run_window(window: Window, runtime: BackfillRangeRuntime) -> list[str]:
    """The chain on one window through the jobs' own functions; the steps run. Raises what a step raised."""
    batch = DeltaRuntime(
        project_name=runtime.project_name,
        feature_spec_version=runtime.feature_spec_version,
        mini_batch_id=window.mini_batch_id,
        batch_start_ts=window.batch_start_ts,
        batch_end_ts=window.batch_end_ts,
        raw_batch_folder=window.batch_folder,
        max_quarantine_ratio=runtime.max_quarantine_ratio,
    )
    done: list[str] = []
    for name in FEATURE_CHAIN:
        module, function = job_function(name)
        try:
            getattr(import_module(module), function)(batch)
        except Exception as exc:
            raise _StepFailed(name, done, exc) from exc
        done.append(name)
    return done


class _StepFailed(Exception):
    def __init__(self, step: str, done: list[str], cause: Exception) -> None:
        super().__init__(step)
        self.step, self.done, self.cause = step, done, cause


def run_backfill_windows_from_runtime_config(runtime: BackfillRangeRuntime) -> dict[str, Any]:
    """Run the windows in time order, committing each window's partitions; print and return the summary."""
    from ndr_jobs.runtime.spark import spark_session
    from ndr_jobs.runtime.summary import emit

    began = time.perf_counter()
    if runtime.report_uri.rstrip("/") == runtime.manifest_uri.rstrip("/"):
        raise BackfillReportError("--report-uri must not be the manifest")
    root = layout.storage_root()
    windows = load_windows(runtime)
    attempts, done = previous_successes(runtime)
    entries: list[dict[str, Any]] = [
        {"mini_batch_id": w.mini_batch_id, "batch_start_ts": w.batch_start_ts, "status": "not_run"} for w in windows
    ]
    report: dict[str, Any] = {**_identity(runtime), "attempt": attempts + 1, "force": runtime.force,
                              "status": "running", "windows": entries}  # fmt: skip

    def save() -> None:
        storage.write_text(runtime.report_uri, json.dumps(report, indent=2, sort_keys=True) + "\n")

    save()
    spark_session("ndr-backfill-windows")  # the one session every job of the range reuses
    session_seconds = round(time.perf_counter() - began, 3)
    failure: BackfillWindowError | None = None
    for window, entry in zip(windows, entries, strict=True):
        earlier = done.get(window.batch_start_ts)
        runs = committed_runs(root, runtime.feature_spec_version, window.start)
        if not runtime.force and earlier is not None and earlier.get("runs") == runs:
            entry.update(status="resumed", runs=runs)
            save()
            continue
        window_began = time.perf_counter()
        try:
            steps = run_window(window, runtime)
        except _StepFailed as failed:
            cause = f"{type(failed.cause).__name__}: {failed.cause}"
            entry.update(status="failed", steps=failed.done, failed_step=failed.step, error=cause,
                         seconds=round(time.perf_counter() - window_began, 3))  # fmt: skip
            failure = BackfillWindowError(
                f"window {window.batch_start_ts} ({window.mini_batch_id}) failed at {failed.step}: {cause}; "
                f"the {sum(e['status'] in ('succeeded', 'resumed') for e in entries)} window(s) before it are "
                f"committed, {len(entries) - entries.index(entry) - 1} were not run (report: {runtime.report_uri})"
            )
            break
        entry.update(status="succeeded", steps=steps, runs=committed_runs(root, runtime.feature_spec_version,
                     window.start), seconds=round(time.perf_counter() - window_began, 3))  # fmt: skip
        save()
    counts = {s: sum(e["status"] == s for e in entries) for s in ("succeeded", "resumed", "failed", "not_run")}
    report["status"] = "failed" if failure else "succeeded"
    save()
    ran = [e["seconds"] for e in entries if e["status"] == "succeeded"]
    summary = emit({
        "job": "backfill_windows",
        "project_name": runtime.project_name,
        "feature_spec_version": runtime.feature_spec_version,
        "manifest_uri": runtime.manifest_uri,
        "report_uri": runtime.report_uri,
        "attempt": report["attempt"],
        "windows": len(entries),
        "first_window": entries[0]["batch_start_ts"],
        "last_window": entries[-1]["batch_start_ts"],
        "windows_by_status": counts,
        "status": report["status"],
        "spark_session_seconds": session_seconds,
        "seconds_per_window": round(sum(ran) / len(ran), 3) if ran else None,
        "seconds": round(time.perf_counter() - began, 3),
    })  # fmt: skip
    if failure is not None:
        raise failure
    return summary
