"""The typed IR between specs and platform JSON: what expansion produces, IR lint rules check and renderers
read (and read alone). Every node carries the ``origin`` span of the spec element that produced it.
See ``docs/design/expand.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ndr_compiler.diagnostics import Span


@dataclass
class Catcher:
    errors: list[str]
    next: str
    assign: dict[str, Any] | None = None
    output: Any = None
    origin: Span | None = None


@dataclass
class Retrier:
    errors: list[str]
    interval_seconds: int
    max_attempts: int
    backoff_rate: float


@dataclass
class ChoiceRule:
    condition: str
    next: str
    assign: dict[str, Any] | None = None
    origin: Span | None = None
    #: set when this rule ends a poll loop after a bounded number of attempts
    bound: int | None = None


@dataclass
class State:
    name: str
    origin: Span
    comment: str | None = None
    next: str | None = None
    end: bool = False
    output: Any = None
    assign: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass
class Pass(State):
    pass


@dataclass(frozen=True)
class Access:
    """IAM a Task needs: ``actions`` on ``resources``; the accesses of one ``sid`` merge into one statement."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass
class Task(State):
    resource: str = ""
    arguments: Any = None
    catch: list[Catcher] = field(default_factory=list)
    timeout_seconds: int | None = None
    retry: list[Retrier] = field(default_factory=list)
    #: what the call needs in IAM (set with the resource by ``ndr_compiler.expand.services``)
    access: list[Access] = field(default_factory=list)


@dataclass
class Choice(State):
    rules: list[ChoiceRule] = field(default_factory=list)
    default: str | None = None


@dataclass
class Wait(State):
    seconds: int | str = 1


@dataclass
class Succeed(State):
    pass


@dataclass
class Fail(State):
    error: str | None = None
    cause: str | None = None
    #: ends the execution inside a lock on purpose, handing the lock to the janitor (E301 allows it)
    hands_lock_over: bool = False


@dataclass
class Map(State):
    items: Any = None
    item_selector: Any = None
    max_concurrency: int = 0
    processor: Graph | None = None
    catch: list[Catcher] = field(default_factory=list)


@dataclass
class LockRegion:
    """A lock construct: every path that leaves ``body`` must pass through one of ``releases``."""

    acquire: str
    body: list[str]
    releases: list[str]
    origin: Span
    #: how long a RUNNING lock holds, and where that was set (None: derived from the machine's timeout)
    lease_seconds: int = 0
    lease_origin: Span | None = None
    #: the state that marks the work done (effects after it are not protected by the lock)
    success_mark: str = ""


@dataclass
class PollLoop:
    """A run_pipeline construct's polling: its budget, and the pipeline runtime it must cover."""

    start: str
    pipeline: str  # the ${Placeholder} name
    every_seconds: int
    max_attempts: int
    origin: Span
    #: set when the spec gave max_attempts (a derived budget covers the runtime by construction)
    explicit: bool = False
    #: the pipeline's own limit (None: no Pipeline spec serves the placeholder)
    runtime_seconds: int | None = None


@dataclass
class IntakeField:
    """One validated field of an inbound event (``ndr_jobs.interface.contract`` types)."""

    name: str
    type: str
    required: bool
    source: str
    items: str | None = None
    max_items: int = 1000
    max_length: int = 256
    equals: str | None = None
    has_default: bool = False
    description: str | None = None


@dataclass
class Intake:
    """A machine's inbound contract: the layout, its fields in order, and cross-field checks."""

    layout: str  # event | request
    fields: list[IntakeField]
    ordered: list[tuple[str, str, int | None]]
    origin: Span
    event_type: str | None = None
    description: str | None = None


@dataclass
class Graph:
    """A set of states with an entry point: a whole state machine or a Map's item processor."""

    start_at: str
    states: list[State]

    def by_name(self) -> dict[str, State]:
        return {s.name: s for s in self.states}


