"""The rules run over every expanded state machine, each a diagnostic rather than a traceback when it crashes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.lint import graph, invariants, jsonata_rules

IRRule = Callable[[ir.StateMachineIR], Iterable[Diagnostic]]

IR_RULES: list[IRRule] = [
    graph.duplicate_states,
    graph.state_names,
    graph.dangling_transitions,
    graph.unreachable_states,
    graph.terminal_exists,
    graph.locks_released,
    graph.loops_bounded,
    invariants.leases,
    invariants.poll_budgets,
    invariants.untrusted_reads,
    invariants.effects_after_success,
    jsonata_rules.expressions,
]


def lint_ir(machine: ir.StateMachineIR) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for rule in IR_RULES:
        try:
            out.extend(rule(machine))
        except Exception as exc:  # a crashing rule is a diagnostic, never a traceback
            out.append(Diagnostic("E001", f"rule {rule.__name__} crashed: {type(exc).__name__}: {exc}",
                                  machine.origin))
    return out
