"""Rules on what a SageMaker Processing step takes, checked on the specs before anything is rendered.

The pipeline renderer refuses the same things (it is the last line of defence and raises); these rules
report them as the user's own mistake, at the key that holds it:

* E407 more than 100 container arguments (each flag and each value is one), E408 an argument over 256
  characters, E409 an environment value over 256 characters (``spark_config`` travels in one, as JSON);
* E115 ``spark_config`` on a processor profile that is not a Spark one;
* E116 the environment variable ``NDR_SPARK_CONF``, which carries ``spark_config`` to the Spark launcher;
* E117 a literal argument of a Spark step that is not ``[A-Za-z0-9_@%+=:,./-]+`` (smspark-submit runs the
  command line through ``/bin/sh``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.models.pipeline import param_ref
from ndr_compiler.specs import Spec

MAX_ARGUMENTS = 100
MAX_ARGUMENT = 256
MAX_ENV_VALUE = 256
SPARK_CONF_ENV = "NDR_SPARK_CONF"
#: the codes of a step's arguments: the script's parser is not asked about arguments SageMaker would refuse
ARGUMENT_CODES = ("E407", "E408", "E117")
SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+", re.ASCII)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _environment(doc: Any, environment: dict[str, str], path: tuple[Any, ...]) -> Iterator[Diagnostic]:
    for key, value in environment.items():
        where = doc.span((*path, key))
        if key == SPARK_CONF_ENV:
            yield Diagnostic("E116", f"environment variable {SPARK_CONF_ENV} is reserved: it carries the "
                                     "profile's spark_config to the Spark launcher", where)
        elif len(value) > MAX_ENV_VALUE:
            yield Diagnostic("E409", f"environment variable {key} is {len(value)} characters; SageMaker "
                                     f"Processing allows {MAX_ENV_VALUE}", where)


def project_rules(project: Spec) -> Iterator[Diagnostic]:
    """Processor profiles of a Project spec."""
    doc = project.doc
    for name, profile in project.model.spec.processors.items():
        path = ("spec", "processors", name)
        yield from _environment(doc, profile.environment, (*path, "environment"))
        if profile.spark_config and not profile.spark:
            yield Diagnostic("E115", f"processor profile '{name}' sets spark_config but is not a Spark one "
                                     "(spark: true)", doc.span((*path, "spark_config")))
        elif profile.spark_config:
            conf = json.dumps(profile.spark_config, sort_keys=True, separators=(",", ":"))
            if len(conf) > MAX_ENV_VALUE:
                yield Diagnostic("E409", f"spark_config of processor profile '{name}' is {len(conf)} characters "
                                         f"as JSON in {SPARK_CONF_ENV}; SageMaker Processing allows "
                                         f"{MAX_ENV_VALUE}", doc.span((*path, "spark_config")))


def step_rules(p: Spec, project: Spec | None, i: int) -> Iterator[Diagnostic]:
    """Container arguments and environment overrides of step ``i`` of a Pipeline spec."""
    doc = p.doc
    profiles = project.model.spec.processors if project is not None else {}
    step = p.model.spec.steps[i]
    path = ("spec", "steps", i)
    yield from _environment(doc, step.overrides.environment, (*path, "overrides", "environment"))
    count = 2 * len(step.arguments)
    if count > MAX_ARGUMENTS:
        yield Diagnostic("E407", f"step '{step.name}' has {count} container arguments (each flag and each "
                                 f"value is one); SageMaker Processing allows {MAX_ARGUMENTS}",
                         doc.span((*path, "arguments")))
    profile = profiles.get(step.processor)
    spark = profile is not None and profile.spark
    for flag, value in step.arguments.items():
        if param_ref(value) is not None:
            continue  # checked at run time, by the intake and by the job's parser
        text = _literal(value)
        where = doc.span((*path, "arguments", flag))
        if len(text) > MAX_ARGUMENT:
            yield Diagnostic("E408", f"argument {flag} of step '{step.name}' is {len(text)} characters; "
                                     f"SageMaker Processing allows {MAX_ARGUMENT}", where)
        elif spark and not SHELL_SAFE.fullmatch(text):
            yield Diagnostic("E117", f"argument {flag} of Spark step '{step.name}' is {text!r}, which is not "
                                     "shell-safe: smspark-submit runs the command line through /bin/sh, so "
                                     "Spark step literals must match [A-Za-z0-9_@%+=:,./-]+", where)
