"""Cross-spec rules (E5xx) and spec-level variable rules (E303), over validated models; each construct's own
checks are its registry ``check``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ndr_compiler.constructs import CONSTRUCTS, CheckContext, walk
from ndr_compiler.diagnostics import Diagnostic, did_you_mean
from ndr_compiler.expand.common import RESERVED_VARIABLES
from ndr_compiler.specs import Spec, SpecSet


def state_machine_refs(specs: SpecSet, sm: Spec) -> Iterator[Diagnostic]:
    projects = specs.projects()
    machines = {s.name for s in specs.state_machines()}
    spec = sm.model.spec
    if spec.project not in projects and not specs.is_broken("Project", spec.project):
        known = ", ".join(sorted(projects)) or "none"
        yield Diagnostic("E501", f"project '{spec.project}' is not defined (known: {known})"
                         f"{did_you_mean(spec.project, projects)}", sm.doc.span(("spec", "project")))
    broken = frozenset(name for kind, name, _ in specs.broken if kind == "StateMachine")
    context = CheckContext(sm.name, frozenset(machines), sm.doc.span, broken)
    for kind, body, path in walk(spec.steps, ("spec", "steps")):
        for attr in ("into",):
            var = getattr(body, attr, None)
            if isinstance(var, str) and var in RESERVED_VARIABLES:
                yield Diagnostic("E303", f"variable '${var}' is owned by the constructs; choose another name",
                                 sm.doc.span((*path, attr)))
        yield from CONSTRUCTS[kind].check(body, path, context)


def find_cycle(children: dict[str, list[str]]) -> list[str] | None:
    """The first cycle (``[a, b, a]``) of a name -> children graph, visiting names in sorted order; iterative, so
    any depth is safe."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in sorted(children):
        if root in state:
            continue
        path: list[str] = [root]
        todo: list[list[str]] = [sorted(set(children.get(root, ())))]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop(0)
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(sorted(set(children.get(nxt, ()))))
    return None


def workflow_cycles(specs: SpecSet) -> Iterator[Diagnostic]:
    """E206: state machines that start each other (start_workflow) would nest executions without end; one
    diagnostic per cycle, at the start_workflow of its first machine."""
    starts: dict[str, dict[str, Any]] = {}  # machine -> child -> span of the start_workflow that names it
    for sm in specs.state_machines():
        own = starts.setdefault(sm.name, {})
        for kind, body, path in walk(sm.model.spec.steps, ("spec", "steps")):
            if kind == "start_workflow":
                own.setdefault(body.state_machine, sm.doc.span((*path, "state_machine")))
    while (cycle := find_cycle({m: list(c) for m, c in starts.items()})) is not None:
        yield Diagnostic("E206", "state machines start each other without end: " + " --> ".join(cycle),
                         starts[cycle[0]][cycle[1]])
        del starts[cycle[0]][cycle[1]]  # the next cycle, if any, is another one


PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")
#: values every deployment gives, whatever the environment
DEPLOY_VALUES = ("Region", "AccountId", "SageMakerPipelineRoleArn")


def _placeholder_uses(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key == "pipeline" and path and path[-1] == "run_pipeline"):  # E503's: served by a Pipeline spec
                yield from _placeholder_uses(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _placeholder_uses(item, (*path, i))
    elif isinstance(value, str):
        for name in PLACEHOLDER.findall(value):
            yield name, path


def placeholder_values(specs: SpecSet) -> Iterator[Diagnostic]:
    """E512: a ``${Name}`` in a spec that an Environment spec of its project gives no value (deploy would stop
    there), with the closest name it does give. Without an Environment spec, nothing is known to check."""
    machines = [s.name for s in specs.state_machines()]
    known_everywhere = {*DEPLOY_VALUES, *(ph for p in specs.of_kind("Pipeline") for ph in p.model.spec.placeholders),
                        *(f"StateMachineArn_{m}" for m in machines), *(f"StateMachineName_{m}" for m in machines)}
    envs = sorted(specs.of_kind("Environment"), key=lambda s: s.name)
    for spec in sorted(specs.specs, key=lambda s: (s.doc.file, s.name)):
        if spec.model.kind == "Project":
            project = spec.name
        elif spec.model.kind in ("StateMachine", "Pipeline"):
            project = spec.model.spec.project
        else:
            continue
        known = {e.name: known_everywhere | set(e.model.spec.values) for e in envs if e.model.spec.project == project}
        for name, path in _placeholder_uses(spec.doc.data, ()):
            lacking = [env for env, names in known.items() if name not in names]
            if lacking:
                which = ", ".join(f"'{e}'" for e in lacking)
                hint = did_you_mean(name, set.union(*(known[e] for e in lacking)))
                yield Diagnostic("E512", f"${{{name}}} has no value in environment {which} (spec.values){hint}",
                                 spec.doc.span(path))
