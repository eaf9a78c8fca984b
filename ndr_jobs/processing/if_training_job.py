"""Isolation Forest lifecycle: verify, remediate, reverify, train, publish, attributes, deploy.

Entry: :func:`run_if_training_from_runtime_config`, one stage of one training run (the ``if_training`` pipeline
runs the seven in order). ``run.json`` pins a run key to its project, spec version and range; a stage that
succeeded does nothing when run again. Artifacts: :mod:`ndr_jobs.model.artifacts`; stages:
``docs/design/jobs.md``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ndr_jobs.datasets import conditional, layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.interface.feature_spec import load_feature_spec
from ndr_jobs.model import artifacts, forest, gate, registry
from ndr_jobs.model.artifacts import ArtifactError, RunPaths, read_json_if_exists, write_json
from ndr_jobs.model.features import (
    FeatureDataError,
    Preprocessor,
    column_windows,
    duration_text,
    load_features,
    matrix,
    unseen_windows,
)
from ndr_jobs.processing.chain import FEATURE_CHAIN, job_function
from ndr_jobs.runtime.config import BatchRuntime, TrainingRuntime
from ndr_jobs.runtime.summary import emit

MAX_REMEDIATION_ATTEMPTS = 2
#: how often deploy judges and promotes again when another promotion wins the race for ``promoted.json``
PROMOTE_ATTEMPTS = 5
#: the 15-minute feature chain remediation runs per window: (name, module, function), in order
REMEDIATION_CHAIN: tuple[tuple[str, str, str], ...] = tuple((name, *job_function(name)) for name in FEATURE_CHAIN)
MISSING_POLICY = "a window is missing when FG-A or FG-C lacks its batch_start partition (an empty partition is present)"


class CoverageError(RuntimeError):
    """The training range still has windows without features after remediation."""


class RemediationExhaustedError(RuntimeError):
    """The run key used its remediation attempts."""


class RemediationFailedError(RuntimeError):
    """A remediation attempt could not rebuild every window."""


class DeployRefusedError(RuntimeError):
    """The deployment gate refused the model."""


class StageOrderError(RuntimeError):
    """A stage ran before the stage it needs."""


@dataclass(frozen=True)
class TrainingContext:
    """A validated training runtime: storage root, range, windows and the run's artifact paths."""

    runtime: TrainingRuntime
    root: str
    start: datetime
    end: datetime
    windows: tuple[datetime, ...]
    paths: RunPaths

    @classmethod
    def from_runtime(cls, runtime: TrainingRuntime) -> TrainingContext:
        artifacts.check_segment("project name", runtime.project_name)
        artifacts.check_segment("feature spec version", runtime.feature_spec_version)
        artifacts.check_segment("run key", runtime.run_key)
        start, end = contract.parse_utc(runtime.training_start_ts), contract.parse_utc(runtime.training_end_ts)
        if end <= start:
            raise ValueError(
                f"training end {runtime.training_end_ts} is not after training start {runtime.training_start_ts}"
            )
        for name, moment in (("start", start), ("end", end)):
            if moment.minute % 15 or moment.second or moment.microsecond:
                raise ValueError(f"training {name} {contract.iso(moment)} is not on a 15-minute boundary")
        root = layout.storage_root()
        windows = tuple(layout.batch_starts(start, end))
        return cls(runtime, root, start, end, windows, RunPaths(root, runtime.feature_spec_version, runtime.run_key))

    @property
    def identity(self) -> dict[str, str]:
        return {
            "project_name": self.runtime.project_name,
            "feature_spec_version": self.runtime.feature_spec_version,
            "run_key": self.runtime.run_key,
            "training_start_ts": contract.iso(self.start),
            "training_end_ts": contract.iso(self.end),
        }

    def pin(self) -> None:
        """Write ``run.json`` on first use; refuse a run key reused with another project or range."""
        found = read_json_if_exists(self.paths.run)
        if found is None:
            write_json(self.paths.run, self.identity)
        elif found != self.identity:
            diff = {k: (found.get(k), v) for k, v in self.identity.items() if found.get(k) != v}
            raise ArtifactError(
                f"run key {self.runtime.run_key!r} belongs to another run ({self.paths.run}): differs in {diff} "
                "(recorded, requested); use a new run key"
            )

    @property
    def store(self) -> registry.ModelStore:
        return registry.ModelStore(self.root, self.runtime.project_name, self.runtime.feature_spec_version)


