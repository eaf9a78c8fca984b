"""Pipeline rules: references between state machines, pipelines and the job library (E5xx), limits (E4xx).

Entry points are checked by parsing the step's exact command line with the parser the script itself builds
from its declaration in ``ndr_jobs.interface.entrypoints`` (the script is not imported): a flag the script
does not take, or a required one the step does not pass, is reported with argparse's own words.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
from collections.abc import Iterator
from typing import Any

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic, did_you_mean
from ndr_compiler.expand.snippets import is_expr
from ndr_compiler.lint.processing import ARGUMENT_CODES, MAX_ARGUMENTS, step_rules
from ndr_compiler.models.pipeline import param_ref
from ndr_compiler.specs import Spec, SpecSet
from ndr_jobs.interface import entrypoints

SAGEMAKER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
MAX_PARAMETER_VALUE = 1024
MAX_RUNTIME_SECONDS = 432000
MAX_DESCRIPTION = 4096
SAMPLES = ("2026-01-01T00:00:00Z", "2026-01", "[]", "x", "0", "s3://ndr-sample/sample/")


def pipeline_spec_rules(specs: SpecSet, p: Spec) -> Iterator[Diagnostic]:
    """Rules on one Pipeline spec, before expansion."""
    spec = p.model.spec
    doc = p.doc
    projects = specs.projects()
    project = projects.get(spec.project)
    if project is None and not specs.is_broken("Project", spec.project):
        yield Diagnostic(
            "E501",
            f"project '{spec.project}' is not defined (known: {', '.join(sorted(projects)) or 'none'})"
            f"{did_you_mean(spec.project, projects)}",
            doc.span(("spec", "project")),
        )
    if not PIPELINE_NAME.match(f"ndr-{p.name.replace('_', '-')}"):
        yield Diagnostic(
            "E406", f"pipeline '{p.name}' does not give a valid SageMaker pipeline name", doc.span(("metadata", "name"))
        )
    for name, prm in spec.parameters.items():
        where = doc.span(("spec", "parameters", name))
        if not SAGEMAKER_NAME.match(name):
            yield Diagnostic("E403", f"parameter name '{name}' must match [A-Za-z0-9_-]{{1,64}}", where)
        if prm.default is not None and len(str(prm.default)) > MAX_PARAMETER_VALUE:
            yield Diagnostic("E404", f"default of parameter '{name}' is over {MAX_PARAMETER_VALUE} characters", where)
        if prm.default is not None and not _fits(prm.type, prm.default):
            yield Diagnostic("E506", f"default {prm.default!r} of parameter '{name}' is not a {prm.type}", where)
    names = [s.name for s in spec.steps]
    seen: set[str] = set()
    for i, step in enumerate(spec.steps):
        path = ("spec", "steps", i)
        if not SAGEMAKER_NAME.match(step.name):
            yield Diagnostic(
                "E403", f"step name '{step.name}' must match [A-Za-z0-9_-]{{1,64}}", doc.span((*path, "name"))
            )
        if step.name in seen:
            yield Diagnostic("E205", f"step name '{step.name}' is used twice", doc.span((*path, "name")))
        seen.add(step.name)
        for dep in step.depends_on:
            if dep not in names:
                yield Diagnostic(
                    "E510",
                    f"step '{step.name}' depends on '{dep}', which is not a step of this pipeline"
                    f"{did_you_mean(dep, names)}",
                    doc.span((*path, "depends_on")),
                )
            elif names.index(dep) >= i:
                yield Diagnostic(
                    "E510",
                    f"step '{step.name}' depends on '{dep}', declared after it; steps are "
                    "declared in dependency order, so this is a cycle or a misordering",
                    doc.span((*path, "depends_on")),
                )
        if project is not None and step.processor not in project.model.spec.processors:
            known = ", ".join(sorted(project.model.spec.processors)) or "none"
            yield Diagnostic(
                "E513",
                f"processor profile '{step.processor}' is not defined in project '{spec.project}' (known: {known})"
                f"{did_you_mean(step.processor, project.model.spec.processors)}",
                doc.span((*path, "processor")),
            )
        for flag, value in step.arguments.items():
            ref = param_ref(value)
            if ref is not None and ref not in spec.parameters:
                yield Diagnostic(
                    "E507",
                    f"argument {flag} is bound to '{ref}', which is not a parameter of this pipeline"
                    f"{did_you_mean(ref, spec.parameters)}",
                    doc.span((*path, "arguments", flag)),
                )
        limits = list(step_rules(p, project, i))
        yield from limits
        if not any(d.code in ARGUMENT_CODES for d in limits):  # one diagnostic for an argument, not two
            yield from entrypoint_rules(p, i)
    yield from fuse_rules(p, project)


def fuse_rules(p: Spec, project: Spec | None) -> Iterator[Diagnostic]:
    """``spec.fuse``: each group is a chain of consecutive steps (each depends on the previous alone) on one
    Spark processor with one retry and cache policy, nothing outside depends on an inner step, and the job it
    becomes fits SageMaker's limits (E207-E212, E407, E411)."""
    spec = p.model.spec
    doc = p.doc
    index = {s.name: i for i, s in enumerate(spec.steps)}
    profiles = project.model.spec.processors if project is not None else {}
    fused: dict[str, int] = {}
    job_names: dict[str, int] = {}
    for gi, group in enumerate(spec.fuse):
        where = doc.span(("spec", "fuse", gi))
        bad = False
        for k, name in enumerate(group):
            at = doc.span(("spec", "fuse", gi, k))
            if name not in index:
                yield Diagnostic("E207", f"fuse group {gi + 1} names '{name}', which is not a step of this pipeline"
                                         f"{did_you_mean(name, index)}", at)
                bad = True
            elif name in fused:
                again = "this group" if fused[name] == gi else f"group {fused[name] + 1}"
                yield Diagnostic("E207", f"fuse group {gi + 1} names '{name}', already fused in {again}", at)
                bad = True
            else:
                fused[name] = gi
        if bad:
            continue
        steps = [spec.steps[index[n]] for n in group]
        first = steps[0]
        for k in range(1, len(group)):
            at = doc.span(("spec", "fuse", gi, k))
            step, prev = steps[k], group[k - 1]
            if index[step.name] != index[group[0]] + k:
                yield Diagnostic("E208", f"'{step.name}' is not declared right after '{prev}'; a fuse group is a run "
                                         "of consecutive steps, in declaration order", at)
            elif step.depends_on != [prev]:
                deps = ", ".join(step.depends_on) or "nothing"
                yield Diagnostic("E208", f"fused step '{step.name}' depends on {deps}; in a fuse group each step "
                                         f"depends on the previous one ('{prev}') alone", at)
            for what, mine, theirs in (
                ("processor profile", step.processor, first.processor),
                ("overrides", step.overrides.model_dump(), first.overrides.model_dump()),
                ("retry", step.retry.model_dump() if step.retry else None,
                 first.retry.model_dump() if first.retry else None),
                ("cache", step.cache.model_dump() if step.cache else None,
                 first.cache.model_dump() if first.cache else None),
            ):
                if mine != theirs:
                    yield Diagnostic("E209", f"fused step '{step.name}' differs from '{first.name}' in {what}; "
                                             "one Processing job has one", at)
        profile = profiles.get(first.processor)
        if profile is not None and not profile.spark:
            yield Diagnostic("E210", f"fuse group {gi + 1} runs on processor profile '{first.processor}', which is "
                                     "not a Spark one: fused steps share one Spark session", where)
        inner = set(group[:-1])
        for i, other in enumerate(spec.steps):
            if other.name in group:
                continue
            for dep in other.depends_on:
                if dep in inner:
                    yield Diagnostic("E211", f"step '{other.name}' depends on '{dep}', an inner step of fuse group "
                                             f"{gi + 1}; depend on its last step, '{group[-1]}'",
                                     doc.span(("spec", "steps", i, "depends_on")))
        job = f"{group[0]}-{group[-1]}"
        if len(job) > 64:
            yield Diagnostic("E212", f"fuse group {gi + 1} gives the Processing step name '{job}', over 64 "
                                     "characters; shorten its first or last step name", where)
        elif job in index or job in job_names:
            yield Diagnostic("E212", f"fuse group {gi + 1} gives the Processing step name '{job}', which "
                                     f"{'a step' if job in index else f'fuse group {job_names[job] + 1}'} "
                                     "already has", where)
        job_names.setdefault(job, gi)
        count = sum(3 + 2 * len(s.arguments) for s in steps)
        if count > MAX_ARGUMENTS:
            yield Diagnostic("E407", f"fuse group {gi + 1} has {count} container arguments (each step's name, "
                                     f"module, count, flags and values); SageMaker Processing allows "
                                     f"{MAX_ARGUMENTS}", where)
        if profile is not None:
            runtime = sum(s.overrides.max_runtime_seconds or profile.max_runtime_seconds for s in steps)
            if runtime > MAX_RUNTIME_SECONDS:
                yield Diagnostic("E411", f"fuse group {gi + 1} sums to a max runtime of {runtime}s; a SageMaker "
                                         f"Processing job allows {MAX_RUNTIME_SECONDS}s", where)
        description = len(", ".join(group)) + sum(len(s.name) + len(s.description or "") + 4 for s in steps) + 64
        if description > MAX_DESCRIPTION:
            yield Diagnostic("E411", f"fuse group {gi + 1}: its steps' names and descriptions give the job a "
                                     f"description over {MAX_DESCRIPTION} characters", where)


