"""The pipeline of layers: load -> models -> lint -> expand -> render -> (emit by the caller)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.emit import Artifact, to_json
from ndr_compiler.expand.janitor import expand_janitor
from ndr_compiler.expand.pipeline import default_pipeline_name, expand_pipeline, runtime_seconds
from ndr_compiler.expand.state_machine import expand_state_machine
from ndr_compiler.lint.environments import cadence_rules, environment_rules
from ndr_compiler.lint.jsonata_rules import spec_expressions, spec_variables
from ndr_compiler.lint.pipelines import duplicate_placeholders, pipeline_spec_rules, start_rules
from ndr_compiler.lint.processing import project_rules
from ndr_compiler.lint.refs import placeholder_values, state_machine_refs, workflow_cycles
from ndr_compiler.lint.rules import lint_ir
from ndr_compiler.specs import Spec, SpecSet, load_specs

MAX_DEFINITION_BYTES = 1_048_576  # Step Functions and SageMaker pipeline definitions alike


@dataclass
class Compilation:
    specs: SpecSet
    machines: list[ir.StateMachineIR] = field(default_factory=list)
    pipelines: dict[str, ir.PipelineIR] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def _size_check(code: str, text: str, what: str, origin: ir.Span) -> Diagnostic | None:
    size = len(text.encode())
    if size > MAX_DEFINITION_BYTES:
        return Diagnostic(code, f"definition of {what} is {size} bytes; the limit is {MAX_DEFINITION_BYTES}", origin)
    return None


def _add_machine(result: Compilation, machine: ir.StateMachineIR, diags: list[Diagnostic], render: bool) -> None:
    result.diagnostics.extend(diags)
    result.machines.append(machine)
    if diags or not render:
        return
    from ndr_compiler.render.asl import render_state_machine  # the lint path (render=False) never imports render
    from ndr_compiler.render.contract_schema import contract_schema
    from ndr_compiler.render.iam import state_machine_policy
    from ndr_compiler.render.mermaid import state_machine_diagram

    try:
        text = to_json(render_state_machine(machine))
    except Exception as exc:  # lint rules catch every user mistake: a bug of ours, still at its spec
        result.diagnostics.append(Diagnostic(
            "E001", f"rendering state machine '{machine.name}' crashed: {type(exc).__name__}: {exc}", machine.origin))
        return
    too_big = _size_check("E402", text, f"state machine '{machine.name}'", machine.origin)
    if too_big:
        result.diagnostics.append(too_big)
        return
    result.artifacts.append(Artifact(f"state_machines/{machine.name}.asl.json", text))
    result.artifacts.append(Artifact(f"diagrams/{machine.name}.md", state_machine_diagram(machine)))
    result.artifacts.append(Artifact(f"iam/{machine.name}.json", to_json(state_machine_policy(machine))))
    if machine.intake is not None:
        result.artifacts.append(Artifact(f"schema/events/{machine.name}.schema.json",
                                         to_json(contract_schema(machine))))


def compile_specs(paths: Iterable[Path], render: bool = True) -> Compilation:
    """Load, check and expand every spec; with ``render``, also build the artifacts of ``generated/``.

    ``render=False`` is the lint path: it never imports the SageMaker SDK. Never raises on bad input: a
    crash inside a layer is reported as ``E001`` at the spec being processed.
    """
    try:
        return _compile(list(paths), render)
    except Exception as exc:
        specs = SpecSet()
        where = ir.Span(", ".join(str(p) for p in paths))
        return Compilation(specs, diagnostics=[Diagnostic("E001", f"compiler crashed: {type(exc).__name__}: {exc}",
                                                          where)])


def _compile(paths: list[Path], render: bool) -> Compilation:
    specs, diags = load_specs(list(paths))
    result = Compilation(specs, diagnostics=list(diags))
    projects = specs.projects()

    for project in projects.values():
        result.diagnostics.extend(project_rules(project))
    pipeline_specs = sorted(specs.of_kind("Pipeline"), key=lambda s: s.name)
    result.diagnostics.extend(duplicate_placeholders(pipeline_specs))
    for p in pipeline_specs:
        try:
            p_diags = list(pipeline_spec_rules(specs, p))
            result.diagnostics.extend(p_diags)
            project = projects.get(p.model.spec.project)  # absent: reported, here or where it fails to load
            if project is not None and not any(d.severity == "error" for d in p_diags):
                result.pipelines[p.name] = expand_pipeline(p.doc, p.model, project.model)
        except Exception as exc:
            result.diagnostics.append(Diagnostic("E001", f"pipeline checks crashed: {type(exc).__name__}: {exc}",
                                                 p.doc.span()))

    result.diagnostics.extend(workflow_cycles(specs))
    result.diagnostics.extend(placeholder_values(specs))
    result.diagnostics.extend(environment_rules(specs))
    janitors: dict[str, Spec] = {}
    machine_projects: dict[str, list[str]] = {}
    for sm in specs.state_machines():
        ref_diags = list(state_machine_refs(specs, sm)) + list(spec_expressions(sm.doc))
        result.diagnostics.extend(ref_diags)
        project = projects.get(sm.model.spec.project)
        if project is None or ref_diags:
            continue
        provisioning = project.model.spec.polling.provisioning_seconds
        runtimes = {ph: runtime_seconds(p, provisioning) for p in result.pipelines.values() for ph in p.placeholders}
        try:
            machine = expand_state_machine(sm.doc, sm.model, project.model, runtimes)
            ir_diags = (lint_ir(machine) + list(start_rules(specs, machine, result.pipelines))
                        + list(spec_variables(sm.doc, machine)))
        except Exception as exc:
            result.diagnostics.append(Diagnostic("E001", f"expansion crashed: {type(exc).__name__}: {exc}",
                                                 sm.doc.span()))
            continue
        if machine.locks or machine.polls:
            janitors[project.name] = project
            machine_projects.setdefault(project.name, []).append(machine.name)
        _add_machine(result, machine, ir_diags, render)
    for project in janitors.values():  # one janitor per project whose machines hold locks or run pipelines
        started = {p.name: p for m in result.machines if m.name in machine_projects.get(project.name, ())
                   for p in m.placeholders}
        machine = expand_janitor(project.model, project.doc.file, project.doc.span(), sorted(started))
        machine.placeholders = [started[n] for n in sorted(started)]  # the pipelines it may have to stop
        _add_machine(result, machine, lint_ir(machine), render)
    result.diagnostics.extend(cadence_rules(specs, result.machines, result.pipelines))

    if render:
        from ndr_compiler.render.iam import pipelines_policy
        from ndr_compiler.render.mermaid import pipeline_diagram
        from ndr_compiler.render.sagemaker_pipeline import render_pipeline
        from ndr_compiler.render.schema import spec_schema
        from ndr_jobs.interface.entrypoints import ENTRYPOINTS

        result.artifacts.append(Artifact("schema/ndr-spec.schema.json", to_json(spec_schema())))
    if render and result.ok and result.pipelines:
        steps = [step for p in result.pipelines.values() for step in p.steps]
        modules = [c.module for step in steps for c in step.commands]  # a fused job's, each of its steps'
        jobs = [a for module in modules if module in ENTRYPOINTS for a in ENTRYPOINTS[module].aws]
        policy = pipelines_policy([step.processor.image_uri for step in steps], jobs)
        result.artifacts.append(Artifact("iam/sagemaker_pipelines.json", to_json(policy)))
    if render and result.ok:
        for name, p in sorted(result.pipelines.items()):
            try:
                definition = render_pipeline(p, default_pipeline_name(name))
            except Exception as exc:  # lint rules catch every user mistake the renderer refuses: a bug of ours
                result.diagnostics.append(Diagnostic(
                    "E001", f"rendering pipeline '{name}' crashed: {type(exc).__name__}: {exc}", p.origin))
                continue
            text = json.dumps(definition, indent=2, ensure_ascii=False) + "\n"
            too_big = _size_check("E410", text, f"pipeline '{name}'", p.origin)
            if too_big:
                result.diagnostics.append(too_big)
                continue
            result.artifacts.append(Artifact(f"pipelines/{name}.json", text))
            result.artifacts.append(Artifact(f"diagrams/{name}.md", pipeline_diagram(p)))
    result.diagnostics = sorted(set(result.diagnostics), key=Diagnostic.sort_key)
    return result