# --- coverage --------------------------------------------------------------------------------------------------


def coverage(ctx: TrainingContext) -> dict[str, Any]:
    """Which windows of the range lack FG-A or FG-C partitions (see :data:`MISSING_POLICY`)."""
    fsv = ctx.runtime.feature_spec_version
    wanted = set(ctx.windows)
    present_a = wanted & set(layout.existing_batches(ctx.root, layout.FG_A, fsv))
    present_c = wanted & set(layout.existing_batches(ctx.root, layout.FG_C, fsv))
    missing = [w for w in ctx.windows if w not in present_a or w not in present_c]
    return {
        "expected_windows": len(ctx.windows),
        "present_windows": len(ctx.windows) - len(missing),
        "missing_windows": [contract.iso(w) for w in missing],
        "missing_fg_a": [contract.iso(w) for w in ctx.windows if w not in present_a],
        "missing_fg_c": [contract.iso(w) for w in ctx.windows if w not in present_c],
        "policy": MISSING_POLICY,
    }


def stage_verify(ctx: TrainingContext) -> dict[str, Any]:
    done = read_json_if_exists(ctx.paths.verify)
    if done is not None:
        return done
    found = coverage(ctx)
    status = {
        "stage": "verify",
        "status": "complete",
        **ctx.identity,
        **found,
        "coverage_ok": not found["missing_windows"],
    }
    write_json(ctx.paths.verify, status)
    return status


# --- remediation -------------------------------------------------------------------------------------------------


def _override_windows(ctx: TrainingContext, values: list[str]) -> list[datetime]:
    out = set()
    for value in values:
        try:
            moment = contract.parse_utc(value)
        except ValueError:
            raise ValueError(f"--missing-windows-override: {value!r} is not an ISO-8601 timestamp") from None
        if moment not in set(ctx.windows):
            raise ValueError(
                f"--missing-windows-override: {value!r} is not a 15-minute window start in the training range "
                f"[{contract.iso(ctx.start)}, {contract.iso(ctx.end)})"
            )
        out.add(moment)
    return sorted(out)


def _builder(module: str, function: str) -> Callable[[BatchRuntime], Any]:
    import importlib

    return getattr(importlib.import_module(module), function)


def batch_runtime(ctx: TrainingContext, start: datetime) -> BatchRuntime:
    """The mini-batch runtime the 15-minute builders get for one window."""
    org = os.environ.get("NDR_ORG_ID")
    if not org:
        raise ValueError("remediation needs NDR_ORG_ID (the org id of the raw batch layout and mini-batch ids)")
    r = ctx.runtime
    return BatchRuntime(
        project_name=r.project_name,
        feature_spec_version=r.feature_spec_version,
        mini_batch_id=f"{org}-{r.project_name}-{r.feature_spec_version}-{layout.stamp(start)}",
        batch_start_ts=contract.iso(start),
        batch_end_ts=contract.iso(start + layout.BATCH),
    )


def _rebuild(ctx: TrainingContext, start: datetime) -> dict[str, Any]:
    from ndr_jobs.processing.delta_builder_job import raw_batch_folder

    runtime = batch_runtime(ctx, start)
    folder = raw_batch_folder(runtime, start)
    if not storage.list_objects(folder):
        return {"outcome": "no_raw_data", "raw_batch_folder": folder}
    done: list[str] = []
    for name, module, function in REMEDIATION_CHAIN:
        try:
            _builder(module, function)(runtime)
        except Exception as exc:  # one window's failure is recorded; the attempt fails after the others ran
            return {"outcome": "failed", "steps": done, "failed_step": name, "error": f"{type(exc).__name__}: {exc}"}
        done.append(name)
    return {"outcome": "rebuilt", "steps": done}


