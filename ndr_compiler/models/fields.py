"""Field models shared by constructs: an inbound event's (or a list item's) typed contract."""

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from ndr_compiler.models.base import Expr, Identifier, Strict
from ndr_jobs.interface.contract import TYPES

FieldType = Literal[
    "id", "run_key", "timestamp", "window_start", "month", "s3_uri", "batch_folder", "text", "boolean", "count", "list"
]


class ContractField(Strict):
    """One field of an inbound event, validated by value (the types are ``ndr_jobs.interface.contract.TYPES``)."""

    type: FieldType
    required: bool = True
    source: str | None = Field(default=None, description="the event's key, when it is not the field's name")
    default: Any = Field(default=None, description="a literal or a {% %} expression, used when the field is absent")
    items: Literal["id", "timestamp", "window_start", "month"] | None = Field(
        default=None, description="list: the type of every item")
    max_items: Annotated[int, Field(ge=0, le=10_000)] = 1000
    max_length: Annotated[int, Field(ge=1, le=4096)] = 256
    equals: Identifier | None = Field(default=None, description="must equal this earlier field when both are set")
    description: str | None = None

    @model_validator(mode="after")
    def _list_items(self) -> Self:
        if (self.type == "list") != (self.items is not None):
            raise ValueError("'items' is required for type list, and only for it")
        return self


class Ordered(Strict):
    """``ordered: [a, b]``: a < b, and b - a at most ``max_seconds`` when given; ``window: [a, b]``: b is a's
    mini-batch end (a + 15 minutes)."""

    ordered: Annotated[list[Identifier], Field(min_length=2, max_length=2)] | None = None
    window: Annotated[list[Identifier], Field(min_length=2, max_length=2)] | None = None
    max_seconds: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.ordered is None) == (self.window is None):
            raise ValueError("a check is exactly one of 'ordered' or 'window'")
        return self


class CheckRule(Strict):
    that: Expr
    reason: Expr


class ItemContract(Strict):
    """Each item of a list validated like an event: fields, checks, and rules over the item's fields (bound by
    name) and the machine's variables. An item keeps ``valid`` and ``reason``; a Map fails invalid items."""

    fields: dict[Identifier, ContractField]
    checks: list[Ordered] = Field(default_factory=list)
    rules: list[CheckRule] = Field(default_factory=list)


def field_names(fields: Any) -> set[str]:
    """The variables a contract's fields bind (raw spec data): each field, and what a ``batch_folder`` binds."""
    if not isinstance(fields, dict):
        return set()
    folders = any(isinstance(f, dict) and f.get("type") == "batch_folder" for f in fields.values())
    return {*fields, *(TYPES["batch_folder"].binds if folders else ())}
