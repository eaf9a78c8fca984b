"""Expand a Pipeline spec into the IR: processor profiles merged, arguments bound to parameters."""

from __future__ import annotations

import dataclasses

from ndr_compiler import ir
from ndr_compiler.load import Document
from ndr_compiler.models.pipeline import Pipeline, param_ref
from ndr_compiler.models.project import Project


def default_pipeline_name(spec_name: str) -> str:
    """``features_15m`` -> ``ndr-features-15m``: SageMaker pipeline names allow no underscores."""
    return "ndr-" + spec_name.replace("_", "-").strip("-")


def expand_pipeline(doc: Document, p: Pipeline, project: Project) -> ir.PipelineIR:
    """Assumes the lint rules passed (profiles and parameters exist)."""
    spec = p.spec
    params = [
        ir.PipelineParameter(
            name, prm.type, prm.default, doc.span(("spec", "parameters", name)), required=prm.default is None
        )
        for name, prm in spec.parameters.items()
    ]
    steps = []
    for i, s in enumerate(spec.steps):
        profile = project.spec.processors[s.processor]
        o = s.overrides
        processor = ir.Processor(
            image_uri=o.image_uri or profile.image_uri,
            instance_type=o.instance_type or profile.instance_type,
            instance_count=o.instance_count or profile.instance_count,
            volume_size_gb=o.volume_size_gb or profile.volume_size_gb,
            max_runtime_seconds=o.max_runtime_seconds or profile.max_runtime_seconds,
            role_arn=project.spec.pipeline_role_arn,
            environment={**profile.environment, **o.environment},
            spark=profile.spark,
            spark_config=dict(profile.spark_config),
        )
        arguments: list[tuple[str, str | ir.ParamRef]] = []
        for flag, value in s.arguments.items():
            ref = param_ref(value)
            arguments.append((flag, ir.ParamRef(ref) if ref else _literal(value)))
        retry = (
            ir.RetryPolicy(
                list(s.retry.exception_types), s.retry.max_attempts, s.retry.interval_seconds, s.retry.backoff_rate
            )
            if s.retry
            else None
        )
        steps.append(
            ir.PipelineStep(
                name=s.name,
                origin=doc.span(("spec", "steps", i)),
                module=s.entrypoint,
                arguments=arguments,
                processor=processor,
                depends_on=list(s.depends_on),
                retry=retry,
                cache_expire_after=s.cache.expire_after if s.cache else None,
                description=s.description,
            )
        )
    return ir.PipelineIR(
        name=p.metadata.name,
        file=doc.file,
        origin=doc.span(()),
        placeholders=list(spec.placeholders),
        parameters=params,
        steps=fuse_steps(doc, steps, spec.fuse),
        description=p.metadata.description,
    )


#: what a fused job's ``module`` names: the launcher that runs its commands (``ndr_jobs/runtime/spark_launcher.py``)
FUSED_MODULE = "ndr_jobs.runtime.spark_launcher"


def fused_job_name(group: list[str]) -> str:
    """A fused job's Processing step name: its first and last spec steps (``A-D``); lint E211 holds it to 64."""
    return f"{group[0]}-{group[-1]}"


def fused_description(commands: list[ir.StepCommand]) -> str:
    names = ", ".join(c.name for c in commands)
    own = "; ".join(f"{c.name}: {c.description}" for c in commands if c.description)
    return f"Fused: {names} (in order, one Spark session)" + (f". {own}" if own else "")


def fuse_steps(doc: Document, steps: list[ir.PipelineStep], groups: list[list[str]]) -> list[ir.PipelineStep]:
    """Each ``fuse`` group becomes one Processing job at the place of its first step: one processor (the group's,
    with the steps' max runtimes summed), the first step's dependencies, retry and cache; a dependency on a fused
    step becomes one on its job. Assumes the fusion lint rules (E207-E211) passed."""
    if not groups:
        return steps
    by_name = {s.name: s for s in steps}
    job_of = {name: fused_job_name(g) for g in groups for name in g}
    first_of = {g[0]: (gi, g) for gi, g in enumerate(groups)}
    out: list[ir.PipelineStep] = []
    for s in steps:
        if s.name in first_of:
            gi, group = first_of[s.name]
            members = [by_name[n] for n in group]
            commands = [ir.StepCommand(m.name, m.origin, m.module, list(m.arguments), m.description,
                                       m.processor.max_runtime_seconds) for m in members]
            processor = dataclasses.replace(
                s.processor, max_runtime_seconds=sum(m.processor.max_runtime_seconds for m in members))
            out.append(ir.PipelineStep(
                name=fused_job_name(group), origin=doc.span(("spec", "fuse", gi)), module=FUSED_MODULE,
                arguments=[], processor=processor, depends_on=_remap(s.depends_on, job_of), retry=s.retry,
                cache_expire_after=s.cache_expire_after, description=fused_description(commands),
                fused=commands,
            ))
        elif s.name not in job_of:
            out.append(dataclasses.replace(s, depends_on=_remap(s.depends_on, job_of)))
    return out


def _remap(depends_on: list[str], job_of: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(job_of.get(d, d) for d in depends_on))


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def runtime_seconds(p: ir.PipelineIR, provisioning_seconds: int) -> int:
    """The longest a pipeline execution can run on its own limits: the slowest chain of dependent steps, each
    at its max runtime plus provisioning, once per attempt its retry policy allows. A fused job is one step
    here: one provisioning, its commands' runtimes summed (its processor's limit), its own retries."""
    by_name = {s.name: s for s in p.steps}
    finish: dict[str, int] = {}
    for s in p.steps:  # declared in dependency order (lint E510)
        attempts = 1 + (s.retry.max_attempts if s.retry else 0)
        own = (s.processor.max_runtime_seconds + provisioning_seconds) * attempts
        finish[s.name] = own + max((finish.get(d, 0) for d in s.depends_on if d in by_name), default=0)
    return max(finish.values(), default=0)
