"""Least-privilege IAM policies from what each state machine and the pipelines really touch.

Read from the IR: the DynamoDB tables and operations of its Tasks, the pipelines it starts, the child
state machines it runs synchronously, the event bus it emits to, the S3 objects it reads. ARNs keep
``${Region}``, ``${AccountId}`` and the pipeline/bucket placeholders, resolved per environment at deploy.
"""

from __future__ import annotations

from typing import Any

from ndr_compiler import ir
from ndr_compiler.lint.graph import graphs

DDB_ACTIONS = {"getItem": "dynamodb:GetItem", "putItem": "dynamodb:PutItem", "updateItem": "dynamodb:UpdateItem",
               "deleteItem": "dynamodb:DeleteItem"}
ARN = "arn:aws:{service}:${{Region}}:${{AccountId}}:{resource}"
SYNC_RULE = "rule/StepFunctionsGetEventsForStepFunctionsExecutionRule"


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": sorted(set(resources))}


def state_machine_policy(machine: ir.StateMachineIR, event_bus: str) -> dict[str, Any]:
    tables: dict[str, set[str]] = {}
    indexes: set[str] = set()
    pipelines: set[str] = {f"${{{p.name}}}" for p in machine.placeholders}
    pipeline_actions: set[str] = set()
    children: set[str] = set()
    emits = False
    objects: set[str] = set()
    for g in graphs(machine):
        for s in g.states:
            if not isinstance(s, ir.Task):
                continue
            args = s.arguments if isinstance(s.arguments, dict) else {}
            if s.resource.startswith("arn:aws:states:::dynamodb:"):
                op = s.resource.rsplit(":", 1)[1]
                tables.setdefault(args["TableName"], set()).add(DDB_ACTIONS[op])
            elif s.resource == "arn:aws:states:::aws-sdk:dynamodb:query":
                indexes.add(f"table/{args['TableName']}/index/{args['IndexName']}")
            elif ":sagemaker:" in s.resource:
                pipeline_actions.add("sagemaker:" + s.resource.rsplit(":", 1)[1][0].upper()
                                     + s.resource.rsplit(":", 1)[1][1:])
            elif s.resource.startswith("arn:aws:states:::states:startExecution"):
                children.add(args["StateMachineArn"])
            elif s.resource == "arn:aws:states:::events:putEvents":
                emits = True
            elif s.resource.endswith("s3:getObject"):
                objects.add(f"arn:aws:s3:::{args['Bucket']}/*")
    statements = []
    for i, (table, actions) in enumerate(sorted(tables.items())):
        statements.append(_statement(f"DynamoDB{i}", sorted(actions), [ARN.format(service="dynamodb",
                                                                                  resource=f"table/{table}")]))
    if indexes:
        statements.append(_statement("QueryIndexes", ["dynamodb:Query"],
                                     [ARN.format(service="dynamodb", resource=r) for r in indexes]))
    if "sagemaker:StartPipelineExecution" in pipeline_actions:
        statements.append(_statement("StartPipelines", ["sagemaker:StartPipelineExecution"],
                                     [ARN.format(service="sagemaker", resource=f"pipeline/{p}") for p in pipelines]))
    watch = sorted(pipeline_actions - {"sagemaker:StartPipelineExecution"})
    if watch:
        statements.append(_statement("WatchPipelineExecutions", watch,
                                     [ARN.format(service="sagemaker", resource=f"pipeline/{p}/execution/*")
                                      for p in pipelines]))
    if children:
        names = [c.removeprefix("${StateMachineArn_").removesuffix("}") for c in children]
        statements.append(_statement("StartChildWorkflows", ["states:StartExecution"], sorted(children)))
        statements.append(_statement("WatchChildWorkflows", ["states:DescribeExecution", "states:StopExecution"],
                                     [ARN.format(service="states", resource=f"execution:${{StateMachineName_{n}}}:*")
                                      for n in names]))
        statements.append(_statement("SyncExecutionRule", ["events:PutTargets", "events:PutRule",
                                                           "events:DescribeRule"],
                                     [ARN.format(service="events", resource=SYNC_RULE)]))
    if emits:
        statements.append(_statement("EmitEvents", ["events:PutEvents"],
                                     [ARN.format(service="events", resource=f"event-bus/{event_bus}")]))
    if objects:
        statements.append(_statement("ReadObjects", ["s3:GetObject"], sorted(objects)))
    return {"Version": "2012-10-17", "Statement": statements}


def pipelines_policy() -> dict[str, Any]:
    """The role SageMaker pipeline executions and their processing jobs run as."""
    buckets = ["${NdrStorageBucket}", "${RawBucket}", "${ArtifactsBucket}"]
    return {"Version": "2012-10-17", "Statement": [
        _statement("ProcessingJobs", ["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                                      "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
                   [ARN.format(service="sagemaker", resource="processing-job/*")]),
        _statement("PassOwnRole", ["iam:PassRole"], ["${SageMakerPipelineRoleArn}"]),
        _statement("PullImages", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                  "ecr:BatchCheckLayerAvailability"],
                   [ARN.format(service="ecr", resource="repository/*")]),
        _statement("EcrAuth", ["ecr:GetAuthorizationToken"], ["*"]),
        _statement("Logs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   [ARN.format(service="logs", resource="log-group:/aws/sagemaker/ProcessingJobs*")]),
        _statement("Storage", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                   [f"arn:aws:s3:::{b}{suffix}" for b in buckets for suffix in ("", "/*")]),
    ]}
