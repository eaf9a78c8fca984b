"""Expand a StateMachine spec into the IR: the Expander walks the steps and hands each to its construct
(``ndr_compiler.constructs``, one module per construct) with the helpers they share (the failure path in
scope, links, spans, comments). The constructs' invariants (every Task caught, locks released, polls bounded,
effects once) are explained in ``docs/design/expand.md``; ``docs/reliability.md`` names the tests that prove
each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ndr_compiler import ir
from ndr_compiler.constructs import CONSTRUCTS, kind
from ndr_compiler.diagnostics import Span
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import Document, PathKey
from ndr_compiler.models import state_machine as m
from ndr_compiler.models.project import Project


@dataclass
class Expander:
    doc: Document
    sm: m.StateMachine
    project: Project
    #: pipeline runtimes by placeholder name, for poll budgets (absent: the project's polling default)
    runtimes: dict[str, int] = field(default_factory=dict)
    locks: list[ir.LockRegion] = field(default_factory=list)
    placeholders: list[ir.PlaceholderRef] = field(default_factory=list)
    children: list[ir.PlaceholderRef] = field(default_factory=list)
    polls: list[ir.PollLoop] = field(default_factory=list)
    intake: ir.Intake | None = None
    reject_entry: str | None = None

    # -- helpers -------------------------------------------------------------------------------
    def span(self, path: PathKey) -> Span:
        return self.doc.span(path)

    def comment(self, path: PathKey, what: str) -> str:
        s = self.span(path)
        return f"{s.file}:{s.line} {what}"

    @property
    def timeout(self) -> int:
        return self.sm.spec.timeout_seconds

    @property
    def lease(self) -> int:
        """The machine's timeout, then the janitor's longest wait for a pipeline to stop, then the margin."""
        spec = self.project.spec
        return self.timeout + spec.polling.stop_attempts * spec.polling.every_seconds + spec.locks.margin_seconds

    def catch(self, state: str, scope: Scope, to: str | None = None) -> list[ir.Catcher]:
        error, cause = js.CAUGHT_FAILURE
        return [
            ir.Catcher(
                errors=["States.ALL"],
                next=to or scope.fail_to,
                assign={scope.failure_var: js.failure_record(state, error, cause)},
            )
        ]

    def failure_assign(self, scope: Scope, state: str, error: str, cause_src: str) -> dict[str, Any]:
        return {scope.failure_var: js.failure_record(state, error, js.wrap(cause_src))}

    def index_suffix(self, scope: Scope) -> str:
        """JSONata appended to an idempotency token inside a Map (one token per item)."""
        return " & '/' & $string($item_index)" if scope.in_map else ""

    # -- entry names ---------------------------------------------------------------------------
    @staticmethod
    def entry(step: Any) -> str:
        key = kind(step)
        return CONSTRUCTS[key].entry(getattr(step, key), False)

    # -- sequences -----------------------------------------------------------------------------
    def steps(self, steps: list[Any], path: PathKey, next_after: str | None, scope: Scope) -> list[ir.State]:
        out: list[ir.State] = []
        for i, step in enumerate(steps):
            nxt = self.entry_in(steps[i + 1], scope) if i + 1 < len(steps) else next_after
            key = kind(step)
            out.extend(CONSTRUCTS[key].expand(self, getattr(step, key), (*path, i, key), nxt, scope))
        return out

    def entry_in(self, step: Any, scope: Scope) -> str:
        """A step's first state where it sits (an emit inside a lock starts at its once-only check)."""
        key = kind(step)
        return CONSTRUCTS[key].entry(getattr(step, key), scope.lock is not None)

    def link(self, state: ir.State, nxt: str | None) -> ir.State:
        if nxt is None:
            state.end = True
        else:
            state.next = nxt
        return state

















def expand_state_machine(doc: Document, sm: m.StateMachine, project: Project,
                         runtimes: dict[str, int] | None = None) -> ir.StateMachineIR:
    x = Expander(doc, sm, project, dict(runtimes or {}))
    spec = sm.spec
    fail = spec.on_failure
    states = x.steps(spec.steps, ("spec", "steps"), None, Scope(fail_to=fail.name))
    fail_path = ("spec", "on_failure")
    workflow_failed = ir.Fail(
        fail.name, doc.span(fail_path), x.comment(fail_path, "workflow failure"), error=fail.error,
        cause=js.wrap("$failure ? $string($failure) : 'unknown failure'"),
    )
    referenced = {t for g in _all_graphs(states) for s in g for t in ir.successors(s)}
    # The workflow's failure sits before a trailing Succeed, else last (the seed's declared order).
    if fail.name not in referenced:
        pass  # nothing can fail: no failure state to render
    elif states and isinstance(states[-1], ir.Succeed) and kind(spec.steps[-1]) == "succeed":
        states.insert(len(states) - 1, workflow_failed)
    else:
        states.append(workflow_failed)
    graph = ir.Graph(start_at=x.entry(spec.steps[0]), states=states)
    return ir.StateMachineIR(
        name=sm.metadata.name, file=doc.file, origin=doc.span(()), graph=graph,
        comment=spec.comment or sm.metadata.description, timeout_seconds=spec.timeout_seconds,
        locks=x.locks, placeholders=x.placeholders, child_state_machines=x.children, polls=x.polls,
        intake=x.intake,
    )


def _all_graphs(states: list[ir.State]) -> list[list[ir.State]]:
    out = [states]
    for s in states:
        if isinstance(s, ir.Map) and s.processor:
            out.extend(_all_graphs(s.processor.states))
    return out
