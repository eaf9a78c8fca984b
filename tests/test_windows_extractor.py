"""historical_windows_extractor: the manifest from synthetic raw batches (local), its exact shape, range and
layout errors, and the backfill state machine (compiled ASL on moto) running on a manifest the real job
wrote from raw objects in (moto) S3, started through the compiled extractor pipeline's own arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ndr_jobs.devtools.synth.generator import SynthConfig, batch_folder, generate
from ndr_jobs.processing.delta_builder_job import raw_batch_folder
from ndr_jobs.processing.historical_windows_extractor_job import (
    HistoricalWindowsExtractorJob,
    run_historical_windows_extractor_from_runtime_config,
)
from ndr_jobs.runtime.config import BackfillRuntime, BatchRuntime
from tests.conftest import CONTRACTS, GENERATED, SPECS, backfill_report

PROJECT = "pan-traffic/acme/ndr-prod/v1"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def runtime(start: str, end: str, manifest: Path | str, raw_prefix: str = "") -> BackfillRuntime:
    return BackfillRuntime(project_name="ndr-prod", feature_spec_version="v1", start_ts=start, end_ts=end,
                           manifest_uri=str(manifest), raw_prefix=raw_prefix)  # fmt: skip


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    """Four generated batches, 2026-09-14 23:30 to 00:30 (across midnight), two files each."""
    out = tmp_path_factory.mktemp("raw")
    config = SynthConfig(start=utc(2026, 9, 14, 23, 30), hours=1, hosts=3, seed=3, files_per_batch=2)
    generate(config, str(out))
    return out, config


@pytest.fixture
def raw_env(synth_raw: tuple[Path, SynthConfig], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NDR_RAW_ROOT", str(synth_raw[0]))
    monkeypatch.setenv("NDR_ORG_ID", "acme")
    monkeypatch.delenv("NDR_BACKFILL_MANIFEST_MAX_BYTES", raising=False)
    return synth_raw[0]


def _end(start: datetime) -> str:
    return datetime.fromtimestamp(start.timestamp() + 900, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# -- the manifest ---------------------------------------------------------------------------------------


def test_manifest_lists_the_generated_batches(raw_env: Path, synth_raw: tuple[Path, SynthConfig], tmp_path: Path):
    manifest_path = tmp_path / "m" / "windows.json"
    summary = HistoricalWindowsExtractorJob(
        runtime("2026-09-14T23:30:00Z", "2026-09-15T00:30:00Z", manifest_path)
    ).run()
    doc = read(manifest_path)
    starts = [utc(2026, 9, 14, 23, 30), utc(2026, 9, 14, 23, 45), utc(2026, 9, 15, 0, 0), utc(2026, 9, 15, 0, 15)]
    assert doc["windows"] == [
        {
            "mini_batch_id": f"acme-ndr-prod-v1-{s:%Y%m%dT%H%M}",
            "batch_start_ts": f"{s:%Y-%m-%dT%H:%M:%SZ}",
            "batch_end_ts": _end(s),
            "batch_folder": batch_folder(str(raw_env), synth_raw[1], s) + "/",
        }
        for s in starts
    ]
    files = [p for p in raw_env.rglob("*.log")]
    assert doc["objects"] == len(files) == 8 and doc["bytes"] == sum(p.stat().st_size for p in files)
    assert {k: doc[k] for k in ("manifest_version", "project_name", "feature_spec_version", "org_id", "start_ts",
                                "end_ts", "raw_prefix", "window_minutes", "skipped_count", "skipped")} == {
        "manifest_version": 1, "project_name": "ndr-prod", "feature_spec_version": "v1", "org_id": "acme",
        "start_ts": "2026-09-14T23:30:00Z", "end_ts": "2026-09-15T00:30:00Z", "raw_prefix": f"{raw_env}/{PROJECT}/",
        "window_minutes": 15, "skipped_count": 0, "skipped": [],
    }  # fmt: skip
    assert summary["windows"] == 4 and summary["first_window"] == "2026-09-14T23:30:00Z"
    assert summary["last_window"] == "2026-09-15T00:15:00Z" and summary["manifest_uri"] == str(manifest_path)


def test_items_are_what_the_delta_builder_expects(raw_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The item's id names the contract folder: the delta builder derives the same folder from it alone."""
    run_historical_windows_extractor_from_runtime_config(
        runtime("2026-09-14T23:30:00Z", "2026-09-15T00:30:00Z", tmp_path / "w.json")
    )
    monkeypatch.delenv("NDR_ORG_ID")
    for item in read(tmp_path / "w.json")["windows"]:
        batch = BatchRuntime("ndr-prod", "v1", item["mini_batch_id"], item["batch_start_ts"], item["batch_end_ts"])
        start = datetime.fromisoformat(item["batch_start_ts"].replace("Z", "+00:00"))
        assert raw_batch_folder(batch, start) == item["batch_folder"]
        assert os.listdir(item["batch_folder"])


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-09-14T23:45:00Z", "2026-09-15T00:15:00Z", ["2026-09-14T23:45:00Z", "2026-09-15T00:00:00Z"]),
        ("2026-09-14T23:31:00Z", "2026-09-15T00:00:01Z", ["2026-09-14T23:45:00Z", "2026-09-15T00:00:00Z"]),
        (
            "2026-09-15T01:30:00+02:00",
            "2026-09-15T02:15:00+02:00",
            ["2026-09-14T23:30:00Z", "2026-09-14T23:45:00Z", "2026-09-15T00:00:00Z"],
        ),
        ("2026-09-15T00:30:00Z", "2026-09-16T00:00:00Z", []),
        ("2026-09-01T00:00:00Z", "2026-09-14T23:30:00Z", []),
    ],
)
def test_the_range_is_half_open_on_window_starts(raw_env: Path, tmp_path: Path, start: str, end: str,
                                                 expected: list[str]):  # fmt: skip
    run_historical_windows_extractor_from_runtime_config(runtime(start, end, tmp_path / "w.json"))
    doc = read(tmp_path / "w.json")
    assert [w["batch_start_ts"] for w in doc["windows"]] == expected
    assert doc["objects"] == 2 * len(expected)


