"""IR -> Amazon States Language (JSONata mode)."""

from __future__ import annotations

from typing import Any

from ndr_compiler import ir


def _catchers(catch: list[ir.Catcher]) -> list[dict[str, Any]]:
    out = []
    for c in catch:
        d: dict[str, Any] = {"ErrorEquals": list(c.errors), "Next": c.next}
        if c.assign is not None:
            d["Assign"] = c.assign
        if c.output is not None:
            d["Output"] = c.output
        out.append(d)
    return out


def render_state(state: ir.State) -> dict[str, Any]:
    d: dict[str, Any] = {"Type": state.kind}
    if state.comment:
        d["Comment"] = state.comment
    if isinstance(state, ir.Task):
        d["Resource"] = state.resource
        if state.arguments is not None:
            d["Arguments"] = state.arguments
        if state.timeout_seconds:
            d["TimeoutSeconds"] = state.timeout_seconds
    elif isinstance(state, ir.Map):
        d["Items"] = state.items
        if state.item_selector is not None:
            d["ItemSelector"] = state.item_selector
        assert state.processor is not None
        d["ItemProcessor"] = {
            "ProcessorConfig": {"Mode": "INLINE"},
            **render_graph(state.processor),
        }
        d["MaxConcurrency"] = state.max_concurrency
    elif isinstance(state, ir.Choice):
        rules = []
        for r in state.rules:
            rd: dict[str, Any] = {"Condition": r.condition, "Next": r.next}
            if r.assign is not None:
                rd["Assign"] = r.assign
            rules.append(rd)
        d["Choices"] = rules
        if state.default:
            d["Default"] = state.default
    elif isinstance(state, ir.Wait):
        d["Seconds"] = state.seconds
    elif isinstance(state, ir.Fail):
        if state.error:
            d["Error"] = state.error
        if state.cause:
            d["Cause"] = state.cause
    if state.assign is not None and not isinstance(state, ir.Fail):
        d["Assign"] = state.assign
    if state.output is not None and not isinstance(state, ir.Fail):
        d["Output"] = state.output
    if isinstance(state, ir.Task) and state.retry:
        d["Retry"] = [{"ErrorEquals": list(r.errors), "IntervalSeconds": r.interval_seconds,
                       "MaxAttempts": r.max_attempts, "BackoffRate": r.backoff_rate} for r in state.retry]
    if isinstance(state, ir.Task | ir.Map) and state.catch:
        d["Catch"] = _catchers(state.catch)
    if not isinstance(state, ir.Choice | ir.Succeed | ir.Fail):
        if state.end:
            d["End"] = True
        elif state.next:
            d["Next"] = state.next
    return d


def render_graph(graph: ir.Graph) -> dict[str, Any]:
    return {"StartAt": graph.start_at, "States": {s.name: render_state(s) for s in graph.states}}


def render_state_machine(machine: ir.StateMachineIR) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if machine.comment:
        out["Comment"] = machine.comment
    out["QueryLanguage"] = "JSONata"
    out.update(render_graph(machine.graph))
    if machine.timeout_seconds:
        out["TimeoutSeconds"] = machine.timeout_seconds
    return out