@dataclass
class PlaceholderRef:
    """A ``${...}`` value that deployment resolves per environment."""

    name: str
    state: str
    origin: Span
    #: pipeline parameters passed at this start, by name (for cross-spec checks)
    parameters: dict[str, Span] = field(default_factory=dict)
    #: the values of those parameters that are literals (not JSONata), for type checks
    literals: dict[str, Any] = field(default_factory=dict)


@dataclass
class StateMachineIR:
    name: str
    file: str
    origin: Span
    graph: Graph
    comment: str | None = None
    timeout_seconds: int | None = None
    locks: list[LockRegion] = field(default_factory=list)
    placeholders: list[PlaceholderRef] = field(default_factory=list)
    child_state_machines: list[PlaceholderRef] = field(default_factory=list)
    polls: list[PollLoop] = field(default_factory=list)
    intake: Intake | None = None
    #: generated by the compiler (the lock janitor), not written as a spec
    generated: bool = False


def successors(state: State) -> list[str]:
    """Every state name control can move to from ``state`` (within its graph)."""
    out: list[str] = []
    if state.next:
        out.append(state.next)
    if isinstance(state, Choice):
        out.extend(r.next for r in state.rules)
        if state.default:
            out.append(state.default)
    if isinstance(state, Task | Map):
        out.extend(c.next for c in state.catch)
    return list(dict.fromkeys(out))


# -- SageMaker pipelines ------------------------------------------------------------------------------


@dataclass
class PipelineParameter:
    name: str
    type: str  # String | Integer | Float | Boolean
    default: str | int | float | bool | None
    origin: Span
    required: bool = True


@dataclass
class ParamRef:
    """An argument value bound to a pipeline parameter (rendered as ``{"Get": "Parameters.<name>"}``)."""

    name: str


@dataclass
class Processor:
    image_uri: str
    instance_type: str
    instance_count: int
    volume_size_gb: int
    max_runtime_seconds: int
    role_arn: str
    environment: dict[str, str] = field(default_factory=dict)
    #: run on the SageMaker Processing Spark container (instance_count > 1 is a Spark cluster)
    spark: bool = False
    spark_config: dict[str, str] = field(default_factory=dict)


@dataclass
class RetryPolicy:
    exception_types: list[str]
    max_attempts: int
    interval_seconds: int
    backoff_rate: float


@dataclass
class StepCommand:
    """One spec step's job inside a fused Processing job: its name, module and command line."""

    name: str
    origin: Span
    module: str
    arguments: list[tuple[str, str | ParamRef]]
    description: str | None = None
    #: the spec step's own max runtime (the job's limit is the sum over its commands)
    max_runtime_seconds: int = 0


@dataclass
class PipelineStep:
    """One SageMaker Processing step. A fused one (``fused`` set) runs several spec steps in order in one Spark
    session through the launcher; its ``module`` and ``arguments`` are then unused (each command has its own)."""

    name: str
    origin: Span
    module: str
    #: the command line after ``python -m <module>``: flags and values, in order
    arguments: list[tuple[str, str | ParamRef]]
    processor: Processor
    depends_on: list[str] = field(default_factory=list)
    retry: RetryPolicy | None = None
    cache_expire_after: str | None = None  # ISO 8601 duration; None: caching off
    description: str | None = None
    #: the spec steps this job runs, in order (a ``fuse`` group); empty: the step is its own job
    fused: list[StepCommand] = field(default_factory=list)

    @property
    def commands(self) -> list[StepCommand]:
        """The spec steps this job runs, in order: its fused commands, or itself."""
        if self.fused:
            return list(self.fused)
        return [StepCommand(self.name, self.origin, self.module, self.arguments, self.description,
                            self.processor.max_runtime_seconds)]

    @property
    def spec_steps(self) -> list[str]:
        """The names of the spec steps this job runs (lineage: fused steps keep their names)."""
        return [c.name for c in self.commands]


@dataclass
class PipelineIR:
    name: str  # the spec's metadata.name
    file: str
    origin: Span
    placeholders: list[str]
    parameters: list[PipelineParameter]
    steps: list[PipelineStep]
    description: str | None = None
