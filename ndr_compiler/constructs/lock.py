"""The ``lock`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from ndr_compiler import ir
from ndr_compiler import lock_table as lt
from ndr_compiler.constructs.registry import Construct, kind
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import CONDITIONAL_FAILED, NOW, OWNER, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

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
    body: list[Step]


def lock_key_src(c: Lock) -> str:
    parts = ", ".join(f"$string({js.inner(p)})" for p in c.key)
    return f"{js.literal(c.scope + '#')} & $string([{parts}])"


def expand(x: Expander, c: Lock, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    spec = x.project.spec
    table = spec.tables.locks
    lease = c.lease_seconds or x.lease
    key_src = lock_key_src(c)
    key_attr = {lt.KEY: {"S": js.wrap(key_src)}}
    effects = f"{c.scope}_effects"
    key_var = f"{c.scope}_key"
    has_effects = any(kind(s) == "emit" for s in c.body)
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
        c.acquire, x.span(path), x.comment(path, f"lock {c.scope}: acquire (lease {lease}s)"),
        **svc.dynamodb("updateItem", table),
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
    # A release that fails leaves the lock RUNNING: the execution must then end failed, so that the janitor
    # frees it. Outside a Map that is the failure path; inside one, the item must fail the Map (an item's
    # own failure end would let the execution succeed with the lock held until its lease expires).
    not_released = ir.Fail(
        f"{c.scope.title().replace('_', '')}LockNotReleased", x.span((*path, "release")),
        x.comment((*path, "release"), "lock: the release failed (the janitor frees it)"),
        error="NDR.LockNotReleased", cause=js.wrap(f"$string(${scope.failure_var})"),
    )
    release_failed_to = not_released.name if scope.in_map else scope.fail_to
    body_scope = Scope(fail_to=rel.on_failure, failure_var=scope.failure_var, in_map=scope.in_map,
                       lock=c.scope)
    body = x.steps(c.body, (*path, "body"), rel.on_success, body_scope)
    owner_cond = f"{lt.OWNER} = :me"
    rel_path = (*path, "release")
    keep = spec.locks
    on_success = ir.Task(
        rel.on_success, x.span(rel_path), x.comment(rel_path, "lock: mark succeeded"),
        **svc.dynamodb("updateItem", table),
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
        catch=x.catch(rel.on_success, scope, to=rel.on_failure),
    )
    x.link(on_success, nxt)
    if rel.failure_action == "delete" and not has_effects:
        on_failure = ir.Task(
            rel.on_failure, x.span(rel_path), x.comment(rel_path, "lock: release on failure"),
            **svc.dynamodb("deleteItem", table),
            arguments={"TableName": table, "Key": key_attr, "ConditionExpression": owner_cond,
                       "ExpressionAttributeValues": {":me": {"S": js.wrap(OWNER)}}},
            next=scope.fail_to, catch=x.catch(rel.on_failure, scope, to=release_failed_to),
        )
    else:  # a failed lock keeps the effects its run completed, for the rerun
        on_failure = ir.Task(
            rel.on_failure, x.span(rel_path), x.comment(rel_path, "lock: mark failed"),
            **svc.dynamodb("updateItem", table),
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


CONSTRUCT = Construct("lock", Lock, expand, entry=lambda c, in_lock: c.acquire, children=lambda c: [("body", c.body)])
