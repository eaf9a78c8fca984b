"""Render a :class:`~ndr_compiler.ir.PipelineIR` into a SageMaker pipeline definition (schema 2020-12-01).

Written straight from the IR: no SDK, no AWS session, nothing to import but the standard library. The output is
held, byte for byte, to what the SageMaker Python SDK's ``Pipeline(...).definition()`` builds from the same
steps (``tests/sdk_oracle.py``, ``tests/test_pipeline_render.py``), and validated against the AWS schema.
How a step becomes a container (the Spark launcher, ``NDR_SPARK_CONF``, shell-safety) is in
``docs/design/render.md``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ndr_compiler import ir

# the limits the lint reports first (E407-E409, E115-E117); the renderer refuses the same, as a last line of defence
from ndr_compiler.lint.processing import MAX_ARGUMENT, MAX_ARGUMENTS, MAX_ENV_VALUE, SHELL_SAFE, SPARK_CONF_ENV
from ndr_jobs.interface.fused import FUSED_FLAG, FusedArgumentsError, parse_fused

#: the launcher's first argument for a fused job: ``--fused (<step> <module> <n> <n arguments>)...``
#: the SageMaker Spark container's job entrypoint (``_SparkProcessorBase._default_command`` in the SDK)
SMSPARK_SUBMIT = "smspark-submit"
#: the launcher baked into the Spark image: ``spark_launcher.py <module> <args...>`` = ``python -m <module> <args>``
SPARK_LAUNCHER = "/opt/ndr/spark_launcher.py"
#: the pipeline definition schema version the SDK writes
VERSION = "2020-12-01"

#: retry exception types by family: the SDK renders each family as its own policy
STEP_EXCEPTIONS = ("Step.SERVICE_FAULT", "Step.THROTTLING")
JOB_EXCEPTIONS = ("SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT")


def render_pipeline(p: ir.PipelineIR, pipeline_name: str) -> dict[str, Any]:
    """The pipeline definition of ``p``, with its keys sorted at every level (lists keep their order).

    ``pipeline_name`` does not appear in the definition (the SDK takes it too, for the same reason: the name
    belongs to the pipeline resource, not to its definition).
    """
    del pipeline_name
    declared = {prm.name for prm in p.parameters}
    definition = {
        "Metadata": {},
        "Parameters": [_parameter(prm) for prm in p.parameters],
        "Steps": [_step(s, declared) for s in p.steps],
        "Version": VERSION,
    }
    return _sorted_keys(definition)


def container(s: ir.PipelineStep, declared: set[str]) -> tuple[list[str], list[str | ir.ParamRef], dict[str, str]]:
    """A step's container: entrypoint, arguments (a :class:`~ndr_compiler.ir.ParamRef` where bound to a
    parameter) and environment (sorted). Raises ``ValueError`` on what the lint should have refused.

    A fused job runs ``spark_launcher.py --fused`` with, for each of its commands in order, the step's name,
    its module, the number of arguments that follow and those arguments: every count and name is a literal
    written here, so no parameter value can move a boundary between two commands."""
    proc = s.processor
    arguments: list[str | ir.ParamRef] = []
    if s.fused:
        if not proc.spark:
            raise ValueError(f"fused step '{s.name}' is not on a Spark processor")
        for c in s.fused:
            own = _arguments(c.name, c.arguments, declared)
            arguments += [c.name, c.module, str(len(own)), *own]
    else:
        arguments = _arguments(s.name, s.arguments, declared)
    if len(arguments) > MAX_ARGUMENTS:
        raise ValueError(f"step '{s.name}': {len(arguments)} container arguments; the limit is {MAX_ARGUMENTS}")
    for a in arguments:
        if isinstance(a, str) and len(a) > MAX_ARGUMENT:
            raise ValueError(f"step '{s.name}': argument {a[:40]!r}... is over {MAX_ARGUMENT} characters")
    environment = dict(proc.environment)
    if proc.spark:
        entrypoint = [SMSPARK_SUBMIT, SPARK_LAUNCHER, FUSED_FLAG if s.fused else s.module]
        for a in [s.module, *arguments]:
            if isinstance(a, str) and not SHELL_SAFE.fullmatch(a):
                raise ValueError(
                    f"Spark step '{s.name}': argument {a!r} is not shell-safe; smspark-submit runs the "
                    "command line through /bin/sh, so Spark step literals must match [A-Za-z0-9_@%+=:,./-]+"
                )
        if proc.spark_config:
            if SPARK_CONF_ENV in environment:
                raise ValueError(f"Spark step '{s.name}': environment variable {SPARK_CONF_ENV} is reserved")
            environment[SPARK_CONF_ENV] = json.dumps(proc.spark_config, sort_keys=True, separators=(",", ":"))
    else:
        if proc.spark_config:
            raise ValueError(f"step '{s.name}': spark_config is set on a processor that is not a Spark one")
        entrypoint = ["python", "-m", s.module]
    for key, value in environment.items():
        if len(value) > MAX_ENV_VALUE:
            raise ValueError(f"step '{s.name}': environment variable {key} is over {MAX_ENV_VALUE} characters")
    return entrypoint, arguments, dict(sorted(environment.items()))


def spec_step_names(step: dict[str, Any]) -> list[str]:
    """The spec steps a rendered Processing step runs: a fused job's, read from its launcher arguments (the
    names sit before each counted run, so they are found without the parameters' values); else its own name."""
    app = step.get("Arguments", {}).get("AppSpecification", {})
    if app.get("ContainerEntrypoint", [])[-1:] != [FUSED_FLAG]:
        return [step["Name"]]
    try:
        return [part.name for part in parse_fused(app.get("ContainerArguments", []))]
    except FusedArgumentsError as exc:
        raise ValueError(f"step '{step['Name']}': malformed fused arguments: {exc}") from None


