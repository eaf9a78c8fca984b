"""The platform's AWS side, stood up in moto from ``generated/`` and the project spec.

Used by the scenario tests and the local runner: the DynamoDB tables (seeded from the project spec),
one SageMaker pipeline per pipeline name, the state machines with their placeholders resolved (children
first), the event bus with a rule that copies every event to an SQS queue so runs can be inspected, and
the artifacts bucket. Call inside :func:`ndr_compiler.local.offline_aws`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from ndr_compiler.deploy.dynamodb import ensure_tables
from ndr_compiler.deploy.placeholders import placeholders, resolve, state_machine_arn_placeholder
from ndr_compiler.local.sfn_runtime import ExecutionResult, run_execution
from ndr_compiler.models.project import Project

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ndr-offline"
EMPTY_PIPELINE = json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": []})


def default_pipeline_name(placeholder: str) -> str:
    """``PipelineNameFGB`` -> ``ndr-fgb``: a SageMaker-valid name for an offline run."""
    stem = placeholder.removeprefix("PipelineName") or placeholder
    return "ndr-" + re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


@dataclass
class OfflinePlatform:
    region: str
    project: Project
    machine_arns: dict[str, str] = field(default_factory=dict)
    pipeline_names: dict[str, str] = field(default_factory=dict)
    queue_url: str = ""

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def run(self, machine: str, payload: Any, name: str | None = None, timeout_s: float = 120) -> ExecutionResult:
        return run_execution(
            self.client("stepfunctions"), self.machine_arns[machine], payload, name=name, timeout_s=timeout_s
        )

    def executions(self, machine: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        return sfn.list_executions(stateMachineArn=self.machine_arns[machine])["executions"]

    def events(self) -> list[dict[str, Any]]:
        """Events put on the project's bus since the last call."""
        sqs = self.client("sqs")
        out = []
        while True:
            msgs = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def lock(self, key: str) -> dict[str, Any] | None:
        ddb = self.client("dynamodb")
        item = ddb.get_item(
            TableName=self.project.spec.tables.locks, Key={"lock_key": {"S": key}}, ConsistentRead=True
        ).get("Item")
        return {k: next(iter(v.values())) for k, v in item.items()} if item else None

    def put_json(self, uri: str, document: Any) -> None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode())


def _children_first(definitions: Mapping[str, str]) -> list[str]:
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in trail:
            return
        for ph in placeholders(definitions[name]):
            child = ph.removeprefix("StateMachineArn_")
            if ph.startswith("StateMachineArn_") and child in definitions:
                visit(child, (*trail, name))
        order.append(name)

    for name in sorted(definitions):
        visit(name, ())
    return order


def _buckets(project: Project) -> set[str]:
    found: set[str] = set()
    for key, value in project.spec.defaults.items():
        if key.endswith("_bucket"):
            found.add(str(value))
    for p in project.spec.parameters:
        found.update(str(v) for k, v in p.values.items() if k.endswith("_bucket"))
    for r in project.spec.routing:
        found.update(str(v) for k, v in r.model_dump().items() if k.endswith("_bucket"))
    return {b for b in found if re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", b)}


def stand_up(
    generated: Path, project: Project, pipeline_names: Mapping[str, str] | None = None, region: str = "us-east-1"
) -> OfflinePlatform:
    """Create every resource the generated state machines touch, in the current (mocked) AWS."""
    platform = OfflinePlatform(region, project)
    ensure_tables(platform.client("dynamodb"), project)
    s3 = platform.client("s3")
    for bucket in sorted(_buckets(project)):
        s3.create_bucket(Bucket=bucket)

    events = platform.client("events")
    bus = project.spec.event_bus
    events.create_event_bus(Name=bus)
    sqs = platform.client("sqs")
    platform.queue_url = sqs.create_queue(QueueName="ndr-offline-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=platform.queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="ndr-offline-capture", EventBusName=bus, EventPattern=json.dumps({"source": [project.spec.event_source]})
    )
    events.put_targets(Rule="ndr-offline-capture", EventBusName=bus, Targets=[{"Id": "capture", "Arn": queue_arn}])

    definitions = {
        p.name.removesuffix(".asl.json"): p.read_text()
        for p in sorted((generated / "state_machines").glob("*.asl.json"))
    }
    names = dict(pipeline_names or {})
    sagemaker = platform.client("sagemaker")
    for text in definitions.values():
        for ph in placeholders(text):
            if ph.startswith("PipelineName"):
                names.setdefault(ph, default_pipeline_name(ph))
    for concrete in sorted(set(names.values())):
        sagemaker.create_pipeline(PipelineName=concrete, PipelineDefinition=EMPTY_PIPELINE, RoleArn=ROLE_ARN)
    platform.pipeline_names = names

    sfn = platform.client("stepfunctions")
    values: dict[str, str] = dict(names)
    for name in _children_first(definitions):
        arn = sfn.create_state_machine(name=name, definition=resolve(definitions[name], values), roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
        platform.machine_arns[name] = arn
        values[state_machine_arn_placeholder(name)] = arn
    return platform