def test_the_manifest_is_deterministic(raw_env: Path, tmp_path: Path):
    texts = []
    for name in ("a.json", "b.json", "a.json"):
        HistoricalWindowsExtractorJob(runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / name)).run()
        texts.append((tmp_path / name).read_bytes())
    assert texts[0] == texts[1] == texts[2]
    assert texts[0].endswith(b"}\n") and b" " not in texts[0]  # compact: the state machine's result limit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary files left


def test_a_project_prefix_as_raw_prefix(raw_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NDR_ORG_ID")
    monkeypatch.delenv("NDR_RAW_ROOT")
    for prefix in (f"{raw_env}/{PROJECT}/", f"{raw_env}/{PROJECT}"):
        run_historical_windows_extractor_from_runtime_config(
            runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / "w.json", prefix)
        )
        doc = read(tmp_path / "w.json")
        assert doc["org_id"] == "acme" and doc["raw_prefix"] == f"{raw_env}/{PROJECT}/" and len(doc["windows"]) == 4
    with pytest.raises(ValueError, match="project 'other' version 'v1', but the run is for project 'ndr-prod'"):
        run_historical_windows_extractor_from_runtime_config(
            runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / "x.json",
                    f"{raw_env}/pan-traffic/acme/other/v1/")
        )  # fmt: skip
    with pytest.raises(ValueError, match="is a raw root, not a project prefix .* set NDR_ORG_ID"):
        run_historical_windows_extractor_from_runtime_config(
            runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / "x.json", str(raw_env))
        )
    with pytest.raises(ValueError, match="no --raw-prefix given and NDR_RAW_ROOT is not set"):
        run_historical_windows_extractor_from_runtime_config(
            runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / "x.json")
        )
    assert not (tmp_path / "x.json").exists()


def test_an_empty_raw_prefix_is_an_empty_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NDR_RAW_ROOT", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("NDR_ORG_ID", "acme")
    summary = run_historical_windows_extractor_from_runtime_config(
        runtime("2026-09-14T00:00:00Z", "2026-09-14T06:00:00Z", tmp_path / "w.json")
    )
    doc = read(tmp_path / "w.json")
    assert doc["windows"] == [] and doc["objects"] == 0 and summary["windows"] == 0
    assert summary["first_window"] is None


