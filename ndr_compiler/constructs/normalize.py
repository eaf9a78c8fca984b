"""The ``normalize`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Normalize(Strict):
    """Unwrap the inbound payload (EventBridge event, SQS records, SNS envelope, JSON string) into ``$msg``."""

    name: StateName
    unwrap: StateName = Field(default="UnwrapIncomingMessage", description="the state inside that unwraps")


def expand(x: Expander, c: Normalize, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    # A Pass state cannot catch, and $parse of malformed text raises: the unwrapping runs as the one
    # iteration of an inline Map, whose Catch turns unparseable input into $msg = null (rejected later).
    unwrap = ir.Pass(c.unwrap, x.span(path), x.comment(path, "normalize: unwrap"),
                     output=js.wrap(js.NORMALIZE), end=True)
    assign: dict[str, Any] = {"msg": js.wrap("$states.result[0]")}
    on_error: dict[str, Any] = {"msg": None}
    if not scope.in_map:
        assign["failure"] = on_error["failure"] = None
        assign["rejection"] = on_error["rejection"] = None
    state = ir.Map(
        c.name, x.span(path), x.comment(path, "normalize"),
        items=js.wrap('[{"payload": $states.input}]'), max_concurrency=1,
        processor=ir.Graph(start_at=unwrap.name, states=[unwrap]), assign=assign,
        catch=[ir.Catcher(["States.ALL"], nxt or scope.fail_to, assign=on_error)],
    )
    return [x.link(state, nxt)]


CONSTRUCT = Construct("normalize", Normalize, expand, entry=lambda c, in_lock: c.name)
