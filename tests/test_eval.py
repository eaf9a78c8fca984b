"""The detection report: the metrics on known scores, the report's structure, and a ``--quick`` run of the
whole chain (synth -> delta -> fg_a -> pair_counts -> fg_b -> fg_c -> training -> inference -> report)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ndr_jobs.devtools import eval as ev
from ndr_jobs.devtools.synth.generator import ATTACK_CLASSES


def test_auc_and_recall_at_a_fixed_false_positive_rate():
    negatives = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    assert ev.auc(np.array([2.0, 3.0]), negatives) == 1.0
    assert ev.auc(np.array([-1.0]), negatives) == 0.0
    assert ev.auc(np.array([0.5]), np.array([0.5, 0.5])) == 0.5  # ties count half
    # at 1 % FPR at most 10 negatives may exceed the threshold: it is the 11th highest negative, 0.989
    assert ev.recall_at_fpr(np.array([0.9895, 0.989, 0.5, 2.0]), negatives, 0.01) == 0.5
    assert ev.recall_at_fpr(np.array([0.9995]), negatives, 0.001) == 1.0
    assert ev.recall_at_fpr(np.array([0.9975]), negatives, 0.001) == 0.0  # threshold: 2nd highest, 0.998
    assert ev.auc(np.array([]), negatives) is None and ev.recall_at_fpr(np.array([1.0]), np.array([]), 0.01) is None


def test_echo_windows_are_left_out_of_the_negatives():
    t = datetime(2026, 10, 1, 4, tzinfo=UTC)
    q = timedelta(minutes=15)
    windows = {("h", t): {"beacon"}, ("h", t + q): {"beacon"}, ("g", t): {"lateral"}}
    echoes = ev.echo_windows(windows, 1.0)
    assert echoes == {("h", t + k * q) for k in (2, 3, 4, 5)} | {("g", t + k * q) for k in (1, 2, 3, 4)}
    assert ev.echo_windows(windows, 0.0) == set()
    frame = pd.DataFrame({"score": [0.9, 0.95, 0.1, 0.2], "label": ["lateral", "", "", ""],
                          "classes": [frozenset({"lateral"}), frozenset(), frozenset(), frozenset()],
                          "echo": [False, True, False, False]})  # fmt: skip
    assert ev.measure(frame, "score")["overall"] == {
        "positives": 1, "negatives": 2, "auc": 1.0, "recall_at_0.001": 1.0, "recall_at_0.01": 1.0
    }  # the echo's higher score is neither a false positive nor a miss
    assert ev.measure(frame.drop(columns=["echo"]), "score")["overall"]["auc"] == 2 / 3


def test_bad_configurations_are_refused(capsys):
    assert ev.main(["--out", "/dev/null", "--attack-hours", "0.1"]) == 2
    assert "multiple of 0.25" in capsys.readouterr().err
    assert ev.main(["--out", "/dev/null", "--echo-hours", "-1"]) == 2
    assert ev.config_from(ev.build_parser().parse_args(["--out", "x", "--small"])) == ev.SMALL
    assert ev.config_from(ev.build_parser().parse_args(["--out", "x", "--small", "--hosts", "30"])).hosts == 30
    with pytest.raises(SystemExit):
        ev.build_parser().parse_args(["--out", "x", "--small", "--quick"])
    with pytest.raises(ValueError, match="first instant of a month"):
        ev.EvalConfig(boundary=ev.EvalConfig().boundary.replace(day=2))


def _scores(shift: float) -> dict[str, dict[str, list[float]]]:
    """A small fixed score set: 200 negatives, and each class's positives ``shift`` above them."""
    negatives = [i / 100.0 for i in range(200)]
    one = {"negatives": negatives, "overall": [1.5 + shift + i / 50.0 for i in range(20)]}
    one.update({name: [1.0 + shift + i / 10.0 + k / 7.0 for i in range(4)] for k, name in enumerate(ATTACK_CLASSES)})
    return {"model": one, "fg_a_only": {**one, "overall": [1.0, 1.2, 1.9]}, "baseline": {**one, "overall": [0.5]}}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"  # signature, then the header chunk
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_pictures_are_valid_pngs_and_the_same_bytes_for_the_same_scores(tmp_path: Path):
    drawn = {}
    for run, shift in (("one", 1.0), ("two", 1.0), ("other", 0.5)):
        links = ev.pictures(_scores(shift), tmp_path / run / "detection.md")
        assert [link for _, link in links] == ["detection/roc.png", "detection/scores.png"]
        drawn[run] = {link: (tmp_path / run / link).read_bytes() for _, link in links}
    for link, data in drawn["one"].items():
        assert _png_size(data) == (960, 600) and len(data) > 20_000  # drawn, not an empty canvas
        assert data == drawn["two"][link]  # deterministic: no timestamp or version in the file
        assert data != drawn["other"][link]  # and it shows the scores
        assert b"Software" not in data and b"matplotlib" not in data.lower()