def _fits(kind: str, value: Any) -> bool:
    text = str(value)
    try:
        if kind == "Integer":
            int(text)
        elif kind == "Float":
            float(text)
        elif kind == "Boolean":
            return text.lower() in ("true", "false")
    except ValueError:
        return False
    return True


def _sample(action: argparse.Action) -> str:
    for candidate in [str(c) for c in action.choices] if action.choices else SAMPLES:
        if action.type is None or not callable(action.type):
            return candidate
        try:
            action.type(candidate)
        except Exception:
            continue
        return candidate
    return "x"


@functools.cache
def _parser(module: str) -> argparse.ArgumentParser:
    """One parser per entrypoint, however many steps run it (parse_args leaves it as it was)."""
    return entrypoints.build_parser(module)


def entrypoint_rules(p: Spec, index: int) -> Iterator[Diagnostic]:
    step = p.model.spec.steps[index]
    path = ("spec", "steps", index)
    module = step.entrypoint
    if module not in entrypoints.ENTRYPOINTS:
        yield Diagnostic(
            "E508", f"entrypoint module '{module}' does not exist in ndr_jobs", p.doc.span((*path, "entrypoint"))
        )
        return
    parser = _parser(module)
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    argv: list[str] = []
    for flag, value in step.arguments.items():
        argv.append(flag)
        if param_ref(value) is not None:
            action = actions.get(flag)
            argv.append(_sample(action) if action else "x")
        else:
            argv.append(str(value).lower() if isinstance(value, bool) else str(value))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "rejected"
        message = message.split("error: ", 1)[-1]
        yield Diagnostic(
            "E509",
            f"step '{step.name}': {module} rejects its command line: {message}",
            p.doc.span((*path, "arguments")),
        )


