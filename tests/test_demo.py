"""``make run``'s pieces: local events shaped exactly as the upstream contracts, and the demo end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ndr_local import events
from tests.conftest import CONTRACTS

START = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def shape(value: Any) -> Any:
    """Keys, nesting and value types, not values; JSON strings that hold JSON are compared by their shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str) and value.startswith("{"):
        try:
            return {"json": shape(json.loads(value))}
        except ValueError:
            pass
    return type(value).__name__


def contract(name: str) -> Any:
    return json.loads((CONTRACTS / name).read_text())


def test_the_batch_event_has_the_contracts_shape_and_values():
    event = events.batch_completed("acme-ndr-raw", "acme", "ndr-prod", "v1", START, 4, 51234567)
    expected = contract("15m_batch_completed.eventbridge.json")
    assert shape(event) == shape(expected)
    assert event["detail"] == expected["detail"]  # the contract's example batch, value for value
    assert {k: event[k] for k in ("detail-type", "source", "time")} == {
        k: expected[k] for k in ("detail-type", "source", "time")
    }


@pytest.mark.parametrize(("wrap", "name"), [(events.as_sqs, "15m_batch_completed.sqs.json"),
                                            (events.as_sns, "15m_batch_completed.sns.json")])
def test_the_wrapped_batch_events_have_the_contracts_shapes(wrap, name):
    event = events.batch_completed("acme-ndr-raw", "acme", "ndr-prod", "v1", START, 4, 51234567)
    assert shape(wrap(event)) == shape(contract(name))


@pytest.mark.parametrize(
    ("built", "name"),
    [
        (events.monthly_baselines("ndr-prod", "v1", "2026-09"), "monthly_baselines.scheduler.json"),
        (events.training_request("ndr-prod", "v1", datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)),
         "training.request.json"),
        (events.backfill_request("ndr-prod", "v1", datetime(2026, 9, 14, tzinfo=UTC),
                                 datetime(2026, 9, 14, 6, tzinfo=UTC), "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/",
                                 "analyst@acme.example"), "backfill.request.json"),
    ],
)
def test_the_operator_requests_are_the_contracts(built, name):
    assert built == contract(name)


def test_the_top_anomalies_come_from_the_publication_with_their_drivers_and_ground_truth(tmp_path):
    import pyarrow as pa

    from ndr_jobs.datasets import storage
    from ndr_local.demo import DemoConfig, DemoReport, _top_anomalies, render

    part = [("feature_spec_version", "v1"), ("batch_start", "20261001T1200")]
    drivers = json.dumps([{"feature": "rare_dst_periodic_score", "value": 0.91, "deviation": 7.5}])
    storage.write_table(pa.table({
        "host_ip": ["10.10.1.5", "10.10.1.6", "10.10.1.7"],
        "batch_start_ts": pa.array([START.replace(tzinfo=None)] * 3, pa.timestamp("us", "UTC")),
        "score": [3.71, 0.52, 1.60],
        "alert": [True, False, False],
        "detector": ["command_and_control", "all_features", "volume"],
        "top_features_json": [drivers, "[]", "[]"],
    }), str(tmp_path), "publication", part)  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"src_ip": "10.10.1.5", "attack": "beacon", "start": "2026-10-01T11:50:00Z",
                                  "end": "2026-10-01T12:20:00Z"}) + "\n")
    top, alerts = _top_anomalies(tmp_path / "publication", labels, DemoConfig(top=2))
    assert alerts == 1
    assert [(r["host_ip"], r["attack"]) for r in top] == [("10.10.1.5", "beacon"), ("10.10.1.7", "")]
    lines: list[str] = []
    unseen = {"training_span": "1h", "features": [{"feature": "periodic_max_score_24h", "window": "24h"}]}
    render(DemoReport(top=top, alerts=alerts, unseen=unseen), echo=lines.append)
    text = "\n".join(lines)
    assert "10.10.1.5       2026-10-01 12:00  score 3.7100 (command_and_control)  <- injected beacon" in text
    assert "rare_dst_periodic_score = 0.91 (deviation +7.50)" in text
    assert "   1 of these 2 are injected attacks (synthetic ground truth)" in text
    assert "   injected in the top 2  : 1" in text
    assert "   features left out      : 1, window longer than the 1h of training (periodic_max_score_24h)" in text


@pytest.mark.parametrize("live_hours", [1.0, 0.25])
def test_the_demo_shows_a_progress_line_of_its_stages(tmp_path, monkeypatch, live_hours):
    """Every stage steps the progress line (stderr), counted against :func:`stage_count`; the platform is a
    stand-in that succeeds at everything (the real one is ``test_drills.py``'s)."""
    import io
    import re
    from types import SimpleNamespace

    from ndr_local import demo

    class Platform:
        def events(self) -> list[dict[str, Any]]:
            return [{"detail-type": "NDR Event Rejected", "detail": {}}]

    class Run:
        def __init__(self, config: demo.DemoConfig, echo: Any) -> None:
            self.config, self.s3, self.raw_bucket, self.platform = config, tmp_path, "raw", Platform()

        def __enter__(self) -> Run:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def batch_event(self, start: datetime) -> dict[str, Any]:
            return events.batch_completed("raw", "acme", "ndr-prod", "v1", start, 1, 100)

        def execute(self, machine: str, payload: Any, what: str, expect: str = "SUCCEEDED") -> Any:
            return SimpleNamespace(status=expect, error="NDR.InvalidEvent", cause="bad", path=["DuplicateMiniBatch"])

        def abort_and_recover(self, start: datetime) -> Any:
            return {"status": "ABORTED"}, [], SimpleNamespace(status="SUCCEEDED")

        def backfill(self, *window: Any) -> None:
            pass

        baselines = train = backfill

    monkeypatch.setattr(demo, "LocalRun", Run)
    monkeypatch.setattr(demo, "_make_estate", lambda run, echo: echo("   estate made"))
    monkeypatch.setattr(demo, "_summarise", lambda report, run: None)
    config = demo.DemoConfig(workdir=tmp_path, live_hours=live_hours)
    stderr, lines = io.StringIO(), []
    report = demo.run_demo(config, echo=lines.append, progress=stderr)
    assert report.ok, report.failures
    total = demo.stage_count(config)
    assert total == len(report.stages) == (8 if live_hours > 0.25 else 7)
    steps = re.findall(r"^\[(\d+)/(\d+) \d+s\] make run: (.*)$", stderr.getvalue(), re.MULTILINE)
    assert [(int(n), int(t)) for n, t, _ in steps] == [(n, total) for n in range(1, total + 1)]
    assert [s for _, _, s in steps][:5] == ["estate", "backfill", "baselines", "training", "live"]
    assert "   estate made" in lines and "\n== duplicate: the first live event again" in lines  # stdout unchanged
