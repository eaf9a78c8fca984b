"""Expand a StateMachine spec into the IR: one function per construct, from its spec to ordered IR states.

The constructs' invariants (every Task caught, locks released, polls bounded, effects once) are built here;
``docs/design/expand.md`` explains them and ``docs/reliability.md`` names the tests that prove each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ndr_compiler import ir
from ndr_compiler import lock_table as lt
from ndr_compiler.diagnostics import Span
from ndr_compiler.expand import intake as intake_x
from ndr_compiler.expand import snippets as js
from ndr_compiler.load import Document, PathKey
from ndr_compiler.models import state_machine as m
from ndr_compiler.models.project import Project

SAGEMAKER_START = "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution"
SAGEMAKER_DESCRIBE = "arn:aws:states:::aws-sdk:sagemaker:describePipelineExecution"
SAGEMAKER_STOP = "arn:aws:states:::aws-sdk:sagemaker:stopPipelineExecution"
DDB = "arn:aws:states:::dynamodb:{}"
DDB_QUERY = "arn:aws:states:::aws-sdk:dynamodb:query"
SFN_START_SYNC = "arn:aws:states:::states:startExecution.sync:2"
EVENTS_PUT = "arn:aws:states:::events:putEvents"
S3_GET = "arn:aws:states:::aws-sdk:s3:getObject"

CONDITIONAL_FAILED = "DynamoDB.ConditionalCheckFailedException"
RESERVED_VARIABLES = frozenset(
    {"msg", "ctx", "params", "failure", "item", "item_index", "item_failure", "states", "rejection"}
)
TERMINAL = "['Succeeded', 'Failed', 'Stopped']"
#: for calls that may be repeated safely (reads, token-idempotent starts and stops, unconditional records):
#: a throttled or failed call is tried again before the failure path takes over
RETRY = [ir.Retrier(["States.ALL"], interval_seconds=2, max_attempts=2, backoff_rate=2.0)]
NOW = "$floor($millis() / 1000)"
OWNER = "$states.context.Execution.Id"


def child_placeholder(state_machine: str) -> str:
    return "${StateMachineArn_" + state_machine + "}"


@dataclass
class Scope:
    """Where a construct sits: its failure target, the failure variable, whether it is in a Map, and the
    lock whose body it is in (its effects variable)."""

    fail_to: str
    failure_var: str = "failure"
    in_map: bool = False
    #: the scope of the lock whose body this is: its variables are ``<lock>_effects`` and ``<lock>_key``
    lock: str | None = None


@dataclass
class Expander:
    doc: Document
    sm: m.StateMachine
    project: Project
    #: pipeline runtimes by placeholder name, for poll budgets (absent: the project's polling default)
    runtimes: dict[str, int] = field(default_factory=dict)
    locks: list[ir.LockRegion] = field(default_factory=list)
    placeholders: list[ir.PlaceholderRef] = field(default_factory=list)
    children: list[ir.PlaceholderRef] = field(default_factory=list)
    polls: list[ir.PollLoop] = field(default_factory=list)
    intake: ir.Intake | None = None
    reject_entry: str | None = None

    # -- helpers -------------------------------------------------------------------------------
    def span(self, path: PathKey) -> Span:
        return self.doc.span(path)

    def comment(self, path: PathKey, what: str) -> str:
        s = self.span(path)
        return f"{s.file}:{s.line} {what}"

    @property
    def timeout(self) -> int:
        return self.sm.spec.timeout_seconds

    @property
    def lease(self) -> int:
        """The machine's timeout, then the janitor's longest wait for a pipeline to stop, then the margin."""
        spec = self.project.spec
        return self.timeout + spec.polling.stop_attempts * spec.polling.every_seconds + spec.locks.margin_seconds

    def catch(self, state: str, scope: Scope, to: str | None = None) -> list[ir.Catcher]:
        error, cause = js.CAUGHT_FAILURE
        return [
            ir.Catcher(
                errors=["States.ALL"],
                next=to or scope.fail_to,
                assign={scope.failure_var: js.failure_record(state, error, cause)},
            )
        ]

    def failure_assign(self, scope: Scope, state: str, error: str, cause_src: str) -> dict[str, Any]:
        return {scope.failure_var: js.failure_record(state, error, js.wrap(cause_src))}

    def index_suffix(self, scope: Scope) -> str:
        """JSONata appended to an idempotency token inside a Map (one token per item)."""
        return " & '/' & $string($item_index)" if scope.in_map else ""

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
            nxt = self.entry_in(steps[i + 1], scope) if i + 1 < len(steps) else next_after
            kind = js_kind(step)
            out.extend(getattr(self, f"x_{kind}")(getattr(step, kind), (*path, i, kind), nxt, scope))
        return out

    def entry_in(self, step: Any, scope: Scope) -> str:
        """A step's first state where it sits (an emit inside a lock starts at its once-only check)."""
        if js_kind(step) == "emit" and scope.lock:
            return once_name(step.emit.name)
        return self.entry(step)

    def link(self, state: ir.State, nxt: str | None) -> ir.State:
        if nxt is None:
            state.end = True
        else:
            state.next = nxt
        return state

    # -- intake --------------------------------------------------------------------------------
    def x_normalize(self, c: m.Normalize, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        # A Pass state cannot catch, and $parse of malformed text raises: the unwrapping runs as the one
        # iteration of an inline Map, whose Catch turns unparseable input into $msg = null (rejected later).
        unwrap = ir.Pass(c.unwrap, self.span(path), self.comment(path, "normalize: unwrap"),
                         output=js.wrap(js.NORMALIZE), end=True)
        assign: dict[str, Any] = {"msg": js.wrap("$states.result[0]")}
        on_error: dict[str, Any] = {"msg": None}
        if not scope.in_map:
            assign["failure"] = on_error["failure"] = None
            assign["rejection"] = on_error["rejection"] = None
        state = ir.Map(
            c.name, self.span(path), self.comment(path, "normalize"),
            items=js.wrap('[{"payload": $states.input}]'), max_concurrency=1,
            processor=ir.Graph(start_at=unwrap.name, states=[unwrap]), assign=assign,
            catch=[ir.Catcher(["States.ALL"], nxt or scope.fail_to, assign=on_error)],
        )
        return [self.link(state, nxt)]

    def x_parse_context(self, c: m.ParseContext, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        self.intake = intake_x.intake(c, self.span(path))
        rej = c.reject
        self.reject_entry = rej.emit
        validate = ir.Pass(c.validate_state, self.span(path), self.comment(path, "parse_context: validate"),
                           output=js.wrap(intake_x.validation(c)), end=True)
        crashed = (
            "{'valid': false, 'reason': 'the event could not be validated: ' & $states.errorOutput.Error & ': ' & "
            "$substring($string($states.errorOutput.Cause), 0, 300), 'event_type': "
            "$type($msg.detail.event_type) = 'string' ? $msg.detail.event_type : null}"
        )
        after = c.gate.name if c.gate else c.valid_choice
        parse = ir.Map(
            c.name, self.span(path), self.comment(path, f"parse_context ({c.layout}): the typed intake"),
            items=js.wrap('[{"msg": $msg}]'), max_concurrency=1,
            processor=ir.Graph(start_at=validate.name, states=[validate]),
            assign={"ctx": js.wrap("$states.result[0]")}, next=after,
            catch=[ir.Catcher(["States.ALL"], after, assign={"ctx": js.wrap(crashed)})],
        )
        body_next = nxt or scope.fail_to
        reject = {"rejection": js.wrap("$ctx.reason")}
        out: list[ir.State] = [parse]
        if c.gate:
            g = c.gate
            et = js.literal(g.event_type)
            gate_path = (*path, "gate")
            out.append(ir.Choice(
                g.name, self.span(gate_path), self.comment(gate_path, f"gate: {g.event_type} events run"),
                rules=[
                    ir.ChoiceRule(js.wrap(f"$ctx.event_type = {et} and $ctx.valid"), body_next),
                    ir.ChoiceRule(js.wrap(f"$ctx.event_type = {et}"), rej.emit, assign=reject),
                ],
                default=g.ignore,
            ))
            reason = (f"$ctx.event_type ? 'event_type \"' & $ctx.event_type & '\" is not \"' & {et} & '\"' : "
                      "$ctx.reason ? $ctx.reason : 'the event has no detail.event_type'")
            out.append(ir.Succeed(
                g.ignore, self.span(gate_path), self.comment(gate_path, "gate: another kind of event"),
                output=js.wrap(f'{{"ignored": true, "reason": {reason}, "event_type": $ctx.event_type}}'),
            ))
        else:
            out.append(ir.Choice(  # rule-level Assigns only: a state-level one would apply to every branch
                c.valid_choice, self.span(path), self.comment(path, "parse_context: valid?"),
                rules=[ir.ChoiceRule(js.wrap("$ctx.valid"), body_next),
                       ir.ChoiceRule(js.wrap("true"), rej.emit, assign=reject)],
            ))
        rej_path = (*path, "reject")
        emit = ir.Task(
            rej.emit, self.span(rej_path), self.comment(rej_path, "reject: announce the invalid event"),
            resource=EVENTS_PUT,
            arguments={"Entries": [{
                "EventBusName": self.project.spec.event_bus, "Source": self.project.spec.event_source,
                "DetailType": rej.detail_type,
                "Detail": {
                    "state_machine": self.sm.metadata.name,
                    "execution_arn": js.wrap(OWNER),
                    "reason": js.wrap("$rejection"),
                    "received": js.wrap("$substring($string($msg), 0, 2000)"),
                },
            }]},
            next=rej.fail,
            # the rejection stands even when the announcement fails
            catch=[ir.Catcher(["States.ALL"], rej.fail)],
        )
        fail = ir.Fail(rej.fail, self.span(rej_path), self.comment(rej_path, "reject: NDR.InvalidEvent"),
                       error="NDR.InvalidEvent", cause=js.wrap("$rejection"))
        return [*out, emit, fail]

    def x_check(self, c: m.Check, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        rules = [
            ir.ChoiceRule(js.wrap(f"$not({js.inner(r.that)})"), self.reject_entry or scope.fail_to,
                          assign={"rejection": js.template(r.reason)}, origin=self.span((*path, "rules", i)))
            for i, r in enumerate(c.rules)
        ]
        return [ir.Choice(c.name, self.span(path), self.comment(path, "check: reject unless"), rules=rules,
                          default=nxt or scope.fail_to)]

    # -- data ----------------------------------------------------------------------------------
    def x_load(self, c: m.Load, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        table = getattr(self.project.spec.tables, c.table)
        key_text = " & ', ' & ".join(f"'{k}=' & $string({js.inner(v)})" for k, v in c.key.items())
        if c.index:
            (attr, expr), = c.key.items()
            arguments: Any = {
                "TableName": table, "IndexName": c.index, "KeyConditionExpression": "#k = :k",
                "ExpressionAttributeNames": {"#k": attr},
                "ExpressionAttributeValues": {":k": {"S": js.wrap(f"$string({js.inner(expr)})")}},
            }
            items = f"[$map($states.result.Items, function($i) {{ {js.unmarshal_item('$i')} }})]"
            missing = f"$error('no item in table {table} index {c.index} for ' & {key_text})"
            value = f"($all := {items}; {f'$count($all) = 0 ? {missing} : ' if c.required else ''}$all)"
            resource = DDB_QUERY
        else:
            key = {k: {"S": js.wrap(f"$string({js.inner(v)})")} for k, v in c.key.items()}
            arguments = {"TableName": table, "Key": key, "ConsistentRead": True}
            item = "$states.result.Item"
            missing = f"$error('no item in table {table} for key ' & {key_text})"
            value = f"$exists({item}) ? {js.unmarshal_item(item)} : " + (missing if c.required else "{}")
            resource = DDB.format("getItem")
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"load {c.table}"), resource=resource,
            arguments=arguments, assign={c.into: js.wrap(value)}, catch=self.catch(c.name, scope), retry=RETRY,
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

    def x_read_json(self, c: m.ReadJson, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        select = js.inner(c.select) if c.select else "$doc"
        if c.items is not None:
            select = intake_x.items_validation(c.items, select)
        state = ir.Task(
            c.name, self.span(path), self.comment(path, "read_json"), resource=S3_GET,
            arguments={"Bucket": js.template(c.bucket), "Key": js.template(c.key)},
            assign={c.into: js.wrap(f"($doc := $parse($states.result.Body); {select})")},
            catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    # -- locks ---------------------------------------------------------------------------------
    def lock_key_src(self, c: m.Lock) -> str:
        parts = ", ".join(f"$string({js.inner(p)})" for p in c.key)
        return f"{js.literal(c.scope + '#')} & $string([{parts}])"

    def x_lock(self, c: m.Lock, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        spec = self.project.spec
        table = spec.tables.locks
        lease = c.lease_seconds or self.lease
        key_src = self.lock_key_src(c)
        key_attr = {lt.KEY: {"S": js.wrap(key_src)}}
        effects = f"{c.scope}_effects"
        key_var = f"{c.scope}_key"
        has_effects = any(js_kind(s) == "emit" for s in c.body)
        free = f"attribute_not_exists({lt.KEY}) OR {lt.STATUS} = :failed OR {lt.EXPIRES_AT} < :now"
        values = {
            ":lock": {"S": lt.LOCK}, ":running": {"S": lt.RUNNING}, ":failed": {"S": lt.FAILED},
            ":me": {"S": js.wrap(OWNER)}, ":t": {"S": js.wrap("$now()")},
            ":lease": {"N": js.wrap(f"$string({NOW} + {lease})")}, ":now": {"N": js.wrap(f"$string({NOW})")},
        }
        condition: Any = free
        attribute_values: Any = values
        if c.force is not None:
            force = f"({js.inner(c.force)}) = true"
            condition = js.wrap(f"{force} ? {js.literal(free + f' OR {lt.STATUS} = :succeeded')} : {js.literal(free)}")
            attribute_values = js.wrap(
                f"$merge([{js.inner_template(values)}, {force} ? {{':succeeded': {{'S': '{lt.SUCCEEDED}'}}}} : {{}}])")
        previous = "$states.result.Attributes"
        acquire = ir.Task(
            c.acquire, self.span(path), self.comment(path, f"lock {c.scope}: acquire (lease {lease}s)"),
            resource=DDB.format("updateItem"),
            arguments={
                "TableName": table, "Key": key_attr,
                # the effects are read from the old item (ALL_OLD) and written again only by a release
                "UpdateExpression": f"SET {lt.RECORD_TYPE} = :lock, {lt.STATUS} = :running, {lt.OWNER} = :me, "
                                    f"{lt.ACQUIRED_AT} = :t, {lt.EXPIRES_AT} = :lease REMOVE {lt.FINISHED_AT}, "
                                    f"{lt.RELEASED_BY}, {lt.EFFECTS}",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": attribute_values,
                "ReturnValues": "ALL_OLD",
            },
            # what a failed or abandoned run of this key already did; a new run after success starts afresh
            assign={
                effects: js.wrap(
                    f"$exists({previous}.{lt.EFFECTS}.S) and {previous}.{lt.STATUS}.S != '{lt.SUCCEEDED}' "
                    f"? $parse({previous}.{lt.EFFECTS}.S) : []"),
                key_var: js.wrap(key_src),
            },
            next=self.entry_in(c.body[0], replace(scope, lock=c.scope)),
            catch=[
                ir.Catcher([CONDITIONAL_FAILED], c.on_duplicate.name),
                *self.catch(c.acquire, scope),
            ],
        )
        dup_path = (*path, "on_duplicate")
        dup_reason = f"'lock ' & {key_src} & ' is held by a running or succeeded execution'"
        duplicate: ir.State
        if c.on_duplicate.fail:
            duplicate = ir.Fail(c.on_duplicate.fail, self.span(dup_path), self.comment(dup_path, "lock: duplicate"),
                                error=f"NDR.{c.on_duplicate.fail}", cause=js.wrap(dup_reason))
        elif c.on_duplicate.skip:
            duplicate = ir.Succeed(
                c.on_duplicate.skip, self.span(dup_path), self.comment(dup_path, "lock: duplicate item skipped"),
                output={"status": "Skipped", "item": js.wrap("$item"), "reason": js.wrap(dup_reason)},
            )
        else:
            duplicate = ir.Succeed(
                c.on_duplicate.name, self.span(dup_path), self.comment(dup_path, "lock: duplicate suppressed"),
                output=js.wrap(f'{{"suppressed": true, "lock_key": {key_src}, "reason": "duplicate"}}'),
            )
        rel = c.release
        # A release that fails leaves the lock RUNNING: the execution must then end failed, so that the janitor
        # frees it. Outside a Map that is the failure path; inside one, the item must fail the Map (an item's
        # own failure end would let the execution succeed with the lock held until its lease expires).
        not_released = ir.Fail(
            f"{c.scope.title().replace('_', '')}LockNotReleased", self.span((*path, "release")),
            self.comment((*path, "release"), "lock: the release failed (the janitor frees it)"),
            error="NDR.LockNotReleased", cause=js.wrap(f"$string(${scope.failure_var})"),
        )
        release_failed_to = not_released.name if scope.in_map else scope.fail_to
        body_scope = Scope(fail_to=rel.on_failure, failure_var=scope.failure_var, in_map=scope.in_map,
                           lock=c.scope)
        body = self.steps(c.body, (*path, "body"), rel.on_success, body_scope)
        owner_cond = f"{lt.OWNER} = :me"
        rel_path = (*path, "release")
        keep = spec.locks
        on_success = ir.Task(
            rel.on_success, self.span(rel_path), self.comment(rel_path, "lock: mark succeeded"),
            resource=DDB.format("updateItem"),
            arguments={
                "TableName": table, "Key": key_attr,
                "UpdateExpression": f"SET {lt.STATUS} = :succeeded, {lt.FINISHED_AT} = :t, {lt.EXPIRES_AT} = :keep, "
                                    f"{lt.EFFECTS} = :effects",
                "ConditionExpression": owner_cond,
                "ExpressionAttributeValues": {
                    ":succeeded": {"S": lt.SUCCEEDED}, ":t": {"S": js.wrap("$now()")},
                    ":keep": {"N": js.wrap(f"$string({NOW} + {keep.succeeded_retention_seconds})")},
                    ":effects": {"S": js.wrap(f"$string(${effects})")}, ":me": {"S": js.wrap(OWNER)},
                },
            },
            # not marked done: release as failed, which records the effects the body completed
            catch=self.catch(rel.on_success, scope, to=rel.on_failure),
        )
        self.link(on_success, nxt)
        if rel.failure_action == "delete" and not has_effects:
            on_failure = ir.Task(
                rel.on_failure, self.span(rel_path), self.comment(rel_path, "lock: release on failure"),
                resource=DDB.format("deleteItem"),
                arguments={"TableName": table, "Key": key_attr, "ConditionExpression": owner_cond,
                           "ExpressionAttributeValues": {":me": {"S": js.wrap(OWNER)}}},
                next=scope.fail_to, catch=self.catch(rel.on_failure, scope, to=release_failed_to),
            )
        else:  # a failed lock keeps the effects its run completed, for the rerun
            on_failure = ir.Task(
                rel.on_failure, self.span(rel_path), self.comment(rel_path, "lock: mark failed"),
                resource=DDB.format("updateItem"),
                arguments={
                    "TableName": table, "Key": key_attr,
                    "UpdateExpression": f"SET {lt.STATUS} = :failed, {lt.FINISHED_AT} = :t, {lt.EXPIRES_AT} = :keep, "
                                        f"{lt.EFFECTS} = :effects",
                    "ConditionExpression": owner_cond,
                    "ExpressionAttributeValues": {
                        ":failed": {"S": lt.FAILED}, ":t": {"S": js.wrap("$now()")},
                        ":keep": {"N": js.wrap(f"$string({NOW} + {keep.failed_retention_seconds})")},
                        ":effects": {"S": js.wrap(f"$string(${effects})")}, ":me": {"S": js.wrap(OWNER)},
                    },
                },
                next=scope.fail_to, catch=self.catch(rel.on_failure, scope, to=release_failed_to),
            )
        self.locks.append(ir.LockRegion(
            c.acquire, [s.name for s in body], [rel.on_success, rel.on_failure], self.span(path),
            lease_seconds=lease, lease_origin=self.span((*path, "lease_seconds")) if c.lease_seconds else None,
            success_mark=rel.on_success,
        ))
        tail = [not_released] if scope.in_map else []
        if c.on_duplicate.fail:
            return [acquire, duplicate, *body, on_success, on_failure, *tail]
        return [acquire, *body, on_success, on_failure, duplicate, *tail]

    # -- pipelines -----------------------------------------------------------------------------
    def x_run_pipeline(self, c: m.RunPipeline, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        polling = self.project.spec.polling
        every = c.poll.every_seconds or polling.every_seconds
        placeholder = c.pipeline.removeprefix("${").removesuffix("}")
        runtime = self.runtimes.get(placeholder)
        if c.poll.max_attempts:
            attempts = c.poll.max_attempts
        elif runtime is not None:
            attempts = max(1, math.ceil(runtime / every))
        else:
            attempts = polling.max_attempts
        stop_attempts = c.poll.stop_attempts or polling.stop_attempts
        s_start = c.states.start
        self.polls.append(ir.PollLoop(s_start, placeholder, every, attempts, self.span((*path, "poll")),
                                      explicit=c.poll.max_attempts is not None, runtime_seconds=runtime))
        s = c.states
        record_name = s.record or f"Record{s_start}"
        stop_name = s.stop or f"Stop{s_start.removeprefix('Start')}"
        v = c.id
        arn, status, attempt, stopping = (f"${v}_execution_arn", f"${v}_status", f"${v}_poll_attempt",
                                          f"${v}_stopping")
        token = f"$states.context.Execution.Id & '/{s.start}'{self.index_suffix(scope)}"
        params = [
            {"Name": name, "Value": js.wrap(f"$string({js.inner(expr)})")} for name, expr in c.parameters.items()
        ]
        self.placeholders.append(ir.PlaceholderRef(
            placeholder, s.start, self.span((*path, "pipeline")),
            parameters={n: self.span((*path, "parameters", n)) for n in c.parameters},
            literals={n: val for n, val in c.parameters.items() if not js.is_expr(val)},
        ))
        fail = scope.failure_var
        keep_failure = f"${fail}"
        start = ir.Task(
            s.start, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: start"),
            resource=SAGEMAKER_START,
            arguments={
                "PipelineName": c.pipeline,
                "PipelineParameters": params,
                "ClientRequestToken": js.wrap(f"$hash({token}, 'SHA-256')"),
            },
            assign={arn[1:]: js.wrap("$states.result.PipelineExecutionArn"), attempt[1:]: 0, stopping[1:]: False,
                    status[1:]: "Executing"},
            next=record_name, catch=self.catch(s.start, scope), retry=RETRY,
        )
        run_key = (f"'run#' & $string([{OWNER}, '{s.start}'"
                   + (", $string($item_index)" if scope.in_map else "") + "])")
        record = ir.Task(
            record_name, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: record the run"),
            resource=DDB.format("putItem"),
            arguments={"TableName": self.project.spec.tables.locks, "Item": {
                lt.KEY: {"S": js.wrap(run_key)}, lt.RECORD_TYPE: {"S": lt.PIPELINE_RUN},
                lt.OWNER: {"S": js.wrap(OWNER)}, lt.PIPELINE_EXECUTION: {"S": js.wrap(arn)},
                lt.ACQUIRED_AT: {"S": js.wrap("$now()")},
                lt.EXPIRES_AT: {"N": js.wrap(f"$string({NOW} + {self.lease})")},
            }},
            next=s.describe, catch=self.catch(record_name, scope, to=stop_name), retry=RETRY,
        )
        describe = ir.Task(
            s.describe, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: describe"),
            resource=SAGEMAKER_DESCRIBE,
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
        status_failed = self.failure_assign(
            scope, s.choice, "NDR.PipelineFailed",
            f"'{c.pipeline} execution ' & {arn} & ' ended ' & {status} & "
            f"(${v}_failure_reason ? ': ' & ${v}_failure_reason : '')",
        )
        exhausted = self.failure_assign(
            scope, s.choice, "NDR.PollAttemptsExhausted",
            f"'{c.pipeline} execution ' & {arn} & ' still ' & {status} & "
            f"' after {attempts} polls every {every}s; it was stopped'",
        )
        not_stopped = self.failure_assign(
            scope, s.choice, "NDR.PipelineNotStopped",
            f"'{c.pipeline} execution ' & {arn} & ' still ' & {status} & ' after {stop_attempts} polls since it "
            f"was asked to stop (' & {keep_failure}.error & ': ' & $string({keep_failure}.cause) & ')'",
        )
        # A pipeline that does not stop keeps what the execution holds: the execution ends failed without its
        # releases, and the janitor (triggered by that failure) waits for the pipeline before it frees anything.
        handover = ir.Fail(
            f"{s_start.removeprefix('Start')}NotStopped", self.span(path),
            self.comment(path, f"run_pipeline {c.pipeline}: it does not stop (locks go to the janitor)"),
            error="NDR.PipelineNotStopped", cause=js.wrap(f"$string(${fail})"), hands_lock_over=True,
        )
        choice = ir.Choice(
            s.choice, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: status"),
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
        wait = ir.Wait(s.wait, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: wait"),
                       seconds=every, next=s.increment)
        increment = ir.Pass(
            s.increment, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: count poll"),
            assign={attempt[1:]: js.wrap(f"{attempt} + 1")}, next=s.describe,
        )
        stop_assign = {stopping[1:]: True, attempt[1:]: js.wrap(f"{stopping} ? {attempt} : 0")}
        stop = ir.Task(
            stop_name, self.span(path), self.comment(path, f"run_pipeline {c.pipeline}: stop (gave up or failed)"),
            resource=SAGEMAKER_STOP,
            arguments={"PipelineExecutionArn": js.wrap(arn),
                       "ClientRequestToken": js.wrap(f"$hash({token} & '/stop', 'SHA-256')")},
            assign=stop_assign, next=s.choice, retry=RETRY,
            # a pipeline that already ended refuses the stop: the describe loop sees its terminal status
            catch=[ir.Catcher(["States.ALL"], s.choice, assign=stop_assign)],
        )
        return [start, record, describe, choice, wait, increment, stop, handover]

    def x_start_workflow(self, c: m.StartWorkflow, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        placeholder = child_placeholder(c.state_machine)
        self.children.append(ir.PlaceholderRef(c.state_machine, c.name, self.span((*path, "state_machine"))))
        payload = js.template(dict(c.input))
        payload["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID"] = js.wrap(OWNER)
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"start_workflow {c.state_machine} (sync)"),
            resource=SFN_START_SYNC,
            arguments={"StateMachineArn": placeholder, "Input": payload},
            assign={c.into: js.wrap("$states.result.Output")} if c.into else None,
            catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    def x_map(self, c: m.MapItems, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        inner_scope = Scope(fail_to=c.item_failed.name, failure_var="item_failure", in_map=True)
        inner = self.steps(c.steps, (*path, "steps"), c.item_succeeded.name, inner_scope)
        ok_path, ko_path = (*path, "item_succeeded"), (*path, "item_failed")
        item = {"item": js.wrap("$states.input.value"), "item_index": js.wrap("$states.input.index")}
        start = ir.Choice(  # rule-level Assigns only: a state-level one would apply to every branch
            c.item_start, self.span(path), self.comment(path, "map: an item starts (invalid items fail)"),
            rules=[
                ir.ChoiceRule(js.wrap("$states.input.value.valid = false"), c.item_failed.name,
                              assign={**item, "item_failure": js.failure_record(
                                  c.item_start, "NDR.InvalidItem", js.wrap("$string($states.input.value.reason)"))}),
                ir.ChoiceRule(js.wrap("true"), self.entry_in(c.steps[0], inner_scope),
                              assign={**item, "item_failure": None}),
            ],
        )
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
        graph = ir.Graph(start_at=start.name, states=[start, *inner, succeeded, failed])
        state = ir.Map(
            c.name, self.span(path), self.comment(path, "map"), items=js.template(c.items),
            item_selector={"index": js.wrap("$states.context.Map.Item.Index"),
                           "value": js.wrap("$states.context.Map.Item.Value")},
            max_concurrency=c.max_concurrency, processor=graph,
            assign={c.into: js.wrap("$states.result")}, catch=self.catch(c.name, scope),
        )
        return [self.link(state, nxt)]

    # -- effects -------------------------------------------------------------------------------
    def x_emit(self, c: m.Emit, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        spec = self.project.spec
        detail = js.template(dict(c.detail))
        effects = f"{scope.lock}_effects" if scope.lock else None
        if scope.lock:  # one id per effect and key: consumers can drop a duplicate (see docs/reliability.md)
            detail["ndr_event_id"] = js.wrap(f"$hash('{c.name}#' & ${scope.lock}_key, 'SHA-256')")
        state = ir.Task(
            c.name, self.span(path), self.comment(path, f"emit {c.detail_type}"), resource=EVENTS_PUT,
            arguments={"Entries": [{
                "EventBusName": spec.event_bus, "Source": spec.event_source, "DetailType": c.detail_type,
                "Detail": detail,
            }]},
            catch=self.catch(c.name, scope),
        )
        if not effects:
            return [self.link(state, nxt)]
        state.assign = {effects: js.wrap(f"$append(${effects}, [{js.literal(c.name)}])")}
        self.link(state, nxt)
        once = ir.Choice(
            once_name(c.name), self.span(path), self.comment(path, "emit: once (a rerun skips a done effect)"),
            rules=[ir.ChoiceRule(js.wrap(f"{js.literal(c.name)} in ${effects}"), nxt or scope.fail_to)],
            default=c.name,
        )
        return [once, state]

    # -- plain states --------------------------------------------------------------------------
    def x_choice(self, c: m.Choice, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        rules = [ir.ChoiceRule(js.template(r.when), r.next, origin=self.span((*path, "rules", i)))
                 for i, r in enumerate(c.rules)]
        return [ir.Choice(c.name, self.span(path), self.comment(path, "choice"), rules=rules, default=c.default)]

    def x_succeed(self, c: str, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        return [ir.Succeed(c, self.span(path), self.comment(path, "succeed"))]

    def x_fail(self, c: m.Fail, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
        return [ir.Fail(c.name, self.span(path), self.comment(path, "fail"), error=c.error,
                        cause=js.template(c.cause) if c.cause else None)]


def once_name(emit: str) -> str:
    return f"{emit}OnceChoice"


def js_kind(step: Any) -> str:
    return next(iter(type(step).model_fields))


def expand_state_machine(doc: Document, sm: m.StateMachine, project: Project,
                         runtimes: dict[str, int] | None = None) -> ir.StateMachineIR:
    x = Expander(doc, sm, project, dict(runtimes or {}))
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
        locks=x.locks, placeholders=x.placeholders, child_state_machines=x.children, polls=x.polls,
        intake=x.intake,
    )


def _all_graphs(states: list[ir.State]) -> list[list[ir.State]]:
    out = [states]
    for s in states:
        if isinstance(s, ir.Map) and s.processor:
            out.extend(_all_graphs(s.processor.states))
    return out