def test_the_committed_report_shows_its_pictures():
    docs = Path(__file__).resolve().parents[1] / "docs"
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", (docs / "detection.md").read_text())
    assert links == ["detection/roc.png", "detection/scores.png"]
    for link in links:
        assert _png_size((docs / link).read_bytes()) == (960, 600)


def _check_report(text: str) -> dict[str, list[str]]:
    assert text.startswith("# Detection, measured\n")
    for heading in ("## Configuration", "## Results", "## What drove the detections", "## Reading the numbers"):
        assert heading in text
    assert "python -m ndr_jobs.devtools.eval" in text
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("overall", *ATTACK_CLASSES) and len(cells) == 11:
            rows[cells[0]] = cells
    assert list(rows) == ["overall", *ATTACK_CLASSES]
    for cells in rows.values():
        for value in cells[2:5] + cells[6:]:
            assert value == "n/a" or 0.0 <= float(value) <= 1.0
    return rows


def test_quick_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The real chain on 12 hosts over 4 batches: the report's structure and metrics in [0, 1], no thresholds."""
    for name in ("NDR_STORAGE_ROOT", "NDR_RAW_ROOT", "NDR_ORG_ID", "NDR_GATE_MIN_VALIDATION_ROWS",
                 "NDR_GATE_MAX_ALERT_RATE_RATIO", "NDR_MODEL_REGISTRY"):  # fmt: skip
        monkeypatch.setenv(name, "")  # recorded, so that what the eval sets in os.environ is undone after the test
        monkeypatch.delenv(name)
    out, metrics = tmp_path / "detection.md", tmp_path / "detection.json"
    assert ev.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"), "--json", str(metrics)]) == 0
    rows = _check_report(out.read_text())
    assert int(rows["overall"][1]) > 0  # some (host, window) pairs are positive
    measured = json.loads(metrics.read_text())
    assert set(measured["metrics"]) == {"model", "fg_a_only", "baseline"}
    for per_class in measured["metrics"].values():
        for m in per_class.values():
            for key in ("auc", "recall_at_0.001", "recall_at_0.01"):
                assert m[key] is None or 0.0 <= m[key] <= 1.0
    assert re.search(r"\| run time \| \d+ s", out.read_text())
    # 30 minutes of training: the 1h and 24h columns were never seen whole, and the report says which
    row = r"^\| features left out: window longer than the training span \| (\d+) of a 30m span: (.*) \|$"
    left_out = re.search(row, out.read_text(), re.MULTILINE)
    assert left_out and "`periodic_max_score_24h` (24h)" in left_out[2] and "`sessions_1h` (1h)" in left_out[2]
    for link in ("detection/roc.png", "detection/scores.png"):  # drawn beside the page and shown on it
        assert f"]({link})" in out.read_text() and _png_size((tmp_path / link).read_bytes()) == (960, 600)
    steps = re.findall(r"^\[(\d+)/(\d+) \d+s\] eval: (.*)$", capsys.readouterr().err, re.MULTILINE)
    total = ev.chain_steps(ev.QUICK) + 1
    assert [(int(n), int(t)) for n, t, _ in steps] == [(n, total) for n in range(1, total + 1)]
    assert steps[0][2].startswith("delta/fg_a/pair_counts 2026-09-30T23:45") and steps[-1][2] == "scoring"


def _run(auc: float, recall: float, false_alerts: int, missing: str = "") -> dict:
    """A run's result as :func:`ev.evaluate` returns it, with the same metrics for every class (``missing``: a
    class without positives)."""
    m = {"positives": 4, "negatives": 100, "auc": auc, "recall_at_0.001": recall / 2, "recall_at_0.01": recall}
    none = {"positives": 0, "negatives": 100, "auc": None, "recall_at_0.001": None, "recall_at_0.01": None}
    metrics = {name: (none if name == missing else m) for name in ("overall", *ATTACK_CLASSES)}
    per = (8 / 24) * (50 / 100)
    return {"metrics": {"model": metrics, "baseline": metrics, "fg_a_only": metrics},
            "alerts": {"alerts": false_alerts + 3, "false_alerts": false_alerts,
                       "alerts_per_day_per_100_hosts": (false_alerts + 3) / per,
                       "false_alerts_per_day_per_100_hosts": false_alerts / per},
            "meta": {"rows": 104, "negatives": 100, "seconds": 1.0}}  # fmt: skip