def stage_remediate(ctx: TrainingContext) -> dict[str, Any]:
    record = read_json_if_exists(ctx.paths.remediation) or {
        "stage": "remediate", **ctx.identity, "max_attempts": MAX_REMEDIATION_ATTEMPTS, "attempts": [],
        "status": "not_started",
    }  # fmt: skip
    if ctx.runtime.missing_windows_override:
        windows, source = _override_windows(ctx, ctx.runtime.missing_windows_override), "override"
    else:
        verified = read_json_if_exists(ctx.paths.verify)
        if verified is None:
            raise StageOrderError(f"run the verify stage first: {ctx.paths.verify} does not exist")
        windows, source = [contract.parse_utc(w) for w in verified["missing_windows"]], "verify"
    wanted = [contract.iso(w) for w in windows]
    attempts = record["attempts"]
    if not windows:
        if not attempts and record["status"] != "nothing_to_remediate":
            record["status"] = "nothing_to_remediate"
            write_json(ctx.paths.remediation, record)
        return record
    if attempts and attempts[-1]["status"] == "succeeded" and attempts[-1]["windows"] == wanted:
        return record  # the same remediation already succeeded
    if len(attempts) >= MAX_REMEDIATION_ATTEMPTS:
        raise RemediationExhaustedError(
            f"run key {ctx.runtime.run_key!r} already used its {MAX_REMEDIATION_ATTEMPTS} remediation attempts "
            f"({ctx.paths.remediation}); refusing attempt {len(attempts) + 1} for {len(wanted)} window(s). "
            "Fix the cause (raw data, feature jobs) and start a new run key."
        )
    attempt: dict[str, Any] = {"attempt": len(attempts) + 1, "source": source, "windows": wanted, "status": "running"}
    record["attempts"] = [*attempts, attempt]
    record["status"] = "running"
    write_json(ctx.paths.remediation, record)  # the attempt counts from here, even if the process dies
    outcomes = {contract.iso(w): _rebuild(ctx, w) for w in windows}
    failed = sorted(w for w, o in outcomes.items() if o["outcome"] == "failed")
    attempt["outcomes"] = outcomes
    attempt["status"] = record["status"] = "failed" if failed else "succeeded"
    write_json(ctx.paths.remediation, record)
    if failed:
        first = outcomes[failed[0]]
        raise RemediationFailedError(
            f"remediation attempt {attempt['attempt']}/{MAX_REMEDIATION_ATTEMPTS} failed for {len(failed)} window(s), "
            f"first {failed[0]} at {first['failed_step']}: {first['error']} (details in {ctx.paths.remediation})"
        )
    return record


def stage_reverify(ctx: TrainingContext) -> dict[str, Any]:
    done = read_json_if_exists(ctx.paths.reverify)
    if done is not None and done["status"] == "passed":
        return done
    found = coverage(ctx)
    record = read_json_if_exists(ctx.paths.remediation) or {"attempts": []}
    no_raw = {
        w for a in record["attempts"] for w, o in (a.get("outcomes") or {}).items() if o["outcome"] == "no_raw_data"
    }
    missing = found["missing_windows"]
    unrecoverable = [w for w in missing if w in no_raw]
    blocking = [w for w in missing if w not in no_raw]
    usable = [contract.iso(w) for w in ctx.windows if contract.iso(w) not in set(missing)]
    passed = not blocking and bool(usable)
    status = {
        "stage": "reverify", **ctx.identity, **found, "status": "passed" if passed else "failed",
        "unrecoverable_windows": unrecoverable, "blocking_windows": blocking, "usable_windows": usable,
        "unrecoverable_policy": "missing windows whose raw batch folder is empty (remediation outcome no_raw_data) "
        "are tolerated; the model trains on the usable windows",
    }  # fmt: skip
    if done != status:
        write_json(ctx.paths.reverify, status)
    if not passed:
        reason = f"{len(blocking)} window(s) still lack features" if blocking else "no window has features"
        raise CoverageError(f"reverify failed: {reason} (first: {(blocking or missing)[:3]}); see {ctx.paths.reverify}")
    return status


# --- training ----------------------------------------------------------------------------------------------------


def _span(windows: list[Any]) -> dict[str, Any]:
    def iso(moment: Any) -> str:
        return str(np.datetime_as_string(np.datetime64(moment, "s"))) + "Z"

    return {"count": len(windows), "first": iso(windows[0]), "last": iso(windows[-1])}


UNSEEN_RULE = (
    "a feature whose window is longer than the training span (15 minutes per window with rows) is left out: "
    "training saw it only partly filled, so it grows past every training value once scoring sees it full, for "
    "every host"
)


