"""The AWS service integrations a Task may call, each with the IAM it needs.

A constructor returns the Task's ``resource`` and its ``access`` (keyword arguments of :class:`ir.Task`), so a
state names its service, action and resource once and the policy is derived from the IR
(``ndr_compiler.render.iam``), never parsed back out of ARNs or arguments. ARNs keep ``${Region}``,
``${AccountId}`` and the pipeline, state machine and bucket placeholders, resolved per environment at deploy.
"""

from __future__ import annotations

from typing import Any

from ndr_compiler import ir

ARN = "arn:aws:{service}:${{Region}}:${{AccountId}}:{resource}"
#: the rule Step Functions manages for ``.sync`` child executions
SYNC_RULE = "rule/StepFunctionsGetEventsForStepFunctionsExecutionRule"

_DDB_ACTIONS = {"getItem": "GetItem", "putItem": "PutItem", "updateItem": "UpdateItem", "deleteItem": "DeleteItem"}
_PIPELINE_ACTIONS = {"start": "startPipelineExecution", "describe": "describePipelineExecution",
                     "stop": "stopPipelineExecution"}


def _task(resource: str, *access: ir.Access) -> dict[str, Any]:
    return {"resource": resource, "access": list(access)}


def dynamodb(op: str, table: str) -> dict[str, Any]:
    """``getItem`` / ``putItem`` / ``updateItem`` / ``deleteItem`` on one table (optimised integration)."""
    arn = ARN.format(service="dynamodb", resource=f"table/{table}")
    access = ir.Access(f"DynamoDB:{table}", (f"dynamodb:{_DDB_ACTIONS[op]}",), (arn,))
    return _task(f"arn:aws:states:::dynamodb:{op}", access)


def dynamodb_query(table: str, index: str) -> dict[str, Any]:
    return _task("arn:aws:states:::aws-sdk:dynamodb:query", ir.Access(
        "QueryIndexes", ("dynamodb:Query",),
        (ARN.format(service="dynamodb", resource=f"table/{table}/index/{index}"),)))


def pipeline_execution(op: str, pipelines: list[str]) -> dict[str, Any]:
    """``start`` / ``describe`` / ``stop`` a SageMaker pipeline execution of one of ``pipelines`` (placeholder
    names, ``${<name>}`` in the ARNs)."""
    action = _PIPELINE_ACTIONS[op]
    iam_action = "sagemaker:" + action[0].upper() + action[1:]
    if op == "start":
        access = ir.Access("StartPipelines", (iam_action,),
                           tuple(ARN.format(service="sagemaker", resource=f"pipeline/${{{p}}}") for p in pipelines))
    else:
        access = ir.Access("WatchPipelineExecutions", (iam_action,), tuple(
            ARN.format(service="sagemaker", resource=f"pipeline/${{{p}}}/execution/*") for p in pipelines))
    return _task(f"arn:aws:states:::aws-sdk:sagemaker:{action}", access)


def start_execution_sync(state_machine: str) -> dict[str, Any]:
    """Run a child state machine and wait for it (``.sync:2``): start, describe and stop it, and the events rule
    Step Functions uses to learn that it ended."""
    return _task(
        "arn:aws:states:::states:startExecution.sync:2",
        ir.Access("StartChildWorkflows", ("states:StartExecution",), (child_arn(state_machine),)),
        ir.Access("WatchChildWorkflows", ("states:DescribeExecution", "states:StopExecution"),
                  (ARN.format(service="states", resource=f"execution:${{StateMachineName_{state_machine}}}:*"),)),
        ir.Access("SyncExecutionRule", ("events:PutTargets", "events:PutRule", "events:DescribeRule"),
                  (ARN.format(service="events", resource=SYNC_RULE),)),
    )


def child_arn(state_machine: str) -> str:
    return "${StateMachineArn_" + state_machine + "}"


def put_events(event_bus: str) -> dict[str, Any]:
    return _task("arn:aws:states:::events:putEvents", ir.Access(
        "EmitEvents", ("events:PutEvents",), (ARN.format(service="events", resource=f"event-bus/{event_bus}"),)))


def s3_get_object(bucket: str) -> dict[str, Any]:
    return _task("arn:aws:states:::aws-sdk:s3:getObject",
                 ir.Access("ReadObjects", ("s3:GetObject",), (f"arn:aws:s3:::{bucket}/*",)))