@pytest.mark.parametrize(
    ("start", "end", "error"),
    [
        ("2026-09-14T06:00:00Z", "2026-09-14T06:00:00Z", "empty or reversed range"),
        ("2026-09-14T06:00:00Z", "2026-09-14T00:00:00Z", "empty or reversed range"),
        ("yesterday", "2026-09-14T00:00:00Z", "start_ts 'yesterday' is not an ISO-8601 timestamp"),
        ("2026-09-14T00:00:00Z", "2026-09-31T00:00:00Z", "end_ts '2026-09-31T00:00:00Z' is not an ISO-8601"),
        ("2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "longer than 366 days"),
    ],
)
def test_a_bad_range_is_a_clear_error_and_writes_nothing(raw_env: Path, tmp_path: Path, start: str, end: str,
                                                         error: str):  # fmt: skip
    with pytest.raises(ValueError, match=error):
        run_historical_windows_extractor_from_runtime_config(runtime(start, end, tmp_path / "w.json"))
    assert not (tmp_path / "w.json").exists()


def test_objects_off_the_layout_are_reported_not_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]):  # fmt: skip
    day = tmp_path / "raw" / PROJECT / "2026/09/14"
    for relative in ("0000/a.log", "0000/_SUCCESS", "0000/.part.tmp", "0015/nested/b.log", "0007/c.log",
                     "12x0/d.log", "stray.log", "2400/e.log"):  # fmt: skip
        (day / relative).parent.mkdir(parents=True, exist_ok=True)
        (day / relative).write_text("x\n")
    monkeypatch.setenv("NDR_RAW_ROOT", str(tmp_path / "raw"))
    monkeypatch.setenv("NDR_ORG_ID", "acme")
    summary = run_historical_windows_extractor_from_runtime_config(
        runtime("2026-09-14T00:00:00Z", "2026-09-15T00:00:00Z", tmp_path / "w.json")
    )
    doc = read(tmp_path / "w.json")
    assert [(w["batch_start_ts"], w["batch_folder"]) for w in doc["windows"]] == [
        ("2026-09-14T00:00:00Z", f"{day}/0000/"),
        ("2026-09-14T00:15:00Z", f"{day}/0015/"),
    ]
    assert doc["objects"] == 2 and doc["skipped_count"] == 4
    assert doc["skipped"] == [
        {"path": f"{day}/0007/c.log", "reason": "batch folder 0007 is not on a 15-minute boundary"},
        {"path": f"{day}/12x0/d.log", "reason": "folder '12x0' is not HHMM"},
        {"path": f"{day}/2400/e.log", "reason": "folder '2400' is not HHMM"},
        {"path": f"{day}/stray.log", "reason": "not in an HHMM batch folder"},
    ]
    assert summary["skipped_by_reason"] == {"batch folder 0007 is not on a 15-minute boundary": 1,
                                            "folder '12x0' is not HHMM": 1, "folder '2400' is not HHMM": 1,
                                            "not in an HHMM batch folder": 1}  # fmt: skip
    assert f"warning: skipped {day}/stray.log: not in an HHMM batch folder" in capsys.readouterr().err


