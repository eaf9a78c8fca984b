"""Least-privilege IAM policies from what each state machine and the pipelines really touch.

A state machine's policy is the union of its Tasks' ``access`` (set with each Task's resource by
``ndr_compiler.expand.services``): accesses of one sid merge into one statement; a sid ``Family:key`` is one
statement per key, numbered in key order (``DynamoDB0``, ``DynamoDB1``... one per table).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ndr_compiler import ir
from ndr_compiler.expand.services import ARN
from ndr_compiler.lint.graph import graphs
from ndr_jobs.interface.entrypoints import AwsAccess

PLACEHOLDER_ONLY = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")
ECR_URI = re.compile(r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                     r"(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::[\w.-]+|@sha256:[0-9a-f]{64})?")

#: the order of statements in a policy, by sid family
ORDER = ("DynamoDB", "QueryIndexes", "StartPipelines", "WatchPipelineExecutions", "StartChildWorkflows",
         "WatchChildWorkflows", "SyncExecutionRule", "EmitEvents", "ReadObjects")


def _statement(sid: str, actions: list[str] | set[str], resources: list[str] | set[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": sorted(set(resources))}


def state_machine_policy(machine: ir.StateMachineIR) -> dict[str, Any]:
    merged: dict[str, tuple[set[str], set[str]]] = {}
    for g in graphs(machine):
        for s in g.states:
            for a in s.access if isinstance(s, ir.Task) else ():
                actions, resources = merged.setdefault(a.sid, (set(), set()))
                actions.update(a.actions)
                resources.update(a.resources)

    def order(sid: str) -> tuple[int, str]:
        family = sid.split(":", 1)[0]
        return (ORDER.index(family) if family in ORDER else len(ORDER), sid)

    statements = []
    numbered: dict[str, int] = {}
    for sid in sorted(merged, key=order):
        family, keyed, _ = sid.partition(":")
        name = f"{family}{numbered.setdefault(family, 0)}" if keyed else sid
        if keyed:
            numbered[family] += 1
        statements.append(_statement(name, *merged[sid]))
    return {"Version": "2012-10-17", "Statement": statements}


def ecr_repository_arn(image_uri: str) -> str | None:
    """The repository ARN of an ECR image URI (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>[:tag|@digest]``);
    ``${Name}`` stands for ``${EcrRepositoryArn_Name}``, which the deploy derives from the value of ``Name``."""
    if m := PLACEHOLDER_ONLY.fullmatch(image_uri):
        return f"${{EcrRepositoryArn_{m[1]}}}"
    if m := ECR_URI.fullmatch(image_uri):
        return f"arn:aws:ecr:{m['region']}:{m['account']}:repository/{m['repo']}"
    return None


def pipelines_policy(images: Iterable[str], jobs: Iterable[AwsAccess]) -> dict[str, Any]:
    """The role SageMaker pipeline executions and their processing jobs run as: raw read-only, the project's
    storage and artifacts read-write, images from the processors' own repositories, and what each job declares
    (``ndr_jobs.interface.entrypoints``)."""
    storage = ["${NdrStorageBucket}", "${ArtifactsBucket}"]
    repositories = sorted({arn for image in images if (arn := ecr_repository_arn(image))})
    statements = [
        _statement("ProcessingJobs", ["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                                      "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
                   [ARN.format(service="sagemaker", resource="processing-job/*")]),
        _statement("PassOwnRole", ["iam:PassRole"], ["${SageMakerPipelineRoleArn}"]),
        _statement("EcrAuth", ["ecr:GetAuthorizationToken"], ["*"]),
        _statement("Logs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   [ARN.format(service="logs", resource="log-group:/aws/sagemaker/ProcessingJobs*")]),
        _statement("ReadRaw", ["s3:GetObject", "s3:ListBucket"], ["arn:aws:s3:::${RawBucket}",
                                                                  "arn:aws:s3:::${RawBucket}/*"]),
        _statement("Storage", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                   [f"arn:aws:s3:::{b}{suffix}" for b in storage for suffix in ("", "/*")]),
    ]
    if repositories:
        statements.insert(2, _statement("PullImages", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                                       "ecr:BatchCheckLayerAvailability"], repositories))
    merged: dict[str, tuple[set[str], set[str]]] = {}
    for access in jobs:
        actions, resources = merged.setdefault(access.sid, (set(), set()))
        actions.update(access.actions)
        resources.update(access.resources)
    statements += [_statement(sid, *merged[sid]) for sid in sorted(merged)]
    return {"Version": "2012-10-17", "Statement": statements}
