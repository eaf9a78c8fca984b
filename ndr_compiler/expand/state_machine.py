"""Expand a StateMachine spec into the IR.

Each construct is a function from its spec to an ordered list of IR states. Invariants are built here:
every Task catches ``States.ALL`` to the failure path in scope (the lock's release inside a lock, the
item's failure end inside a Map, the workflow's failure otherwise); every poll loop ends after a bounded
number of attempts; every path out of a lock body passes through a release.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ndr_compiler import ir
from ndr_compiler.diagnostics import Span
from ndr_compiler.expand import snippets as js
from ndr_compiler.load import Document, PathKey
from ndr_compiler.models import state_machine as m
from ndr_compiler.models.project import Project

SAGEMAKER_START = "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution"
SAGEMAKER_DESCRIBE = "arn:aws:states:::aws-sdk:sagemaker:describePipelineExecution"
DDB = "arn:aws:states:::dynamodb:{}"
SFN_START_SYNC = "arn:aws:states:::states:startExecution.sync:2"
EVENTS_PUT = "arn:aws:states:::events:putEvents"
S3_GET = "arn:aws:states:::aws-sdk:s3:getObject"

CONDITIONAL_FAILED = "DynamoDB.ConditionalCheckFailedException"
RESERVED_VARIABLES = frozenset({"msg", "ctx", "params", "failure", "item", "item_index", "item_failure", "states"})


def child_placeholder(state_machine: str) -> str:
    return "${StateMachineArn_" + state_machine + "}"


@dataclass
class Scope:
    """Where a construct sits: its failure target, the failure variable, and whether it is in a Map."""

    fail_to: str
    failure_var: str = "failure"
    in_map: bool = False
    first_in_map: bool = False


@dataclass
class Expander:
    doc: Document
    sm: m.StateMachine
    project: Project
    locks: list[ir.LockRegion] = field(default_factory=list)
    placeholders: list[ir.PlaceholderRef] = field(default_factory=list)
    children: list[ir.PlaceholderRef] = field(default_factory=list)
    has_context: bool = False

    # -- helpers -------------------------------------------------------------------------------
    def span(self, path: PathKey) -> Span:
        return self.doc.span(path)

    def comment(self, path: PathKey, what: str) -> str:
        s = self.span(path)
        return f"{s.file}:{s.line} {what}"

    def catch(self, state: str, scope: Scope) -> list[ir.Catcher]:
        error, cause = js.CAUGHT_FAILURE
        return [
            ir.Catcher(
                errors=["States.ALL"],
                next=scope.fail_to,
                assign={scope.failure_var: js.failure_record(state, error, cause)},
            )
        ]

    def failure_assign(self, scope: Scope, state: str, error: str, cause_src: str) -> dict[str, Any]:
        return {scope.failure_var: js.failure_record(state, error, js.wrap(cause_src))}

    # -- entry names ---------------------------------------------------------------------------
    @staticmethod
    def entry(step: Any) -> str:
        kind = js_kind(step)
        body = getattr(step, kind)
        if kind == "lock":
            return body.acquire
        if kind == "run_pipeline":
            return body.states.start
        if kind == "succeed":
            return body
        return body.name

    # -- sequences -----------------------------------------------------------------------------
    def steps(self, steps: list[Any], path: PathKey, next_after: str | None, scope: Scope) -> list[ir.State]:
        out: list[ir.State] = []
        for i, step in enumerate(steps):
            nxt = self.entry(steps[i + 1]) if i + 1 < len(steps) else next_after
            kind = js_kind(step)
            sub_scope = replace(scope, first_in_map=scope.first_in_map and i == 0)
            out.extend(getattr(self, f"x_{kind}")(getattr(step, kind), (*path, i, kind), nxt, sub_scope))
        return out

    def link(self, state: ir.State, nxt: str | None) -> ir.State:
        if nxt is None:
            state.end = True
        else:
            state.next = nxt
        return state

    # -- constructs ----------------------------------------------------------------------------
    def x_normalize(self, c: m.Normalize, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        # A Pass state cannot catch, and $parse of malformed text raises: the unwrapping runs as the one
        # iteration of an inline Map, whose Catch turns unparseable input into $msg = null (ignored later).
        unwrap = ir.Pass(c.unwrap, self.span(path), self.comment(path, "normalize: unwrap"),
                         output=js.wrap(js.NORMALIZE), end=True)
        assign: dict[str, Any] = {"msg": js.wrap("$states.result[0]")}
        on_error: dict[str, Any] = {"msg": None}
        if not scope.in_map:
            assign["failure"] = on_error["failure"] = None
        state = ir.Map(
            c.name, self.span(path), self.comment(path, "normalize"),
            items=js.wrap('[{"payload": $states.input}]'), max_concurrency=1,
            processor=ir.Graph(start_at=unwrap.name, states=[unwrap]), assign=assign,
            catch=[ir.Catcher(["States.ALL"], nxt or scope.fail_to, assign=on_error)],
        )
        return [self.link(state, nxt)]

    def x_parse_context(self, c: m.ParseContext, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        self.has_context = True
        if c.layout == "batch_folder":
            bindings = js.batch_folder_bindings()
            names = list(js.BATCH_FOLDER_FIELDS)
            valid = "$ok"
            reason = "$reason"
        else:
            bindings = [("m", "$type($msg) = 'object' ? $msg : {}")]
            names = []
            for f in c.required:
                bindings.append((f, f"$m.{f}"))
                names.append(f)
            required = js.literal(c.required)
            bindings.append(
                ("missing", f"$filter({required}, function($k) {{ $not($exists($lookup($m, $k))) "
                            "or $lookup($m, $k) = null or $lookup($m, $k) = '' })")
            )
            valid = "$type($msg) = 'object' and $count($missing) = 0"
            reason = (
                "$type($msg) != 'object' ? 'the message is not a JSON object' : "
                "$count($missing) > 0 ? 'the request lacks ' & $join($missing, ', ') : null"
            )
        for f, expr in c.fields.items():
            bindings.append((f, js.inner(expr)))
            if f not in names:
                names.append(f)
        obj = ", ".join([f'"valid": {valid}', f'"reason": {reason}', '"is_object": $type($msg) = \'object\'']
                        + [f'"{n}": ${n}' for n in names])
        src = js.block(bindings, "{" + obj + "}")
        state = ir.Pass(c.name, self.span(path), self.comment(path, f"parse_context ({c.layout})"),
                        assign={"ctx": js.wrap(src)})
        return [self.link(state, nxt)]

    def x_gate(self, c: m.Gate, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        et = js.literal(c.event_type)
        choice = ir.Choice(
            c.name, self.span(path), self.comment(path, "gate"),
            rules=[ir.ChoiceRule(js.wrap(f"$ctx.valid and $ctx.event_type = {et}"), nxt or c.ignore,
                                 origin=self.span(path))],
            default=c.ignore,
        )
        reason = (
            f"$not($ctx.is_object) ? $ctx.reason : $ctx.event_type != {et} ? "
            f"('event_type ' & ($ctx.event_type ? '\"' & $ctx.event_type & '\"' : 'missing') & ' is not ' & {et}) "
            ": $ctx.reason"
        )
        ignore = ir.Succeed(
            c.ignore, self.span((*path, "ignore")), self.comment((*path, "ignore"), "gate: ignored event"),
            output=js.wrap(f'{{"ignored": true, "reason": {reason}, "event_type": $ctx.event_type}}'),
        )
        return [choice, ignore]

    def x_load(self, c: m.Load, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        table = getattr(self.project.spec.tables, c.table)
        key = {k: {"S": js.wrap(f"$string({js.inner(v)})")} for k, v in c.key.items()}
        arguments: Any = {"TableName": table, "Key": key, "ConsistentRead": True}
        if self.has_context:
            # A request without the fields the key needs fails here, with the parser's reason.
            args_src = js.inner_template(arguments)
            arguments = js.wrap(f"$ctx.valid ? {args_src} : $error('invalid request: ' & $ctx.reason)")
        item = "$states.result.Item"
        missing = (
            f"$error('no item in table {table} for key ' & "
            + " & ', ' & ".join(f"'{k}=' & $string({js.inner(v)})" for k, v in c.key.items())
            + ")"
        )
        value = f"$exists({item}) ? {js.unmarshal_item(item)} : " + (missing if c.required else "{}")
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"load {c.table}"), resource=DDB.format("getItem"),
            arguments=arguments, assign={c.into: js.wrap(value)}, catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_resolve(self, c: m.Resolve, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        layers = [js.literal(dict(sorted(self.project.spec.defaults.items())))] + [f"${b}" for b in c.base]
        bindings = [("base", f"$merge([{', '.join(layers)}])")]
        bindings += [(k, js.inner(v)) for k, v in c.values.items()]
        obj = "{" + ", ".join(f'"{k}": ${k}' for k in c.values) + "}"
        src = js.block(bindings, f"$merge([$base, {obj}])")
        state = ir.Pass(c.name, self.span(path), self.comment(path, "resolve runtime parameters"),
                        assign={"params": js.wrap(src)})
        return [self.link(state, nxt)]

    def x_lock(self, c: m.Lock, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        spec = self.project.spec
        table = spec.tables.locks
        ttl = c.ttl_seconds or spec.lock_ttl_seconds
        key = js.inner(c.key)
        key_attr = {"lock_key": {"S": js.wrap(f"$string({key})")}}
        now = "$floor($millis() / 1000)"
        owner = "$states.context.Execution.Id"
        acquire = ir.Task(
            c.acquire, self.span(path), self.comment(path, "lock: acquire"), resource=DDB.format("putItem"),
            arguments={
                "TableName": table,
                "Item": {
                    **key_attr,
                    "lock_status": {"S": "RUNNING"},
                    "owner_execution": {"S": js.wrap(owner)},
                    "acquired_at": {"S": js.wrap("$now()")},
                    "expires_at": {"N": js.wrap(f"$string({now} + {ttl})")},
                },
                "ConditionExpression": "attribute_not_exists(lock_key) OR lock_status = :failed "
                                       "OR expires_at < :now",
                "ExpressionAttributeValues": {":failed": {"S": "FAILED"}, ":now": {"N": js.wrap(f"$string({now})")}},
            },
            next=self.entry(c.body[0]),
            catch=[
                ir.Catcher([CONDITIONAL_FAILED], c.on_duplicate.name),
                *self.catch(c.acquire, scope),
            ],
        )
        dup_path = (*path, "on_duplicate")
        dup_cause = js.wrap(f"'lock ' & {key} & ' is held by a running or succeeded execution'")
        duplicate: ir.State
        if c.on_duplicate.fail:
            duplicate = ir.Fail(c.on_duplicate.fail, self.span(dup_path), self.comment(dup_path, "lock: duplicate"),
                                error=f"NDR.{c.on_duplicate.fail}", cause=dup_cause)
        else:
            duplicate = ir.Succeed(
                c.on_duplicate.name, self.span(dup_path), self.comment(dup_path, "lock: duplicate suppressed"),
                output=js.wrap(f'{{"suppressed": true, "lock_key": {key}, "reason": "duplicate"}}'),
            )
        rel = c.release
        body_scope = Scope(fail_to=rel.on_failure, failure_var=scope.failure_var, in_map=scope.in_map)
        body = self.steps(c.body, (*path, "body"), rel.on_success, body_scope)
        owner_cond = {
            "ConditionExpression": "owner_execution = :me",
            "ExpressionAttributeValues": {":me": {"S": js.wrap(owner)}},
        }
        rel_path = (*path, "release")
        on_success = ir.Task(
            rel.on_success, self.span(rel_path), self.comment(rel_path, "lock: mark succeeded"),
            resource=DDB.format("updateItem"),
            arguments={
                "TableName": table, "Key": key_attr,
                "UpdateExpression": "SET lock_status = :succeeded, finished_at = :t",
                "ConditionExpression": owner_cond["ConditionExpression"],
                "ExpressionAttributeValues": {
                    ":succeeded": {"S": "SUCCEEDED"}, ":t": {"S": js.wrap("$now()")},
                    ":me": {"S": js.wrap(owner)},
                },
            },
            catch=self.catch(rel.on_success, scope),
        )
        self.link(on_success, nxt)
        if rel.failure_action == "delete":
            on_failure = ir.Task(
                rel.on_failure, self.span(rel_path), self.comment(rel_path, "lock: release on failure"),
                resource=DDB.format("deleteItem"),
                arguments={"TableName": table, "Key": key_attr, **owner_cond},
                next=scope.fail_to, catch=self.catch(rel.on_failure, scope),
            )
        else:
            on_failure = ir.Task(
                rel.on_failure, self.span(rel_path), self.comment(rel_path, "lock: mark failed"),
                resource=DDB.format("updateItem"),
                arguments={
                    "TableName": table, "Key": key_attr,
                    "UpdateExpression": "SET lock_status = :failed, finished_at = :t",
                    "ConditionExpression": owner_cond["ConditionExpression"],
                    "ExpressionAttributeValues": {
                        ":failed": {"S": "FAILED"}, ":t": {"S": js.wrap("$now()")}, ":me": {"S": js.wrap(owner)},
                    },
                },
                next=scope.fail_to, catch=self.catch(rel.on_failure, scope),
            )
        self.locks.append(ir.LockRegion(c.acquire, [s.name for s in body], [rel.on_success, rel.on_failure],
                                        self.span(path)))
        if c.on_duplicate.fail:
            return [acquire, duplicate, *body, on_success, on_failure]
        return [acquire, *body, on_success, on_failure, duplicate]

    def x_run_pipeline(self, c: m.RunPipeline, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        polling = self.project.spec.polling
        every = c.poll.every_seconds or polling.every_seconds
        attempts = c.poll.max_attempts or polling.max_attempts
        s = c.states
        v = c.id
        # Inside a Map, the ItemSelector hands the first state {index, value}; later states read variables.
        bind = "$item := $states.input.value; " if scope.first_in_map else ""
        token_src = f"$states.context.Execution.Id & '/{s.start}'"
        if scope.in_map:
            index = "$states.input.index" if scope.first_in_map else "$item_index"
            token_src += f" & '/' & $string({index})"
        params = [
            {"Name": name, "Value": js.wrap(f"({bind}$string({js.inner(expr)}))")}
            for name, expr in c.parameters.items()
        ]
        self.placeholders.append(ir.PlaceholderRef(
            c.pipeline.removeprefix("${").removesuffix("}"), s.start, self.span((*path, "pipeline")),
            parameters={n: self.span((*path, "parameters", n)) for n in c.parameters},
            literals={n: v for n, v in c.parameters.items() if not js.is_expr(v)},
        ))
        assign: dict[str, Any] = {
            f"{v}_execution_arn": js.wrap("$states.result.PipelineExecutionArn"),
            f"{v}_poll_attempt": 0,
        }
        if scope.first_in_map:
            assign["item"] = js.wrap("$states.input.value")
            assign["item_index"] = js.wrap("$states.input.index")
        start = ir.Task(
            s.start, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: start"),
            resource=SAGEMAKER_START,
            arguments={
                "PipelineName": c.pipeline,
                "PipelineParameters": params,
                "ClientRequestToken": js.wrap(f"$hash({token_src}, 'SHA-256')"),
            },
            assign=assign, next=s.describe, catch=self.catch(s.start, scope),
        )
        describe = ir.Task(
            s.describe, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: describe"),
            resource=SAGEMAKER_DESCRIBE,
            arguments={"PipelineExecutionArn": js.wrap(f"${v}_execution_arn")},
            assign={
                f"{v}_status": js.wrap("$states.result.PipelineExecutionStatus"),
                f"{v}_failure_reason": js.wrap(
                    "$exists($states.result.FailureReason) ? $states.result.FailureReason : null"),
            },
            next=s.choice, catch=self.catch(s.describe, scope),
        )
        status_failed = self.failure_assign(
            scope, s.choice, "NDR.PipelineFailed",
            f"'{c.pipeline} execution ' & ${v}_execution_arn & ' ended ' & ${v}_status & "
            f"(${v}_failure_reason ? ': ' & ${v}_failure_reason : '')",
        )
        exhausted = self.failure_assign(
            scope, s.choice, "NDR.PollAttemptsExhausted",
            f"'{c.pipeline} execution ' & ${v}_execution_arn & ' still ' & ${v}_status & "
            f"' after {attempts} polls every {every}s'",
        )
        choice = ir.Choice(
            s.choice, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: status"),
            rules=[
                ir.ChoiceRule(js.wrap(f"${v}_status = 'Succeeded'"), nxt or scope.fail_to),
                ir.ChoiceRule(js.wrap(f"${v}_status in ['Failed', 'Stopped']"), scope.fail_to,
                              assign=status_failed),
                ir.ChoiceRule(js.wrap(f"${v}_poll_attempt >= {attempts}"), scope.fail_to, assign=exhausted,
                              bound=attempts),
            ],
            default=s.wait,
        )
        wait = ir.Wait(s.wait, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: wait"),
                       seconds=every, next=s.increment)
        increment = ir.Pass(
            s.increment, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: count poll"),
            assign={f"{v}_poll_attempt": js.wrap(f"${v}_poll_attempt + 1")}, next=s.describe,
        )
        return [start, describe, choice, wait, increment]

    def x_start_workflow(self, c: m.StartWorkflow, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        placeholder = child_placeholder(c.state_machine)
        self.children.append(ir.PlaceholderRef(c.state_machine, c.name, self.span((*path, "state_machine"))))
        payload = js.template(dict(c.input))
        payload["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID"] = js.wrap("$states.context.Execution.Id")
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"start_workflow {c.state_machine} (sync)"),
            resource=SFN_START_SYNC,
            arguments={"StateMachineArn": placeholder, "Input": payload},
            assign={c.into: js.wrap("$states.result.Output")} if c.into else None,
            catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_read_json(self, c: m.ReadJson, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        select = js.inner(c.select) if c.select else "$doc"
        state = ir.Task(
            c.name, self.span(path), self.comment(path, "read_json"), resource=S3_GET,
            arguments={"Bucket": js.template(c.bucket), "Key": js.template(c.key)},
            assign={c.into: js.wrap(f"($doc := $parse($states.result.Body); {select})")},
            catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_map(self, c: m.MapItems, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        inner_scope = Scope(fail_to=c.item_failed.name, failure_var="item_failure", in_map=True, first_in_map=True)
        inner = self.steps(c.steps, (*path, "steps"), c.item_succeeded.name, inner_scope)
        ok_path, ko_path = (*path, "item_succeeded"), (*path, "item_failed")
        succeeded = ir.Pass(
            c.item_succeeded.name, self.span(ok_path), self.comment(ok_path, "map: item succeeded"),
            output={"status": "Succeeded", "item": js.wrap("$item"), **js.template(dict(c.item_succeeded.output))},
            end=True,
        )
        failed = ir.Pass(
            c.item_failed.name, self.span(ko_path), self.comment(ko_path, "map: item failed"),
            output={"status": "Failed", "item": js.wrap("$item"), "failure": js.wrap("$item_failure"),
                    **js.template(dict(c.item_failed.output))},
            end=True,
        )
        # the item and its failure are declared before the first state so that both ends can read them
        first = inner[0]
        first.assign = {"item_failure": None, **(first.assign or {})}
        graph = ir.Graph(start_at=first.name, states=[*inner, succeeded, failed])
        state = ir.Map(
            c.name, self.span(path), self.comment(path, "map"), items=js.template(c.items),
            item_selector={"index": js.wrap("$states.context.Map.Item.Index"),
                           "value": js.wrap("$states.context.Map.Item.Value")},
            max_concurrency=c.max_concurrency, processor=graph,
            assign={c.into: js.wrap("$states.result")}, catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_emit(self, c: m.Emit, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        spec = self.project.spec
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"emit {c.detail_type}"), resource=EVENTS_PUT,
            arguments={"Entries": [{
                "EventBusName": spec.event_bus, "Source": spec.event_source, "DetailType": c.detail_type,
                "Detail": js.template(dict(c.detail)),
            }]},
            catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_choice(self, c: m.Choice, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        rules = [ir.ChoiceRule(js.template(r.when), r.next, origin=self.span((*path, "rules", i)))
                 for i, r in enumerate(c.rules)]
        return [ir.Choice(c.name, self.span(path), self.comment(path, "choice"), rules=rules, default=c.default)]

    def x_succeed(self, c: str, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        return [ir.Succeed(c, self.span(path), self.comment(path, "succeed"))]

    def x_fail(self, c: m.Fail, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        return [ir.Fail(c.name, self.span(path), self.comment(path, "fail"), error=c.error,
                        cause=js.template(c.cause) if c.cause else None)]


def js_kind(step: Any) -> str:
    return next(iter(type(step).model_fields))


def expand_state_machine(doc: Document, sm: m.StateMachine, project: Project) -> ir.StateMachineIR:
    x = Expander(doc, sm, project)
    spec = sm.spec
    fail = spec.on_failure
    states = x.steps(spec.steps, ("spec", "steps"), None, Scope(fail_to=fail.name))
    fail_path = ("spec", "on_failure")
    workflow_failed = ir.Fail(
        fail.name, doc.span(fail_path), x.comment(fail_path, "workflow failure"), error=fail.error,
        cause=js.wrap("$failure ? $string($failure) : 'unknown failure'"),
    )
    referenced = {t for g in _all_graphs(states) for s in g for t in ir.successors(s)}
    # The workflow's failure sits before a trailing Succeed, else last (the seed's declared order).
    if fail.name not in referenced:
        pass  # nothing can fail: no failure state to render
    elif states and isinstance(states[-1], ir.Succeed) and js_kind(spec.steps[-1]) == "succeed":
        states.insert(len(states) - 1, workflow_failed)
    else:
        states.append(workflow_failed)
    graph = ir.Graph(start_at=x.entry(spec.steps[0]), states=states)
    return ir.StateMachineIR(
        name=sm.metadata.name, file=doc.file, origin=doc.span(()), graph=graph,
        comment=spec.comment or sm.metadata.description, timeout_seconds=spec.timeout_seconds,
        locks=x.locks, placeholders=x.placeholders, child_state_machines=x.children,
    )


def _all_graphs(states: list[ir.State]) -> list[list[ir.State]]:
    out = [states]
    for s in states:
        if isinstance(s, ir.Map) and s.processor:
            out.extend(_all_graphs(s.processor.states))
    return out
