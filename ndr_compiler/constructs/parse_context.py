"""The ``parse_context`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ndr_compiler import ir
from ndr_compiler.constructs.registry import CheckContext, Construct
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand import intake as intake_x
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import OWNER, RESERVED_VARIABLES, Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Identifier, StateName, Strict
from ndr_compiler.models.fields import ContractField, Ordered, field_names

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


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


def expand(x: Expander, c: ParseContext, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    x.intake = intake_x.intake(c, x.span(path))
    rej = c.reject
    x.reject_entry = rej.emit
    validate = ir.Pass(c.validate_state, x.span(path), x.comment(path, "parse_context: validate"),
                       output=js.wrap(intake_x.validation(c)), end=True)
    crashed = (
        "{'valid': false, 'reason': 'the event could not be validated: ' & $states.errorOutput.Error & ': ' & "
        "$substring($string($states.errorOutput.Cause), 0, 300), 'event_type': "
        "$type($msg.detail.event_type) = 'string' ? $msg.detail.event_type : null}"
    )
    after = c.gate.name if c.gate else c.valid_choice
    parse = ir.Map(
        c.name, x.span(path), x.comment(path, f"parse_context ({c.layout}): the typed intake"),
        items=js.wrap('[{"msg": $msg}]'), max_concurrency=1,
        processor=ir.Graph(start_at=validate.name, states=[validate]),
        assign={"ctx": js.wrap("$states.result[0]")}, next=after,
        catch=[ir.Catcher(["States.ALL"], after, assign={"ctx": js.wrap(crashed)})],
    )
    body_next = nxt or scope.fail_to
    reject = {"rejection": js.wrap("$ctx.reason")}
    out: list[ir.State] = [parse]
    if c.gate:
        g = c.gate
        et = js.literal(g.event_type)
        gate_path = (*path, "gate")
        out.append(ir.Choice(
            g.name, x.span(gate_path), x.comment(gate_path, f"gate: {g.event_type} events run"),
            rules=[
                ir.ChoiceRule(js.wrap(f"$ctx.event_type = {et} and $ctx.valid"), body_next),
                ir.ChoiceRule(js.wrap(f"$ctx.event_type = {et}"), rej.emit, assign=reject),
            ],
            default=g.ignore,
        ))
        reason = (f"$ctx.event_type ? 'event_type \"' & $ctx.event_type & '\" is not \"' & {et} & '\"' : "
                  "$ctx.reason ? $ctx.reason : 'the event has no detail.event_type'")
        out.append(ir.Succeed(
            g.ignore, x.span(gate_path), x.comment(gate_path, "gate: another kind of event"),
            output=js.wrap(f'{{"ignored": true, "reason": {reason}, "event_type": $ctx.event_type}}'),
        ))
    else:
        out.append(ir.Choice(  # rule-level Assigns only: a state-level one would apply to every branch
            c.valid_choice, x.span(path), x.comment(path, "parse_context: valid?"),
            rules=[ir.ChoiceRule(js.wrap("$ctx.valid"), body_next),
                   ir.ChoiceRule(js.wrap("true"), rej.emit, assign=reject)],
        ))
    rej_path = (*path, "reject")
    emit = ir.Task(
        rej.emit, x.span(rej_path), x.comment(rej_path, "reject: announce the invalid event"),
        **svc.put_events(x.project.spec.event_bus),
        arguments={"Entries": [{
            "EventBusName": x.project.spec.event_bus, "Source": x.project.spec.event_source,
            "DetailType": rej.detail_type,
            "Detail": {
                "state_machine": x.sm.metadata.name,
                "execution_arn": js.wrap(OWNER),
                "reason": js.wrap("$rejection"),
                "received": js.wrap("$substring($string($msg), 0, 2000)"),
            },
        }]},
        next=rej.fail,
        # the rejection stands even when the announcement fails
        catch=[ir.Catcher(["States.ALL"], rej.fail)],
    )
    fail = ir.Fail(rej.fail, x.span(rej_path), x.comment(rej_path, "reject: NDR.InvalidEvent"),
                   error="NDR.InvalidEvent", cause=js.wrap("$rejection"))
    return [*out, emit, fail]


def check(c: ParseContext, path: PathKey, ctx: CheckContext) -> Iterator[Diagnostic]:
    """A field is bound as a variable of its own name: it may not shadow one the constructs own."""
    binds = intake_x.contract.TYPES["batch_folder"].binds
    bound = {b for f in c.fields.values() if f.type == "batch_folder" for b in binds}
    bound.discard("batch_folder")
    for name in c.fields:
        if (name in RESERVED_VARIABLES | intake_x.INTAKE_NAMES or name in bound
                or name.startswith(intake_x.INTAKE_PREFIXES) or intake_x.INTAKE_INFIX in name):
            yield Diagnostic("E303", f"field '{name}' would shadow the variable '${name}'",
                             ctx.span((*path, "fields", name)))


def binds(body: dict[str, Any]) -> set[str]:
    return field_names(body.get("fields"))


CONSTRUCT = Construct("parse_context", ParseContext, expand, entry=lambda c, in_lock: c.name, check=check, binds=binds)
