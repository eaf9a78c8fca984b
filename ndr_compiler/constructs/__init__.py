"""The state machine constructs, one module each: a construct's model, expansion, entry state and nesting
live together, and adding a construct means adding its module here. Specs list steps by these keys, in
this order in the generated JSON Schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ndr_compiler.constructs import (
    check,
    choice,
    emit,
    fail,
    intake,
    load,
    lock,
    map,
    normalize,
    parse_context,
    project_parameters,
    read_json,
    resolve,
    run_pipeline,
    start_workflow,
    succeed,
)
from ndr_compiler.constructs.registry import CheckContext, Construct, kind

__all__ = ["CONSTRUCTS", "CheckContext", "Construct", "kind", "walk"]

CONSTRUCTS: dict[str, Construct] = {c.key: c for c in (
    normalize.CONSTRUCT, parse_context.CONSTRUCT, intake.CONSTRUCT, check.CONSTRUCT, load.CONSTRUCT,
    resolve.CONSTRUCT, project_parameters.CONSTRUCT, lock.CONSTRUCT, run_pipeline.CONSTRUCT,
    start_workflow.CONSTRUCT, read_json.CONSTRUCT, map.CONSTRUCT, emit.CONSTRUCT, choice.CONSTRUCT,
    succeed.CONSTRUCT, fail.CONSTRUCT,
)}


def walk(steps: list[Any], path: tuple[Any, ...]) -> Iterator[tuple[str, Any, tuple[Any, ...]]]:
    """Every step, nested ones included, as ``(key, body, document path of the body)``."""
    for i, step in enumerate(steps):
        key = kind(step)
        body = getattr(step, key)
        p = (*path, i, key)
        yield key, body, p
        for child_key, child_steps in CONSTRUCTS[key].children(body):
            yield from walk(child_steps, (*p, child_key))