def train_model(
    frame: Any, sources: dict[str, str], params: forest.ForestParams, metadata: dict[str, Any],
    windows_of: Mapping[str, timedelta] | None = None,
) -> tuple[forest.ModelBundle, dict[str, Any]]:
    """Split by time, fit and validate, refit on everything; the bundle and the metrics (``docs/design/jobs.md``).

    ``windows_of``: each column's window (:func:`column_windows`; a column it lacks: its ``_<window>`` suffix,
    else 15 minutes); columns whose window is longer than the training span are left out (:data:`UNSEEN_RULE`).
    """
    ts = frame["batch_start_ts"].to_numpy(dtype="datetime64[us]")
    windows = list(np.unique(ts))  # sorted
    if len(windows) < 2:
        raise FeatureDataError(f"training needs rows in at least 2 windows, found {len(windows)}")
    span = len(windows) * layout.BATCH  # the traffic seen: a gap in the windows is no history either
    configured = forest.model_features(list(sources), params)
    unseen = unseen_windows(configured, span, windows_of or {})
    features = [f for f in configured if f not in {u["feature"] for u in unseen}]
    if not features:
        raise FeatureDataError(
            f"FG-A and FG-C have no numeric feature columns (after exclude_features and the {len(unseen)} whose "
            f"window is longer than the training span {duration_text(span)})"
        )
    excluded = {"rule": UNSEEN_RULE, "training_span": duration_text(span), "features": unseen}
    metadata = {**metadata, "excluded_unseen_windows": excluded}
    sources = {f: sources[f] for f in features}
    n_val = min(len(windows) - 1, max(1, math.ceil(params.validation_fraction * len(windows))))
    is_val = ts >= windows[-n_val]
    x = matrix(frame, features)
    x_train, x_val = x[~is_val], x[is_val]

    pre = Preprocessor.fit(features, x_train)
    z_train, z_val = pre.transform(x_train), pre.transform(x_val)
    model = forest.fit_ensemble(z_train, features, params)
    train_scores, _ = model.score(z_train)
    val_scores, val_drivers = model.score(z_val)
    cut = forest.threshold(train_scores, params)
    alerts = np.bincount(val_drivers[val_scores >= cut], minlength=len(model.detectors))

    pre_full = Preprocessor.fit(features, x)
    z = pre_full.transform(x)
    model_full = forest.fit_ensemble(z, features, params)
    full_scores, _ = model_full.score(z)
    cut_full = forest.threshold(full_scores, params)
    metrics = {
        "params": {**params.as_json(), "nominal_contamination": params.nominal_contamination},
        "features": features,
        "feature_sources": sources,
        "excluded_unseen_windows": excluded,
        "detectors": {d.name: len(d.columns) for d in model_full.detectors},
        "split": {
            "rule": "the last ceil(validation_fraction * windows) windows with rows are validation",
            "train_windows": _span(windows[:-n_val]),
            "validation_windows": _span(windows[-n_val:]),
            "train_rows": int(len(x_train)),
            "validation_rows": int(len(x_val)),
        },
        "train": {"scores": forest.summary(train_scores), "alert_threshold": cut},
        "validation": {
            "scores": forest.summary(val_scores),
            "alert_threshold": cut,
            "alert_rate": float(f"{float(np.mean(val_scores >= cut)):.12g}"),
            "alerts_by_detector": {d.name: int(n) for d, n in zip(model.detectors, alerts, strict=True)},
            # the all-features forest's raw scores: forests with one max_samples share that scale, where the
            # calibrated scores are uniform-ish for any data a model was trained on (the gate's drift checks)
            "forest_scores": forest.summary(model.raw(z_val)),
        },
        "refit": {
            "rows": int(len(x)),
            "windows": len(windows),
            "scores": forest.summary(full_scores),
            "alert_threshold": cut_full,
        },  # fmt: skip
    }
    bundle = forest.ModelBundle(model_full, pre_full, params, cut_full, metadata)
    return bundle, metrics


