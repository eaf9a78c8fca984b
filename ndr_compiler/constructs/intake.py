"""The ``intake`` construct: the opening every machine shares, ``normalize`` then ``parse_context``, as one step.

It takes the fields of ``parse_context`` (whose state name defaults to ``ParseIncomingProjectContext``) and a
``normalize`` (default ``NormalizeIncomingMessage``); it expands to exactly what the two steps would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs import normalize, parse_context
from ndr_compiler.constructs.normalize import Normalize
from ndr_compiler.constructs.registry import CheckContext, Construct
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import StateName
from ndr_compiler.models.fields import field_names

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Intake(parse_context.ParseContext):
    """Unwrap the inbound message (``normalize``), then the typed intake (``parse_context``) in one step."""

    name: StateName = "ParseIncomingProjectContext"
    normalize: Normalize = Field(default=Normalize(name="NormalizeIncomingMessage"),
                                 description="the unwrapping step's states")


def expand(x: Expander, c: Intake, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    return [*normalize.expand(x, c.normalize, (*path, "normalize"), c.name, scope),
            *parse_context.expand(x, c, path, nxt, scope)]


def check(c: Intake, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    return parse_context.check(c, path, ctx)


def binds(body: dict[str, Any]) -> set[str]:
    return field_names(body.get("fields"))


CONSTRUCT = Construct("intake", Intake, expand, entry=lambda c, in_lock: c.normalize.name, check=check, binds=binds)
