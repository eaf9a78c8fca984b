"""Graph, lock and polling rules over the IR (E2xx, E3xx, E4xx)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic, did_you_mean

STATE_NAME_RE = re.compile(r"^[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]{1,80}$")


def graphs(machine: ir.StateMachineIR) -> Iterator[ir.Graph]:
    """The machine's graph and every Map item processor inside it."""
    stack = [machine.graph]
    while stack:
        g = stack.pop(0)
        yield g
        stack.extend(s.processor for s in g.states if isinstance(s, ir.Map) and s.processor)


def duplicate_states(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    seen: dict[str, ir.State] = {}
    for g in graphs(machine):
        for s in g.states:
            if s.name in seen:
                yield Diagnostic("E201", f"state name '{s.name}' is used twice (first at {seen[s.name].origin})",
                                 s.origin)
            else:
                seen[s.name] = s


def state_names(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        for s in g.states:
            if len(s.name) > 80:
                yield Diagnostic("E401", f"state name '{s.name[:40]}...' is {len(s.name)} characters; "
                                         "Step Functions allows 80", s.origin)
            elif not STATE_NAME_RE.match(s.name):
                yield Diagnostic("E401", f"state name '{s.name}' has characters Step Functions forbids "
                                         "(whitespace, brackets, wildcards, punctuation or control characters)",
                                 s.origin)


def dangling_transitions(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        names = {s.name for s in g.states}
        if g.start_at not in names:
            yield Diagnostic("E202", f"StartAt '{g.start_at}' names no state", machine.origin)
        for s in g.states:
            for target in ir.successors(s):
                if target not in names:
                    yield Diagnostic("E202", f"state '{s.name}' moves to '{target}', which is not a state of "
                                             f"this graph{did_you_mean(target, names)}", s.origin)


def _reachable(g: ir.Graph) -> set[str]:
    by_name = g.by_name()
    seen: set[str] = set()
    todo = [g.start_at]
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        todo.extend(ir.successors(by_name[name]))
    return seen


def unreachable_states(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        reach = _reachable(g)
        for s in g.states:
            if s.name not in reach:
                yield Diagnostic("E203", f"state '{s.name}' cannot be reached from '{g.start_at}'", s.origin)


def _terminal(s: ir.State) -> bool:
    return isinstance(s, ir.Succeed | ir.Fail) or s.end


def terminal_exists(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        if not any(_terminal(s) for s in g.states):
            yield Diagnostic("E204", "no state ends the execution (no Succeed, Fail or End)", machine.origin)


def locks_released(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    by_name = {s.name: s for g in graphs(machine) for s in g.states}
    for lock in machine.locks:
        body = set(lock.body)
        allowed = body | set(lock.releases)
        for name in lock.body:
            state = by_name.get(name)
            if state is None:
                continue
            if _terminal(state) and not (isinstance(state, ir.Fail) and state.hands_lock_over):
                yield Diagnostic("E301", f"state '{name}' ends the execution inside the lock taken at "
                                         f"'{lock.acquire}' without releasing it", state.origin)
            for target in ir.successors(state):
                if target not in allowed:
                    yield Diagnostic("E301", f"state '{name}' leaves the lock taken at '{lock.acquire}' for "
                                             f"'{target}' without passing {' or '.join(lock.releases)}",
                                     state.origin)


def _sccs(g: ir.Graph) -> list[list[str]]:
    """Tarjan's strongly connected components, in a deterministic order."""
    by_name = g.by_name()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in ir.successors(by_name[v]):
            if w not in by_name:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for s in g.states:
        if s.name not in index:
            visit(s.name)
    return out


def loops_bounded(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        by_name = g.by_name()
        order = {s.name: i for i, s in enumerate(g.states)}
        for comp in _sccs(g):
            members = set(comp)
            if len(comp) == 1 and comp[0] not in ir.successors(by_name[comp[0]]):
                continue
            bounded = any(
                isinstance(by_name[n], ir.Choice) and any(
                    r.bound is not None and r.next not in members for r in by_name[n].rules)  # type: ignore[union-attr]
                for n in comp
            )
            if bounded:
                continue
            cycle = sorted(comp, key=order.__getitem__)
            first = by_name[cycle[0]]
            yield Diagnostic("E302", "loop " + " --> ".join([*cycle, cycle[0]]) +
                             " has no bounded exit; use run_pipeline, whose polling stops after max_attempts",
                             first.origin)
