"""The ``start_workflow`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import CheckContext, Construct
from ndr_compiler.diagnostics import Diagnostic, did_you_mean
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import OWNER, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class StartWorkflow(Strict):
    """Run another state machine of this project synchronously (``startExecution.sync:2``)."""

    name: StateName
    state_machine: str
    input: dict[str, Any] = Field(default_factory=dict)
    into: Identifier | None = None


def expand(x: Expander, c: StartWorkflow, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    placeholder = svc.child_arn(c.state_machine)
    x.children.append(ir.PlaceholderRef(c.state_machine, c.name, x.span((*path, "state_machine"))))
    payload = js.template(dict(c.input))
    payload["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID"] = js.wrap(OWNER)
    state = ir.Task(
        c.name, x.span(path), x.comment(path, f"start_workflow {c.state_machine} (sync)"),
        **svc.start_execution_sync(c.state_machine),
        arguments={"StateMachineArn": placeholder, "Input": payload},
        assign={c.into: js.wrap("$states.result.Output")} if c.into else None,
        catch=x.catch(c.name, scope),
    )
    return [x.link(state, nxt)]


def check(c: StartWorkflow, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    """E502: the machine it starts is not defined (a machine that starts itself is a cycle: E206)."""
    if c.state_machine not in ctx.machines and c.state_machine not in ctx.broken_machines:
        yield Diagnostic("E502", f"state machine '{c.state_machine}' is not defined"
                         f"{did_you_mean(c.state_machine, ctx.machines)}", ctx.span((*path, "state_machine")))


CONSTRUCT = Construct("start_workflow", StartWorkflow, expand, entry=lambda c, in_lock: c.name, check=check)
