"""The lock janitor: a state machine the compiler generates per project, started for every execution of the
project's machines that ends ABORTED, TIMED_OUT or FAILED; it stops the execution's pipelines, then marks its
RUNNING locks FAILED. Why and how: ``docs/design/expand.md`` ("The lock janitor").
"""

from __future__ import annotations

from ndr_compiler import ir
from ndr_compiler import lock_table as lt
from ndr_compiler.diagnostics import Span
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import NOW, RETRY, TERMINAL
from ndr_compiler.models.project import Project

STATUSES = ("ABORTED", "FAILED", "TIMED_OUT")
DETAIL_TYPE = "Step Functions Execution Status Change"


def status_change_pattern(machine_arns: list[str]) -> dict[str, object]:
    """The EventBridge pattern of the janitor's rule (on the default bus, where Step Functions sends these)."""
    return {"source": ["aws.states"], "detail-type": [DETAIL_TYPE],
            "detail": {"status": list(STATUSES), "stateMachineArn": sorted(machine_arns)}}


def janitor_name(project: Project) -> str:
    return f"sfn_{project.metadata.name.replace('-', '_')}_lock_janitor"


def expand_janitor(project: Project, file: str, origin: Span, pipelines: list[str]) -> ir.StateMachineIR:
    """The janitor of ``project``, which may stop the ``pipelines`` (placeholder names) its machines start."""
    spec = project.spec
    table = spec.tables.locks
    every = spec.polling.every_seconds
    attempts = spec.polling.stop_attempts

    def state(cls: type[ir.State], name: str, what: str, **kw: object) -> ir.State:
        return cls(name, origin, f"{file}:{origin.line} lock janitor: {what}", **kw)  # type: ignore[arg-type]

    fail = ir.Catcher(["States.ALL"], "JanitorFailed", assign={"failure": js.failure_record(
        "janitor", *js.CAUGHT_FAILURE)})
    # the index is eventually consistent: a record written just before the execution ended may lag
    settle = state(ir.Wait, "LetOwnedRecordsSettle", "let the owner index catch up", seconds=10,
                   next="FindOwnedRecords")
    # the rule (ndr_compiler.deploy) lets through only the status changes of STATUSES; only RUNNING locks and
    # pipeline runs are read, and only the attributes used (a long backfill owns hundreds of finished locks)
    find = state(
        ir.Task, "FindOwnedRecords", "the RUNNING locks and the pipeline runs the ended execution owns",
        **svc.dynamodb_query(table, lt.OWNER_INDEX),
        arguments={"TableName": table, "IndexName": lt.OWNER_INDEX, "KeyConditionExpression": "#o = :o",
                   "FilterExpression": "#r = :run OR #s = :running",
                   "ProjectionExpression": "#k, #r, #s, #p",
                   "ExpressionAttributeNames": {"#o": lt.OWNER, "#r": lt.RECORD_TYPE, "#s": lt.STATUS,
                                                "#k": lt.KEY, "#p": lt.PIPELINE_EXECUTION},
                   "ExpressionAttributeValues": {":o": {"S": js.wrap("$states.input.detail.executionArn")},
                                                 ":run": {"S": lt.PIPELINE_RUN}, ":running": {"S": lt.RUNNING}}},
        assign={"records": js.wrap(f"[$map($states.result.Items, function($i) {{ {js.unmarshal_item('$i')} }})]"),
                "execution_arn": js.wrap("$states.input.detail.executionArn"), "failure": None},
        next="StopOwnedPipelines", catch=[fail], retry=RETRY,
    )

    # -- one pipeline: stop, then describe until terminal (bounded)
    stop = state(
        ir.Task, "StopOwnedPipeline", "stop the pipeline (one that already ended refuses: fine)",
        **svc.pipeline_execution("stop", pipelines),
        arguments={"PipelineExecutionArn": js.wrap("$states.input.value"),
                   "ClientRequestToken": js.wrap("$hash($states.input.value & '/janitor', 'SHA-256')")},
        assign={"pipeline_arn": js.wrap("$states.input.value"), "attempt": 0},
        next="DescribeOwnedPipeline", retry=RETRY,
        catch=[ir.Catcher(["States.ALL"], "DescribeOwnedPipeline",
                          assign={"pipeline_arn": js.wrap("$states.input.value"), "attempt": 0})],
    )
    describe = state(
        ir.Task, "DescribeOwnedPipeline", "its status", **svc.pipeline_execution("describe", pipelines),
        arguments={"PipelineExecutionArn": js.wrap("$pipeline_arn")},
        assign={"status": js.wrap("$states.result.PipelineExecutionStatus")},
        next="OwnedPipelineStatusChoice", retry=RETRY,
        catch=[ir.Catcher(["States.ALL"], "OwnedPipelineUnknown")],
    )
    choice = state(
        ir.Choice, "OwnedPipelineStatusChoice", "terminal yet?",
        rules=[
            ir.ChoiceRule(js.wrap(f"$status in {TERMINAL}"), "OwnedPipelineSettled"),
            ir.ChoiceRule(js.wrap(f"$attempt >= {attempts}"), "OwnedPipelineStillRunning", bound=attempts),
        ],
        default="WaitForOwnedPipeline",
    )
    wait = state(ir.Wait, "WaitForOwnedPipeline", "wait between describes", seconds=every,
                 next="CountOwnedPipelinePoll")
    count = state(ir.Pass, "CountOwnedPipelinePoll", "count the describe", assign={"attempt": js.wrap("$attempt + 1")},
                  next="DescribeOwnedPipeline")
    settled = state(ir.Pass, "OwnedPipelineSettled", "the pipeline is terminal",
                    output={"pipeline_execution_arn": js.wrap("$pipeline_arn"), "status": js.wrap("$status"),
                            "settled": True}, end=True)
    running = state(ir.Pass, "OwnedPipelineStillRunning", "the pipeline did not stop in time",
                    output={"pipeline_execution_arn": js.wrap("$pipeline_arn"), "status": js.wrap("$status"),
                            "settled": False}, end=True)
    unknown = state(ir.Pass, "OwnedPipelineUnknown", "the pipeline cannot be described",
                    output={"pipeline_execution_arn": js.wrap("$pipeline_arn"), "status": "Unknown",
                            "settled": False}, end=True)
    pipelines = state(
        ir.Map, "StopOwnedPipelines", "stop every pipeline the execution started",
        items=js.wrap(f"[$records[{lt.RECORD_TYPE} = '{lt.PIPELINE_RUN}'].{lt.PIPELINE_EXECUTION}]"),
        item_selector={"value": js.wrap("$states.context.Map.Item.Value")}, max_concurrency=5,
        processor=ir.Graph("StopOwnedPipeline", [stop, describe, choice, wait, count, settled, running, unknown]),
        assign={"pipelines": js.wrap("$states.result")}, next="AllOwnedPipelinesSettledChoice", catch=[fail],
    )
    all_settled = state(
        ir.Choice, "AllOwnedPipelinesSettledChoice", "release the locks only once nothing runs",
        rules=[ir.ChoiceRule(js.wrap("$count($pipelines[settled = false]) = 0"), "ReleaseOwnedLocks")],
        default="OwnedPipelinesNotStopped",
    )
    not_stopped = state(
        ir.Fail, "OwnedPipelinesNotStopped", "locks stay held until their lease expires",
        error="NDR.PipelineNotStopped",
        cause=js.wrap("'pipelines of ' & $execution_arn & ' did not stop: ' & "
                      "$string($pipelines[settled = false])"),
    )

    # -- one lock: mark it FAILED if this execution still holds it RUNNING
    release = state(
        ir.Task, "ReleaseOwnedLock", "mark the lock FAILED (free to take, effects kept)",
        **svc.dynamodb("updateItem", table),
        arguments={
            "TableName": table, "Key": {lt.KEY: {"S": js.wrap("$states.input.value")}},
            "UpdateExpression": f"SET {lt.STATUS} = :failed, {lt.FINISHED_AT} = :t, {lt.EXPIRES_AT} = :keep, "
                                f"{lt.RELEASED_BY} = :janitor",
            "ConditionExpression": f"{lt.OWNER} = :o AND {lt.STATUS} = :running",
            "ExpressionAttributeValues": {
                ":failed": {"S": lt.FAILED}, ":running": {"S": lt.RUNNING}, ":t": {"S": js.wrap("$now()")},
                ":keep": {"N": js.wrap(f"$string({NOW} + {spec.locks.failed_retention_seconds})")},
                ":o": {"S": js.wrap("$execution_arn")}, ":janitor": {"S": js.wrap("$states.context.Execution.Id")},
            },
        },
        output={"lock_key": js.wrap("$states.input.value"), "released": True}, end=True,
        catch=[ir.Catcher(["DynamoDB.ConditionalCheckFailedException"], "LockAlreadyReleased")],
    )
    already = state(ir.Pass, "LockAlreadyReleased", "released meanwhile", output={"released": False}, end=True)
    locks = state(
        ir.Map, "ReleaseOwnedLocks", "every RUNNING lock the execution holds",
        items=js.wrap(f"[$records[{lt.RECORD_TYPE} = '{lt.LOCK}' and {lt.STATUS} = '{lt.RUNNING}'].{lt.KEY}]"),
        item_selector={"value": js.wrap("$states.context.Map.Item.Value")}, max_concurrency=5,
        processor=ir.Graph("ReleaseOwnedLock", [release, already]),
        assign={"locks": js.wrap("$states.result")}, next="JanitorDone", catch=[fail],
    )
    done = state(ir.Succeed, "JanitorDone", "summary",
                 output={"execution_arn": js.wrap("$execution_arn"), "pipelines": js.wrap("$pipelines"),
                         "locks_released": js.wrap("$count($locks[released = true])")})
    failed = state(ir.Fail, "JanitorFailed", "the janitor could not finish", error="NDR.JanitorFailed",
                   cause=js.wrap("$failure ? $string($failure) : 'unknown failure'"))
    states = [settle, find, pipelines, all_settled, not_stopped, locks, done, failed]
    return ir.StateMachineIR(
        name=janitor_name(project), file=file, origin=origin, graph=ir.Graph("LetOwnedRecordsSettle", states),
        comment="Generated: releases what a stopped, timed-out or failed execution of this project left held "
                "(stops its pipelines, then marks its RUNNING locks FAILED).",
        timeout_seconds=every * (attempts + 2) + 600, generated=True,
    )
