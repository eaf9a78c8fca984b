"""Inference with the promoted model on hand-made FG-A/FG-C: scores, ranks, explanations, idempotent
re-runs, empty windows and the clear errors (no promoted model, features not built)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.model import forest, registry
from ndr_jobs.model.features import FeatureDataError
from ndr_jobs.model.registry import NoPromotedModelError
from ndr_jobs.processing.inference_predictions_job import (
    PREDICTION_COLUMNS,
    run_inference_predictions_from_runtime_config,
)
from ndr_jobs.runtime.config import BatchRuntime
from tests.conftest import committed, committed_rows
from tests.test_if_training import FSV, HOSTS, PROJECT, T0, fg_frames, root, run_all, windows, write_window

__all__ = ["root"]  # the fixture
WINDOW = T0 + timedelta(hours=6)
ODD_HOST = HOSTS[7]


def batch(start=WINDOW) -> BatchRuntime:
    return BatchRuntime(
        project_name=PROJECT,
        feature_spec_version=FSV,
        mini_batch_id=f"acme-{PROJECT}-{FSV}-{layout.stamp(start)}",
        batch_start_ts=contract.iso(start),
        batch_end_ts=contract.iso(start + layout.BATCH),
    )


def write_odd_window(store: Path, start=WINDOW) -> None:
    """A window where one host scans: many more destinations and sessions than its own level."""
    fg_a, fg_c = fg_frames(start, HOSTS, 11)
    odd = fg_a["host_ip"] == ODD_HOST
    fg_a.loc[odd, "fan_out_15m"] = 900.0
    fg_a.loc[odd, "sessions_15m"] = 950.0
    fg_c.loc[odd, "novel_pairs"] = 800
    write_window(store, layout.FG_A, start, fg_a)
    write_window(store, layout.FG_C, start, fg_c)


def predictions(store: Path, start=WINDOW) -> list[dict]:
    folder = store / "predictions" / f"feature_spec_version={FSV}" / f"batch_start={layout.stamp(start)}"
    assert list(committed(folder)) == ["part-00000.snappy.parquet"]
    return committed_rows(folder)


def test_no_promoted_model_is_a_clear_error(root: Path):
    write_odd_window(root)
    with pytest.raises(NoPromotedModelError, match="no promoted model for project 'ndr-prod'.*if_training"):
        run_inference_predictions_from_runtime_config(batch())


def test_scores_ranks_and_explains_each_host_and_reruns_replace_the_partition(root: Path):
    from tests.test_if_training import write_features

    write_features(root, windows(12))
    run_all()
    write_odd_window(root)
    summary = run_inference_predictions_from_runtime_config(batch())
    assert summary["hosts_scored"] == len(HOSTS) and summary["model_version"] == 1
    rows = predictions(root)
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    assert [r["rank"] for r in rows] == list(range(1, len(HOSTS) + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(s >= 0 for s in scores)
    promoted = registry.ModelStore(str(root), PROJECT, FSV).promoted()
    bundle = forest.ModelBundle.from_bytes(storage.read_bytes(promoted["model_uri"]))
    members = {d.name: {bundle.features[i] for i in d.columns} for d in bundle.ensemble.detectors}
    assert list(members) == ["all_features", "lateral_movement", "volume"]  # the families these columns feed
    assert {r["detector"] for r in rows} - {"all_features"}  # families find some hosts
    for row in rows:  # each row's explanation names its detector's features first
        inside = [t["feature"] in members[row["detector"]] for t in row["top_features"]]
        assert inside == sorted(inside, reverse=True) and inside[0]
    top = rows[0]
    assert top["host_ip"] == ODD_HOST and top["alert"] is True
    assert top["model_version"] == 1 and top["model_run_key"] == "run-1"
    assert str(top["batch_start_ts"]).startswith("2026-10-01 06:00:00")
    reasons = top["top_features"]
    assert len(reasons) == 5
    assert {r["feature"] for r in reasons[:3]} == {"fan_out_15m", "sessions_15m", "novel_pairs"}
    assert reasons[0]["deviation"] > 3 and {"feature", "value", "deviation"} == set(reasons[0])
    fan_out = next(r for r in reasons if r["feature"] == "fan_out_15m")
    assert fan_out["value"] == 900.0
    devs = [abs(r["deviation"]) for r in reasons]
    assert devs == sorted(devs, reverse=True)

    run_inference_predictions_from_runtime_config(batch())  # the same window again: replaced, not appended
    assert predictions(root) == rows


def test_an_empty_window_gets_an_empty_partition_and_missing_features_are_refused(root: Path):
    from tests.test_if_training import write_features

    write_features(root, windows(12))
    run_all()
    empty = T0 + timedelta(hours=8)
    fg_a, fg_c = fg_frames(empty, HOSTS, 0)
    write_window(root, layout.FG_A, empty, fg_a.iloc[0:0])
    write_window(root, layout.FG_C, empty, fg_c.iloc[0:0])
    assert run_inference_predictions_from_runtime_config(batch(empty))["hosts_scored"] == 0
    assert predictions(root, empty) == []

    missing_c = T0 + timedelta(hours=9)
    write_window(root, layout.FG_A, missing_c, fg_frames(missing_c, HOSTS, 0)[0])
    with pytest.raises(FeatureDataError, match="fg_c has no partition for window 2026-10-01T09:00:00Z"):
        run_inference_predictions_from_runtime_config(batch(missing_c))
    lacking = T0 + timedelta(hours=10)
    fg_a, fg_c = fg_frames(lacking, HOSTS, 0)
    write_window(root, layout.FG_A, lacking, fg_a.drop(columns=["fan_out_15m"]))
    write_window(root, layout.FG_C, lacking, fg_c)
    with pytest.raises(FeatureDataError, match=r"lacks 1 model feature\(s\): \['fan_out_15m'\]"):
        run_inference_predictions_from_runtime_config(batch(lacking))
