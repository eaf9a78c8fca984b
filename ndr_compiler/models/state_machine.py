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


FieldType = Literal[
    "id", "run_key", "timestamp", "window_start", "month", "s3_uri", "batch_folder", "text", "boolean", "count", "list"
]


class ContractField(Strict):
    """One field of an inbound event, validated by value (the types are ``ndr_jobs.contract.TYPES``)."""

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
    def _list_items(self) -> ContractField:
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
    def _one(self) -> Ordered:
        if (self.ordered is None) == (self.window is None):
            raise ValueError("a check is exactly one of 'ordered' or 'window'")
        return self


class EventGate(Strict):
    """Which events a machine runs for: other ``event_type`` values end cleanly in ``ignore``."""

    name: StateName
    event_type: str
    ignore: StateName


class Reject(Strict):
    """The path of an invalid event: one "Event Rejected" event on the project's bus, then ``NDR.InvalidEvent``."""

    emit: StateName = "EmitEventRejected"
    fail: StateName = "RejectInvalidEvent"
    detail_type: str = "NDR Event Rejected"


class ParseContext(Strict):
    """The typed intake: ``$ctx`` from ``$msg``, every field validated by value in a state that can catch.

    ``layout: event`` reads the fields of an EventBridge event's ``detail`` (and needs a ``gate``);
    ``layout: request`` reads them from the message itself.
    """

    name: StateName
    layout: Literal["event", "request"] = "request"
    fields: dict[Identifier, ContractField] = Field(default_factory=dict)
    checks: list[Ordered] = Field(default_factory=list)
    gate: EventGate | None = None
    validate_state: StateName = Field(default="ValidateIncomingEvent", alias="validate",
                                      description="the state inside that validates")
    valid_choice: StateName = Field(default="IncomingEventValidChoice",
                                    description="request layout: the Choice between the body and the reject path")
    reject: Reject = Reject()
    description: str | None = Field(default=None, description="what the event is, for its JSON Schema")

    @model_validator(mode="after")
    def _gate_for_events(self) -> ParseContext:
        if (self.layout == "event") != (self.gate is not None):
            raise ValueError("layout: event needs a 'gate' (which event_type runs), and only it takes one")
        return self


class CheckRule(Strict):
    that: Expr
    reason: Expr


class Check(Strict):
    """Reject the event (the intake's reject path) unless every rule holds, e.g. against a loaded item."""

    name: StateName
    rules: list[CheckRule] = Field(min_length=1)


class Load(Strict):
    """A DynamoDB getItem into a variable (a flat item becomes a plain object); with ``index``, a Query of
    that index by its one key, into a list of items."""

    name: StateName
    table: Literal["routing", "parameters", "locks"]
    key: dict[str, Expr]
    into: Identifier
    required: bool = False
    index: str | None = None


class Resolve(Strict):
    """Compute ``$params``: project defaults, then ``$project`` values, then these expressions in order."""

    name: StateName
    base: list[Identifier] = Field(default_factory=list, description="variables merged over the defaults")
    values: dict[Identifier, Expr] = Field(default_factory=dict)


class Duplicate(Strict):
    """What a second acquisition does: ``fail`` the execution, ``succeed`` quietly, or (in a Map) ``skip`` the
    item, which ends with status ``Skipped``."""

    fail: StateName | None = None
    succeed: StateName | None = None
    skip: StateName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Duplicate:
        if sum(x is not None for x in (self.fail, self.succeed, self.skip)) != 1:
            raise ValueError("on_duplicate needs exactly one of 'fail', 'succeed' or 'skip'")
        return self

    @property
    def name(self) -> str:
        return self.fail or self.succeed or self.skip or ""


class Release(Strict):
    on_success: StateName
    on_failure: StateName
    failure_action: Literal["delete", "mark_failed"] = "delete"


class Lock(Strict):
    """Run ``body`` at most once at a time per key, and (until the SUCCEEDED record expires) once.

    The key is ``<scope>#`` followed by the parts as a JSON array, so parts may contain any character. A
    RUNNING lease lasts the machine's ``timeout_seconds`` plus the project's ``locks.margin_seconds``;
    ``force`` (an expression) lets a SUCCEEDED lock be taken again.
    """

    acquire: StateName
    scope: Identifier
    key: list[Expr] = Field(min_length=1)
    on_duplicate: Duplicate
    release: Release
    lease_seconds: Annotated[int, Field(ge=60)] | None = Field(
        default=None, description="default: the machine's timeout_seconds + the project's locks.margin_seconds")
    force: Expr | None = None
    body: list[Step]


class PollStates(Strict):
    start: StateName
    describe: StateName
    choice: StateName
    wait: StateName
    increment: StateName
    record: StateName | None = Field(default=None, description="default: Record<start>")
    stop: StateName | None = Field(default=None, description="default: Stop<start>")


class Poll(Strict):
    """How often to describe the pipeline. ``max_attempts`` defaults to what covers the pipeline's own limits
    (its longest chain of steps, each at its max runtime, retries and provisioning included)."""

    every_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100_000)] | None = None
    stop_attempts: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="describes after a stop before giving up on it (default: the project's)")


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


class ItemContract(Strict):
    """Each item of a list validated like an event: fields, checks, and rules over the item's fields (bound by
    name) and the machine's variables. An item keeps ``valid`` and ``reason``; a Map fails invalid items."""

    fields: dict[Identifier, ContractField]
    checks: list[Ordered] = Field(default_factory=list)
    rules: list[CheckRule] = Field(default_factory=list)


class ReadJson(Strict):
    """Read a JSON object from S3 into a variable."""

    name: StateName
    bucket: Annotated[str, Field(pattern=r"^(\$\{[A-Za-z][A-Za-z0-9]*\}|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$",
                                 description="a bucket name or a ${Placeholder} (the policy names it)")]
    key: Expr
    into: Identifier
    select: Expr | None = Field(default=None, description="JSONata over the parsed document as $doc")
    items: ItemContract | None = Field(default=None, description="validate each item of the selected list")


class ItemEnd(Strict):
    name: StateName
    output: dict[str, Any] = Field(default_factory=dict)


class MapItems(Strict):
    """Run ``steps`` once per item of ``items`` (the item is ``$item``); results collect into ``into``.

    An item whose ``valid`` is false ends at once in ``item_failed`` with its ``reason``; every item's end
    (succeeded, failed or skipped) is one result, so one item's failure never stops the others.
    """

    name: StateName
    item_start: StateName = Field(description="the Choice each item starts at (binds $item, checks validity)")
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


class CheckStep(Strict):
    check: Check


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
    "check": CheckStep,
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
    | Annotated[CheckStep, Tag("check")]
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
    timeout_seconds: Annotated[int, Field(ge=1, le=31_536_000)] = Field(
        description="every execution ends: locks lease and pipeline runs are recorded for this long, plus a margin")
    on_failure: FailureTarget
    steps: list[Step] = Field(min_length=1)


class StateMachine(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["StateMachine"]
    metadata: Metadata
    spec: StateMachineSpec


Lock.model_rebuild()
MapItems.model_rebuild()