def test_a_manifest_too_large_for_step_functions_fails(raw_env: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    monkeypatch.setenv("NDR_BACKFILL_MANIFEST_MAX_BYTES", "600")
    with pytest.raises(ValueError, match=r"manifest of 4 windows is \d+ bytes, over 600 .*split the range"):
        run_historical_windows_extractor_from_runtime_config(
            runtime("2026-09-14T00:00:00Z", "2026-09-16T00:00:00Z", tmp_path / "w.json")
        )
    assert not (tmp_path / "w.json").exists()


def test_the_script(raw_env: Path, tmp_path: Path):
    args = [sys.executable, "-m", "ndr_jobs.scripts.run_historical_windows_extractor", "--project-name", "ndr-prod",
            "--feature-spec-version", "v1", "--manifest-uri", str(tmp_path / "w.json"), "--raw-prefix", ""]  # fmt: skip
    ok = subprocess.run([*args, "--start-ts-iso", "2026-09-14T23:30:00Z", "--end-ts-iso", "2026-09-15T00:00:00Z"],
                        capture_output=True, text=True, env=os.environ)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["windows"] == 2
    bad = subprocess.run([*args, "--start-ts-iso", "2026-09-15T00:00:00Z", "--end-ts-iso", "2026-09-14T00:00:00Z"],
                         capture_output=True, text=True, env=os.environ)  # fmt: skip
    assert bad.returncode != 0 and "empty or reversed range" in bad.stderr


# -- the backfill state machine on the job's manifest ----------------------------------------------------

REQUEST = CONTRACTS / "backfill.request.json"
RAW_BUCKET = "acme-ndr-raw"


def _state_machine_run(raw_keys: list[str], request: dict) -> tuple[object, list[dict[str, str]], list, list]:
    """Run the backfill machine offline; the extractor pipeline runs the real script with its compiled arguments."""
    import boto3

    from ndr_compiler.specs import load_specs
    from ndr_jobs.scripts import run_historical_windows_extractor as script
    from ndr_local import ScriptedPipelines, offline_aws
    from ndr_local.pipeline_runner import load_definition, resolve_parameters, step_command
    from ndr_local.platform import stand_up

    names = {"PipelineNameBackfill15m": "ndr-backfill-windows",
             "PipelineNameBackfillHistoricalExtractor": "ndr-extract"}
    definition = load_definition(GENERATED, "backfill_historical_extractor")
    (step,) = definition["Steps"]
    summaries: list[dict] = []
    errors: list[Exception] = []

    class RealExtractor(ScriptedPipelines):
        def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
            super().start(pipeline_name, execution_arn, parameters)
            if pipeline_name == names["PipelineNameBackfill15m"]:
                backfill_report(platform, parameters)  # the chunk's job, scripted: every window succeeds
            if pipeline_name != names["PipelineNameBackfillHistoricalExtractor"]:
                return
            argv = step_command(step, resolve_parameters(definition, parameters))
            assert argv[1:3] == ["-m", script.__name__]
            try:
                summaries.append(HistoricalWindowsExtractorJob(script.parse_runtime(argv[3:])).run())
            except Exception as exc:  # the pipeline fails, as the step's non-zero exit would make it
                errors.append(exc)
                self._executions[execution_arn] = (pipeline_name, ["Failed"])

    project = next(iter(load_specs([SPECS])[0].projects().values())).model
    pipelines = RealExtractor()
    with offline_aws(pipelines):
        platform = stand_up(GENERATED, project, names)
        s3 = boto3.client("s3")
        for key in raw_keys:
            s3.put_object(Bucket=RAW_BUCKET, Key=key, Body=b"line\n")
        result = platform.run("sfn_ndr_backfill_reprocessing", request)
        events = platform.events()
        manifests = [
            s3.get_object(Bucket=b, Key=k)["Body"].read()
            for b, k in (s.removeprefix("s3://").split("/", 1) for s in (x["manifest_uri"] for x in summaries))
        ]
    runs = [p for n, p in pipelines.starts if n == names["PipelineNameBackfill15m"]]
    return result, runs, events, [json.loads(m) for m in manifests] + errors


def test_backfill_machine_maps_over_the_manifest_the_job_wrote():
    request = json.loads(REQUEST.read_text())  # 2026-09-14 00:00 to 06:00, raw_prefix s3://acme-ndr-raw/<project>/
    keys = [f"{PROJECT}/2026/09/14/{hhmm}/traffic-{i}.log" for hhmm in ("0545", "0000", "0015") for i in range(2)]
    keys += [f"{PROJECT}/2026/09/14/0600/late.log", f"{PROJECT}/2026/09/13/2345/early.log"]  # outside the range
    result, runs, events, (manifest,) = _state_machine_run(keys, request)
    assert result.status == "SUCCEEDED", result.cause
    # one chunk job over the three windows: 00:00, 00:15 and 05:45 (the 21 windows between have no data)
    assert result.path.count("StartBackfillPipeline") == 1 and result.path.count("AcquireBackfillWindowLock") == 3
    (run,) = runs
    manifest_uri = run.pop("ManifestUri")
    assert run.pop("ReportUri") == manifest_uri.replace("/windows.json", "/reports/0.json")
    assert run == {"ProjectName": "ndr-prod", "FeatureSpecVersion": "v1", "FirstWindow": "2026-09-14T00:00:00Z",
                   "WindowMask": "11" + "0" * 21 + "1", "MaxQuarantineRatio": "0.5", "Force": "false"}
    assert manifest["objects"] == 6 and manifest["raw_prefix"] == f"s3://{RAW_BUCKET}/{PROJECT}/"
    (event,) = events
    assert event["detail"]["windows_total"] == 3 and event["detail"]["status"] == "COMPLETE"


def test_backfill_machine_on_an_empty_range_runs_no_window():
    result, runs, events, (manifest,) = _state_machine_run([f"{PROJECT}/2026/09/15/0000/x.log"],
                                                           json.loads(REQUEST.read_text()))  # fmt: skip
    assert result.status == "SUCCEEDED", result.cause
    assert manifest["windows"] == [] and runs == []
    (event,) = events
    assert event["detail"]["windows_total"] == 0 and event["detail"]["status"] == "COMPLETE"


def test_backfill_machine_rejects_a_reversed_range_before_any_pipeline():
    request = {**json.loads(REQUEST.read_text()), "end_ts": "2026-09-13T00:00:00Z"}
    result, runs, events, outcomes = _state_machine_run([f"{PROJECT}/2026/09/14/0000/x.log"], request)
    assert result.status == "FAILED" and result.error == "NDR.InvalidEvent"
    assert "start_ts 2026-09-14T00:00:00Z is not before end_ts 2026-09-13T00:00:00Z" in result.cause
    assert outcomes == [] and runs == []  # the extractor never ran
    assert [e["detail-type"] for e in events] == ["NDR Event Rejected"]
