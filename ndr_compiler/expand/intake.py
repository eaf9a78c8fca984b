"""The typed intake: a ``parse_context`` spec as the JSONata that validates an event field by field.

The expression never throws on any JSON value and yields ``$ctx`` (``valid``, ``reason``, each field in
canonical form); the types are ``ndr_jobs.interface.contract``'s. See ``docs/design/expand.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ndr_compiler import ir
from ndr_compiler.diagnostics import Span
from ndr_compiler.expand import snippets as js
from ndr_jobs.interface import contract

if TYPE_CHECKING:
    from ndr_compiler.constructs.parse_context import ParseContext
    from ndr_compiler.models.fields import CheckRule, ContractField, ItemContract, Ordered


def _re(pattern: str) -> str:
    """A pattern as a JSONata regex literal (``/`` escaped)."""
    return "/" + pattern.replace("/", "\\/") + "/"


#: helper functions every intake binds first; each returns the canonical value, or null when invalid
HELPERS: list[tuple[str, str]] = [
    ("absent", "function($v) { $not($exists($v)) or $v = null or $v = '' }"),
    ("show", "function($v) { ($s := $type($v) = 'string' ? $v : $string($v); "
             "$length($s) > 100 ? $substring($s, 0, 100) & '...' : $s) }"),
    ("date_ok", f"function($y, $mo, $d) {{ $y >= {contract.MIN_YEAR} and $y <= {contract.MAX_YEAR} and "
                "$mo >= 1 and $mo <= 12 and $d >= 1 and "
                "$d <= ($mo = 2 ? (($y % 4 = 0 and $y % 100 != 0) or $y % 400 = 0 ? 29 : 28) "
                ": $mo in [4, 6, 9, 11] ? 30 : 31) }"),
    ("re_ok", "function($v, $re) { $type($v) = 'string' and $contains($v, $re) }"),
    ("t_id", f"function($v) {{ $re_ok($v, {_re(contract.ID_PATTERN)}) ? $v : null }}"),
    ("t_run_key", f"function($v) {{ $re_ok($v, {_re(contract.RUN_KEY_PATTERN)}) ? $v : null }}"),
    ("t_timestamp", "function($v) { ("
                  f"$g := $re_ok($v, {_re(contract.TIMESTAMP_PATTERN)})"
                  f" ? $match($v, {_re(contract.TIMESTAMP_PATTERN)})[0].groups : [];"
                  " $count($g) >= 6 and $date_ok($number($g[0]), $number($g[1]), $number($g[2]))"
                  " and $number($g[3]) <= 23 and $number($g[4]) <= 59 and $number($g[5]) <= 59"
                  " ? $g[0] & '-' & $g[1] & '-' & $g[2] & 'T' & $g[3] & ':' & $g[4] & ':' & $g[5] & 'Z' : null) }"),
    ("t_window_start", "function($v) { ($t := $t_timestamp($v); $t and $number($substring($t, 14, 2)) % "
                     f"{contract.WINDOW_MINUTES} = 0 and $substring($t, 17, 2) = '00' ? $t : null) }}"),
    ("t_month", f"function($v) {{ $re_ok($v, {_re(contract.MONTH_PATTERN)}) ? $v : null }}"),
    ("t_s3_uri", f"function($v) {{ $re_ok($v, {_re(contract.S3_URI_PATTERN)}) and $length($v) <= 1024 ? $v : null }}"),
    ("t_boolean", "function($v) { $type($v) = 'boolean' ? $v : null }"),
    ("t_count", "function($v) { $type($v) = 'number' and $v >= 0 and $v = $floor($v) ? $v : null }"),
    ("t_text", "function($v, $max) { $type($v) = 'string' and $length($v) <= $max and "
             "$not($contains($v, /[\\u0000-\\u001f\\u007f]/)) ? $v : null }"),
    ("t_batch_folder", "function($v) { ("
                     f"$g := $re_ok($v, {_re(contract.BATCH_FOLDER_PATTERN)}) and $length($v) <= 1024"
                     f" ? $match($v, {_re(contract.BATCH_FOLDER_PATTERN)})[0].groups : [];"
                     " $start := $count($g) = 9 and $date_ok($number($g[4]), $number($g[5]), $number($g[6]))"
                     " and $number($g[7]) <= 23 and $g[8] in ['00', '15', '30', '45']"
                     " ? $g[4] & '-' & $g[5] & '-' & $g[6] & 'T' & $g[7] & ':' & $g[8] & ':00Z' : null;"
                     " $start ? {'batch_folder': $v, 'raw_bucket': $g[0], 'org_id': $g[1], 'project_name': $g[2],"
                     " 'feature_spec_version': $g[3], 'batch_start_ts': $start,"
                     f" 'batch_end_ts': $fromMillis($toMillis($start) + {contract.WINDOW_MINUTES * 60_000},"
                     f" '{js.ISO_PICTURE}'),"
                     " 'mini_batch_id': $g[1] & '-' & $g[2] & '-' & $g[3] & '-' & $g[4] & $g[5] & $g[6] & 'T'"
                     " & $g[7] & $g[8]} : null) }"),
]
#: names the intake binds itself: a field may not take them (E303)
INTAKE_NAMES = frozenset({"absent", "show", "date_ok", "re_ok", "msg", "m", "d", "event_type", "problems", "valid",
                          "reason", "w", "all"})
#: internal names contain a double underscore; the type helpers start with t_
INTAKE_PREFIXES = ("t_",)
INTAKE_INFIX = "__"


def _check(f: ContractField, value: str) -> str:
    """JSONata: the canonical value of ``value`` (a variable), or null."""
    if f.type == "text":
        return f"$t_text({value}, {f.max_length})"
    if f.type == "list":
        item = f"$t_{f.items}"
        return (f"($type({value}) = 'array' and $count({value}) <= {f.max_items} and "
                f"$count($filter({value}, function($x) {{ $not($exists({item}($x))) or {item}($x) = null }})) = 0"
                f" ? [$map({value}, function($x) {{ {item}($x) }})] : null)")
    if f.type == "batch_folder":
        return f"$t_batch_folder({value})"
    return f"$t_{f.type}({value})"


def _summary(f: ContractField) -> str:
    if f.type == "list":
        return f"a JSON array of at most {f.max_items} items, each {contract.TYPES[f.items or 'id'].summary}"
    if f.type == "text":
        return f"text of at most {f.max_length} characters without control characters"
    return contract.TYPES[f.type].summary


def _field_bindings(fields: dict[str, ContractField], checks: list[Ordered], rules: list[CheckRule],
                    label_prefix: str) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Bindings that validate the fields of ``$d`` in order: (bindings, problem variables, output fields)."""
    bindings: list[tuple[str, str]] = []
    errors: list[str] = []
    outputs: list[str] = []
    for name, f in fields.items():
        source = f.source or name
        raw = f"raw__{name}"
        given = f"$lookup($d, {js.literal(source)})"
        if f.default is not None:
            bindings.append((raw, f"$absent({given}) ? ({js.inner(f.default)}) : {given}"))
        else:
            bindings.append((raw, given))
        if f.type == "batch_folder":
            parts = f"parts__{name}"
            bindings.append((parts, f"$absent(${raw}) ? null : {_check(f, '$' + raw)}"))
            bindings.append((name, f"${parts} ? ${parts}.batch_folder : null"))
            for bound in contract.TYPES["batch_folder"].binds:
                bindings.append((bound, f"${parts} ? ${parts}.{bound} : null"))
                outputs.append(bound)
        else:
            bindings.append((name, f"$absent(${raw}) ? null : {_check(f, '$' + raw)}"))
        label = js.literal(label_prefix + source)
        missing = f"$absent(${raw}) ? ({js.literal(f.required)} ? {label} & ' is missing' : null)"
        invalid = f"$type(${name}) != 'boolean'" if f.type == "boolean" else f"${name} = null"  # false is a value
        problem = (f"{missing} : {invalid} ? {label} & ' ' & $show(${raw}) & ' is not ' & {js.literal(_summary(f))}"
                   " : null")
        errors.append(f"err__{name}")
        bindings.append((f"err__{name}", problem))
        if f.equals:
            errors.append(f"eq__{name}")
            bindings.append((f"eq__{name}", f"${name} != null and ${f.equals} != null and ${name} != ${f.equals} ? "
                                           f"{label} & ' ' & $show(${name}) & ' does not match the ' & "
                                           f"{js.literal(f.equals)} & ' ' & $show(${f.equals}) : null"))
        outputs.append(name)
    for i, o in enumerate(checks):
        if o.window:
            a, b = o.window
            check = (f"${a} and ${b} and $toMillis(${b}) - $toMillis(${a}) != {contract.WINDOW_MINUTES * 60_000} ? "
                     f"{js.literal(b)} & ' ' & ${b} & ' is not {contract.WINDOW_MINUTES} minutes after ' & "
                     f"{js.literal(a)} & ' ' & ${a} : null")
        else:
            a, b = o.ordered or ("", "")
            check = (f"${a} and ${b} and $not(${a} < ${b}) ? {js.literal(a)} & ' ' & ${a} & ' is not before ' & "
                     f"{js.literal(b)} & ' ' & ${b}")
            if o.max_seconds is not None:
                check += (f" : ${a} and ${b} and $toMillis(${b}) - $toMillis(${a}) > {o.max_seconds * 1000} ? "
                          f"'the range from ' & {js.literal(a)} & ' to ' & {js.literal(b)} & ' is longer than "
                          f"{o.max_seconds} seconds'")
            check += " : null"
        bindings.append((f"order__{i}", check))
        errors.append(f"order__{i}")
    if rules:  # only once the fields are valid: a rule may assume their types
        fine = " and ".join(f"($not($exists(${e})) or ${e} = null)" for e in errors) or "true"
        for i, r in enumerate(rules):
            bindings.append((f"err__rule{i}", f"({fine}) and $not({js.inner(r.that)}) ? ({js.inner(r.reason)}) : null"))
            errors.append(f"err__rule{i}")
    return bindings, errors, list(dict.fromkeys(outputs))


