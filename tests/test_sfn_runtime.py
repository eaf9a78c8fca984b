"""The offline Step Functions runtime: small JSONata state machines run by moto through boto3."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from ndr_local.sfn_runtime import (
    ExecutionResult,
    PipelineRuntime,
    ScriptedPipelines,
    offline_aws,
    run_execution,
)

ROLE = "arn:aws:iam::123456789012:role/offline"
TOKEN = "t" * 32


def machine(states: dict[str, Any], start_at: str | None = None) -> dict[str, Any]:
    """A JSONata state machine definition."""
    return {"QueryLanguage": "JSONata", "StartAt": start_at or next(iter(states)), "States": states}


def create(sfn: Any, definition: dict[str, Any], name: str | None = None) -> str:
    return sfn.create_state_machine(
        name=name or f"sm-{uuid.uuid4().hex[:12]}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]


def run(sfn: Any, definition: dict[str, Any], execution_input: Any = None) -> ExecutionResult:
    return run_execution(sfn, create(sfn, definition), {} if execution_input is None else execution_input)


def pass_output(output: Any) -> dict[str, Any]:
    return machine({"P": {"Type": "Pass", "Output": output, "End": True}})


CATCH_ALL_TO_FALLBACK = [
    {"ErrorEquals": ["States.ALL"], "Output": {"caught": "{% $states.errorOutput %}"}, "Next": "Fallback"}
]
FALLBACK = {"Type": "Pass", "End": True}


@pytest.fixture
def sfn() -> Iterator[Any]:
    with offline_aws():
        yield boto3.client("stepfunctions")


@pytest.fixture
def bucket(sfn: Any) -> str:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="manifests")
    return "manifests"


def create_pipeline(name: str) -> None:
    boto3.client("sagemaker").create_pipeline(
        PipelineName=name,
        PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}),
        RoleArn=ROLE,
    )


# ---------------------------------------------------------------- JSONata and $states


def test_output_is_evaluated_with_jsonata(sfn: Any) -> None:
    result = run(sfn, pass_output({"sum": "{% $states.input.a + $states.input.b %}", "lit": 1}), {"a": 1, "b": 2})
    assert (result.status, result.output) == ("SUCCEEDED", {"sum": 3, "lit": 1})


def test_states_context_is_bound(sfn: Any) -> None:
    definition = pass_output(
        {"state": "{% $states.context.State.Name %}", "execution": "{% $states.context.Execution.Name %}"}
    )
    result = run_execution(sfn, create(sfn, definition), {}, name="ctx-run")
    assert result.output == {"state": "P", "execution": "ctx-run"}


def test_assigned_variables_reach_later_states(sfn: Any) -> None:
    definition = machine(
        {
            "A": {"Type": "Pass", "Assign": {"count": "{% $states.input.n %}", "tag": "x"}, "Next": "B"},
            "B": {"Type": "Pass", "Output": {"next": "{% $count + 1 %}", "tag": "{% $tag %}"}, "End": True},
        }
    )
    assert run(sfn, definition, {"n": 41}).output == {"next": 42, "tag": "x"}


def test_string_variables_with_quotes_and_newlines_survive(sfn: Any) -> None:
    text = 'he said "hi"\n\\ done é'
    definition = machine(
        {
            "A": {"Type": "Pass", "Assign": {"text": "{% $states.input.text %}"}, "Next": "B"},
            "B": {"Type": "Pass", "Output": {"text": "{% $text %}", "n": "{% 1 + 1 %}"}, "End": True},
        }
    )
    assert run(sfn, definition, {"text": text}).output == {"text": text, "n": 2}


def test_string_output_is_reported_as_json(sfn: Any) -> None:
    arn = create(sfn, pass_output("{% 'plain text' %}"))
    run_execution(sfn, arn, {}, name="text")
    execution_arn = arn.replace(":stateMachine:", ":execution:") + ":text"
    assert json.loads(sfn.describe_execution(executionArn=execution_arn)["output"]) == "plain text"


def test_run_execution_reports_path_and_history(sfn: Any) -> None:
    definition = machine({"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Succeed"}})
    result = run(sfn, definition)
    assert result.path == ["A", "B"]
    assert result.history[0]["type"] == "ExecutionStarted"
    assert result.history[-1]["type"] == "ExecutionSucceeded"


def test_run_execution_reports_failure(sfn: Any) -> None:
    definition = machine({"F": {"Type": "Fail", "Error": "My.Error", "Cause": "{% 'because ' & $states.input.why %}"}})
    result = run(sfn, definition, {"why": "reasons"})
    assert (result.status, result.error, result.cause, result.output) == (
        "FAILED",
        "My.Error",
        "because reasons",
        None,
    )


# ---------------------------------------------------------------- Step Functions' JSONata functions


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$partition([1, 2, 3, 4, 5], 2)", [[1, 2], [3, 4], [5]]),
        ("$partition([1, 2], 5)", [[1, 2]]),
        ("$range(0, 10, 5)", [0, 5, 10]),
        ("$range(3, 1, -1)", [3, 2, 1]),
        ("$range(1, 6, 2)", [1, 3, 5]),
        ("$hash('abc', 'SHA-256')", hashlib.sha256(b"abc").hexdigest()),
        ("$hash('abc', 'MD5')", hashlib.md5(b"abc").hexdigest()),
        ("$hash('abc', 'SHA-1')", hashlib.sha1(b"abc").hexdigest()),
        ("$hash('abc', 'SHA-384')", hashlib.sha384(b"abc").hexdigest()),
        ("$hash('abc', 'SHA-512')", hashlib.sha512(b"abc").hexdigest()),
        ("$hash('abc')", hashlib.sha256(b"abc").hexdigest()),
        ('$parse(\'{"a": [1, null, "x"]}\')', {"a": [1, None, "x"]}),
        ('$parse(\'{"a": {"b": 2}}\').a.b', 2),
        ("$random(7) = $random(7)", True),
        ("$random() >= 0 and $random() < 1", True),
    ],
)
def test_aws_jsonata_function(sfn: Any, expression: str, expected: Any) -> None:
    assert run(sfn, pass_output({"v": f"{{% {expression} %}}"})).output == {"v": expected}


def test_uuid_is_version_4(sfn: Any) -> None:
    value = run(sfn, pass_output("{% $uuid() %}")).output
    assert uuid.UUID(value).version == 4


@pytest.mark.parametrize(
    "expression",
    ["$partition([1], 0)", "$range(1, 2, 0)", "$hash('a', 'CRC32')", "$parse('{oops')", "$eval('1 + 1')"],
)
def test_aws_jsonata_function_misuse_is_a_query_evaluation_error(sfn: Any, expression: str) -> None:
    result = run(sfn, pass_output(f"{{% {expression} %}}"))
    assert (result.status, result.error) == ("FAILED", "States.QueryEvaluationError")


# ---------------------------------------------------------------- JSONata errors and Catch


def test_error_in_task_arguments_is_caught_as_query_evaluation_error(sfn: Any) -> None:
    definition = machine(
        {
            "Put": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Arguments": {"TableName": "t", "Item": "{% $parse('not json') %}"},
                "Catch": [
                    {
                        "ErrorEquals": ["States.QueryEvaluationError"],
                        "Output": "{% $states.errorOutput %}",
                        "Next": "Fallback",
                    }
                ],
                "End": True,
            },
            "Fallback": FALLBACK,
        }
    )
    result = run(sfn, definition)
    assert result.path == ["Put", "Fallback"]
    assert result.output["Error"] == "States.QueryEvaluationError"
    assert "$parse('not json')" in result.output["Cause"]


def test_error_function_in_task_arguments_is_caught_by_states_all(sfn: Any) -> None:
    definition = machine(
        {
            "Get": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Arguments": {"Bucket": "{% $error('no bucket') %}", "Key": "k"},
                "Catch": CATCH_ALL_TO_FALLBACK,
                "End": True,
            },
            "Fallback": FALLBACK,
        }
    )
    result = run(sfn, definition)
    assert result.output["caught"]["Error"] == "States.QueryEvaluationError"
    assert "no bucket" in result.output["caught"]["Cause"]


def test_error_in_task_output_is_not_caught_by_the_task_catch(sfn: Any) -> None:
    # moto evaluates Output after the Catch handling: the execution fails instead.
    definition = machine(
        {
            "Put": {
                "Type": "Task",
                "Resource": "arn:aws:states:::events:putEvents",
                "Arguments": {"Entries": [{"Source": "s", "DetailType": "d", "Detail": {}}]},
                "Output": "{% $parse('not json') %}",
                "Catch": CATCH_ALL_TO_FALLBACK,
                "End": True,
            },
            "Fallback": FALLBACK,
        }
    )
    result = run(sfn, definition)
    assert (result.status, result.error, result.path) == ("FAILED", "States.QueryEvaluationError", ["Put"])


def test_undefined_result_is_a_query_evaluation_error(sfn: Any) -> None:
    result = run(sfn, pass_output({"v": "{% $states.input.missing %}"}))
    assert (result.status, result.error) == ("FAILED", "States.QueryEvaluationError")


# ---------------------------------------------------------------- service integrations


def test_dynamodb_conditional_put_failure_is_caught(sfn: Any) -> None:
    boto3.client("dynamodb").create_table(
        TableName="locks",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    definition = machine(
        {
            "Lock": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Arguments": {
                    "TableName": "locks",
                    "Item": {"pk": {"S": "{% $states.input.key %}"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
                "Catch": [
                    {
                        "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                        "Output": {"locked": True},
                        "Next": "Fallback",
                    }
                ],
                "Output": {"locked": False},
                "End": True,
            },
            "Fallback": FALLBACK,
        }
    )
    arn = create(sfn, definition)
    assert run_execution(sfn, arn, {"key": "a"}).output == {"locked": False}
    second = run_execution(sfn, arn, {"key": "a"})
    assert (second.output, second.path) == ({"locked": True}, ["Lock", "Fallback"])


def test_events_put_events_reaches_a_rule_target(sfn: Any) -> None:
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="done", EventPattern=json.dumps({"source": ["ndr.test"]}))
    events.put_targets(Rule="done", Targets=[{"Id": "q", "Arn": queue_arn}])
    definition = machine(
        {
            "Emit": {
                "Type": "Task",
                "Resource": "arn:aws:states:::events:putEvents",
                "Arguments": {
                    "Entries": [
                        {"Source": "ndr.test", "DetailType": "Done", "Detail": {"run": "{% $states.input.run %}"}}
                    ]
                },
                "End": True,
            }
        }
    )
    result = run(sfn, definition, {"run": "r1"})
    assert result.output["FailedEntryCount"] == 0
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    event = json.loads(messages[0]["Body"])
    assert (event["detail-type"], event["detail"]) == ("Done", {"run": "r1"})


def test_s3_get_object_body_is_a_string_for_parse(sfn: Any, bucket: str) -> None:
    manifest = {"items": ["a", "b"], "note": 'quote " inside'}
    boto3.client("s3").put_object(Bucket=bucket, Key="m.json", Body=json.dumps(manifest))
    definition = machine(
        {
            "Read": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Arguments": {"Bucket": bucket, "Key": "m.json"},
                "Assign": {"raw": "{% $states.result.Body %}"},
                "Output": {"type": "{% $type($states.result.Body) %}", "manifest": "{% $parse($states.result.Body) %}"},
                "Next": "Again",
            },
            "Again": {
                "Type": "Pass",
                "Output": "{% $merge([$states.input, {'note': $parse($raw).note}]) %}",
                "End": True,
            },
        }
    )
    assert run(sfn, definition).output == {"type": "string", "manifest": manifest, "note": 'quote " inside'}


def test_aws_sdk_errors_use_step_functions_names(sfn: Any) -> None:
    definition = machine(
        {
            "Read": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Arguments": {"Bucket": "no-such-bucket", "Key": "k"},
                "End": True,
            }
        }
    )
    assert run(sfn, definition).error == "S3.NoSuchBucketException"


def test_retry_intervals_do_not_sleep(sfn: Any) -> None:
    definition = machine(
        {
            "Read": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Arguments": {"Bucket": "no-such-bucket", "Key": "k"},
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 600, "MaxAttempts": 2}],
                "End": True,
            }
        }
    )
    started = time.monotonic()
    result = run(sfn, definition)
    assert [event["type"] for event in result.history].count("TaskFailed") == 3
    assert time.monotonic() - started < 5


def test_wait_state_does_not_sleep(sfn: Any) -> None:
    definition = machine({"W": {"Type": "Wait", "Seconds": 3600, "Next": "Done"}, "Done": {"Type": "Succeed"}})
    started = time.monotonic()
    assert run(sfn, definition).path == ["W", "Done"]
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- Map and Choice


def map_machine(item_states: dict[str, Any], **map_fields: Any) -> dict[str, Any]:
    return machine(
        {
            "Init": {"Type": "Pass", "Assign": {"prefix": "item-"}, "Next": "Each"},
            "Each": {
                "Type": "Map",
                "Items": "{% $states.input.items %}",
                "MaxConcurrency": 1,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": next(iter(item_states)),
                    "States": item_states,
                },
                "End": True,
                **map_fields,
            },
            "Fallback": FALLBACK,
        },
        start_at="Init",
    )


def test_map_inner_states_read_outer_variables(sfn: Any) -> None:
    definition = map_machine(
        {
            "Name": {"Type": "Pass", "Output": "{% $prefix & $states.input %}", "Next": "Done"},
            "Done": {"Type": "Succeed"},
        }
    )
    result = run(sfn, definition, {"items": ["a", "b"]})
    assert result.output == ["item-a", "item-b"]
    assert result.path == ["Init", "Each", "Name", "Done", "Name", "Done"]


def test_map_runs_items_concurrently(sfn: Any) -> None:
    definition = map_machine({"Double": {"Type": "Pass", "Output": "{% $states.input * 2 %}", "End": True}})
    definition["States"]["Each"]["MaxConcurrency"] = 4
    result = run(sfn, definition, {"items": list(range(10))})
    assert result.output == [2 * i for i in range(10)]
    assert result.path.count("Double") == 10


def test_map_catch_catches_a_failed_iteration(sfn: Any) -> None:
    definition = map_machine(
        {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $states.input = 'bad' %}", "Next": "Boom"}],
                "Default": "Ok",
            },
            "Boom": {"Type": "Fail", "Error": "Item.Bad", "Cause": "bad item"},
            "Ok": {"Type": "Succeed"},
        },
        Catch=CATCH_ALL_TO_FALLBACK,
    )
    result = run(sfn, definition, {"items": ["a", "bad", "c"]})
    assert result.output == {"caught": {"Error": "Item.Bad", "Cause": "bad item"}}
    assert result.path[-2:] == ["Boom", "Fallback"]


def choice_machine(default_target: str) -> dict[str, Any]:
    report = {"Type": "Pass", "Output": {"size": "{% $size %}", "input": "{% $states.input %}"}, "End": True}
    return machine(
        {
            "Size": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Condition": "{% $states.input.n > 10 %}",
                        "Assign": {"size": "big"},
                        "Output": {"n": "{% $states.input.n %}", "rule": 1},
                        "Next": "Big",
                    }
                ],
                "Default": default_target,
                "Assign": {"size": "small"},
            },
            "Big": report,
            "Small": report,
        },
        start_at="Size",
    )


@pytest.mark.parametrize(("n", "size"), [(50, "big"), (1, "small")])
def test_choice_rule_and_default_assign(sfn: Any, n: int, size: str) -> None:
    result = run(sfn, choice_machine(default_target="Small"), {"n": n})
    assert result.output["size"] == size


def test_choice_rule_assign_wins_when_default_leads_to_the_same_state(sfn: Any) -> None:
    result = run(sfn, choice_machine(default_target="Big"), {"n": 50})
    assert result.output == {"size": "big", "input": {"n": 50, "rule": 1}}


# ---------------------------------------------------------------- nested executions


def child_machine(sfn: Any) -> str:
    return create(sfn, pass_output({"child_saw": "{% $states.input %}"}), name="child")


def parent_machine(sfn: Any, child_arn: str, resource: str) -> str:
    task = {"Type": "Task", "Resource": resource, "Arguments": {"StateMachineArn": child_arn, "Input": {"x": 1}}}
    return create(sfn, machine({"Run": {**task, "End": True}}))


def test_nested_sync2_returns_the_child_parsed_output(sfn: Any) -> None:
    parent = parent_machine(sfn, child_machine(sfn), "arn:aws:states:::states:startExecution.sync:2")
    result = run_execution(sfn, parent, {})
    assert result.output["Status"] == "SUCCEEDED"
    assert result.output["Output"] == {"child_saw": {"x": 1}}


def test_nested_sync_returns_the_child_output_as_a_string(sfn: Any) -> None:
    parent = parent_machine(sfn, child_machine(sfn), "arn:aws:states:::states:startExecution.sync")
    assert json.loads(run_execution(sfn, parent, {}).output["Output"]) == {"child_saw": {"x": 1}}


def test_nested_start_without_name_can_run_twice(sfn: Any) -> None:
    parent = parent_machine(sfn, child_machine(sfn), "arn:aws:states:::states:startExecution")
    first, second = run_execution(sfn, parent, {}), run_execution(sfn, parent, {})
    assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED")
    assert first.output["ExecutionArn"] != second.output["ExecutionArn"]


def test_nested_child_failure_fails_the_task(sfn: Any) -> None:
    failing = create(sfn, machine({"F": {"Type": "Fail", "Error": "Child.Error", "Cause": "c"}}))
    result = run_execution(sfn, parent_machine(sfn, failing, "arn:aws:states:::states:startExecution.sync:2"), {})
    assert (result.status, result.error) == ("FAILED", "States.TaskFailed")
    assert json.loads(result.cause)["Error"] == "Child.Error"


# ---------------------------------------------------------------- SageMaker pipelines


def pipeline_machine() -> dict[str, Any]:
    return machine(
        {
            "Start": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution",
                "Arguments": {
                    "PipelineName": "{% $states.input.pipeline %}",
                    "PipelineParameters": [{"Name": "Day", "Value": "{% $states.input.day %}"}],
                    "ClientRequestToken": "{% $states.input.token %}",
                },
                "Assign": {"arn": "{% $states.result.PipelineExecutionArn %}"},
                "Next": "Wait",
            },
            "Wait": {"Type": "Wait", "Seconds": 300, "Next": "Describe"},
            "Describe": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:sagemaker:describePipelineExecution",
                "Arguments": {"PipelineExecutionArn": "{% $arn %}"},
                "Assign": {
                    "status": "{% $states.result.PipelineExecutionStatus %}",
                    "reason": "{% $exists($states.result.FailureReason) ? $states.result.FailureReason : '' %}",
                },
                "Next": "Done?",
            },
            "Done?": {
                "Type": "Choice",
                "Choices": [
                    {"Condition": "{% $status = 'Executing' %}", "Next": "Wait"},
                    {"Condition": "{% $status = 'Succeeded' %}", "Next": "Succeeded"},
                ],
                "Default": "Failed",
            },
            "Succeeded": {"Type": "Succeed", "Output": {"arn": "{% $arn %}"}},
            "Failed": {"Type": "Fail", "Error": "Pipeline.Failed", "Cause": "{% $reason %}"},
        },
        start_at="Start",
    )


@pytest.fixture
def pipelines() -> ScriptedPipelines:
    return ScriptedPipelines({"train": ["Executing", "Executing", "Succeeded"], "broken": ["Executing", "Failed"]})


@pytest.fixture
def sfn_with_pipelines(pipelines: ScriptedPipelines) -> Iterator[Any]:
    with offline_aws(pipelines):
        create_pipeline("train")
        create_pipeline("broken")
        yield boto3.client("stepfunctions")


def test_pipeline_is_polled_until_it_succeeds(sfn_with_pipelines: Any, pipelines: ScriptedPipelines) -> None:
    result = run(sfn_with_pipelines, pipeline_machine(), {"pipeline": "train", "day": "2024-01-01", "token": TOKEN})
    assert result.status == "SUCCEEDED"
    assert result.path.count("Describe") == 3
    assert pipelines.starts == [("train", {"Day": "2024-01-01"})]
    assert result.output["arn"].startswith("arn:aws:sagemaker:us-east-1:123456789012:pipeline/train/execution/")


def test_pipeline_failure_reason_reaches_the_state_machine(sfn_with_pipelines: Any) -> None:
    result = run(sfn_with_pipelines, pipeline_machine(), {"pipeline": "broken", "day": "d", "token": TOKEN})
    assert (result.status, result.error, result.cause) == (
        "FAILED",
        "Pipeline.Failed",
        "Scripted failure of pipeline broken",
    )


def test_unknown_pipeline_is_a_sagemaker_resource_not_found(sfn_with_pipelines: Any) -> None:
    result = run(sfn_with_pipelines, pipeline_machine(), {"pipeline": "missing", "day": "d", "token": TOKEN})
    assert (result.status, result.error, result.path) == ("FAILED", "SageMaker.ResourceNotFoundException", ["Start"])


def test_same_client_request_token_returns_the_same_execution(
    sfn_with_pipelines: Any, pipelines: ScriptedPipelines
) -> None:
    arn = create(sfn_with_pipelines, pipeline_machine())
    execution_input = {"pipeline": "train", "day": "d", "token": TOKEN}
    first = run_execution(sfn_with_pipelines, arn, execution_input)
    second = run_execution(sfn_with_pipelines, arn, execution_input)
    assert first.output == second.output
    assert len(pipelines.starts) == 1


def test_pipeline_status_is_visible_through_boto3(sfn_with_pipelines: Any) -> None:
    sagemaker = boto3.client("sagemaker")
    arn = sagemaker.start_pipeline_execution(PipelineName="broken", ClientRequestToken=TOKEN)["PipelineExecutionArn"]
    statuses = [sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn) for _ in range(3)]
    assert [s["PipelineExecutionStatus"] for s in statuses] == ["Executing", "Failed", "Failed"]
    assert statuses[-1]["FailureReason"] == "Scripted failure of pipeline broken"


def test_scripted_pipelines_default_script() -> None:
    pipelines = ScriptedPipelines(default=["Executing", "Stopped"])
    pipelines.start("any", "arn:execution", {"a": "1"})
    assert [pipelines.describe("arn:execution") for _ in range(3)] == [
        ("Executing", None),
        ("Stopped", None),
        ("Stopped", None),
    ]
    assert isinstance(pipelines, PipelineRuntime)


def test_scripted_pipelines_reject_unknown_statuses() -> None:
    with pytest.raises(ValueError, match="Running"):
        ScriptedPipelines({"p": ["Running"]})


# ---------------------------------------------------------------- the context manager itself


def test_patches_are_undone_on_exit() -> None:
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.stepfunctions.parser.asl.component.state.choice.state_choice import StateChoice
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    before = (SageMakerModelBackend.start_pipeline_execution, StateChoice._eval_state, moto_jsonata._eval_jsonata)
    with offline_aws():
        assert moto_jsonata._eval_jsonata is not None
    after = (SageMakerModelBackend.start_pipeline_execution, StateChoice._eval_state, moto_jsonata._eval_jsonata)
    assert after == before


def test_offline_aws_cannot_nest() -> None:
    with offline_aws(), pytest.raises(RuntimeError, match="already active"), offline_aws():
        pass


def test_run_execution_times_out_on_a_long_wait() -> None:
    with offline_aws(wait_time_scale=1.0):
        sfn = boto3.client("stepfunctions")
        definition = machine({"W": {"Type": "Wait", "Seconds": 30, "End": True}})
        with pytest.raises(TimeoutError):
            run_execution(sfn, create(sfn, definition), {}, timeout_s=0.2)


class _EndedAtOnce(ScriptedPipelines):
    """Scripted pipelines that say every execution has ended whenever a Wait asks (and record the asks)."""

    def __init__(self) -> None:
        super().__init__({"train": ["Executing", "Succeeded"]})
        self.waits: list[tuple[list[str], float]] = []

    def wait_for_end(self, execution_arns: list[str], timeout_s: float, interrupt: Any) -> None:
        self.waits.append((list(execution_arns), timeout_s))


def test_a_wait_between_polls_ends_with_the_polled_pipeline_and_other_waits_last() -> None:
    pipelines = _EndedAtOnce()
    with offline_aws(pipelines, wait_time_scale=1.0):
        create_pipeline("train")
        sfn = boto3.client("stepfunctions")
        # the 300 s Wait (scale 1) holds the pipeline's ARN in $arn: it lasts until the runtime says it ended
        result = run_execution(sfn, create(sfn, pipeline_machine()), {"pipeline": "train", "day": "d", "token": TOKEN},
                               timeout_s=30)
        assert result.status == "SUCCEEDED"
        assert pipelines.waits == [([result.output["arn"]], 300.0)] * 2  # Executing, then Succeeded
        # a Wait that holds no pipeline execution lasts its (scaled) time
        definition = machine({"W": {"Type": "Wait", "Seconds": 30, "End": True}})
        with pytest.raises(TimeoutError):
            run_execution(sfn, create(sfn, definition), {}, timeout_s=0.2)
        assert len(pipelines.waits) == 2


def test_local_pipelines_wait_for_the_end_of_their_own_executions(tmp_path: Any) -> None:
    import threading

    from ndr_local.runner import LocalPipelines

    local = LocalPipelines(tmp_path, {}, {})
    local._state["arn:running"] = None
    stop = threading.Event()
    assert local.wait_for_end(["arn:unknown"], 0.05, stop) == "elapsed"  # none of its own: the whole time
    assert local.wait_for_end(["arn:running", "arn:unknown"], 0.05, stop) == "elapsed"  # still running
    threading.Timer(0.05, stop.set).start()
    assert local.wait_for_end(["arn:running"], 60, stop) == "interrupted"  # the execution was stopped

    def end() -> None:
        with local._ended:
            local._state["arn:running"] = object()  # type: ignore[assignment]  # a run ended
            local._ended.notify_all()

    threading.Timer(0.05, end).start()
    assert local.wait_for_end(["arn:running", "arn:unknown"], 60, threading.Event()) == "ended"