def stage_train(ctx: TrainingContext) -> dict[str, Any]:
    p = ctx.paths
    if storage.exists(p.success) and storage.exists(p.final_report):
        return artifacts.read_json(p.final_report)
    reverified = read_json_if_exists(p.reverify)
    if reverified is None or reverified["status"] != "passed":
        raise StageOrderError(f"train needs a passed reverify stage ({p.reverify})")
    params = forest.params_for(ctx.runtime.feature_spec_version)
    usable = [contract.parse_utc(w) for w in reverified["usable_windows"]]
    loaded = load_features(ctx.root, ctx.runtime.feature_spec_version, usable)
    if loaded is None or loaded[0].empty:
        raise FeatureDataError(f"FG-A has no rows in the {len(usable)} usable window(s) of the training range")
    frame, sources = loaded
    spec = load_feature_spec(ctx.runtime.feature_spec_version)
    bundle, metrics = train_model(frame, sources, params, dict(ctx.identity), column_windows(spec))
    metrics = {**ctx.identity, **metrics}
    model = bundle.to_bytes()
    write_json(p.preprocessing, bundle.preprocessor.as_json())
    storage.write_bytes(p.model, model)
    write_json(p.metrics, metrics)
    report = {
        "stage": "train", "status": "succeeded", **ctx.identity,
        "model_uri": p.model, "model_sha256": artifacts.sha256(model), "metrics_uri": p.metrics,
        "preprocessing_uri": p.preprocessing, "features": len(metrics["features"]),
        "excluded_unseen_windows": [u["feature"] for u in metrics["excluded_unseen_windows"]["features"]],
        "training_span": metrics["excluded_unseen_windows"]["training_span"],
        "rows": metrics["refit"]["rows"], "windows": metrics["refit"]["windows"],
        "validation": {"rows": metrics["split"]["validation_rows"], "alert_rate": metrics["validation"]["alert_rate"],
                       "score_median": metrics["validation"]["scores"]["percentiles"][50]},
        "alert_threshold": bundle.alert_threshold, "params_source": params.source,
    }  # fmt: skip
    write_json(p.final_report, report)
    storage.write_text(p.success, "")
    return report


# --- publish, attributes, deploy -----------------------------------------------------------------------------------


def _require(path: str, stage: str) -> dict[str, Any]:
    found = read_json_if_exists(path)
    if found is None:
        raise StageOrderError(f"run the {stage} stage first: {path} does not exist")
    return found


def stage_publish(ctx: TrainingContext) -> dict[str, Any]:
    done = read_json_if_exists(ctx.paths.publish)
    if done is not None:
        return done
    if not storage.exists(ctx.paths.success):
        raise StageOrderError(f"publish needs a trained model: {ctx.paths.success} does not exist")
    report = artifacts.read_json(ctx.paths.final_report)
    model = storage.read_bytes(ctx.paths.model)
    if artifacts.sha256(model) != report["model_sha256"]:
        raise ArtifactError(f"{ctx.paths.model} does not match its final report's sha256")
    metadata = {**ctx.identity, "metrics_uri": ctx.paths.metrics, "attributes_uri": ctx.paths.attributes}
    entry, conflicts = ctx.store.publish_counted(ctx.runtime.run_key, model, metadata)
    status: dict[str, Any] = {
        "stage": "publish", "status": "published", **ctx.identity, "registry": "local", "store": ctx.store.base,
        "model_version": entry["version"], "model_uri": entry["model_uri"], "model_sha256": entry["model_sha256"],
        "index_conflicts": conflicts,
    }  # fmt: skip
    if registry.sagemaker_enabled():
        package = registry.register_package(
            ctx.runtime.project_name, ctx.runtime.feature_spec_version, ctx.runtime.run_key, entry["model_uri"],
            {"run_key": ctx.runtime.run_key, "model_version": str(entry["version"]),
             "model_sha256": entry["model_sha256"], "feature_spec_version": ctx.runtime.feature_spec_version},
        )  # fmt: skip
        status.update(
            registry="sagemaker", model_package_group=package["group"], model_package_arn=package["model_package_arn"]
        )
    write_json(ctx.paths.publish, status)
    return status


def stage_attributes(ctx: TrainingContext) -> dict[str, Any]:
    done = read_json_if_exists(ctx.paths.attributes)
    if done is not None:
        return done
    published = _require(ctx.paths.publish, "publish")
    metrics = artifacts.read_json(ctx.paths.metrics)
    reverified = artifacts.read_json(ctx.paths.reverify)
    attributes = {
        "stage": "attributes", **ctx.identity,
        "model_version": published["model_version"], "model_uri": published["model_uri"],
        "model_sha256": published["model_sha256"],
        "features": metrics["features"], "feature_sources": metrics["feature_sources"],
        "join": {"keys": ["host_ip", "batch_start_ts"], "how": "fg_a LEFT JOIN fg_c", "null_value": 0.0,
                 "fg_c_collision_prefix": "fg_c__"},
        "preprocessing": artifacts.read_json(ctx.paths.preprocessing),
        "params": metrics["params"],
        "windows": {
            "training_start_ts": contract.iso(ctx.start), "training_end_ts": contract.iso(ctx.end),
            "expected": len(ctx.windows), "usable": len(reverified["usable_windows"]),
            "unrecoverable": reverified["unrecoverable_windows"], "split": metrics["split"],
        },
        "alert_threshold": metrics["refit"]["alert_threshold"],
    }  # fmt: skip
    write_json(ctx.paths.attributes, attributes)
    return attributes