def _arguments(step: str, pairs: list[tuple[str, str | ir.ParamRef]], declared: set[str]) -> list[str | ir.ParamRef]:
    out: list[str | ir.ParamRef] = []
    for flag, value in pairs:
        if isinstance(value, ir.ParamRef) and value.name not in declared:
            raise ValueError(f"step '{step}': argument {flag} is bound to undeclared parameter '{value.name}'")
        out += [flag, value]
    return out


def retry_families(r: ir.RetryPolicy | None) -> list[list[str]]:
    """The IR's exception types split into the SDK's two policy families (``Step.*``, ``SageMaker.*``)."""
    if r is None:
        return []
    unknown = [t for t in r.exception_types if t not in STEP_EXCEPTIONS + JOB_EXCEPTIONS]
    if unknown:
        raise ValueError(f"unknown retry exception type {unknown[0]!r}")
    families = [[t for t in r.exception_types if t in STEP_EXCEPTIONS],
                [t for t in r.exception_types if t in JOB_EXCEPTIONS]]
    return [f for f in families if f]


def typed_default(prm: ir.PipelineParameter) -> str | int | float | bool:
    """A parameter's default as its type (``"8"`` for an Integer is 8); ``ValueError`` when it is not one."""
    d = prm.default
    if prm.type == "String":
        return ("true" if d else "false") if isinstance(d, bool) else str(d)
    if prm.type == "Boolean":
        if isinstance(d, bool):
            return d
        if isinstance(d, str) and d.lower() in ("true", "false"):
            return d.lower() == "true"
    elif prm.type == "Integer":
        if isinstance(d, int) and not isinstance(d, bool):
            return d
        if isinstance(d, float) and d.is_integer():
            return int(d)
        if isinstance(d, str) and re.fullmatch(r"[+-]?[0-9]+", d.strip()):
            return int(d)
    elif prm.type == "Float" and not isinstance(d, bool):
        try:
            return float(d)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise ValueError(f"default {d!r} of parameter '{prm.name}' is not a {prm.type}")


def _parameter(prm: ir.PipelineParameter) -> dict[str, Any]:
    if prm.type not in ("String", "Integer", "Float", "Boolean"):
        raise ValueError(f"parameter '{prm.name}' has unknown type {prm.type!r}")
    out: dict[str, Any] = {"Name": prm.name, "Type": prm.type}
    if prm.default is not None:
        out["DefaultValue"] = typed_default(prm)
    return out


def _step(s: ir.PipelineStep, declared: set[str]) -> dict[str, Any]:
    proc = s.processor
    entrypoint, arguments, environment = container(s, declared)
    app: dict[str, Any] = {"ImageUri": proc.image_uri, "ContainerEntrypoint": entrypoint}
    if arguments:
        app["ContainerArguments"] = [{"Get": f"Parameters.{a.name}"} if isinstance(a, ir.ParamRef) else a
                                     for a in arguments]
    request: dict[str, Any] = {
        "AppSpecification": app,
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": proc.instance_count,
            "InstanceType": proc.instance_type,
            "VolumeSizeInGB": proc.volume_size_gb,
        }},
        "RoleArn": proc.role_arn,
        "StoppingCondition": {"MaxRuntimeInSeconds": proc.max_runtime_seconds},
    }
    if environment:
        request["Environment"] = environment
    step: dict[str, Any] = {"Name": s.name, "Type": "Processing", "Arguments": request}
    if s.description:
        if s.fused and len(s.description) > 4096:  # lint E411
            raise ValueError(f"fused step '{s.name}': description over 4096 characters")
        step["Description"] = s.description
    if s.depends_on:
        step["DependsOn"] = list(s.depends_on)
    if s.cache_expire_after:
        step["CacheConfig"] = {"Enabled": True, "ExpireAfter": s.cache_expire_after}
    r = s.retry
    if r is not None:
        step["RetryPolicies"] = [
            {"BackoffRate": r.backoff_rate, "ExceptionType": family, "IntervalSeconds": r.interval_seconds,
             "MaxAttempts": r.max_attempts}
            for family in retry_families(r)
        ]
    return step


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value
