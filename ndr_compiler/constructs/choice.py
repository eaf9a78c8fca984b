"""The ``choice`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Rule(Strict):
    when: Expr
    next: StateName


class Choice(Strict):
    name: StateName
    rules: list[Rule] = Field(min_length=1)
    default: StateName


def expand(x: Expander, c: Choice, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    rules = [ir.ChoiceRule(js.template(r.when), r.next, origin=x.span((*path, "rules", i)))
             for i, r in enumerate(c.rules)]
    return [ir.Choice(c.name, x.span(path), x.comment(path, "choice"), rules=rules, default=c.default)]


CONSTRUCT = Construct("choice", Choice, expand, entry=lambda c, in_lock: c.name)
