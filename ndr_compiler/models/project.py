"""``kind: Project``: the shared defaults every state machine references instead of repeating."""

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
    max_attempts: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=120, description="for a pipeline no Pipeline spec serves (else derived from its limits)")
    provisioning_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=600, description="what a processing job may spend starting, counted per step in poll budgets")
    stop_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=60, description="describes after stopping a pipeline before giving up on it")


class LockSettings(Strict):
    margin_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        default=900, description="a RUNNING lease is the machine's timeout plus this")
    succeeded_retention_seconds: Annotated[int, Field(ge=60, le=366 * 86400)] = Field(
        default=30 * 86400, description="how long a SUCCEEDED lock makes the same key a duplicate")
    failed_retention_seconds: Annotated[int, Field(ge=60, le=366 * 86400)] = Field(
        default=7 * 86400, description="how long a FAILED lock (free to take) is kept for inspection")


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


class ProcessorProfile(Strict):
    """Processing defaults shared by pipeline steps (a step names a profile and may override fields)."""

    image_uri: str = Field(description="container image; a ${Placeholder} resolved per environment at deploy")
    instance_type: str = "ml.m5.xlarge"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    max_runtime_seconds: Annotated[int, Field(ge=1, le=432000)] = 3600
    spark: bool = Field(default=False, description="SageMaker Processing Spark container (cluster when count > 1)")
    spark_config: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)


class ProjectSpec(Strict):
    tables: Tables
    event_bus: str
    event_source: str = "ndr.platform"
    polling: Polling = Polling()
    locks: LockSettings = LockSettings()
    defaults: dict[str, Scalar] = Field(
        default_factory=dict, description="runtime defaults, overridden by the parameters table at run time"
    )
    pipeline_role_arn: str = "${SageMakerPipelineRoleArn}"
    processors: dict[str, ProcessorProfile] = Field(default_factory=dict)
    routing: list[RoutingItem] = Field(default_factory=list)
    parameters: list[ParametersItem] = Field(default_factory=list)


class Project(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["Project"]
    metadata: Metadata
    spec: ProjectSpec
