"""The ``check`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import StateName, Strict
from ndr_compiler.models.fields import CheckRule

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class Check(Strict):
    """Reject the event (the intake's reject path) unless every rule holds, e.g. against a loaded item."""

    name: StateName
    rules: list[CheckRule] = Field(min_length=1)


def expand(x: Expander, c: Check, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    rules = [
        ir.ChoiceRule(js.wrap(f"$not({js.inner(r.that)})"), x.reject_entry or scope.fail_to,
                      assign={"rejection": js.template(r.reason)}, origin=x.span((*path, "rules", i)))
        for i, r in enumerate(c.rules)
    ]
    return [ir.Choice(c.name, x.span(path), x.comment(path, "check: reject unless"), rules=rules,
                      default=nxt or scope.fail_to)]


CONSTRUCT = Construct("check", Check, expand, entry=lambda c, in_lock: c.name)
