"""JSONata building blocks shared by the constructs.

Everything here returns JSONata source (without the ``{% %}`` delimiters) or wraps it.
"""

from __future__ import annotations

import json
import re
from typing import Any

OPEN, CLOSE = "{%", "%}"


def expr_body(value: Any) -> str | None:
    """The JSONata source of a ``{% ... %}`` value, else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.startswith(OPEN) and value.endswith(CLOSE):
        return value[len(OPEN) : -len(CLOSE)].strip()
    return None


def is_expr(value: Any) -> bool:
    return expr_body(value) is not None


def inner(value: Any) -> str:
    """JSONata source for a spec value: the body of ``{% ... %}``, or a literal as JSON."""
    body = expr_body(value)
    return json.dumps(value, sort_keys=True) if body is None else body


_NEWLINE = re.compile(r"\s*\n\s*")


def wrap(source: str) -> str:
    """``{% source %}`` on one line (asl-validator, like many tools, rejects multi-line templates)."""
    return f"{OPEN} {_NEWLINE.sub(' ', source.strip())} {CLOSE}"


def template(value: Any, bind: str = "") -> Any:
    """A spec value as an ASL JSONata template (objects and lists keep their shape)."""
    if isinstance(value, dict):
        return {k: template(v, bind) for k, v in value.items()}
    if isinstance(value, list):
        return [template(v, bind) for v in value]
    if is_expr(value):
        return wrap(f"({bind}{inner(value)})" if bind else inner(value))
    return value


def block(bindings: list[tuple[str, str]], result: str) -> str:
    """``( $a := ...; $b := ...; result )`` with one binding per line."""
    lines = [f"${name} := {src};" for name, src in bindings]
    return "(\n  " + "\n  ".join([*lines, result]) + "\n)"


def literal(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# Unwraps the payload that reached the state machine: SQS records (EventBridge Pipes delivers an array),
# SNS notifications (also inside SQS bodies), Lambda-style Records, and JSON carried as a string.
# Text that does not look like a JSON document is kept as a string so that later states can ignore it.
NORMALIZE = r"""(
  $looks_json := function($s) { $contains($trim($s), /^[\{\[]/) and $contains($trim($s), /[\}\]]$/) };
  $unwrap := function($v, $depth) {(
    $depth > 6 ? $v :
    $type($v) = 'string' ? ($looks_json($v) ? $unwrap($parse($v), $depth + 1) : $v) :
    $type($v) = 'array' ? ($count($v) > 0 ? $unwrap($v[0], $depth + 1) : null) :
    $type($v) != 'object' ? $v :
    $type($v.Records) = 'array' ? $unwrap($v.Records, $depth + 1) :
    $type($v.Sns) = 'object' ? $unwrap($v.Sns, $depth + 1) :
    $type($v.body) = 'string' and ($exists($v.messageId) or $exists($v.eventSource)) ? $unwrap($v.body, $depth + 1) :
    $type($v.Message) = 'string' and $v.Type = 'Notification' ? $unwrap($v.Message, $depth + 1) :
    $v
  )};
  $unwrap($states.input.payload, 0)
)"""

# <org_id>/<project_name>/<feature_spec_version>/YYYY/MM/DD/HHMM/ at the end of the batch folder.
BATCH_FOLDER_RE = r"/([^\/]+)\/([^\/]+)\/([^\/]+)\/(\d{4})\/(\d{2})\/(\d{2})\/(\d{2})(\d{2})\/?$/"

ISO_PICTURE = "[Y0001]-[M01]-[D01]T[H01]:[m01]:[s01]Z"


def batch_folder_bindings(batch_minutes: int = 15) -> list[tuple[str, str]]:
    ms = batch_minutes * 60_000
    return [
        ("m", "$type($msg) = 'object' ? $msg : {}"),
        ("d", "$type($m.detail) = 'object' ? $m.detail : $m"),
        ("event_type", "$type($d.event_type) = 'string' ? $d.event_type : null"),
        ("batch_folder", "$type($d.batch_folder) = 'string' ? $d.batch_folder : null"),
        ("g", f"$batch_folder ? $match($batch_folder, {BATCH_FOLDER_RE})[0].groups : []"),
        ("ok", "$count($g) = 8"),
        ("org_id", "$ok ? $g[0] : null"),
        ("project_name", "$ok ? $g[1] : null"),
        ("feature_spec_version", "$ok ? $g[2] : null"),
        ("batch_start_ts", "$ok ? $g[3] & '-' & $g[4] & '-' & $g[5] & 'T' & $g[6] & ':' & $g[7] & ':00Z' : null"),
        (
            "batch_end_ts",
            "$type($d.batch_end_ts) = 'string' ? $d.batch_end_ts : "
            f"$ok ? $fromMillis($toMillis($batch_start_ts) + {ms}, '{ISO_PICTURE}') : null",
        ),
        (
            "mini_batch_id",
            "$ok ? $org_id & '-' & $project_name & '-' & $feature_spec_version & '-' & "
            "$g[3] & $g[4] & $g[5] & 'T' & $g[6] & $g[7] : null",
        ),
        (
            "reason",
            "$type($msg) != 'object' ? 'the message is not a JSON object' : "
            "$not($batch_folder) ? 'the event carries no detail.batch_folder' : "
            "$ok ? null : 'detail.batch_folder does not end in "
            "<org>/<project>/<feature_spec_version>/YYYY/MM/DD/HHMM/'",
        ),
    ]


BATCH_FOLDER_FIELDS = [
    "event_type", "batch_folder", "org_id", "project_name", "feature_spec_version",
    "batch_start_ts", "batch_end_ts", "mini_batch_id",
]


def unmarshal_item(source: str) -> str:
    """A flat DynamoDB item (S, N, BOOL, NULL, SS, NS) as a plain object."""
    return (
        f"$merge([{{}}, $each({source}, function($v, $k) {{ {{$k: "
        "$exists($v.S) ? $v.S : $exists($v.N) ? $number($v.N) : $exists($v.BOOL) ? $v.BOOL : "
        "$exists($v.NULL) ? null : $exists($v.SS) ? $v.SS : $exists($v.NS) ? $map($v.NS, $number) : $v"
        "} })])"
    )


def failure_record(state: str, error: str, cause: str) -> dict[str, str]:
    """What a failure branch remembers, for the terminal failure state's Cause."""
    return {"state": state, "error": error, "cause": cause}


CAUGHT_FAILURE = ("{% $states.errorOutput.Error %}", "{% $states.errorOutput.Cause %}")


def inner_template(value: Any) -> str:
    """A template (objects, lists, ``{% %}`` strings, literals) as one JSONata expression."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {inner_template(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(inner_template(v) for v in value) + "]"
    if is_expr(value):
        return f"({inner(value)})"
    return json.dumps(value, sort_keys=True)
