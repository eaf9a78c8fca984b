"""The ``run_pipeline`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler import lock_table as lt
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import NOW, OWNER, RETRY, TERMINAL, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class PollStates(Strict):
    start: StateName
    describe: StateName
    choice: StateName
    wait: StateName
    increment: StateName
    record: StateName | None = Field(default=None, description="default: Record<start>")
    stop: StateName | None = Field(default=None, description="default: Stop<start>")


class Poll(Strict):
    """How often to describe the pipeline. ``max_attempts`` defaults to what covers the pipeline's own limits
    (its longest chain of steps, each at its max runtime, retries and provisioning included)."""

    every_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100_000)] | None = None
    stop_attempts: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="describes after a stop before giving up on it (default: the project's)")


class RunPipeline(Strict):
    """Start a SageMaker pipeline and poll it to a terminal status, a bounded number of times."""

    id: Identifier
    pipeline: Annotated[str, Field(pattern=r"^\$\{[A-Za-z][A-Za-z0-9]*\}$")]
    parameters: dict[str, Expr] = Field(default_factory=dict)
    states: PollStates
    poll: Poll = Poll()


def expand(x: Expander, c: RunPipeline, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    polling = x.project.spec.polling
    every = c.poll.every_seconds or polling.every_seconds
    placeholder = c.pipeline.removeprefix("${").removesuffix("}")
    runtime = x.runtimes.get(placeholder)
    if c.poll.max_attempts:
        attempts = c.poll.max_attempts
    elif runtime is not None:
        attempts = max(1, math.ceil(runtime / every))
    else:
        attempts = polling.max_attempts
    stop_attempts = c.poll.stop_attempts or polling.stop_attempts
    s_start = c.states.start
    x.polls.append(ir.PollLoop(s_start, placeholder, every, attempts, x.span((*path, "poll")),
                                  explicit=c.poll.max_attempts is not None, runtime_seconds=runtime))
    s = c.states
    record_name = s.record or f"Record{s_start}"
    stop_name = s.stop or f"Stop{s_start.removeprefix('Start')}"
    v = c.id
    arn, status, attempt, stopping = (f"${v}_execution_arn", f"${v}_status", f"${v}_poll_attempt",
                                      f"${v}_stopping")
    token = f"$states.context.Execution.Id & '/{s.start}'{x.index_suffix(scope)}"
    params = [
        {"Name": name, "Value": js.wrap(f"$string({js.inner(expr)})")} for name, expr in c.parameters.items()
    ]
    x.placeholders.append(ir.PlaceholderRef(
        placeholder, s.start, x.span((*path, "pipeline")),
        parameters={n: x.span((*path, "parameters", n)) for n in c.parameters},
        literals={n: val for n, val in c.parameters.items() if not js.is_expr(val)},
    ))
    fail = scope.failure_var
    keep_failure = f"${fail}"
    start = ir.Task(
        s.start, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: start"),
        **svc.pipeline_execution("start", [placeholder]),
        arguments={
            "PipelineName": c.pipeline,
            "PipelineParameters": params,
            "ClientRequestToken": js.wrap(f"$hash({token}, 'SHA-256')"),
        },
        assign={arn[1:]: js.wrap("$states.result.PipelineExecutionArn"), attempt[1:]: 0, stopping[1:]: False,
                status[1:]: "Executing"},
        next=record_name, catch=x.catch(s.start, scope), retry=RETRY,
    )
    run_key = (f"'run#' & $string([{OWNER}, '{s.start}'"
               + (", $string($item_index)" if scope.in_map else "") + "])")
    record = ir.Task(
        record_name, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: record the run"),
        **svc.dynamodb("putItem", x.project.spec.tables.locks),
        arguments={"TableName": x.project.spec.tables.locks, "Item": {
            lt.KEY: {"S": js.wrap(run_key)}, lt.RECORD_TYPE: {"S": lt.PIPELINE_RUN},
            lt.OWNER: {"S": js.wrap(OWNER)}, lt.PIPELINE_EXECUTION: {"S": js.wrap(arn)},
            lt.ACQUIRED_AT: {"S": js.wrap("$now()")},
            lt.EXPIRES_AT: {"N": js.wrap(f"$string({NOW} + {x.lease})")},
        }},
        next=s.describe, catch=x.catch(record_name, scope, to=stop_name), retry=RETRY,
    )
    describe = ir.Task(
        s.describe, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: describe"),
        **svc.pipeline_execution("describe", [placeholder]),
        arguments={"PipelineExecutionArn": js.wrap(arn)},
        assign={
            status[1:]: js.wrap("$states.result.PipelineExecutionStatus"),
            f"{v}_failure_reason": js.wrap(
                "$exists($states.result.FailureReason) ? $states.result.FailureReason : null"),
        },
        next=s.choice, retry=RETRY,
        # the pipeline may still run: stop it (keeping the first failure when already stopping)
        catch=[ir.Catcher(["States.ALL"], stop_name, assign={fail: js.wrap(
            f"{stopping} ? {keep_failure} : {{'state': '{s.describe}', 'error': $states.errorOutput.Error, "
            "'cause': $states.errorOutput.Cause}")})],
    )
    status_failed = x.failure_assign(
        scope, s.choice, "NDR.PipelineFailed",
        f"'{c.pipeline} execution ' & {arn} & ' ended ' & {status} & "
        f"(${v}_failure_reason ? ': ' & ${v}_failure_reason : '')",
    )
    exhausted = x.failure_assign(
        scope, s.choice, "NDR.PollAttemptsExhausted",
        f"'{c.pipeline} execution ' & {arn} & ' still ' & {status} & "
        f"' after {attempts} polls every {every}s; it was stopped'",
    )
    not_stopped = x.failure_assign(
        scope, s.choice, "NDR.PipelineNotStopped",
        f"'{c.pipeline} execution ' & {arn} & ' still ' & {status} & ' after {stop_attempts} polls since it "
        f"was asked to stop (' & {keep_failure}.error & ': ' & $string({keep_failure}.cause) & ')'",
    )
    # A pipeline that does not stop keeps what the execution holds: the execution ends failed without its
    # releases, and the janitor (triggered by that failure) waits for the pipeline before it frees anything.
    handover = ir.Fail(
        f"{s_start.removeprefix('Start')}NotStopped", x.span(path),
        x.comment(path, f"run_pipeline {c.pipeline}: it does not stop (locks go to the janitor)"),
        error="NDR.PipelineNotStopped", cause=js.wrap(f"$string(${fail})"), hands_lock_over=True,
    )
    choice = ir.Choice(
        s.choice, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: status"),
        rules=[
            ir.ChoiceRule(js.wrap(f"{stopping} and {status} in {TERMINAL}"), scope.fail_to),
            ir.ChoiceRule(js.wrap(f"{stopping} and {attempt} >= {stop_attempts}"), handover.name,
                          assign=not_stopped, bound=stop_attempts),
            ir.ChoiceRule(js.wrap(f"{status} = 'Succeeded'"), nxt or scope.fail_to),
            ir.ChoiceRule(js.wrap(f"{status} in ['Failed', 'Stopped']"), scope.fail_to, assign=status_failed),
            ir.ChoiceRule(js.wrap(f"$not({stopping}) and {attempt} >= {attempts}"), stop_name, assign=exhausted,
                          bound=attempts),
        ],
        default=s.wait,
    )
    wait = ir.Wait(s.wait, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: wait"),
                   seconds=every, next=s.increment)
    increment = ir.Pass(
        s.increment, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: count poll"),
        assign={attempt[1:]: js.wrap(f"{attempt} + 1")}, next=s.describe,
    )
    stop_assign = {stopping[1:]: True, attempt[1:]: js.wrap(f"{stopping} ? {attempt} : 0")}
    stop = ir.Task(
        stop_name, x.span(path), x.comment(path, f"run_pipeline {c.pipeline}: stop (gave up or failed)"),
        **svc.pipeline_execution("stop", [placeholder]),
        arguments={"PipelineExecutionArn": js.wrap(arn),
                   "ClientRequestToken": js.wrap(f"$hash({token} & '/stop', 'SHA-256')")},
        assign=stop_assign, next=s.choice, retry=RETRY,
        # a pipeline that already ended refuses the stop: the describe loop sees its terminal status
        catch=[ir.Catcher(["States.ALL"], s.choice, assign=stop_assign)],
    )
    return [start, record, describe, choice, wait, increment, stop, handover]


CONSTRUCT = Construct("run_pipeline", RunPipeline, expand, entry=lambda c, in_lock: c.states.start)
