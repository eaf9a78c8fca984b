"""Shared pieces of every spec document."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SUPPORTED_API_VERSIONS = ("ndr/v1",)

#: a JSONata expression ``{% ... %}`` or a literal string
Expr = str
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
#: an S3 bucket a state reads: a literal name or a ${Placeholder} (the IAM policy names it)
Bucket = Annotated[str, Field(pattern=r"^(\$\{[A-Za-z][A-Za-z0-9]*\}|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$",
                              description="a bucket name or a ${Placeholder} (the policy names it)")]
StateName = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