def test_several_runs_report_the_worst_case_next_to_the_mean():
    runs = [_run(0.99, 1.0, 2), _run(0.95, 0.8, 6, missing="dns_tunnel"), _run(0.98, 0.9, 4)]
    agg = ev.aggregate(runs)
    assert agg["overall"]["auc"] == pytest.approx({"mean": (0.99 + 0.95 + 0.98) / 3, "worst": 0.95, "runs": 3})
    assert agg["beacon"]["recall_at_0.01"] == pytest.approx({"mean": 0.9, "worst": 0.8, "runs": 3})
    assert agg["dns_tunnel"]["recall_at_0.01"] == pytest.approx({"mean": 0.95, "worst": 0.9, "runs": 2})
    assert agg["lateral"]["recall_at_0.001"]["worst"] == pytest.approx(0.4)
    configs = [ev.EvalConfig(seed=s, estate=e) for e, s in (("flat", 7), ("flat", 11), ("segmented", 7))]
    text = ev.render_many(configs, "python -m ndr_jobs.devtools.eval --seeds 7,11", runs)
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in text.splitlines()
                              if line.startswith("| ")) if len(c) == 9}  # fmt: skip
    assert rows["overall"][1:5] == ["3", "0.973", "0.950", "0.450"] and rows["overall"][-1] == "no"  # 0.95 < 0.97
    assert rows["dns_tunnel"][1] == "2" and rows["beacon"][-2:] == ["0.800", "no"]
    assert "| mean / worst | | | | 24.0 / 36.0 |" in text  # 2, 6 and 4 false alerts in a sixth of a day-100-hosts
    assert "| 1 | `flat` | 7 | 50 |" in text and "| 3 | `segmented` | 7 | 50 |" in text


def test_several_runs_pool_their_scores_into_the_pictures():
    runs = [{"scores": {"model": {"negatives": [0.1, 0.2], "beacon": [3.0]}, "baseline": {"negatives": [0.3]}}},
            {"scores": {"model": {"negatives": [0.4], "beacon": [2.0], "lateral": [5.0]},
                        "baseline": {"beacon": [1.0]}}}]
    pooled = ev.pooled_scores(runs)
    assert pooled == {"model": {"negatives": [0.1, 0.2, 0.4], "beacon": [3.0, 2.0], "lateral": [5.0]},
                      "baseline": {"negatives": [0.3], "beacon": [1.0]}}
    configs = [ev.EvalConfig(seed=7), ev.EvalConfig(seed=11)]
    metric_runs = [_run(0.99, 1.0, 2), _run(0.95, 0.8, 6)]
    text = ev.render_many(configs, "python -m ndr_jobs.devtools.eval --seeds 7,11", metric_runs,
                          [("ROC curves", "detection-seeds/roc.png")])
    assert "![ROC curves, pooled over the runs](detection-seeds/roc.png)" in text and "pool the 2 runs" in text


def test_seeds_and_estates_options():
    args = ev.build_parser().parse_args(["--out", "x", "--small", "--seeds", "7,11", "--estates", "flat,segmented"])
    configs = ev.run_configs(args, ev.config_from(args))
    assert [(c.estate, c.seed) for c in configs] == [("flat", 7), ("flat", 11), ("segmented", 7), ("segmented", 11)]
    assert all(c.hosts == ev.SMALL.hosts for c in configs)
    one = ev.build_parser().parse_args(["--out", "x", "--estate", "segmented"])
    assert [(c.estate, c.seed) for c in ev.run_configs(one, ev.config_from(one))] == [("segmented", 7)]
    for bad in (["--seeds", "7,7"], ["--estates", "mesh"], ["--seeds", ""], ["--estate", "mesh"]):
        with pytest.raises(SystemExit):
            ev.build_parser().parse_args(["--out", "x", *bad])
    with pytest.raises(ValueError, match="unknown estate"):
        ev.EvalConfig(estate="mesh")


def test_alert_rates_count_the_models_alerts_per_day_per_100_hosts():
    config = ev.EvalConfig(hosts=50, attack_hours=12.0)  # half a day, half of 100 hosts: x4
    frame = pd.DataFrame({"alert": [True, True, False, True], "label": ["beacon", "", "", ""],
                          "echo": [False, False, False, True]})  # fmt: skip
    assert ev.alert_rates(frame, config) == pytest.approx({
        "alerts": 3, "false_alerts": 1, "alerts_per_day_per_100_hosts": 12.0,
        "false_alerts_per_day_per_100_hosts": 4.0})  # the echo's alert is not a false one
