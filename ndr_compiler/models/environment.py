"""``kind: Environment``: where and how the project deploys (account, region, roles, images, names)."""

from typing import Annotated, Literal

from pydantic import Field

from ndr_compiler.models.base import Metadata, Strict


class RoleRef(Strict):
    """Either an existing role (``arn``) or one the deploy creates with the generated policy."""

    arn: str | None = None
    create: bool = True


class Roles(Strict):
    state_machines: RoleRef = RoleRef()
    pipelines: RoleRef = RoleRef()
    events: RoleRef = RoleRef()


class EventTrigger(Strict):
    state_machine: str
    event_bus: str = "default"
    source: list[str]
    detail_type: list[str]
    input_path: str | None = Field(default=None, description="e.g. $.detail: hand only the detail to the machine")
    period_minutes: Annotated[int, Field(ge=1, le=44640)] | None = Field(
        default=None, description="how often the event arrives (e.g. 15 for each mini-batch): the cadence model "
        "compares the machine's critical path with it (docs/cadence.md); unset: on demand, no comparison")


class ScheduleTrigger(Strict):
    state_machine: str
    schedule: Annotated[str, Field(pattern=r"^(cron|rate)\(.+\)$")]
    input: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Triggers(Strict):
    events: dict[str, EventTrigger] = Field(default_factory=dict)
    schedules: dict[str, ScheduleTrigger] = Field(default_factory=dict)


class FreshnessAlarm(Strict):
    state_machine: str = Field(description="the machine whose successful executions prove the data is fresh")
    minutes: Annotated[int, Field(ge=10, le=1440, multiple_of=5)] = Field(
        default=45, description="alarm when no execution of it succeeded in this many minutes")


class Alarms(Strict):
    """CloudWatch alarms of the environment, to one SNS topic ``<prefix>-alarms``: every state machine failed,
    timed out or throttled, every pipeline's failed executions, freshness, and the delta job's quarantine ratio."""

    enabled: bool = True
    email: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list, description="addresses subscribed to the topic (each confirms by mail)")
    freshness: list[FreshnessAlarm] = Field(default_factory=list)
    max_quarantine_ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="alarm when a delta batch quarantines more than this share of its lines")


class Cadence(Strict):
    """Inputs of the cadence latency model (docs/cadence.md) beyond the measured runtimes."""

    startup_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=180, description="typical start-up of one SageMaker Processing job (provisioning, image pull)")
    runtime_factor: Annotated[float, Field(gt=0, le=1000)] = Field(
        default=1.0, description="multiplies the measured (local) runtimes: cloud instances and S3 differ")
    runtimes: dict[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")],
                   Annotated[float, Field(ge=0, le=604800)]] = Field(
        default_factory=dict, description="entrypoint -> seconds, over (or beside) the measured runtimes")


class EnvironmentSpec(Strict):
    project: str
    account: Annotated[str, Field(pattern=r"^\d{12}$")]
    region: str
    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,20}$")] = Field(
        description="prefix of every resource name this environment creates")
    roles: Roles = Roles()
    values: dict[str, str] = Field(default_factory=dict, description="values of ${...} placeholders")
    pipelines: dict[str, str] = Field(default_factory=dict,
                                      description="pipeline spec name -> SageMaker pipeline name (default: prefixed)")
    state_machines: dict[str, str] = Field(default_factory=dict,
                                           description="state machine spec name -> deployed name (default: prefixed)")
    alias: str = "live"
    triggers: Triggers = Triggers()
    alarms: Alarms = Alarms()
    cadence: Cadence = Cadence()
    production: bool = Field(default=False, description="a production environment: a trigger whose critical "
                             "path exceeds its period is an error (E701), not a warning (W701)")
    on_missing_value: Literal["error"] = "error"


class Environment(Strict):
    apiVersion: Literal["ndr/v1"]
    kind: Literal["Environment"]
    metadata: Metadata
    spec: EnvironmentSpec
