"""A machine's inbound contract (its intake) as a JSON Schema: ``generated/schema/events/<machine>.schema.json``.

The schema checks what JSON Schema can: each field's type and pattern, and what is required. The rules it
cannot state (calendar dates, 15-minute boundaries, ``equals``, ``ordered``) are in each field's
``description`` and are enforced by the state machine and the jobs; the tests hold all three to the same
examples. The event arrives unwrapped here: the SQS and SNS wrappers are taken off first
(``NormalizeIncomingMessage``).
"""

from __future__ import annotations

from typing import Any

from ndr_compiler import ir
from ndr_jobs.interface import contract


def _field_schema(f: ir.IntakeField) -> dict[str, Any]:
    if f.type == "list":
        item = contract.TYPES[f.items or "id"]
        schema: dict[str, Any] = {"type": "array", "maxItems": f.max_items, "items": dict(item.schema)}
        words = f"a JSON array of at most {f.max_items} items, each {item.summary}"
    elif f.type == "text":
        schema = {**contract.TYPES["text"].schema, "maxLength": f.max_length,
                  "not": {"pattern": contract.CONTROL_CHARACTERS}}
        words = f"text of at most {f.max_length} characters without control characters"
    else:
        schema = dict(contract.TYPES[f.type].schema)
        words = contract.TYPES[f.type].summary
    notes = [f.description] if f.description else []
    notes.append(f"Type {f.type}: {words}.")
    if f.equals:
        notes.append(f"Must equal {f.equals} when both are given.")
    if f.has_default:
        notes.append("Absent: a default computed by the state machine.")
    if not f.required or f.has_default:  # absent: missing, null or "" (then the default, if any)
        notes.append("Optional; null and the empty string count as absent.")
        schema = {"anyOf": [schema, {"type": "null"}, {"const": ""}]}
    return {"description": " ".join(notes), **schema}


def contract_schema(machine: ir.StateMachineIR) -> dict[str, Any]:
    intake = machine.intake
    assert intake is not None
    properties = {f.source: _field_schema(f) for f in intake.fields}
    required = [f.source for f in intake.fields if f.required and not f.has_default]
    body: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    checks = [f"{a} is before {b}" + (f", by at most {s} seconds" if s else "") for a, b, s in intake.ordered]
    description = [intake.description or f"The event that starts {machine.name}."]
    if checks:
        description.append("Also: " + "; ".join(checks) + ".")
    description.append("Anything else is rejected: the execution fails with NDR.InvalidEvent after an "
                       "'NDR Event Rejected' event.")
    if intake.layout == "event":
        body["properties"] = {"event_type": {"const": intake.event_type}, **properties}
        body["required"] = ["event_type", *required]
        description.append(f"Events whose detail.event_type is not '{intake.event_type}' are ignored.")
        body = {"type": "object", "properties": {"detail": body}, "required": ["detail"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"events/{machine.name}.schema.json",
        "title": f"{machine.name} input",
        "description": " ".join(description) + " Generated from the machine's parse_context; do not edit.",
        **body,
    }
