"""The ``succeed`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import StateName

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


def expand(x: Expander, c: str, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    return [ir.Succeed(c, x.span(path), x.comment(path, "succeed"))]


CONSTRUCT = Construct("succeed", StateName, expand, entry=lambda c, in_lock: c)
