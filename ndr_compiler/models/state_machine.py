"""``kind: StateMachine``: an orchestration written with high-level constructs, never raw ASL.

Each step is a mapping with exactly one key naming its construct (``normalize``, ``lock``,
``run_pipeline``, ...). The expansion layer turns each construct into ASL states.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from ndr_compiler.models.base import Expr, Identifier, Metadata, StateName, Strict


class Normalize(Strict):
    """Unwrap the inbound payload (EventBridge event, SQS records, SNS envelope, JSON string) into ``$msg``."""

    name: StateName
    unwrap: StateName = Field(default="UnwrapIncomingMessage", description="the state inside that unwraps")


class ParseContext(Strict):
    """Build ``$ctx`` from ``$msg``: from the batch folder path (``layout: batch_folder``) or request fields."""

    name: StateName
    layout: Literal["batch_folder", "request"] = "request"
    required: list[Identifier] = Field(default_factory=list)
    fields: dict[Identifier, Expr] = Field(default_factory=dict)


class Gate(Strict):
    """Let only events of ``event_type`` with a complete context through; the rest end in ``ignore``."""

    name: StateName
    event_type: str
    ignore: StateName


class Load(Strict):
    """A DynamoDB getItem into a variable (a flat item becomes a plain object)."""

    name: StateName
    table: Literal["routing", "parameters", "locks"]
    key: dict[str, Expr]
    into: Identifier
    required: bool = False


class Resolve(Strict):
    """Compute ``$params``: project defaults, then ``$project`` values, then these expressions in order."""

    name: StateName
    base: list[Identifier] = Field(default_factory=list, description="variables merged over the defaults")
    values: dict[Identifier, Expr] = Field(default_factory=dict)


class Duplicate(Strict):
    fail: StateName | None = None
    succeed: StateName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Duplicate:
        if (self.fail is None) == (self.succeed is None):
            raise ValueError("on_duplicate needs exactly one of 'fail' or 'succeed'")
        return self

    @property
    def name(self) -> str:
        return self.fail or self.succeed or ""


class Release(Strict):
    on_success: StateName
    on_failure: StateName
    failure_action: Literal["delete", "mark_failed"] = "delete"


class Lock(Strict):
    acquire: StateName
    key: Expr
    on_duplicate: Duplicate
    release: Release
    ttl_seconds: Annotated[int, Field(ge=60)] | None = None
    body: list[Step]


class PollStates(Strict):
    start: StateName
    describe: StateName
    choice: StateName
    wait: StateName
    increment: StateName


class Poll(Strict):
    every_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=10_000)] | None = None


class RunPipeline(Strict):
    """Start a SageMaker pipeline and poll it to a terminal status, a bounded number of times."""

    id: Identifier
    pipeline: Annotated[str, Field(pattern=r"^\$\{[A-Za-z][A-Za-z0-9]*\}$")]
    parameters: dict[str, Expr] = Field(default_factory=dict)
    states: PollStates
    poll: Poll = Poll()


class StartWorkflow(Strict):
    """Run another state machine of this project synchronously (``startExecution.sync:2``)."""

    name: StateName
    state_machine: str
    input: dict[str, Any] = Field(default_factory=dict)
    into: Identifier | None = None


class ReadJson(Strict):
    """Read a JSON object from S3 into a variable."""

    name: StateName
    bucket: Expr
    key: Expr
    into: Identifier
    select: Expr | None = Field(default=None, description="JSONata over the parsed document as $doc")


class ItemEnd(Strict):
    name: StateName
    output: dict[str, Any] = Field(default_factory=dict)


class MapItems(Strict):
    """Run ``steps`` once per item of ``items`` (the item is ``$item``); results collect into ``into``."""

    name: StateName
    items: Expr
    max_concurrency: Annotated[int, Field(ge=0, le=1000)] = 0
    steps: list[Step]
    item_succeeded: ItemEnd
    item_failed: ItemEnd
    into: Identifier


class Emit(Strict):
    """Put one event on the project's EventBridge bus."""

    name: StateName
    detail_type: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Rule(Strict):
    when: Expr
    next: StateName


class Choice(Strict):
    name: StateName
    rules: list[Rule] = Field(min_length=1)
    default: StateName


class Fail(Strict):
    name: StateName
    error: str = "NDR.Failed"
    cause: Expr | None = None


class FailureTarget(Strict):
    name: StateName
    error: str = "NDR.WorkflowFailed"


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, Strict):
        return next(iter(type(value).model_fields))
    return None


class NormalizeStep(Strict):
    normalize: Normalize


class ParseContextStep(Strict):
    parse_context: ParseContext


class GateStep(Strict):
    gate: Gate


class LoadStep(Strict):
    load: Load


class ResolveStep(Strict):
    resolve: Resolve


class LockStep(Strict):
    lock: Lock


class RunPipelineStep(Strict):
    run_pipeline: RunPipeline


class StartWorkflowStep(Strict):
    start_workflow: StartWorkflow


class ReadJsonStep(Strict):
    read_json: ReadJson


class MapStep(Strict):
    map: MapItems


class EmitStep(Strict):
    emit: Emit


class ChoiceStep(Strict):
    choice: Choice


class SucceedStep(Strict):
    succeed: StateName


class FailStep(Strict):
    fail: Fail


STEP_KINDS: dict[str, type[Strict]] = {
    "normalize": NormalizeStep,
    "parse_context": ParseContextStep,
    "gate": GateStep,
    "load": LoadStep,
    "resolve": ResolveStep,
    "lock": LockStep,
    "run_pipeline": RunPipelineStep,
    "start_workflow": StartWorkflowStep,
    "read_json": ReadJsonStep,
    "map": MapStep,
    "emit": EmitStep,
    "choice": ChoiceStep,
    "succeed": SucceedStep,
    "fail": FailStep,
}

Step = Annotated[
    Annotated[NormalizeStep, Tag("normalize")]
    | Annotated[ParseContextStep, Tag("parse_context")]
    | Annotated[GateStep, Tag("gate")]
    | Annotated[LoadStep, Tag("load")]
    | Annotated[ResolveStep, Tag("resolve")]
    | Annotated[LockStep, Tag("lock")]
    | Annotated[RunPipelineStep, Tag("run_pipeline")]
    | Annotated[StartWorkflowStep, Tag("start_workflow")]
    | Annotated[ReadJsonStep, Tag("read_json")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[EmitStep, Tag("emit")]
    | Annotated[ChoiceStep, Tag("choice")]
    | Annotated[SucceedStep, Tag("succeed")]
    | Annotated[FailStep, Tag("fail")],
    Discriminator(_step_tag, custom_error_type="invalid_step",
                  custom_error_message="a step is a mapping with exactly one construct key"),
]


class StateMachineSpec(Strict):
    project: str = Field(description="metadata.name of the Project spec whose defaults apply")
    comment: str | None = None
    timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    on_failure: FailureTarget
    steps: list[Step] = Field(min_length=1)


class StateMachine(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["StateMachine"]
    metadata: Metadata
    spec: StateMachineSpec


Lock.model_rebuild()
MapItems.model_rebuild()