def stage_deploy(ctx: TrainingContext) -> dict[str, Any]:
    done = read_json_if_exists(ctx.paths.deploy)
    if done is not None:
        if done["decision"] == "refused":
            raise DeployRefusedError(f"the deployment gate refused run {ctx.runtime.run_key!r}: see {ctx.paths.deploy}")
        return done
    published = _require(ctx.paths.publish, "publish")
    _require(ctx.paths.attributes, "attributes")
    metrics = artifacts.read_json(ctx.paths.metrics)
    store = ctx.store
    policy = gate.GatePolicy.from_env()
    for _attempt in range(PROMOTE_ATTEMPTS):
        # the gate judges against the pointer as read; promoting over a pointer that changed since would skip
        # that judgement, so a lost conditional write reads it again and judges again
        current, tag = store.promoted_versioned()
        if current is not None and current["run_key"] == ctx.runtime.run_key:
            checks: list[dict[str, Any]] = []  # promoted by an interrupted earlier run of this stage
            previous = current.get("previous")
        else:
            previous_metrics = artifacts.read_json(current["metrics_uri"]) if current else None
            checks = gate.evaluate(metrics, previous_metrics, policy)
            previous = {"model_version": current["model_version"], "run_key": current["run_key"]} if current else None
        promote = all(c["passed"] for c in checks)
        failed = [c["name"] for c in checks if not c["passed"]]
        reason = "all gate checks passed" if promote else f"gate checks failed: {', '.join(failed)}"
        if not current:
            reason += " (first model for this project and spec version: no drift baseline)"
        if not promote or (current is not None and current["run_key"] == ctx.runtime.run_key):
            break
        try:
            store.promote({
                "project_name": ctx.runtime.project_name, "feature_spec_version": ctx.runtime.feature_spec_version,
                "run_key": ctx.runtime.run_key, "model_version": published["model_version"],
                "model_uri": published["model_uri"], "model_sha256": published["model_sha256"],
                "metrics_uri": ctx.paths.metrics, "attributes_uri": ctx.paths.attributes, "previous": previous,
            }, tag)  # fmt: skip
        except conditional.PreconditionFailedError:
            continue
        break
    else:
        raise conditional.RetriesExhaustedError(
            f"{store.promoted_path} changed under each of {PROMOTE_ATTEMPTS} promotions of run {ctx.runtime.run_key!r}"
        )
    if published.get("model_package_arn"):
        registry.set_package_approval(published["model_package_arn"], promote, reason)
    status = {
        "stage": "deploy", **ctx.identity, "decision": "promoted" if promote else "refused", "reason": reason,
        "checks": checks, "policy": policy.as_json(), "model_version": published["model_version"],
        "previous_promoted": previous, "promoted_pointer": store.promoted_path,
    }  # fmt: skip
    write_json(ctx.paths.deploy, status)
    if not promote:
        raise DeployRefusedError(
            f"the deployment gate refused run {ctx.runtime.run_key!r}: {reason} ({ctx.paths.deploy})"
        )
    return status


STAGES: dict[str, Callable[[TrainingContext], dict[str, Any]]] = {
    "verify": stage_verify,
    "remediate": stage_remediate,
    "reverify": stage_reverify,
    "train": stage_train,
    "publish": stage_publish,
    "attributes": stage_attributes,
    "deploy": stage_deploy,
}


#: the stage after which a run gives the project's training lock up
LAST_STAGE = "deploy"


def run_if_training_from_runtime_config(runtime: TrainingRuntime) -> dict[str, Any]:
    """Run one stage of the training run; print and return its status."""
    if runtime.stage not in STAGES:
        raise ValueError(f"unknown stage {runtime.stage!r}; stages: {', '.join(STAGES)}")
    ctx = TrainingContext.from_runtime(runtime)
    lock = registry.TrainingLock.for_run(ctx.store, runtime.run_key)
    lock.acquire()
    try:
        ctx.pin()
        status = STAGES[runtime.stage](ctx)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more; a lease left runs out
            lock.release()  # the run stops here; a retried step takes the lock again
        raise
    if runtime.stage == LAST_STAGE:
        lock.release()
    outcome = status.get("status") or status.get("decision") or "done"
    line = {"job": "if_training", "stage": runtime.stage, "run_key": runtime.run_key, "status": outcome}
    emit(line)
    return status
