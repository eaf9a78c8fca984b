"""The platform's AWS side, stood up in moto from ``generated/`` and the project spec.

Used by the scenario tests and the local runner: the DynamoDB tables (seeded from the project spec),
one SageMaker pipeline per pipeline name, the state machines with their placeholders resolved (children
first), the event bus with a rule that copies every event to an SQS queue so runs can be inspected, and
the buckets. Call inside :func:`ndr_local.offline_aws`.

moto sends no "Step Functions Execution Status Change" events: :meth:`OfflinePlatform.settle` puts them on
the default bus for every execution that ended since its last call, where a rule with the janitor's own
pattern (``ndr_compiler.expand.janitor.status_change_pattern``) forwards the matching ones to a queue; it
runs the janitor once per forwarded event.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from ndr_compiler import lock_table as lt
from ndr_compiler.deploy.dynamodb import ensure_tables
from ndr_compiler.deploy.placeholders import placeholders, resolve, state_machine_arn_placeholder
from ndr_compiler.expand.janitor import STATUSES, janitor_name, status_change_pattern
from ndr_compiler.models.project import Project
from ndr_jobs.interface.contract import iso
from ndr_local.sfn_runtime import ExecutionResult, ended_executions, run_execution

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ndr-offline"
EMPTY_PIPELINE = json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": []})
#: what the environment gives placeholders that are not pipeline names or machine ARNs, offline
DEFAULT_VALUES = {"ArtifactsBucket": "ndr-artifacts"}


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
    status_queue_url: str = ""
    values: dict[str, str] = field(default_factory=dict)
    janitor: str | None = None
    settled: set[str] = field(default_factory=set)
    #: how many of :func:`~ndr_local.sfn_runtime.ended_executions` settle() has read
    _ends_seen: int = 0
    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def client(self, service: str) -> Any:
        """One boto3 client per service (building one costs milliseconds; clients are thread-safe)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(service, region_name=self.region)
            return self._clients[service]

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
            TableName=self.project.spec.tables.locks, Key={lt.KEY: {"S": key}}, ConsistentRead=True
        ).get("Item")
        return {k: next(iter(v.values())) for k, v in item.items()} if item else None

    def locks(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every item of the lock table (locks and pipeline-run records), or the locks in ``status``."""
        ddb = self.client("dynamodb")
        where = {"FilterExpression": f"{lt.STATUS} = :s", "ExpressionAttributeValues": {":s": {"S": status}}}
        items = ddb.scan(TableName=self.project.spec.tables.locks, ConsistentRead=True,
                         **(where if status else {}))["Items"]
        return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]

    def settle(self, timeout_s: float = 120) -> list[ExecutionResult]:
        """Send the status change of every execution that ended ABORTED, TIMED_OUT or FAILED since the last call
        (as Step Functions does for every status; the others the rule would drop anyway) and run the janitor
        for each one its rule forwards; returns the janitor runs."""
        if self.janitor is None:
            return []
        sfn, events, sqs = self.client("stepfunctions"), self.client("events"), self.client("sqs")
        machines = set(self.machine_arns.values())
        ended = []  # only the executions that ended since the last call (listing them all grows with the run)
        for arn in ended_executions(self._ends_seen):
            self._ends_seen += 1
            if arn in self.settled:
                continue
            execution = sfn.describe_execution(executionArn=arn)
            if execution["stateMachineArn"] in machines and execution["status"] in STATUSES:
                ended.append(execution)
        for execution in sorted(ended, key=lambda e: e["startDate"]):
            self.settled.add(execution["executionArn"])
            event = status_change_event(execution, self.region)
            events.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                        "Resources": event["resources"], "Detail": json.dumps(event["detail"])}])
        runs = []
        while True:
            msgs = sqs.receive_message(QueueUrl=self.status_queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not msgs:
                return runs
            for m in msgs:
                sqs.delete_message(QueueUrl=self.status_queue_url, ReceiptHandle=m["ReceiptHandle"])
                runs.append(self.run(self.janitor, json.loads(m["Body"]), timeout_s=timeout_s))

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


def status_change_event(execution: dict[str, Any], region: str) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event EventBridge delivers for an execution."""

    def millis(moment: Any) -> int | None:
        return int(moment.timestamp() * 1000) if moment is not None else None

    arn = execution["executionArn"]
    return {
        "version": "0", "id": hashlib.sha256(arn.encode()).hexdigest()[:36],
        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
        "account": arn.split(":")[4],
        "time": iso(execution.get("stopDate") or datetime.now(UTC)),
        "region": region, "resources": [arn],
        "detail": {
            "executionArn": arn, "stateMachineArn": execution["stateMachineArn"], "name": execution["name"],
            "status": execution["status"], "startDate": millis(execution.get("startDate")),
            "stopDate": millis(execution.get("stopDate")), "input": execution.get("input"),
            "output": execution.get("output"), "error": execution.get("error"), "cause": execution.get("cause"),
        },
    }


def stand_up(
    generated: Path, project: Project, pipeline_names: Mapping[str, str] | None = None, region: str = "us-east-1",
    values: Mapping[str, str] | None = None,
) -> OfflinePlatform:
    """Create every resource the generated state machines touch, in the current (mocked) AWS."""
    platform = OfflinePlatform(region, project, values={**DEFAULT_VALUES, **(values or {})})
    ensure_tables(platform.client("dynamodb"), project)
    s3 = platform.client("s3")
    for bucket in sorted(_buckets(project) | {v for k, v in platform.values.items() if k.endswith("Bucket")}):
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
    values: dict[str, str] = {**platform.values, **names}
    for name in _children_first(definitions):
        arn = sfn.create_state_machine(name=name, definition=resolve(definitions[name], values), roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
        platform.machine_arns[name] = arn
        values[state_machine_arn_placeholder(name)] = arn
        if name == janitor_name(project):
            platform.janitor = name
    if platform.janitor:  # the janitor's rule, on the default bus, forwarding to a queue settle() reads
        platform.status_queue_url = sqs.create_queue(QueueName="ndr-offline-status-changes")["QueueUrl"]
        status_arn = sqs.get_queue_attributes(QueueUrl=platform.status_queue_url,
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        watched = [arn for name, arn in sorted(platform.machine_arns.items()) if name != platform.janitor]
        events.put_rule(Name="ndr-offline-lock-janitor", EventPattern=json.dumps(status_change_pattern(watched)))
        events.put_targets(Rule="ndr-offline-lock-janitor", Targets=[{"Id": "janitor", "Arn": status_arn}])
    return platform
