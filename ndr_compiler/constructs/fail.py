"""The ``fail`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Fail(Strict):
    name: StateName
    error: str = "NDR.Failed"
    cause: Expr | None = None


def expand(x: Expander, c: Fail, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    return [ir.Fail(c.name, x.span(path), x.comment(path, "fail"), error=c.error,
                    cause=js.template(c.cause) if c.cause else None)]


CONSTRUCT = Construct("fail", Fail, expand, entry=lambda c, in_lock: c.name)
