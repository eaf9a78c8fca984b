"""Shared pieces of every spec document."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SUPPORTED_API_VERSIONS = ("ndr/v1",)

#: a JSONata expression ``{% ... %}`` or a literal string
Expr = str
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
StateName = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
