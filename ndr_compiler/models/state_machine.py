"""``kind: StateMachine``: an orchestration written with high-level constructs, never raw ASL.

Each step is a mapping with exactly one key naming its construct (``normalize``, ``lock``,
``run_pipeline``, ...). The expansion layer turns each construct into ASL states.
"""

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, create_model

from ndr_compiler.constructs import CONSTRUCTS
from ndr_compiler.constructs.lock import Lock
from ndr_compiler.constructs.map import MapItems
from ndr_compiler.models.base import Metadata, StateName, Strict


class FailureTarget(Strict):
    name: StateName
    error: str = "NDR.WorkflowFailed"


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, Strict):
        return next(iter(type(value).model_fields))
    return None


#: one wrapper model per construct (``{<key>: <body>}``), in registry order
STEP_KINDS: dict[str, type[Strict]] = {
    key: create_model(c.step_model_name, __base__=Strict, **{key: (c.model, ...)})  # type: ignore[call-overload]
    for key, c in CONSTRUCTS.items()
}

Step = Annotated[
    Union[tuple(Annotated[model, Tag(key)] for key, model in STEP_KINDS.items())],  # type: ignore[valid-type]  # noqa: UP007
    Discriminator(_step_tag, custom_error_type="invalid_step",
                  custom_error_message="a step is a mapping with exactly one construct key"),
]


class StateMachineSpec(Strict):
    project: str = Field(description="metadata.name of the Project spec whose defaults apply")
    comment: str | None = None
    timeout_seconds: Annotated[int, Field(ge=1, le=31_536_000)] = Field(
        description="every execution ends: locks lease and pipeline runs are recorded for this long, plus a margin")
    on_failure: FailureTarget
    steps: list[Step] = Field(min_length=1)


class StateMachine(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["StateMachine"]
    metadata: Metadata
    spec: StateMachineSpec


Lock.model_rebuild(_types_namespace={"Step": Step})
MapItems.model_rebuild(_types_namespace={"Step": Step})
