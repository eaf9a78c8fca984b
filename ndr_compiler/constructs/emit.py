"""The ``emit`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope, once_name
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Emit(Strict):
    """Put one event on the project's EventBridge bus."""

    name: StateName
    detail_type: str
    detail: dict[str, Any] = Field(default_factory=dict)


def expand(x: Expander, c: Emit, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    spec = x.project.spec
    detail = js.template(dict(c.detail))
    effects = f"{scope.lock}_effects" if scope.lock else None
    if scope.lock:  # one id per effect and key: consumers can drop a duplicate (see docs/reliability.md)
        detail["ndr_event_id"] = js.wrap(f"$hash('{c.name}#' & ${scope.lock}_key, 'SHA-256')")
    state = ir.Task(
        c.name, x.span(path), x.comment(path, f"emit {c.detail_type}"), **svc.put_events(spec.event_bus),
        arguments={"Entries": [{
            "EventBusName": spec.event_bus, "Source": spec.event_source, "DetailType": c.detail_type,
            "Detail": detail,
        }]},
        catch=x.catch(c.name, scope),
    )
    if not effects:
        return [x.link(state, nxt)]
    state.assign = {effects: js.wrap(f"$append(${effects}, [{js.literal(c.name)}])")}
    x.link(state, nxt)
    once = ir.Choice(
        once_name(c.name), x.span(path), x.comment(path, "emit: once (a rerun skips a done effect)"),
        rules=[ir.ChoiceRule(js.wrap(f"{js.literal(c.name)} in ${effects}"), nxt or scope.fail_to)],
        default=c.name,
    )
    return [once, state]


CONSTRUCT = Construct("emit", Emit, expand, entry=lambda c, in_lock: once_name(c.name) if in_lock else c.name)
