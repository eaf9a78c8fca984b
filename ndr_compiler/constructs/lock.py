"""The ``lock`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from ndr_compiler import ir
from ndr_compiler import lock_table as lt
from ndr_compiler.constructs.registry import CheckContext, Construct, kind
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import CONDITIONAL_FAILED, NOW, OWNER, RETRY, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Bucket, Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander
    from ndr_compiler.models.state_machine import Step


class Duplicate(Strict):
    """What a second acquisition does: ``fail`` the execution, ``succeed`` quietly, or (in a Map) ``skip`` the
    item, which ends with status ``Skipped``."""

    fail: StateName | None = None
    succeed: StateName | None = None
    skip: StateName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Duplicate:
        if sum(x is not None for x in (self.fail, self.succeed, self.skip)) != 1:
            raise ValueError("on_duplicate needs exactly one of 'fail', 'succeed' or 'skip'")
        return self

    @property
    def name(self) -> str:
        return self.fail or self.succeed or self.skip or ""


class Release(Strict):
    on_success: StateName
    on_failure: StateName
    failure_action: Literal["delete", "mark_failed"] = "delete"


class Outcome(Strict):
    """The Task that reads, after the body, what became of each element (a JSON document in S3)."""

    name: StateName
    bucket: Bucket
    key: Expr
    into: Identifier


class Each(Strict):
    """Lock one key per element of ``items`` (the key's expressions read the element as ``$<element>``).

    Each element is acquired alone (``force`` and ``on_duplicate.skip`` per element); the body runs once with
    the acquired elements in ``$<into>`` (none acquired: ``skipped`` ends the item instead). After the body,
    whatever its end, ``outcome`` is read and each acquired element is released by its own ``succeeded``
    (true: ``release.on_success``, else ``release.on_failure``). ``$<into>_outcomes`` then lists
    ``{id, status}`` for every element (``Succeeded``, ``Failed`` or ``Skipped``).
    """

    items: Expr
    element: Identifier
    id: Expr = Field(description="the element's id in the outcomes")
    into: Identifier
    acquire: StateName = Field(description="the Map that acquires each element's lock")
    check: StateName = Field(description="the Choice after it: the body, or skipped when none was acquired")
    skipped: StateName = Field(description="ends the item (or the execution) when no element was acquired")
    outcome: Outcome
    succeeded: Expr = Field(description="per acquired element, after the outcome is read: true when it succeeded")
    release: StateName = Field(description="the Map that releases each acquired element's lock")
    release_choice: StateName = Field(description="per element: the success or the failure release")


class Lock(Strict):
    """Run ``body`` at most once at a time per key, and (until the SUCCEEDED record expires) once.

    The key is ``<scope>#`` followed by the parts as a JSON array, so parts may contain any character. A
    RUNNING lease lasts the machine's ``timeout_seconds`` plus the project's ``locks.margin_seconds``;
    ``force`` (an expression) lets a SUCCEEDED lock be taken again.
    """

    acquire: StateName
    scope: Identifier
    key: list[Expr] = Field(min_length=1)
    on_duplicate: Duplicate
    release: Release
    lease_seconds: Annotated[int, Field(ge=60)] | None = Field(
        default=None, description="default: the machine's timeout_seconds + the project's locks.margin_seconds")
    force: Expr | None = None
    each: Each | None = Field(default=None, description="lock a list: one key per element")
    body: list[Step]


def lock_key_src(c: Lock) -> str:
    parts = ", ".join(f"$string({js.inner(p)})" for p in c.key)
    return f"{js.literal(c.scope + '#')} & $string([{parts}])"


def _acquire_arguments(x: Expander, c: Lock, key_src: str, lease: int) -> dict[str, Any]:
    table = x.project.spec.tables.locks
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
    return {
        "TableName": table, "Key": {lt.KEY: {"S": js.wrap(key_src)}},
        # the effects are read from the old item (ALL_OLD) and written again only by a release
        "UpdateExpression": f"SET {lt.RECORD_TYPE} = :lock, {lt.STATUS} = :running, {lt.OWNER} = :me, "
                            f"{lt.ACQUIRED_AT} = :t, {lt.EXPIRES_AT} = :lease REMOVE {lt.FINISHED_AT}, "
                            f"{lt.RELEASED_BY}, {lt.EFFECTS}",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": attribute_values,
        "ReturnValues": "ALL_OLD",
    }


def _mark_arguments(x: Expander, key_src: str, status: str, keep_seconds: int, effects: str) -> dict[str, Any]:
    """An owner-conditional update of the lock to ``status``, kept ``keep_seconds``, with its effects."""
    name = f":{status.lower()}"
    return {
        "TableName": x.project.spec.tables.locks, "Key": {lt.KEY: {"S": js.wrap(key_src)}},
        "UpdateExpression": f"SET {lt.STATUS} = {name}, {lt.FINISHED_AT} = :t, {lt.EXPIRES_AT} = :keep, "
                            f"{lt.EFFECTS} = :effects",
        "ConditionExpression": f"{lt.OWNER} = :me",
        "ExpressionAttributeValues": {
            name: {"S": status}, ":t": {"S": js.wrap("$now()")},
            ":keep": {"N": js.wrap(f"$string({NOW} + {keep_seconds})")},
            ":effects": {"S": js.wrap(f"$string({effects})")}, ":me": {"S": js.wrap(OWNER)},
        },
    }


def _delete_arguments(x: Expander, key_src: str) -> dict[str, Any]:
    return {"TableName": x.project.spec.tables.locks, "Key": {lt.KEY: {"S": js.wrap(key_src)}},
            "ConditionExpression": f"{lt.OWNER} = :me", "ExpressionAttributeValues": {":me": {"S": js.wrap(OWNER)}}}


def _not_released(x: Expander, c: Lock, path: PathKey, scope: Scope) -> ir.Fail:
    # A release that fails leaves the lock RUNNING: the execution must then end failed, so that the janitor
    # frees it. Outside a Map that is the failure path; inside one, the item must fail the Map (an item's
    # own failure end would let the execution succeed with the lock held until its lease expires).
    return ir.Fail(
        f"{c.scope.title().replace('_', '')}LockNotReleased", x.span((*path, "release")),
        x.comment((*path, "release"), "lock: the release failed (the janitor frees it)"),
        error="NDR.LockNotReleased", cause=js.wrap(f"$string(${scope.failure_var})"),
    )


def expand(x: Expander, c: Lock, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    if c.each is not None:
        return expand_each(x, c, c.each, path, nxt, scope)
    spec = x.project.spec
    table = spec.tables.locks
    lease = c.lease_seconds or x.lease
    key_src = lock_key_src(c)
    effects = f"{c.scope}_effects"
    key_var = f"{c.scope}_key"
    has_effects = any(kind(s) == "emit" for s in c.body)
    previous = "$states.result.Attributes"
    acquire = ir.Task(
        c.acquire, x.span(path), x.comment(path, f"lock {c.scope}: acquire (lease {lease}s)"),
        **svc.dynamodb("updateItem", table),
        arguments=_acquire_arguments(x, c, key_src, lease),
        # what a failed or abandoned run of this key already did; a new run after success starts afresh
        assign={
            effects: js.wrap(
                f"$exists({previous}.{lt.EFFECTS}.S) and {previous}.{lt.STATUS}.S != '{lt.SUCCEEDED}' "
                f"? $parse({previous}.{lt.EFFECTS}.S) : []"),
            key_var: js.wrap(key_src),
        },
        next=x.entry_in(c.body[0], replace(scope, lock=c.scope)),
        catch=[
            ir.Catcher([CONDITIONAL_FAILED], c.on_duplicate.name),
            *x.catch(c.acquire, scope),
        ],
    )
    dup_path = (*path, "on_duplicate")
    dup_reason = f"'lock ' & {key_src} & ' is held by a running or succeeded execution'"
    duplicate: ir.State
    if c.on_duplicate.fail:
        duplicate = ir.Fail(c.on_duplicate.fail, x.span(dup_path), x.comment(dup_path, "lock: duplicate"),
                            error=f"NDR.{c.on_duplicate.fail}", cause=js.wrap(dup_reason))
    elif c.on_duplicate.skip:
        duplicate = ir.Succeed(
            c.on_duplicate.skip, x.span(dup_path), x.comment(dup_path, "lock: duplicate item skipped"),
            output={"status": "Skipped", "item": js.wrap("$item"), "reason": js.wrap(dup_reason)},
        )
    else:
        duplicate = ir.Succeed(
            c.on_duplicate.name, x.span(dup_path), x.comment(dup_path, "lock: duplicate suppressed"),
            output=js.wrap(f'{{"suppressed": true, "lock_key": {key_src}, "reason": "duplicate"}}'),
        )
    rel = c.release
    not_released = _not_released(x, c, path, scope)
    release_failed_to = not_released.name if scope.in_map else scope.fail_to
    body_scope = Scope(fail_to=rel.on_failure, failure_var=scope.failure_var, in_map=scope.in_map,
                       lock=c.scope)
    body = x.steps(c.body, (*path, "body"), rel.on_success, body_scope)
    rel_path = (*path, "release")
    keep = spec.locks
    on_success = ir.Task(
        rel.on_success, x.span(rel_path), x.comment(rel_path, "lock: mark succeeded"),
        **svc.dynamodb("updateItem", table),
        arguments=_mark_arguments(x, key_src, lt.SUCCEEDED, keep.succeeded_retention_seconds, f"${effects}"),
        # not marked done: release as failed, which records the effects the body completed
        catch=x.catch(rel.on_success, scope, to=rel.on_failure),
    )
    x.link(on_success, nxt)
    if rel.failure_action == "delete" and not has_effects:
        on_failure = ir.Task(
            rel.on_failure, x.span(rel_path), x.comment(rel_path, "lock: release on failure"),
            **svc.dynamodb("deleteItem", table), arguments=_delete_arguments(x, key_src),
            next=scope.fail_to, catch=x.catch(rel.on_failure, scope, to=release_failed_to),
        )
    else:  # a failed lock keeps the effects its run completed, for the rerun
        on_failure = ir.Task(
            rel.on_failure, x.span(rel_path), x.comment(rel_path, "lock: mark failed"),
            **svc.dynamodb("updateItem", table),
            arguments=_mark_arguments(x, key_src, lt.FAILED, keep.failed_retention_seconds, f"${effects}"),
            next=scope.fail_to, catch=x.catch(rel.on_failure, scope, to=release_failed_to),
        )
    x.locks.append(ir.LockRegion(
        c.acquire, [s.name for s in body], [rel.on_success, rel.on_failure], x.span(path),
        lease_seconds=lease, lease_origin=x.span((*path, "lease_seconds")) if c.lease_seconds else None,
        success_mark=rel.on_success,
    ))
    tail = [not_released] if scope.in_map else []
    if c.on_duplicate.fail:
        return [acquire, duplicate, *body, on_success, on_failure, *tail]
    return [acquire, *body, on_success, on_failure, duplicate, *tail]


def expand_each(x: Expander, c: Lock, e: Each, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    """The list form: a Map acquires each element's lock, the body runs once over the acquired ones, and a Map
    releases each by its own outcome. An element whose acquisition fails fails alone; a release that fails, or a
    Map that fails as a whole, ends the execution failed, so that the janitor frees whatever it holds."""
    spec = x.project.spec
    table = spec.tables.locks
    lease = c.lease_seconds or x.lease
    bind = f"${e.element} := $states.input.value; "
    key_src = f"({bind}{lock_key_src(c)})"
    element_id = f"({bind}{js.inner(e.id)})"
    outcomes = f"{e.into}_outcomes"
    each_path, rel_path, dup_path = (*path, "each"), (*path, "release"), (*path, "on_duplicate")
    selector = {"value": js.wrap("$states.context.Map.Item.Value")}
    not_released = _not_released(x, c, path, scope)

    def to_janitor(state: str) -> list[ir.Catcher]:
        return [ir.Catcher(["States.ALL"], not_released.name,
                           assign={scope.failure_var: js.failure_record(state, *js.CAUGHT_FAILURE)})]

    acquire_one = ir.Task(
        c.acquire, x.span(path), x.comment(path, f"lock {c.scope}: acquire one element (lease {lease}s)"),
        **svc.dynamodb("updateItem", table), arguments=_acquire_arguments(x, c, key_src, lease),
        output={"acquired": True, "value": js.wrap("$states.input.value")}, end=True,
        catch=[ir.Catcher([CONDITIONAL_FAILED], c.on_duplicate.name, output={"value": js.wrap("$states.input.value")}),
               ir.Catcher(["States.ALL"], f"{c.acquire}Failed", output={
                   "value": js.wrap("$states.input.value"), "error": js.wrap("$states.errorOutput.Error")})],
    )
    # the element's acquisition failed (not a duplicate): it is not run, and fails alone
    not_acquired = ir.Pass(
        f"{c.acquire}Failed", x.span(path), x.comment(path, "lock: one element's acquisition failed"),
        output={"acquired": False, "value": js.wrap("$states.input.value"),
                "outcome": {"id": js.wrap(element_id), "status": "Failed"}},
        end=True,
    )
    skip_one = ir.Pass(
        c.on_duplicate.name, x.span(dup_path), x.comment(dup_path, "lock: duplicate element skipped"),
        output={"acquired": False, "value": js.wrap("$states.input.value"),
                "outcome": {"id": js.wrap(element_id), "status": "Skipped"}},
        end=True,
    )
    acquire = ir.Map(
        e.acquire, x.span(each_path), x.comment(each_path, f"lock {c.scope}: acquire each element's lock"),
        items=js.template(e.items), item_selector=selector, max_concurrency=1,
        processor=ir.Graph(start_at=acquire_one.name, states=[acquire_one, skip_one, not_acquired]),
        assign={e.into: js.wrap("[$states.result[acquired].value]"),
                outcomes: js.wrap("[$states.result[$not(acquired)].outcome]")},
        next=e.check, catch=to_janitor(e.acquire),
    )
    body_scope = Scope(fail_to=e.outcome.name, failure_var=scope.failure_var, in_map=scope.in_map, lock=c.scope)
    check = ir.Choice(
        e.check, x.span(each_path), x.comment(each_path, f"lock {c.scope}: any element acquired?"),
        rules=[ir.ChoiceRule(js.wrap(f"$count(${e.into}) = 0"), e.skipped)],
        default=x.entry_in(c.body[0], body_scope),
    )
    skipped = ir.Succeed(
        e.skipped, x.span(each_path), x.comment(each_path, f"lock {c.scope}: every element was a duplicate"),
        output={"status": "Skipped", **({"item": js.wrap("$item")} if scope.in_map else {}),
                "outcomes": js.wrap(f"${outcomes}")},
    )
    body = x.steps(c.body, (*path, "body"), e.outcome.name, body_scope)
    o_path = (*each_path, "outcome")
    outcome = ir.Task(
        e.outcome.name, x.span(o_path), x.comment(o_path, f"lock {c.scope}: read each element's outcome"),
        **svc.s3_get_object(e.outcome.bucket),
        arguments={"Bucket": js.template(e.outcome.bucket), "Key": js.template(e.outcome.key)},
        assign={e.outcome.into: js.wrap("$parse($states.result.Body)")}, next=e.release, retry=RETRY,
        # no outcome (the body failed before writing one): every element is released as failed
        catch=[ir.Catcher(["States.ALL"], e.release, assign={e.outcome.into: None})],
    )
    keep = spec.locks
    done = {"id": js.wrap(element_id)}
    on_success = ir.Task(
        c.release.on_success, x.span(rel_path), x.comment(rel_path, "lock: mark one element succeeded"),
        **svc.dynamodb("updateItem", table),
        arguments=_mark_arguments(x, key_src, lt.SUCCEEDED, keep.succeeded_retention_seconds, "[]"),
        output={**done, "status": "Succeeded"}, end=True,
        catch=[ir.Catcher(["States.ALL"], c.release.on_failure, output={"value": js.wrap("$states.input.value")})],
    )
    # an element whose lock is not released fails the release Map, and so the execution (the janitor frees it)
    one_not_released = ir.Fail(
        f"{c.release.on_failure}Failed", x.span(rel_path),
        x.comment(rel_path, "lock: one element's release failed"), error="NDR.LockNotReleased",
        cause=js.wrap("$string($states.input)"),
    )
    failed_release = [ir.Catcher(["States.ALL"], one_not_released.name)]
    if c.release.failure_action == "delete":
        on_failure = ir.Task(
            c.release.on_failure, x.span(rel_path), x.comment(rel_path, "lock: release one element on failure"),
            **svc.dynamodb("deleteItem", table), arguments=_delete_arguments(x, key_src),
            output={**done, "status": "Failed"}, end=True, catch=failed_release,
        )
    else:
        on_failure = ir.Task(
            c.release.on_failure, x.span(rel_path), x.comment(rel_path, "lock: mark one element failed"),
            **svc.dynamodb("updateItem", table),
            arguments=_mark_arguments(x, key_src, lt.FAILED, keep.failed_retention_seconds, "[]"),
            output={**done, "status": "Failed"}, end=True, catch=failed_release,
        )
    choose = ir.Choice(
        e.release_choice, x.span(rel_path), x.comment(rel_path, "lock: this element's outcome"),
        rules=[ir.ChoiceRule(js.wrap(f"({bind}({js.inner(e.succeeded)}) = true)"), on_success.name)],
        default=on_failure.name,
    )
    release = ir.Map(
        e.release, x.span(rel_path), x.comment(rel_path, f"lock {c.scope}: release each element by its outcome"),
        items=js.wrap(f"${e.into}"), item_selector=selector, max_concurrency=1,
        processor=ir.Graph(start_at=choose.name, states=[choose, on_success, on_failure, one_not_released]),
        assign={outcomes: js.wrap(f"$append(${outcomes}, $states.result)")}, catch=to_janitor(e.release),
    )
    x.link(release, nxt)
    x.locks.append(ir.LockRegion(
        e.acquire, [s.name for s in body], [e.outcome.name, e.release], x.span(path),
        lease_seconds=lease, lease_origin=x.span((*path, "lease_seconds")) if c.lease_seconds else None,
        success_mark=e.release,
    ))
    return [acquire, check, *body, outcome, release, skipped, not_released]


def check(c: Lock, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    """E308-E310: the list form's own rules (a duplicate element is skipped alone, each element has its own key,
    and no effect is recorded per key)."""
    if c.each is None:
        return
    if c.on_duplicate.skip is None:
        yield Diagnostic("E308", "a lock over a list skips a duplicate element alone: on_duplicate must be 'skip'",
                         ctx.span((*path, "on_duplicate")))
    reads = re.compile(rf"\${re.escape(c.each.element)}(?![A-Za-z0-9_])")
    if not any(reads.search(js.inner(part)) for part in c.key):
        yield Diagnostic("E309", f"the key of a lock over a list reads no ${c.each.element}: every element would "
                         "take the same lock", ctx.span((*path, "key")))
    for i, step in enumerate(c.body):
        if kind(step) == "emit":
            yield Diagnostic("E310", "a lock over a list records no effects: emit outside its body, after it",
                             ctx.span((*path, "body", i, "emit")))


def binds(body: dict[str, Any]) -> set[str]:
    each = body.get("each")
    element = each.get("element") if isinstance(each, dict) else None
    return {element} if isinstance(element, str) else set()


CONSTRUCT = Construct("lock", Lock, expand, entry=lambda c, in_lock: c.each.acquire if c.each else c.acquire,
                      children=lambda c: [("body", c.body)], binds=binds, check=check)
