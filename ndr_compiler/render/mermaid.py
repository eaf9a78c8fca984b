"""IR -> Mermaid flowcharts, so that pull requests show the shape of each state machine and pipeline."""

from __future__ import annotations

from ndr_compiler import ir


def _label(text: str) -> str:
    return text.replace("\"", "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _node(node_id: str, state: ir.State) -> str:
    text = f"{_label(state.name)}<br/><i>{state.kind}</i>"
    if isinstance(state, ir.Choice):
        return f'{node_id}{{"{text}"}}'
    if isinstance(state, ir.Succeed | ir.Fail):
        return f'{node_id}(["{text}"])'
    if isinstance(state, ir.Wait):
        return f'{node_id}[/"{text}"/]'
    return f'{node_id}["{text}"]'


def _graph(graph: ir.Graph, prefix: str, lines: list[str], indent: str) -> None:
    ids = {s.name: f"{prefix}{i}" for i, s in enumerate(graph.states)}
    for s in graph.states:
        if isinstance(s, ir.Map) and s.processor:
            lines.append(f'{indent}subgraph {ids[s.name]}_items ["{_label(s.name)}: each item"]')
            _graph(s.processor, f"{ids[s.name]}_", lines, indent + "  ")
            lines.append(f"{indent}end")
        lines.append(f"{indent}{_node(ids[s.name], s)}")
    for s in graph.states:
        src = ids[s.name]
        if isinstance(s, ir.Map) and s.processor:
            lines.append(f"{indent}{src} --> {src}_items")
        if isinstance(s, ir.Choice):
            for i, r in enumerate(s.rules):
                if r.next in ids:
                    label = f"bounded: {r.bound}" if r.bound is not None else f"rule {i + 1}"
                    lines.append(f'{indent}{src} -- "{label}" --> {ids[r.next]}')
            if s.default in ids:
                lines.append(f'{indent}{src} -- "default" --> {ids[s.default]}')
        elif s.next in ids:
            lines.append(f"{indent}{src} --> {ids[s.next]}")
        for c in getattr(s, "catch", []):
            if c.next in ids:
                lines.append(f'{indent}{src} -. "{_label(", ".join(c.errors))}" .-> {ids[c.next]}')


def state_machine_diagram(machine: ir.StateMachineIR) -> str:
    lines = [f"# {machine.name}", "", f"Generated from `{machine.file}`; do not edit.", "", "```mermaid",
             "flowchart TD"]
    _graph(machine.graph, "s", lines, "  ")
    lines += ["```", ""]
    return "\n".join(lines)


def pipeline_diagram(p: ir.PipelineIR) -> str:
    """One node per spec step; the steps of a fused Processing job sit in a subgraph named after the job."""
    lines = [f"# {p.name}", "", f"Generated from `{p.file}`; do not edit. Serves: "
             + (", ".join(f"`${{{ph}}}`" for ph in p.placeholders) or "no state machine placeholder") + ".",
             "", "```mermaid", "flowchart LR"]
    ids: dict[str, str] = {}
    n = 0
    for j, s in enumerate(p.steps):
        kind = "Spark" if s.processor.spark else "Processing"
        indent = "  "
        if s.fused:
            lines.append(f'  subgraph j{j} ["{_label(s.name)}: one {kind} job"]')
            indent = "    "
        for c in s.commands:
            ids[c.name] = f"p{n}"
            n += 1
            lines.append(f'{indent}{ids[c.name]}["{_label(c.name)}<br/><i>{kind}: {_label(c.module)}</i>"]')
        if s.fused:
            lines.append("  end")
    for s in p.steps:
        commands = s.commands
        for dep in s.depends_on:
            last = _last_command(p, dep)
            if last in ids:
                lines.append(f"  {ids[last]} --> {ids[commands[0].name]}")
        for a, b in zip(commands, commands[1:], strict=False):
            lines.append(f"  {ids[a.name]} --> {ids[b.name]}")
    lines += ["```", ""]
    return "\n".join(lines)


def _last_command(p: ir.PipelineIR, step: str) -> str:
    """The spec step a dependency on Processing step ``step`` waits for: a fused job's last command."""
    for s in p.steps:
        if s.name == step:
            return s.commands[-1].name
    return step
