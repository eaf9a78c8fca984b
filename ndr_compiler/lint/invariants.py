"""Rules for the reliability invariants (E304-E307); ``docs/reliability.md`` says which test proves each.

* E304 a lock's lease is shorter than the machine's timeout: a stopped or slow execution's lock would be
  taken by the next one while it still runs;
* E305 a poll budget is shorter than the pipeline's own limits: the machine would give up on a pipeline that
  is still allowed to run;
* E306 untrusted input (``$msg``, the execution input) is evaluated where no Catch can hold it: a hostile
  event would crash the execution with an unnamed ``States.*`` error;
* E307 an effect runs after the success mark of the lock that guards it: if it fails, every rerun is
  suppressed as a duplicate and the effect never happens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.lint.graph import graphs
from ndr_compiler.lint.jsonata_rules import fields, strings

UNTRUSTED = re.compile(r"\$msg\b|\$states\.input\b")
EFFECTS = ("arn:aws:states:::events:putEvents", "arn:aws:states:::states:startExecution",
           "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution")


def leases(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    timeout = machine.timeout_seconds or 0
    for lock in machine.locks:
        if lock.lease_seconds < timeout:
            yield Diagnostic("E304", f"lock '{lock.acquire}' has a {lock.lease_seconds}s lease, shorter than the "
                                     f"machine's timeout_seconds ({timeout}s): a stopped or slow execution's lock "
                                     "could be taken while it still runs", lock.lease_origin or lock.origin)


def poll_budgets(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for poll in machine.polls:
        budget = poll.every_seconds * poll.max_attempts
        if poll.runtime_seconds is not None and budget < poll.runtime_seconds:
            yield Diagnostic("E305", f"'{poll.start}' polls ${{{poll.pipeline}}} for {budget}s "
                                     f"({poll.max_attempts} x {poll.every_seconds}s), less than the pipeline may run "
                                     f"on its own limits ({poll.runtime_seconds}s); drop max_attempts to derive it",
                             poll.origin)


def _held(state: ir.State) -> bool:
    return isinstance(state, ir.Task | ir.Map) and any("States.ALL" in c.errors for c in state.catch)


def untrusted_reads(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    """Only the machine's own graph: a Map iteration's states are held by the Map's Catch, when it has one."""

    def walk(graph: ir.Graph, held: bool, top: bool) -> Iterator[Diagnostic]:
        for state in graph.states:
            here = held or _held(state)
            for name, value in fields(state):
                if name.startswith("Catch."):
                    continue  # a Catch's own expressions run after the failure it handles
                for src in strings(value):
                    refs = UNTRUSTED.findall(src)
                    if not top:
                        refs = [r for r in refs if r == "$msg"]  # an item's $states.input is the Map's own data
                    if refs and not here:
                        yield Diagnostic("E306", f"state '{state.name}' {name} evaluates untrusted input "
                                                 f"({refs[0]}) where no Catch can hold an error: validate it in "
                                                 "parse_context and read $ctx", state.origin)
            if isinstance(state, ir.Map) and state.processor:
                yield from walk(state.processor, here, False)

    yield from walk(machine.graph, False, True)


def effects_after_success(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    by_name = {s.name: s for g in graphs(machine) for s in g.states}
    for lock in machine.locks:
        seen: set[str] = set()
        todo = list(ir.successors(by_name[lock.success_mark])) if lock.success_mark in by_name else []
        while todo:
            name = todo.pop()
            if name in seen or name not in by_name:
                continue
            seen.add(name)
            state = by_name[name]
            if isinstance(state, ir.Task) and state.resource.startswith(EFFECTS):
                yield Diagnostic("E307", f"effect '{name}' runs after '{lock.success_mark}' marks the work done: if it "
                                         "fails, a rerun is suppressed as a duplicate and it never happens; move it "
                                         "into the lock's body", state.origin)
            todo.extend(ir.successors(state))
