"""The ``project_parameters`` construct: load the project's parameters item, then resolve ``$params`` over it.

The two steps every machine repeats (``load`` of the parameters table by project and feature spec version into
``$project``, then ``resolve`` with ``base: [project]``) as one; it expands to exactly what they would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs import load, resolve
from ndr_compiler.constructs.registry import CheckContext, Construct
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Expr, Identifier, StateName, Strict

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander

KEY = {"project_name": "{% $ctx.project_name %}", "feature_spec_version": "{% $ctx.feature_spec_version %}"}


class ProjectParameters(Strict):
    """``$project`` from the parameters table (by ``key``), then ``$params``: the project defaults, ``$project``,
    then ``values`` in order (each may read the ones before it, and ``$base``)."""

    load: StateName = Field(default="LoadProjectParametersFromDynamo", description="the getItem state")
    name: StateName = Field(default="ResolvePipelineRuntimeParams", description="the state computing $params")
    key: dict[str, Expr] = Field(default_factory=lambda: dict(KEY),
                                 description="the parameters item's key (default: the intake's project and version)")
    into: Identifier = "project"
    required: bool = False
    values: dict[Identifier, Expr] = Field(default_factory=dict)


def _parts(c: ProjectParameters) -> tuple[load.Load, resolve.Resolve]:
    return (load.Load(name=c.load, table="parameters", key=c.key, into=c.into, required=c.required),
            resolve.Resolve(name=c.name, base=[c.into], values=c.values))


def expand(x: Expander, c: ProjectParameters, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    get, compute = _parts(c)
    return [*load.expand(x, get, path, compute.name, scope), *resolve.expand(x, compute, path, nxt, scope)]


def check(c: ProjectParameters, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    return resolve.check(_parts(c)[1], path, ctx)


def binds(body: dict[str, Any]) -> set[str]:
    return {"base", *(body.get("values") or {})}


CONSTRUCT = Construct("project_parameters", ProjectParameters, expand, entry=lambda c, in_lock: c.load, check=check,
                      binds=binds)
