"""The generated state machines, executed offline (moto's interpreter), on the upstream contracts.

Each scenario asserts the visited state path from the execution history, and what the run left behind:
locks, pipeline starts and their parameters, emitted events.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Collection, Iterator
from datetime import UTC, datetime

import pytest

from ndr_compiler.compile import Compilation, compile_specs
from ndr_compiler.specs import load_specs
from ndr_jobs.interface.contract import lock_key
from ndr_local import ScriptedPipelines, offline_aws
from ndr_local.platform import OfflinePlatform, stand_up
from ndr_local.sfn_runtime import Faults
from tests.conftest import CONTRACTS, GENERATED, SPECS, backfill_report

PIPELINES = {
    "PipelineName15m": "ndr-features-15m",
    "PipelineNameBackfill15m": "ndr-backfill-windows",
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
BATCH_LOCK = lock_key("mini_batch", "acme", "ndr-prod", "v1", "2026-10-01T12:00:00Z")
PUBLICATION_LOCK = lock_key("publication", "acme", "ndr-prod", "v1", "2026-10-01T12:00:00Z")


@functools.cache
def compiled() -> Compilation:
    return compile_specs([SPECS], render=False)


def contract(name: str) -> object:
    return json.loads((CONTRACTS / name).read_text())


PROJECT = next(iter(load_specs([SPECS])[0].projects().values())).model


class Extractor(ScriptedPipelines):
    """Scripted pipelines whose backfill extractor writes a manifest of ``windows`` windows, as the job does."""

    def __init__(self, platform_ref: list[OfflinePlatform], windows: int, failing: Collection[str] = (), **kw):
        super().__init__(**kw)
        self.platform_ref = platform_ref
        self.windows = windows
        self.failing = failing

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        super().start(pipeline_name, execution_arn, parameters)
        if pipeline_name == PIPELINES["PipelineNameBackfill15m"] and backfill_report(
                self.platform_ref[0], parameters, self.failing):
            self._executions[execution_arn] = (pipeline_name, ["Failed"])  # the job fails at that window
        if pipeline_name == PIPELINES["PipelineNameBackfillHistoricalExtractor"]:
            start = datetime.fromisoformat(parameters["StartTsIso"].replace("Z", "+00:00"))
            windows = []
            for i in range(self.windows):
                s = start.timestamp() + i * 900
                b, e = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (s, s + 900))
                moment = datetime.fromtimestamp(s, UTC)
                windows.append(
                    {
                        "mini_batch_id": f"acme-ndr-prod-v1-{moment:%Y%m%dT%H%M}",
                        "batch_start_ts": b,
                        "batch_end_ts": e,
                        "batch_folder": f"s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/{moment:%Y/%m/%d/%H%M}/",
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


INTAKE = ["NormalizeIncomingMessage", "UnwrapIncomingMessage", "ParseIncomingProjectContext", "ValidateIncomingEvent"]
FM_HAPPY = [
    *INTAKE,
    "BatchCompletionEventChoice",
    "LoadProjectRoutingFromDynamo",
    "CheckEventAgainstRouting",
    "LoadProjectParametersFromDynamo",
    "ResolvePipelineRuntimeParams",
    "AcquireMiniBatchLock",
    "Start15mFeaturesPipeline",
    "RecordStart15mFeaturesPipeline",
    "Describe15mFeaturesPipeline",
    "FeaturesPipelineStatusChoice",
    "StartInferencePipeline",
    "RecordStartInferencePipeline",
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
        "MaxQuarantineRatio": "0.5",  # the project default (specs/project.yaml)
    }
    assert len(starts(scripted, "PipelineNameInference")) == 1
    assert starts(scripted, "PipelineNamePredictionJoin")[0]["MiniBatchId"] == BATCH_ID
    (child,) = platform.executions(PUB)
    assert child["status"] == "SUCCEEDED"
    assert platform.lock(BATCH_LOCK)["lock_status"] == "SUCCEEDED"
    assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "SUCCEEDED"
    (event,) = platform.events()
    assert event["detail-type"] == "NDR Predictions Published"
    assert event["detail"]["mini_batch_id"] == BATCH_ID


def test_15m_passes_the_projects_quarantine_ratio_to_the_features_pipeline(
    platform: OfflinePlatform, scripted: ScriptedPipelines
):
    """A parameters item overrides the default (here as a DynamoDB number); the pipeline gets it as a string."""
    platform.client("dynamodb").update_item(
        TableName=platform.project.spec.tables.parameters,
        Key={"project_name": {"S": "ndr-prod"}, "feature_spec_version": {"S": "v1"}},
        UpdateExpression="SET max_quarantine_ratio = :r",
        ExpressionAttributeValues={":r": {"N": "0.05"}},
    )
    result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    (features,) = starts(scripted, "PipelineName15m")
    assert features["MaxQuarantineRatio"] == "0.05"


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
        i = result.path.index("Start15mFeaturesPipeline") + 2  # after its Record state
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
    assert result.path == [*INTAKE, "BatchCompletionEventChoice", "IgnoreNonBatchCompletionEvent"]
    assert result.output["ignored"] is True
    assert platform.events() == []  # not a batch-completed event: nothing to announce
    return result.output


def _rejected(platform: OfflinePlatform, machine: str, payload: object) -> str:
    """The execution fails NDR.InvalidEvent after one "NDR Event Rejected" event; returns the reason."""
    result = platform.run(machine, payload)
    assert result.status == "FAILED", result.output
    assert result.error == "NDR.InvalidEvent"
    assert result.path[-2:] == ["EmitEventRejected", "RejectInvalidEvent"]
    (event,) = platform.events()
    assert event["detail-type"] == "NDR Event Rejected"
    assert event["detail"]["reason"] == result.cause and event["detail"]["state_machine"] == machine
    return result.cause


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
def test_15m_batch_completed_without_a_valid_folder_is_rejected(platform: OfflinePlatform, folder: object,
                                                                 scripted: ScriptedPipelines):
    event = contract("15m_batch_completed.eventbridge.json")
    if folder is None:
        del event["detail"]["batch_folder"]
    else:
        event["detail"]["batch_folder"] = folder
    assert "detail.batch_folder" in _rejected(platform, FM, event)
    assert scripted.starts == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("batch_folder", "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1207/", "15-minute window"),
        ("batch_folder", "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/02/30/1200/", "15-minute window"),
        ("batch_folder", "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/2400/", "15-minute window"),
        ("batch_folder", "x/s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/", "batch_folder"),
        ("batch_folder", "s3://acme-ndr-raw/pan-traffic/acme/$(id)/v1/2026/10/01/1200/", "batch_folder"),
        ("batch_end_ts", "2026-10-01T12:30:00Z", "does not match the batch_end_ts 2026-10-01T12:15:00Z"),
        ("batch_end_ts", "yesterday", "is not an ISO-8601 UTC time"),
        ("org_id", "globex", "does not match the org_id acme"),
        ("object_count", -1, "detail.object_count"),
    ],
)
def test_15m_malformed_batch_completed_is_rejected_with_its_reason(platform: OfflinePlatform, field: str,
                                                                    value: object, reason: str):
    event = contract("15m_batch_completed.eventbridge.json")
    event["detail"][field] = value
    assert reason in _rejected(platform, FM, event)


def test_15m_folder_outside_the_orgs_raw_bucket_is_rejected(platform: OfflinePlatform, scripted: ScriptedPipelines):
    event = contract("15m_batch_completed.eventbridge.json")
    event["detail"]["batch_folder"] = "s3://someone-else/pan-traffic/acme/ndr-prod/v1/2026/10/01/1200/"
    assert "not in the raw bucket of org acme" in _rejected(platform, FM, event)
    assert scripted.starts == []


def test_15m_event_for_a_project_the_org_is_not_routed_to_is_rejected(platform: OfflinePlatform):
    event = contract("15m_batch_completed.eventbridge.json")
    event["detail"]["batch_folder"] = "s3://acme-ndr-raw/pan-traffic/acme/other-project/v1/2026/10/01/1200/"
    assert "is routed to project ndr-prod, not to other-project" in _rejected(platform, FM, event)


def test_15m_same_batch_through_another_wrapper_is_a_duplicate(platform: OfflinePlatform, scripted: ScriptedPipelines):
    assert platform.run(FM, contract("15m_batch_completed.eventbridge.json")).status == "SUCCEEDED"
    again = platform.run(FM, contract("15m_batch_completed.sns.json"))
    assert again.status == "FAILED"
    assert again.error == "NDR.DuplicateMiniBatch"
    assert again.path[-2:] == ["AcquireMiniBatchLock", "DuplicateMiniBatch"]
    assert len(starts(scripted, "PipelineName15m")) == 1
    assert platform.lock(BATCH_LOCK)["lock_status"] == "SUCCEEDED"


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
        assert platform.lock(BATCH_LOCK) is None
        assert starts(pipelines, "PipelineNameInference") == []
        # the pipeline is fixed; the batch is retried and runs
        pipelines.script("ndr-features-15m", ["Succeeded"])
        retry = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert retry.status == "SUCCEEDED"
        assert retry.path == FM_HAPPY


def test_polls_exhausted_stop_the_pipeline_before_the_lock_is_freed():
    """The publication's join pipeline never ends: after the derived budget the machine stops it, describes it
    until it is Stopped, and only then marks the lock FAILED (the same construct serves every machine)."""
    pipelines = ScriptedPipelines({"ndr-prediction-join": ["Executing"]})
    (budget,) = next(m for m in compiled().machines if m.name == PUB).polls
    for platform in _platform(pipelines):
        result = platform.run(PUB, PUB_INPUT, timeout_s=600)
        assert result.status == "FAILED"
        # the budget covers the pipeline's own limits (its step's max runtime and provisioning, per attempt)
        assert budget.max_attempts * budget.every_seconds >= budget.runtime_seconds > 0
        assert result.path.count("WaitBeforeJoinDescribe") == budget.max_attempts + 2  # + 2 after the stop
        stop = result.path.index("StopPredictionJoinPipeline")
        assert result.path[stop:] == [
            "StopPredictionJoinPipeline", "JoinPipelineStatusChoice", "WaitBeforeJoinDescribe",
            "IncrementJoinPollAttempt", "DescribeJoinPipeline", "JoinPipelineStatusChoice",
            "WaitBeforeJoinDescribe", "IncrementJoinPollAttempt", "DescribeJoinPipeline",
            "JoinPipelineStatusChoice", "MarkPublicationFailed", "WorkflowFailed",
        ]  # Stopping, then Stopped: only then is the lock released
        assert json.loads(result.cause)["error"] == "NDR.PollAttemptsExhausted"
        assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "FAILED"
        assert len(pipelines.stops) == 1 and pipelines.left_running() == []


def test_a_pipeline_that_does_not_stop_leaves_the_lock_to_the_janitor():
    join = "ndr-prediction-join"
    pipelines = ScriptedPipelines({join: ["Executing"]}, unstoppable=frozenset({join}))
    for platform in _platform(pipelines):
        result = platform.run(PUB, PUB_INPUT, timeout_s=600)
        assert result.status == "FAILED" and result.error == "NDR.PipelineNotStopped"
        assert result.path[-2:] == ["JoinPipelineStatusChoice", "PredictionJoinPipelineNotStopped"]
        assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "RUNNING"  # not freed while the pipeline runs
        (janitor,) = platform.settle()
        assert janitor.status == "FAILED" and janitor.error == "NDR.PipelineNotStopped"
        assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "RUNNING"  # its lease still holds it
        assert pipelines.left_running() == []  # asked to stop (twice), though it would not
        assert len(pipelines.stops) == 2


def test_15m_inference_failure():
    pipelines = ScriptedPipelines({"ndr-inference": ["Executing", "Failed"]})
    for platform in _platform(pipelines):
        result = platform.run(FM, contract("15m_batch_completed.eventbridge.json"))
        assert result.status == "FAILED"
        assert "InferencePipelineStatusChoice" in result.path
        assert "StartPredictionPublicationWorkflow" not in result.path
        assert result.path[-2:] == ["ReleaseMiniBatchLockOnFailure", "WorkflowFailed"]
        assert platform.lock(BATCH_LOCK) is None


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


def test_15m_unknown_org_is_rejected(platform: OfflinePlatform):
    event = contract("15m_batch_completed.eventbridge.json")
    event["detail"]["batch_folder"] = "s3://acme-ndr-raw/pan-traffic/globex/p/v1/2026/10/01/1200/"
    event["detail"]["org_id"] = "globex"
    assert "org globex has no routing" in _rejected(platform, FM, event)


# -- publication --------------------------------------------------------------------------------------

PUB_INPUT = {
    "org_id": "acme",
    "project_name": "ndr-prod",
    "feature_spec_version": "v1",
    "mini_batch_id": BATCH_ID,
    "batch_start_ts": "2026-10-01T12:00:00Z",
    "batch_end_ts": "2026-10-01T12:15:00Z",
}
PUB_HAPPY = [
    *INTAKE,
    "IncomingEventValidChoice",
    "LoadProjectParametersFromDynamo",
    "ResolvePipelineRuntimeParams",
    "AcquirePublicationLock",
    "StartPredictionJoinPipeline",
    "RecordStartPredictionJoinPipeline",
    "DescribeJoinPipeline",
    "JoinPipelineStatusChoice",
    "EmitPublicationEventOnceChoice",
    "EmitPublicationEvent",
    "MarkPublicationSucceeded",
]


def test_publication_success_marks_and_emits(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(PUB, PUB_INPUT)
    assert result.status == "SUCCEEDED"
    assert result.path == PUB_HAPPY
    assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "SUCCEEDED"
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
        assert platform.lock(PUBLICATION_LOCK)["lock_status"] == "FAILED"
        pipelines.script("ndr-prediction-join", ["Succeeded"])
        assert platform.run(PUB, PUB_INPUT).path == PUB_HAPPY


def test_publication_emit_failure_is_retried_by_the_rerun_and_emitted_once():
    faults = Faults(prefix="fault-", fail=frozenset({"EmitPublicationEvent"}))
    pipelines = ScriptedPipelines()
    with offline_aws(pipelines, faults=faults):
        platform = stand_up(GENERATED, PROJECT, PIPELINES)
        failed = platform.run(PUB, PUB_INPUT, name="fault-emit")
        assert failed.status == "FAILED" and failed.path[-2:] == ["MarkPublicationFailed", "WorkflowFailed"]
        assert platform.events() == []  # the emit failed; the lock says FAILED, not SUCCEEDED
        rerun = platform.run(PUB, PUB_INPUT, name="rerun-emit")
        assert rerun.status == "SUCCEEDED" and "EmitPublicationEvent" in rerun.path
        (event,) = platform.events()
        assert event["detail"]["mini_batch_id"] == BATCH_ID


def test_publication_rerun_after_a_failed_success_mark_does_not_emit_again():
    faults = Faults(prefix="fault-", fail=frozenset({"MarkPublicationSucceeded"}))
    with offline_aws(ScriptedPipelines(), faults=faults):
        platform = stand_up(GENERATED, PROJECT, PIPELINES)
        failed = platform.run(PUB, PUB_INPUT, name="fault-mark")
        assert failed.status == "FAILED" and failed.path[-2:] == ["MarkPublicationFailed", "WorkflowFailed"]
        assert platform.lock(PUBLICATION_LOCK)["effects"] == '["EmitPublicationEvent"]'
        rerun = platform.run(PUB, PUB_INPUT, name="rerun-mark")
        assert rerun.status == "SUCCEEDED"
        assert "EmitPublicationEvent" not in rerun.path  # the failed run had emitted it
        assert len(platform.events()) == 1


def test_publication_rejects_an_incomplete_request(platform: OfflinePlatform):
    bad = {k: v for k, v in PUB_INPUT.items() if k != "mini_batch_id"}
    assert _rejected(platform, PUB, bad) == "mini_batch_id is missing"


def test_publication_rejects_a_window_that_is_not_15_minutes(platform: OfflinePlatform):
    assert "is not 15 minutes after batch_start_ts" in _rejected(
        platform, PUB, {**PUB_INPUT, "batch_end_ts": "2026-10-01T12:20:00Z"})


# -- monthly baselines --------------------------------------------------------------------------------


def test_monthly_inventory_then_fgb_then_event(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(MONTHLY, contract("monthly_baselines.scheduler.json"))
    assert result.status == "SUCCEEDED", result.cause
    assert result.path == [
        *INTAKE,
        "IncomingEventValidChoice",
        "LoadProjectParametersFromDynamo",
        "ResolvePipelineRuntimeParams",
        "StartMachineInventoryRefresh",
        "RecordStartMachineInventoryRefresh",
        "DescribeInventoryPipeline",
        "InventoryPipelineStatusChoice",
        "StartFGBBaselinePipeline",
        "RecordStartFGBBaselinePipeline",
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


@pytest.mark.parametrize("month", ["2026-13", "2026-9", "26-09", "September", 202609])
def test_monthly_rejects_a_reference_month_that_is_not_yyyy_mm(platform: OfflinePlatform, month: object):
    payload = {**contract("monthly_baselines.scheduler.json"), "reference_month": month}
    assert "reference_month" in _rejected(platform, MONTHLY, payload)


# -- training -----------------------------------------------------------------------------------------


def test_training_success(platform: OfflinePlatform, scripted: ScriptedPipelines):
    result = platform.run(TRAINING, contract("training.request.json"))
    assert result.status == "SUCCEEDED"
    assert result.path == [
        *INTAKE,
        "IncomingEventValidChoice",
        "LoadProjectParametersFromDynamo",
        "ResolvePipelineRuntimeParams",
        "StartTrainingPipeline",
        "RecordStartTrainingPipeline",
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


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"training_start": "2026-10-02T00:00:00Z"}, "is not before training_end"),
        ({"training_end": "not a time"}, "training_end"),
        ({"missing_windows_override": "2026-09-03T10:00:00Z"}, "missing_windows_override"),
        ({"missing_windows_override": ["2026-09-03T10:07:00Z"]}, "missing_windows_override"),
        ({"project_name": "ndr prod; rm -rf /"}, "project_name"),
    ],
)
def test_training_rejects_a_malformed_request(platform: OfflinePlatform, change: dict, reason: str):
    payload = {**contract("training.request.json"), **change}
    assert reason in _rejected(platform, TRAINING, payload)


# -- backfill -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("windows", [0, 1, 5])
def test_backfill_runs_one_pipeline_per_chunk(windows: int):
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, windows)
    for platform in _platform(pipelines):
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "SUCCEEDED", result.cause
        head = [
            *INTAKE,
            "IncomingEventValidChoice",
            "LoadProjectRoutingFromDynamo",
            "LoadProjectParametersFromDynamo",
            "ResolvePipelineRuntimeParams",
            "CheckRequestAgainstRouting",
            "StartHistoricalWindowsExtractorPipeline",
            "RecordStartHistoricalWindowsExtractorPipeline",
            "DescribeHistoricalWindowsExtractor",
            "ExtractorPipelineStatusChoice",
            "ResolveBackfillWindows",
            "RunBackfillWindows",
        ]
        assert result.path[: len(head)] == head
        assert result.path[-1] == "EmitBackfillReconciliationEvent"
        chunks = 1 if windows else 0  # the default chunk is 96 windows
        assert result.path.count("StartBackfillPipeline") == chunks
        assert result.path.count("AcquireBackfillWindowLock") == windows
        assert result.path.count("ReleaseBackfillWindowLockOnSuccess") == windows
        runs = starts(pipelines, "PipelineNameBackfill15m")
        assert [(r["FirstWindow"], r["WindowMask"]) for r in runs] == [("2026-09-14T00:00:00Z", "1" * windows)] * chunks
        (event,) = platform.events()
        assert event["detail-type"] == "NDR Backfill Reconciled"
        assert event["detail"]["windows_total"] == windows
        assert event["detail"]["windows_succeeded"] == windows
        assert event["detail"]["status"] == "COMPLETE"
        assert platform.locks("RUNNING") == [] and len(platform.locks("SUCCEEDED")) == windows


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


def _window(i: int) -> str:
    return f"2026-09-14T{i // 4:02d}:{i % 4 * 15:02d}:00Z"


def _batch_id(i: int) -> str:
    return f"acme-ndr-prod-v1-20260914T{i // 4:02d}{i % 4 * 15:02d}"


def test_backfill_in_chunks_skips_live_windows_and_releases_each_window_by_its_outcome():
    """7 windows in chunks of 3 ([0 1 2] [3 4 5] [6]); windows 1 and 4 ran live first; window 3 fails in the job:
    its lock and that of window 5 (not run after it) are released as failed, the live ones are skipped and
    untouched, and the chunk after the failure still runs."""
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, 7, failing={_window(3)})
    for platform in _platform(pipelines):
        ref.append(platform)
        platform.client("dynamodb").update_item(  # the project's setting, as an operator would change it
            TableName=PROJECT.spec.tables.parameters,
            Key={"project_name": {"S": "ndr-prod"}, "feature_spec_version": {"S": "v1"}},
            UpdateExpression="SET backfill_chunk_windows = :n", ExpressionAttributeValues={":n": {"S": "3"}})
        for i in (1, 4):
            live = contract("15m_batch_completed.eventbridge.json")
            hhmm = _window(i)[11:16].replace(":", "")
            live["detail"]["batch_folder"] = f"s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/09/14/{hhmm}/"
            del live["detail"]["batch_end_ts"]
            assert platform.run(FM, live).status == "SUCCEEDED"
        platform.events()
        live_locks = {i: platform.lock(lock_key("mini_batch", "acme", "ndr-prod", "v1", _window(i))) for i in (1, 4)}
        result = platform.run(BACKFILL, {**contract("backfill.request.json"), "end_ts": "2026-09-14T01:45:00Z"})
        assert result.status == "SUCCEEDED", result.cause
        runs = starts(pipelines, "PipelineNameBackfill15m")
        assert [(r["FirstWindow"], r["WindowMask"]) for r in runs] == [
            (_window(0), "101"), (_window(3), "101"), (_window(6), "1")]
        assert len({r["ReportUri"] for r in runs}) == 3
        assert result.path.count("BackfillWindowSkipped") == 2
        assert result.path.count("ReleaseBackfillWindowLockOnFailure") == 2
        status = {i: (platform.lock(lock_key("mini_batch", "acme", "ndr-prod", "v1", _window(i))) or {}).get(
            "lock_status") for i in range(7)}
        assert status == {0: "SUCCEEDED", 1: "SUCCEEDED", 2: "SUCCEEDED", 3: None, 4: "SUCCEEDED", 5: None,
                          6: "SUCCEEDED"}
        for i, lock in live_locks.items():  # the live runs' locks, not taken over
            assert platform.lock(lock_key("mini_batch", "acme", "ndr-prod", "v1", _window(i))) == lock
        (event,) = platform.events()
        detail = event["detail"]
        assert (detail["windows_total"], detail["windows_succeeded"], detail["windows_skipped"],
                detail["windows_failed"]) == (7, 3, 2, 2)
        assert sorted(detail["failed_windows"]) == [_batch_id(3), _batch_id(5)]
        assert detail["status"] == "PARTIAL"
        # the rerun runs only what failed, in one chunk job per chunk that has any
        pipelines.failing = ()
        again = platform.run(BACKFILL, {**contract("backfill.request.json"), "end_ts": "2026-09-14T01:45:00Z"})
        assert again.status == "SUCCEEDED", again.cause
        assert [(r["FirstWindow"], r["WindowMask"]) for r in starts(pipelines, "PipelineNameBackfill15m")[3:]] == [
            (_window(3), "101")]
        assert again.path.count("BackfillChunkSkipped") == 2
        assert platform.events()[0]["detail"]["status"] == "COMPLETE"


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


def _backfill(windows: int, **kw: object) -> tuple[Extractor, Iterator[OfflinePlatform]]:
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, windows, **kw)

    def platforms() -> Iterator[OfflinePlatform]:
        for platform in _platform(pipelines):
            ref.append(platform)
            yield platform

    return pipelines, platforms()


def test_backfill_skips_windows_that_already_succeeded_unless_forced():
    pipelines, platforms = _backfill(3)
    for platform in platforms:
        live = contract("15m_batch_completed.eventbridge.json")  # the 12:00 window, run live first
        live["detail"]["batch_folder"] = "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/09/14/0015/"
        del live["detail"]["batch_end_ts"]
        assert platform.run(FM, live).status == "SUCCEEDED"
        platform.events()
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "SUCCEEDED", result.cause
        assert result.path.count("BackfillWindowSkipped") == 1
        (event,) = platform.events()
        detail = event["detail"]
        assert (detail["windows_total"], detail["windows_succeeded"], detail["windows_skipped"]) == (3, 2, 1)
        assert detail["status"] == "COMPLETE"
        # a live announcement of a window the backfill ran is a duplicate
        again = contract("15m_batch_completed.eventbridge.json")
        again["detail"]["batch_folder"] = "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/2026/09/14/0000/"
        del again["detail"]["batch_end_ts"]
        assert platform.run(FM, again).error == "NDR.DuplicateMiniBatch"
        forced = platform.run(BACKFILL, {**contract("backfill.request.json"), "force": True})
        assert forced.status == "SUCCEEDED"
        assert platform.events()[0]["detail"]["windows_succeeded"] == 3


def test_backfill_chunk_whose_start_is_refused_fails_its_windows_alone():
    faults = Faults(prefix="fault-", fail=frozenset({"StartBackfillPipeline"}))
    ref: list[OfflinePlatform] = []
    pipelines = Extractor(ref, 2)
    with offline_aws(pipelines, faults=faults):
        platform = stand_up(GENERATED, PROJECT, PIPELINES)
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"), name="fault-refused")
        assert result.status == "SUCCEEDED", result.cause
        (event,) = platform.events()
        assert (event["detail"]["windows_total"], event["detail"]["windows_failed"]) == (2, 2)
        assert event["detail"]["failed_windows"] == ["acme-ndr-prod-v1-20260914T0000",
                                                     "acme-ndr-prod-v1-20260914T0015"]
        assert [lk for lk in platform.locks() if lk.get("lock_status") == "RUNNING"] == []


def test_backfill_window_outside_the_request_fails_alone_with_its_reason():
    class Stray(Extractor):
        def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
            super().start(pipeline_name, execution_arn, parameters)
            if pipeline_name == PIPELINES["PipelineNameBackfillHistoricalExtractor"]:
                stray = {"mini_batch_id": "globex-ndr-prod-v1-20260914T0000", "batch_start_ts": "2026-09-14T00:00:00Z",
                         "batch_end_ts": "2026-09-14T00:15:00Z",
                         "batch_folder": "s3://globex-raw/pan-traffic/globex/ndr-prod/v1/2026/09/14/0000/"}
                self.platform_ref[0].put_json(parameters["ManifestUri"], {"windows": [stray, "garbage"]})

    ref: list[OfflinePlatform] = []
    pipelines = Stray(ref, 0)
    for platform in _platform(pipelines):
        ref.append(platform)
        result = platform.run(BACKFILL, contract("backfill.request.json"))
        assert result.status == "SUCCEEDED", result.cause
        (event,) = platform.events()
        assert (event["detail"]["windows_total"], event["detail"]["windows_failed"]) == (2, 2)
        assert starts(pipelines, "PipelineNameBackfill15m") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"raw_prefix": "s3://acme-ndr-raw/pan-traffic/globex/ndr-prod/v1/"}, "is not under the raw prefix"),
        ({"raw_prefix": "s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/../../"}, "raw_prefix"),
        ({"project_name": "unrouted"}, "is routed from no org"),
        ({"end_ts": "2026-09-20T00:00:00Z"}, "longer than 172800 seconds"),
        ({"force": "yes"}, "force"),
    ],
)
def test_backfill_rejects_a_request_outside_its_routing(platform: OfflinePlatform, change: dict, reason: str):
    payload = {**contract("backfill.request.json"), **change}
    assert reason in _rejected(platform, BACKFILL, payload)
