"""``kind: Project``: the shared defaults every state machine references instead of repeating."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from ndr_compiler.models.base import Metadata, Strict

Scalar = str | int | float | bool


class Tables(Strict):
    locks: str = Field(description="DynamoDB idempotency-lock table (partition key lock_key, TTL expires_at)")
    routing: str = Field(description="DynamoDB org routing table (partition key org_id)")
    parameters: str = Field(
        description="DynamoDB project parameters table (keys project_name, feature_spec_version)"
    )


class Polling(Strict):
    every_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    max_attempts: Annotated[int, Field(ge=1, le=10_000)] = 120


class RoutingItem(Strict):
    """A seed item of the routing table: an org and where its data lives."""

    model_config = ConfigDict(extra="allow", frozen=True)
    org_id: str
    project_name: str


class ParametersItem(Strict):
    """A seed item of the project-parameters table."""

    project_name: str
    feature_spec_version: str
    values: dict[str, Scalar] = Field(default_factory=dict)


class ProjectSpec(Strict):
    tables: Tables
    event_bus: str
    event_source: str = "ndr.platform"
    polling: Polling = Polling()
    lock_ttl_seconds: Annotated[int, Field(ge=60, le=366 * 86400)] = 86_400
    defaults: dict[str, Scalar] = Field(
        default_factory=dict, description="runtime defaults, overridden by the parameters table at run time"
    )
    routing: list[RoutingItem] = Field(default_factory=list)
    parameters: list[ParametersItem] = Field(default_factory=list)


class Project(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["Project"]
    metadata: Metadata
    spec: ProjectSpec