def _result(errors: list[str], outputs: list[str], subject: str, event_type: str | None) -> tuple[str, str]:
    """(the problems binding, the result object)."""
    problems = "$filter([" + ", ".join(f"${e}" for e in errors) + "], function($x) { $type($x) = 'string' })"
    obj = ", ".join(
        [
            f"\"valid\": $type({subject}) = 'object' and $count($problems) = 0",
            f"\"reason\": $type({subject}) != 'object' ? 'the message is not a JSON object' : "
            "$count($problems) > 0 ? $join($problems, '; ') : null",
        ]
        + ([f"\"event_type\": {event_type}"] if event_type else [])
        + [f'"{n}": ${n}' for n in outputs]
    )
    return problems, "{" + obj + "}"


def validation(c: ParseContext) -> str:
    """The JSONata (without ``{% %}``) that validates ``$states.input.msg`` into ``$ctx``."""
    bindings: list[tuple[str, str]] = list(HELPERS)
    bindings.append(("msg", "$states.input.msg"))
    bindings.append(("m", "$type($msg) = 'object' ? $msg : {}"))
    if c.layout == "event":
        bindings.append(("d", "$type($m.detail) = 'object' ? $m.detail : {}"))
        bindings.append(("event_type", "$type($d.event_type) = 'string' ? $d.event_type : null"))
    else:
        bindings.append(("d", "$m"))
    fields, errors, outputs = _field_bindings(c.fields, c.checks, [], "detail." if c.layout == "event" else "")
    problems, obj = _result(errors, outputs, "$msg", "$event_type" if c.layout == "event" else "null")
    return js.block([*bindings, *fields, ("problems", problems)], obj)


def items_validation(items: ItemContract, select: str) -> str:
    """JSONata: each item of ``select`` (not an array: no items) validated, with ``valid`` and ``reason``."""
    fields, errors, outputs = _field_bindings(items.fields, items.checks, items.rules, "")
    problems, obj = _result(errors, outputs, "$w", None)
    one = js.block([("d", "$type($w) = 'object' ? $w : {}"), *fields, ("problems", problems)], obj)
    return js.block([*HELPERS, ("all", select)],
                    f"[$map($type($all) = 'array' ? $all : [], function($w) {{ {one} }})]")


def intake(c: ParseContext, origin: Span) -> ir.Intake:
    fields = [
        ir.IntakeField(name, f.type, f.required, f.source or name, f.items, f.max_items, f.max_length, f.equals,
                       f.default is not None, f.description)
        for name, f in c.fields.items()
    ]
    ordered = [(o.ordered[0], o.ordered[1], o.max_seconds) for o in c.checks if o.ordered]
    return ir.Intake(c.layout, fields, ordered, origin, c.gate.event_type if c.gate else None, c.description)
