"""The pipeline of layers: load -> models -> lint -> expand -> render -> (emit by the caller)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.emit import Artifact, to_json
from ndr_compiler.expand.state_machine import expand_state_machine
from ndr_compiler.lint import lint_ir
from ndr_compiler.lint.refs import state_machine_refs
from ndr_compiler.render.asl import render_state_machine
from ndr_compiler.specs import SpecSet, load_specs

MAX_DEFINITION_BYTES = 1_048_576


@dataclass
class Compilation:
    specs: SpecSet
    machines: list[ir.StateMachineIR] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def compile_specs(paths: Iterable[Path]) -> Compilation:
    specs, diags = load_specs(list(paths))
    result = Compilation(specs, diagnostics=list(diags))
    projects = specs.projects()
    for sm in specs.state_machines():
        ref_diags = list(state_machine_refs(specs, sm))
        result.diagnostics.extend(ref_diags)
        project = projects.get(sm.model.spec.project)
        if project is None or ref_diags:
            continue
        machine = expand_state_machine(sm.doc, sm.model, project.model)
        ir_diags = lint_ir(machine)
        result.diagnostics.extend(ir_diags)
        result.machines.append(machine)
        if ir_diags:
            continue
        text = to_json(render_state_machine(machine))
        if len(text.encode()) > MAX_DEFINITION_BYTES:
            result.diagnostics.append(Diagnostic(
                "E402", f"definition of '{machine.name}' is {len(text.encode())} bytes; the limit is "
                        f"{MAX_DEFINITION_BYTES}", machine.origin))
            continue
        result.artifacts.append(Artifact(f"state_machines/{machine.name}.asl.json", text))
    result.diagnostics = sorted(set(result.diagnostics), key=Diagnostic.sort_key)
    return result
