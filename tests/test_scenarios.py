"""The generated state machines, executed offline (moto's interpreter), on the upstream contracts.

Each scenario asserts the visited state path from the execution history, and what the run left behind:
locks, pipeline starts and their parameters, emitted events.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ndr_compiler.local import ScriptedPipelines, offline_aws
from ndr_compiler.local.platform import OfflinePlatform, stand_up
from ndr_compiler.specs import load_specs
from tests.conftest import CONTRACTS, GENERATED, SPECS

PIPELINES = {
    "PipelineName15m": "ndr-features-15m",
    "PipelineNameBackfill15m": "ndr-features-15m",
    "PipelineNameInference": "ndr-inference",
    "PipelineNamePredictionJoin": "ndr-prediction-join",
    "PipelineNameMachineInventory": "ndr-machine-inventory",
    "PipelineNameFGB": "ndr-fg-b-baselines",
    "PipelineNameIFTraining": "ndr-if-training",
    "PipelineNameBackfillHistoricalExtractor": "ndr-backfill-extractor",
}
FM = "sfn_ndr_15m_features_inference"
PUB = "sfn_ndr_prediction_publication"
MONTHLY = "sfn_ndr_monthly_fg_b_baselines"
TRAINING = "sfn_ndr_training_orchestrator"
BACKFILL = "sfn_ndr_backfill_reprocessing"
BATCH_ID = "acme-ndr-prod-v1-20261001T1200"

pytestmark = pytest.mark.skipif(not CONTRACTS.exists(), reason="shared contracts not present")


def contract(name: str) -> object:
    return json.loads((CONTRACTS / name).read_text())


PROJECT = next(iter(load_specs([SPECS])[0].projects().values())).model


class Extractor(ScriptedPipelines):
    """Scripted pipelines whose backfill extractor writes a manifest of ``windows`` windows, as the job does."""

    def __init__(self, platform_ref: list[OfflinePlatform], windows: int, **kw):
        super().__init__(**kw)
        self.platform_ref = platform_ref
        self.windows = windows

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        super().start(pipeline_name, execution_arn, parameters)
        if pipeline_name == PIPELINES["PipelineNameBackfillHistoricalExtractor"]:
            start = datetime.fromisoformat(parameters["StartTsIso"].replace("Z", "+00:00"))
            windows = []
            for i in range(self.windows):
                s = start.timestamp() + i * 900
                b, e = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (s, s + 900))
                stamp = datetime.fromtimestamp(s, UTC).strftime("%Y%m%dT%H%M")
                windows.append(
                    {
                        "mini_batch_id": f"acme-ndr-prod-v1-{stamp}",
                        "batch_start_ts": b,
                        "batch_end_ts": e,
                        "batch_folder": f"s3://acme-ndr-raw/x/{stamp}/",
                    }
                )
            self.platform_ref[0].put_json(parameters["ManifestUri"], {"windows": windows})


def _platform(pipelines: ScriptedPipelines) -> Iterator[OfflinePlatform]:
    with offline_aws(pipelines):
        yield stand_up(GENERATED, PROJECT, PIPELINES)


@pytest.fixture
def scripted() -> ScriptedPipelines:
    return ScriptedPipelines()


@pytest.fixture
def platform(scripted: ScriptedPipelines) -> Iterator[OfflinePlatform]:
    yield from _platform(scripted)


def starts(pipelines: ScriptedPipelines, placeholder: str) -> list[dict[str, str]]:
    return [p for n, p in pipelines.starts if n == PIPELINES[placeholder]]


FM_HAPPY = [
    "NormalizeIncomingMessage",
    "UnwrapIncomingMessage",
    "ParseIncomingProjectContext",
    "BatchCompletionEventChoice",
    "LoadProjectRoutingFromDynamo",
    "LoadProjectParametersFromDynamo",
    "ResolvePipelineRuntimeParams",
    "AcquireMiniBatchLock",
    "Start15mFeaturesPipeline",
    "Describe15mFeaturesPipeline",
    "FeaturesPipelineStatusChoice",
    "StartInferencePipeline",
    "DescribeInferencePipeline",
    "InferencePipelineStatusChoice",
    "StartPredictionPublicationWorkflow",
    "ReleaseMiniBatchLockOnSuccess",
    "Success",
]


# -- 15 minutes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapper", ["eventbridge", "sqs", "sns"])
def test_15m_happy_path_for_each_wrapper(platform: OfflinePlatform, scripted: ScriptedPipelines, wrapper: str):
    result = platform.run(FM, contract(f"15m_batch_completed.{wrapper}.json"))
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.path == FM_HAPPY
    (features,) = starts(scripted, "PipelineName15m")
    assert features == {
        "ProjectName": "ndr-prod",
        "FeatureSpecVersion": "v1",
        "MiniBatchId": BATCH_ID,
        "BatchStartTsIso": "2026-10-01T12:00:00Z",
        "BatchEndTsIso": "2026-10-01T12:15:00Z",
        "RawBatchFolder": "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/",
    }
    assert len(starts(scripted, "PipelineNameInference")) == 1
    assert starts(scripted, "PipelineNamePredictionJoin")[0]["MiniBatchId"] == BATCH_ID
    (child,) = platform.executions(PUB)
    assert child["status"] == "SUCCEEDED"
    assert platform.lock(BATCH_ID)["lock_status"] == "SUCCEEDED"
    assert platform.lock(f"publication#{BATCH_ID}")["lock_status"] == "SUCCEEDED"
    (event,) = platform.events()
    assert event["detail-type"] == "NDR Predictions Published"
    assert event["detail"]["mini_batch_id"] == BATCH_ID


def test_15m_polls_while_the_pipeline_executes():
    pipelines = ScriptedPipelines({"ndr-features-15m": ["Executing", "Executing", "Succeeded"]})
    for platform in _platform(pipelines):
        result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert result.status == "SUCCEEDED"
        loop = [
            "Describe15mFeaturesPipeline",
            "FeaturesPipelineStatusChoice",
            "WaitBeforeDescribe15mFeatures",
            "IncrementFeaturesPollAttempt",
        ]
        i = result.path.index("Start15mFeaturesPipeline") + 1
        assert result.path[i : i + 9] == [*loop, *loop, "Describe15mFeaturesPipeline"]


def test_15m_batch_end_defaults_to_start_plus_15_minutes(platform: OfflinePlatform, scripted: ScriptedPipelines):
    event = contract("15m_batch_completed.eventbridge.json")
    del event["detail"]["batch_end_ts"]
    event["detail"]["batch_folder"] = "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/12/31/2345/"
    assert platform.run(FM, event).status == "SUCCEEDED"
    (features,) = starts(scripted, "PipelineName15m")
    assert features["BatchStartTsIso"] == "2026-12-31T23:45:00Z"
    assert features["BatchEndTsIso"] == "2027-01-01T00:00:00Z"
    assert features["MiniBatchId"] == "acme-ndr-prod-v1-20261231T2345"


def _ignored(platform: OfflinePlatform, payload: object) -> dict:
    result = platform.run(FM, payload)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.path == [
        "NormalizeIncomingMessage",
        "UnwrapIncomingMessage",
        "ParseIncomingProjectContext",
        "BatchCompletionEventChoice",
        "IgnoreNonBatchCompletionEvent",
    ]
    assert result.output["ignored"] is True
    return result.output


def test_15m_heartbeat_is_ignored(platform: OfflinePlatform, scripted: ScriptedPipelines):
    out = _ignored(platform, contract("15m_heartbeat.eventbridge.json"))
    assert "heartbeat" in out["reason"]
    assert scripted.starts == []


@pytest.mark.parametrize("body", ["not json at all", "", "42", "[1, 2", '{"detail": ', "{not json}", "[oops]"])
def test_15m_non_json_message_is_ignored(platform: OfflinePlatform, body: str):
    records = contract("15m_batch_completed.sqs.json")
    records[0]["body"] = body
    out = _ignored(platform, records)
    assert out["reason"]


def test_15m_non_json_sns_message_is_ignored(platform: OfflinePlatform):
    envelope = contract("15m_batch_completed.sns.json")
    envelope["Message"] = "hello"
    assert "not a JSON object" in _ignored(platform, envelope)["reason"]


@pytest.mark.parametrize("folder", [None, "s3://acme-ndr-raw/pan-traffic/acme/", "not a path", 17])
def test_15m_folderless_message_is_ignored(platform: OfflinePlatform, folder: object):
    event = contract("15m_batch_completed.eventbridge.json")
    if folder is None:
        del event["detail"]["batch_folder"]
    else:
        event["detail"]["batch_folder"] = folder
    assert "batch_folder" in _ignored(platform, event)["reason"]


def test_15m_same_batch_through_another_wrapper_is_a_duplicate(platform: OfflinePlatform, scripted: ScriptedPipelines):
    assert platform.run(FM, contract("15m_batch_completed.eventbridge.json")).status == "SUCCEEDED"
    again = platform.run(FM, contract("15m_batch_completed.sns.json"))
    assert again.status == "FAILED"
    assert again.error == "NDR.DuplicateMiniBatch"
    assert again.path[-2:] == ["AcquireMiniBatchLock", "DuplicateMiniBatch"]
    assert len(starts(scripted, "PipelineName15m")) == 1
    assert platform.lock(BATCH_ID)["lock_status"] == "SUCCEEDED"


def test_15m_features_failure_frees_the_lock_and_a_retry_runs():
    pipelines = ScriptedPipelines({"ndr-features-15m": ["Failed"]})
    for platform in _platform(pipelines):
        failed = platform.run(FM, contract("15m_batch_completed.sqs.json"))
        assert failed.status == "FAILED"
        assert failed.error == "NDR.WorkflowFailed"
        assert failed.path[-4:] == [
            "Describe15mFeaturesPipeline",
            "FeaturesPipelineStatusChoice",
            "ReleaseMiniBatchLockOnFailure",
            "WorkflowFailed",
        ]
        cause = json.loads(failed.cause)
        assert cause["state"] == "FeaturesPipelineStatusChoice" and cause["error"] == "NDR.PipelineFailed"
        assert "Failed" in cause["cause"]
        assert platform.lock(BATCH_ID) is None
        assert starts(pipelines, "PipelineNameInference") == []
        # the pipeline is fixed; the batch is retried and runs
        pipelines._outcomes["ndr-features-15m"] = ["Succeeded"]
        retry = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert retry.status == "SUCCEEDED"
        assert retry.path == FM_HAPPY


def test_15m_polls_exhausted_fails_with_the_lock_freed():
    pipelines = ScriptedPipelines({"ndr-features-15m": ["Executing"]})
    for platform in _platform(pipelines):
        result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert result.status == "FAILED"
        assert result.path.count("WaitBeforeDescribe15mFeatures") == 45  # poll.max_attempts in the spec
        assert result.path[-2:] == ["ReleaseMiniBatchLockOnFailure", "WorkflowFailed"]
        assert json.loads(result.cause)["error"] == "NDR.PollAttemptsExhausted"
        assert platform.lock(BATCH_ID) is None


def test_15m_inference_failure():
    pipelines = ScriptedPipelines({"ndr-inference": ["Executing", "Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert result.status == "FAILED"
        assert "InferencePipelineStatusChoice" in result.path
        assert "StartPredictionPublicationWorkflow" not in result.path
        assert result.path[-2:] == ["ReleaseMiniBatchLockOnFailure", "WorkflowFailed"]
        assert platform.lock(BATCH_ID) is None


def test_15m_publication_failure_fails_the_batch():
    pipelines = ScriptedPipelines({"ndr-prediction-join": ["Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert result.status == "FAILED"
        assert result.path[-3:] == [
            "StartPredictionPublicationWorkflow",
            "ReleaseMiniBatchLockOnFailure",
            "WorkflowFailed",
        ]


def test_15m_unknown_org_fails_clearly(platform: OfflinePlatform):
    event = contract("15m_batch_completed.eventbridge.json")
    event["detail"]["batch_folder"] = "s3://b/pan-traffic/globex/p/v1/2026/10/01/1200/"
    result = platform.run(FM, event)
    assert result.status == "FAILED"
    assert result.path[-2:] == ["LoadProjectRoutingFromDynamo", "WorkflowFailed"]
    assert "org_id=globex" in json.loads(result.cause)["cause"]


# -- publication --------------------------------------------------------------------------------------

PUB_INPUT = {
    "project_name": "ndr-prod",
    "feature_spec_version": "v1",
    "mini_batch_id": BATCH_ID,
    "batch_start_ts": "2026-10-01T12:00:00Z",
    "batch_end_ts": "2026-10-01T12:15:00Z",
}
PUB_HAPPY = [
    "NormalizeIncomingMessage",
    "UnwrapIncomingMessage",
    "ParseIncomingProjectContext",
    "LoadProjectParametersFromDynamo",
    "ResolvePipelineRuntimeParams",
    "AcquirePublicationLock",
    "StartPredictionJoinPipeline",
    "DescribeJoinPipeline",
    "JoinPipelineStatusChoice",
    "MarkPublicationSucceeded",
    "EmitPublicationEvent",
]


def test_publication_success_marks_and_emits(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(PUB, PUB_INPUT)
    assert result.status == "SUCCEEDED"
    assert result.path == PUB_HAPPY
    assert platform.lock(f"publication#{BATCH_ID}")["lock_status"] == "SUCCEEDED"
    (join,) = starts(scripted, "PipelineNamePredictionJoin")
    assert join["PublicationTarget"] == "s3"
    (event,) = platform.events()
    assert event["source"] == "ndr.platform" and event["detail"]["mini_batch_id"] == BATCH_ID


def test_publication_duplicate_is_suppressed(platform: OfflinePlatform, scripted: ScriptedPipelines):
    assert platform.run(PUB, PUB_INPUT).status == "SUCCEEDED"
    platform.events()
    again = platform.run(PUB, PUB_INPUT)
    assert again.status == "SUCCEEDED"
    assert again.path[-2:] == ["AcquirePublicationLock", "DuplicatePublicationSuppressed"]
    assert again.output["suppressed"] is True
    assert len(starts(scripted, "PipelineNamePredictionJoin")) == 1
    assert platform.events() == []


def test_publication_join_failure_marks_failed_and_can_be_retried():
    pipelines = ScriptedPipelines({"ndr-prediction-join": ["Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(PUB, PUB_INPUT)
        assert result.status == "FAILED"
        assert result.error == "NDR.PublicationFailed"
        assert result.path[-3:] == ["JoinPipelineStatusChoice", "MarkPublicationFailed", "WorkflowFailed"]
        assert platform.lock(f"publication#{BATCH_ID}")["lock_status"] == "FAILED"
        pipelines._outcomes["ndr-prediction-join"] = ["Succeeded"]
        assert platform.run(PUB, PUB_INPUT).path == PUB_HAPPY


def test_publication_rejects_an_incomplete_request(platform: OfflinePlatform):
    bad = {k: v for k, v in PUB_INPUT.items() if k != "mini_batch_id"}
    result = platform.run(PUB, bad)
    assert result.status == "FAILED"
    assert result.path[-2:] == ["LoadProjectParametersFromDynamo", "WorkflowFailed"]
    assert "mini_batch_id" in json.loads(result.cause)["cause"]


# -- monthly baselines --------------------------------------------------------------------------------


def test_monthly_inventory_then_fgb_then_event(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(MONTHLY, contract("monthly_baselines.scheduler.json"))
    assert result.status == "SUCCEEDED", result.cause
    assert result.path == [
        "NormalizeIncomingMessage",
        "UnwrapIncomingMessage",
        "ParseIncomingProjectContext",
        "LoadProjectParametersFromDynamo",
        "ResolvePipelineRuntimeParams",
        "StartMachineInventoryRefresh",
        "DescribeInventoryPipeline",
        "InventoryPipelineStatusChoice",
        "StartFGBBaselinePipeline",
        "DescribeFGBPipeline",
        "FGBPipelineStatusChoice",
        "EmitBaselineReadyEvent",
    ]
    assert [n for n, _ in scripted.starts] == ["ndr-machine-inventory", "ndr-fg-b-baselines"]
    assert starts(scripted, "PipelineNameFGB")[0]["ReferenceMonth"] == "2026-09"
    (event,) = platform.events()
    assert event["detail-type"] == "NDR Baselines Ready" and event["detail"]["reference_month"] == "2026-09"


def test_monthly_inventory_failure_never_starts_fgb():
    pipelines = ScriptedPipelines({"ndr-machine-inventory": ["Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(MONTHLY, contract("monthly_baselines.scheduler.json"))
        assert result.status == "FAILED"
        assert result.path[-2:] == ["InventoryPipelineStatusChoice", "WorkflowFailed"]
        assert starts(pipelines, "PipelineNameFGB") == []
        assert platform.events() == []


def test_monthly_without_reference_month_uses_the_month_before_the_start(
    platform: OfflinePlatform, scripted: ScriptedPipelines
):
    payload = contract("monthly_baselines.scheduler.json")
    del payload["reference_month"]
    result = platform.run(MONTHLY, payload)
    assert result.status == "SUCCEEDED"
    started = platform.executions(MONTHLY)[0]["startDate"]
    year, month = (started.year, started.month - 1) if started.month > 1 else (started.year - 1, 12)
    assert starts(scripted, "PipelineNameFGB")[0]["ReferenceMonth"] == f"{year:04d}-{month:02d}"


# -- training -----------------------------------------------------------------------------------------


def test_training_success(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(TRAINING, contract("training.request.json"))
    assert result.status == "SUCCEEDED"
    assert result.path == [
        "NormalizeIncomingMessage",
        "UnwrapIncomingMessage",
        "ParseIncomingProjectContext",
        "LoadProjectParametersFromDynamo",
        "ResolvePipelineRuntimeParams",
        "StartTrainingPipeline",
        "DescribeTrainingPipeline",
        "TrainingPipelineStatusChoice",
        "Success",
    ]
    (params,) = starts(scripted, "PipelineNameIFTraining")
    assert params["TrainingStartTsIso"] == "2026-09-01T00:00:00Z"
    assert json.loads(params["MissingWindowsOverride"]) == []


def test_training_failure():
    pipelines = ScriptedPipelines({"ndr-if-training": ["Executing", "Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(TRAINING, contract("training.request.json"))
        assert result.status == "FAILED"
        assert result.error == "NDR.TrainingFailed"
        assert result.path[-2:] == ["TrainingPipelineStatusChoice", "WorkflowFailed"]


def test_training_override_windows_reach_the_pipeline(platform: OfflinePlatform, scripted: ScriptedPipelines):
    payload = copy.deepcopy(contract("training.request.json"))
    payload["missing_windows_override"] = ["2026-09-03T10:00:00Z"]
    assert platform.run(TRAINING, payload).status == "SUCCEEDED"
    (params,) = starts(scripted, "PipelineNameIFTraining")
    assert json.loads(params["MissingWindowsOverride"]) == ["2026-09-03T10:00:00Z"]


# -- backfill -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("windows", [0, 1, 5])
def test_backfill_runs_one_pipeline_per_window(windows: int):
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, windows)
    for platform in _platform(pipelines):
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "SUCCEEDED", result.cause
        head = [
            "NormalizeIncomingMessage",
            "UnwrapIncomingMessage",
            "ParseIncomingProjectContext",
            "LoadProjectParametersFromDynamo",
            "ResolvePipelineRuntimeParams",
            "StartHistoricalWindowsExtractorPipeline",
            "DescribeHistoricalWindowsExtractor",
            "ExtractorPipelineStatusChoice",
            "ResolveBackfillWindows",
            "RunBackfillWindows",
        ]
        assert result.path[: len(head)] == head
        assert result.path[-1] == "EmitBackfillReconciliationEvent"
        assert result.path.count("StartBackfillPipeline") == windows
        assert result.path.count("BackfillWindowSucceeded") == windows
        runs = starts(pipelines, "PipelineNameBackfill15m")
        assert len(runs) == windows
        assert len({r["MiniBatchId"] for r in runs}) == windows
        (event,) = platform.events()
        assert event["detail-type"] == "NDR Backfill Reconciled"
        assert event["detail"]["windows_total"] == windows
        assert event["detail"]["windows_succeeded"] == windows
        assert event["detail"]["status"] == "COMPLETE"


def test_backfill_extractor_failure_runs_no_window():
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, 3, outcomes={"ndr-backfill-extractor": ["Failed"]})
    for platform in _platform(pipelines):
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "FAILED"
        assert result.error == "NDR.BackfillFailed"
        assert result.path[-2:] == ["ExtractorPipelineStatusChoice", "WorkflowFailed"]
        assert "RunBackfillWindows" not in result.path
        assert platform.events() == []


def test_backfill_reports_a_failed_window():
    ref: list[OfflinePlatform] = []

    class OneBad(Extractor):
        def describe(self, execution_arn: str):
            status, reason = super().describe(execution_arn)
            name, _ = self._executions[execution_arn]
            index = list(self._executions).index(execution_arn)
            if name == "ndr-features-15m" and index == 2:
                return "Failed", "window broke"
            return status, reason

    pipelines = OneBad(ref, 3)
    for platform in _platform(pipelines):
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "SUCCEEDED"
        (event,) = platform.events()
        assert event["detail"]["windows_failed"] == 1
        assert event["detail"]["status"] == "PARTIAL"
        assert len(event["detail"]["failed_windows"]) == 1


def test_training_on_a_schedule_trains_on_the_30_days_before_the_run(platform: OfflinePlatform,
                                                                     scripted: ScriptedPipelines):
    result = platform.run(TRAINING, {"project_name": "ndr-prod", "feature_spec_version": "v1"})
    assert result.status == "SUCCEEDED", result.cause
    (params,) = starts(scripted, "PipelineNameIFTraining")
    started = platform.executions(TRAINING)[0]["startDate"]
    end = started.strftime("%Y-%m-%dT00:00:00Z")
    assert params["TrainingEndTsIso"] == end
    start = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() - 30 * 86400
    assert params["TrainingStartTsIso"] == datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