def start_rules(
    specs: SpecSet, machine: ir.StateMachineIR, pipelines: dict[str, ir.PipelineIR]
) -> Iterator[Diagnostic]:
    """Each ``${PipelineName...}`` start of a state machine against the pipeline spec serving it."""
    declared_elsewhere = {ph for p in specs.of_kind("Pipeline") for ph in p.model.spec.placeholders}
    for kind, _, data in specs.broken:  # a pipeline spec with errors of its own still names what it serves
        placeholders = data.get("spec", {}).get("placeholders") if isinstance(data.get("spec"), dict) else None
        if kind == "Pipeline" and isinstance(placeholders, list):
            declared_elsewhere.update(ph for ph in placeholders if isinstance(ph, str))
    by_placeholder: dict[str, ir.PipelineIR] = {}
    for p in pipelines.values():
        for ph in p.placeholders:
            by_placeholder[ph] = p
    for ref in machine.placeholders:
        p = by_placeholder.get(ref.name)
        if p is None and ref.name in declared_elsewhere:
            continue  # its pipeline spec has errors of its own, reported there
        if p is None:
            known = ", ".join(sorted(by_placeholder)) or "none"
            yield Diagnostic(
                "E503", f"${{{ref.name}}} is served by no Pipeline spec (declared placeholders: {known})"
                f"{did_you_mean(ref.name, by_placeholder)}", ref.origin
            )
            continue
        declared = {prm.name: prm for prm in p.parameters}
        for name, span in ref.parameters.items():
            if name not in declared:
                yield Diagnostic(
                    "E504",
                    f"'{ref.state}' passes '{name}', which pipeline '{p.name}' ({p.file}) does not declare"
                    f"{did_you_mean(name, declared)}",
                    span,
                )
            elif ref.literals.get(name) is not None and not _fits(declared[name].type, ref.literals[name]):
                yield Diagnostic(
                    "E506",
                    f"'{ref.state}' passes {ref.literals[name]!r} for '{name}', which is a {declared[name].type}",
                    span,
                )
        for prm in p.parameters:
            if prm.required and prm.name not in ref.parameters:
                yield Diagnostic(
                    "E505",
                    f"'{ref.state}' does not pass required parameter '{prm.name}' of pipeline '{p.name}' ({p.file})",
                    ref.origin,
                )


def duplicate_placeholders(pipelines: list[Spec]) -> Iterator[Diagnostic]:
    owner: dict[str, Spec] = {}
    for p in pipelines:
        for i, ph in enumerate(p.model.spec.placeholders):
            if ph in owner:
                yield Diagnostic(
                    "E511",
                    f"${{{ph}}} is already served by pipeline '{owner[ph].name}'",
                    p.doc.span(("spec", "placeholders", i)),
                )
            else:
                owner[ph] = p


def literal_of(value: Any) -> Any:
    """A state machine parameter value that is a literal (not JSONata), else None."""
    return None if is_expr(value) else value
