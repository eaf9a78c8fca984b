"""The ``load`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import RETRY, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Load(Strict):
    """A DynamoDB getItem into a variable (a flat item becomes a plain object); with ``index``, a Query of
    that index by its one key, into a list of items."""

    name: StateName
    table: Literal["routing", "parameters", "locks"]
    key: dict[str, Expr]
    into: Identifier
    required: bool = False
    index: str | None = None


def expand(x: Expander, c: Load, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    table = getattr(x.project.spec.tables, c.table)
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
        service = svc.dynamodb_query(table, c.index)
    else:
        key = {k: {"S": js.wrap(f"$string({js.inner(v)})")} for k, v in c.key.items()}
        arguments = {"TableName": table, "Key": key, "ConsistentRead": True}
        item = "$states.result.Item"
        missing = f"$error('no item in table {table} for key ' & {key_text})"
        value = f"$exists({item}) ? {js.unmarshal_item(item)} : " + (missing if c.required else "{}")
        service = svc.dynamodb("getItem", table)
    state = ir.Task(
        c.name, x.span(path), x.comment(path, f"load {c.table}"), **service,
        arguments=arguments, assign={c.into: js.wrap(value)}, catch=x.catch(c.name, scope), retry=RETRY,
    )
    return [x.link(state, nxt)]


CONSTRUCT = Construct("load", Load, expand, entry=lambda c, in_lock: c.name)
