"""The ``resolve`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import CheckContext, Construct
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import RESERVED_VARIABLES, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Resolve(Strict):
    """Compute ``$params``: project defaults, then ``$project`` values, then these expressions in order."""

    name: StateName
    base: list[Identifier] = Field(default_factory=list, description="variables merged over the defaults")
    values: dict[Identifier, Expr] = Field(default_factory=dict)


def expand(x: Expander, c: Resolve, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    layers = [js.literal(dict(sorted(x.project.spec.defaults.items())))] + [f"${b}" for b in c.base]
    bindings = [("base", f"$merge([{', '.join(layers)}])")]
    bindings += [(k, js.inner(v)) for k, v in c.values.items()]
    obj = "{" + ", ".join(f'"{k}": ${k}' for k in c.values) + "}"
    src = js.block(bindings, f"$merge([$base, {obj}])")
    state = ir.Pass(c.name, x.span(path), x.comment(path, "resolve runtime parameters"),
                    assign={"params": js.wrap(src)})
    return [x.link(state, nxt)]


def check(c: Resolve, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    for name in c.values:
        if name in RESERVED_VARIABLES | {"base"}:
            yield Diagnostic("E303", f"value '{name}' would shadow the variable '${name}'",
                             ctx.span((*path, "values", name)))


def binds(body: dict[str, Any]) -> set[str]:
    return {"base", *(body.get("values") or {})}


CONSTRUCT = Construct("resolve", Resolve, expand, entry=lambda c, in_lock: c.name, check=check, binds=binds)
