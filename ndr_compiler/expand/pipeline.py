"""Expand a Pipeline spec into the IR: processor profiles merged, arguments bound to parameters."""

from __future__ import annotations

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
        steps=steps,
        description=p.metadata.description,
    )


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def runtime_seconds(p: ir.PipelineIR, provisioning_seconds: int) -> int:
    """The longest a pipeline execution can run on its own limits: the slowest chain of dependent steps, each
    at its max runtime plus provisioning, once per attempt its retry policy allows."""
    by_name = {s.name: s for s in p.steps}
    finish: dict[str, int] = {}
    for s in p.steps:  # declared in dependency order (lint E510)
        attempts = 1 + (s.retry.max_attempts if s.retry else 0)
        own = (s.processor.max_runtime_seconds + provisioning_seconds) * attempts
        finish[s.name] = own + max((finish.get(d, 0) for d in s.depends_on if d in by_name), default=0)
    return max(finish.values(), default=0)
