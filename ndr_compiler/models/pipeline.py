"""``kind: Pipeline``: a SageMaker pipeline whose steps run ``python -m ndr_jobs.scripts.<script>``."""

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ndr_compiler.models.base import Metadata, Strict

SAGEMAKER_NAME = r"^[A-Za-z0-9_-]{1,64}$"
PARAM_REF = re.compile(r"^\{\{\s*([A-Za-z0-9_-]+)\s*\}\}$")

Scalar = str | int | float | bool


class Parameter(Strict):
    type: Literal["String", "Integer", "Float", "Boolean"] = "String"
    default: Scalar | None = Field(default=None, description="absent: the parameter is required at start")
    description: str | None = None


class Retry(Strict):
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 2
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    backoff_rate: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0
    exception_types: list[Literal[
        "Step.SERVICE_FAULT", "Step.THROTTLING", "SageMaker.JOB_INTERNAL_ERROR",
        "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT",
    ]] = Field(default_factory=lambda: ["Step.SERVICE_FAULT", "Step.THROTTLING", "SageMaker.CAPACITY_ERROR"])


class Cache(Strict):
    expire_after: Annotated[str, Field(pattern=r"^P(?:\d+[YMWD])*(?:T(?:\d+[HMS])+)?$")] = "P30D"


class ProcessorOverrides(Strict):
    image_uri: str | None = None
    instance_type: str | None = None
    instance_count: Annotated[int, Field(ge=1, le=100)] | None = None
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] | None = None
    max_runtime_seconds: Annotated[int, Field(ge=1, le=432000)] | None = None
    environment: dict[str, str] = Field(default_factory=dict)


class Step(Strict):
    name: Annotated[str, Field(min_length=1)]
    entrypoint: Annotated[str, Field(pattern=r"^ndr_jobs(\.[a-z_][a-z0-9_]*)+$")]
    description: str | None = None
    arguments: dict[str, Scalar] = Field(
        default_factory=dict,
        description="command-line flags, in order; a value '{{ Name }}' is bound to pipeline parameter Name",
    )
    depends_on: list[str] = Field(default_factory=list)
    processor: str = Field(description="a processor profile of the project")
    overrides: ProcessorOverrides = ProcessorOverrides()
    retry: Retry | None = None
    cache: Cache | None = None

    @field_validator("arguments")
    @classmethod
    def _flags(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for flag in value:
            if not re.fullmatch(r"--[a-z0-9][a-z0-9-]*", flag):
                raise ValueError(f"argument '{flag}' must be a long flag such as --project-name")
        return value


class PipelineSpec(Strict):
    project: str
    placeholders: list[Annotated[str, Field(pattern=r"^PipelineName[A-Za-z0-9]*$")]] = Field(
        default_factory=list, description="the ${PipelineName...} placeholders of state machines this serves"
    )
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    fuse: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list,
        description="groups of consecutive steps that run as one Processing job (one Spark session), in order",
    )


class Pipeline(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: PipelineSpec


def param_ref(value: Scalar) -> str | None:
    """The parameter name of a ``{{ Name }}`` argument value, else None."""
    if isinstance(value, str):
        m = PARAM_REF.match(value)
        if m:
            return m.group(1)
    return None
