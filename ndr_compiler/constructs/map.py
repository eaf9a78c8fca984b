"""The ``map`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander
    from ndr_compiler.models.state_machine import Step


class ItemEnd(Strict):
    name: StateName
    output: dict[str, Any] = Field(default_factory=dict)


class MapItems(Strict):
    """Run ``steps`` once per item of ``items`` (the item is ``$item``); results collect into ``into``.

    An item whose ``valid`` is false ends at once in ``item_failed`` with its ``reason``; every item's end
    (succeeded, failed or skipped) is one result, so one item's failure never stops the others.
    """

    name: StateName
    item_start: StateName = Field(description="the Choice each item starts at (binds $item, checks validity)")
    items: Expr
    max_concurrency: Annotated[int, Field(ge=0, le=1000)] = 0
    steps: list[Step]
    item_succeeded: ItemEnd
    item_failed: ItemEnd
    into: Identifier


def expand(x: Expander, c: MapItems, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    inner_scope = Scope(fail_to=c.item_failed.name, failure_var="item_failure", in_map=True)
    inner = x.steps(c.steps, (*path, "steps"), c.item_succeeded.name, inner_scope)
    ok_path, ko_path = (*path, "item_succeeded"), (*path, "item_failed")
    item = {"item": js.wrap("$states.input.value"), "item_index": js.wrap("$states.input.index")}
    start = ir.Choice(  # rule-level Assigns only: a state-level one would apply to every branch
        c.item_start, x.span(path), x.comment(path, "map: an item starts (invalid items fail)"),
        rules=[
            ir.ChoiceRule(js.wrap("$states.input.value.valid = false"), c.item_failed.name,
                          assign={**item, "item_failure": js.failure_record(
                              c.item_start, "NDR.InvalidItem", js.wrap("$string($states.input.value.reason)"))}),
            ir.ChoiceRule(js.wrap("true"), x.entry_in(c.steps[0], inner_scope),
                          assign={**item, "item_failure": None}),
        ],
    )
    succeeded = ir.Pass(
        c.item_succeeded.name, x.span(ok_path), x.comment(ok_path, "map: item succeeded"),
        output={"status": "Succeeded", "item": js.wrap("$item"), **js.template(dict(c.item_succeeded.output))},
        end=True,
    )
    failed = ir.Pass(
        c.item_failed.name, x.span(ko_path), x.comment(ko_path, "map: item failed"),
        output={"status": "Failed", "item": js.wrap("$item"), "failure": js.wrap("$item_failure"),
                **js.template(dict(c.item_failed.output))},
        end=True,
    )
    graph = ir.Graph(start_at=start.name, states=[start, *inner, succeeded, failed])
    state = ir.Map(
        c.name, x.span(path), x.comment(path, "map"), items=js.template(c.items),
        item_selector={"index": js.wrap("$states.context.Map.Item.Index"),
                       "value": js.wrap("$states.context.Map.Item.Value")},
        max_concurrency=c.max_concurrency, processor=graph,
        assign={c.into: js.wrap("$states.result")}, catch=x.catch(c.name, scope),
    )
    return [x.link(state, nxt)]


CONSTRUCT = Construct("map", MapItems, expand, entry=lambda c, in_lock: c.name, children=lambda c: [("steps", c.steps)])
