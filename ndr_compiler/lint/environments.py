"""Environment rules: what a deploy would otherwise find out half-way (E501, E514 names, E123 schedules), and
the cadence model's verdict (W701/E701, E702)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ndr_compiler import ir
from ndr_compiler.diagnostics import Diagnostic, did_you_mean
from ndr_compiler.specs import Spec, SpecSet

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: EventBridge cron fields: name, lowest, highest, names for 1.., extra single tokens allowed
FIELDS = (
    ("minutes", 0, 59, (), ()),
    ("hours", 0, 23, (), ()),
    ("day-of-month", 1, 31, (), ("?", "L", "LW")),
    ("month", 1, 12, MONTHS, ()),
    ("day-of-week", 1, 7, DAYS, ("?", "L")),
    ("year", 1970, 2199, (), ()),
)
RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>minutes?|hours?|days?)\)$")
NUMBER = re.compile(r"^\d+$")


def _value(token: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if token.upper() in names:
        return names.index(token.upper()) + 1
    if NUMBER.match(token) and low <= int(token) <= high:
        return int(token)
    return None


def _part_problem(part: str, field: tuple[str, int, int, tuple[str, ...], tuple[str, ...]]) -> str | None:
    name, low, high, names, singles = field
    if part == "*" or part in singles:
        return None
    if name == "day-of-month" and re.fullmatch(r"\d+W", part) and _value(part[:-1], low, high, ()) is not None:
        return None
    if name == "day-of-week":
        if (m := re.fullmatch(r"(\w+)#([1-5])", part)) and _value(m[1], low, high, names) is not None:
            return None
        if (m := re.fullmatch(r"(\w+)L", part)) and _value(m[1], low, high, names) is not None:
            return None
    base, _, step = part.partition("/")
    if step and not (NUMBER.match(step) and int(step) >= 1):
        return f"'{part}': the increment after '/' must be a positive whole number"
    if base == "*" and step:
        return None
    first, _, last = base.partition("-")
    for token in (first, last) if last else (first,):
        if _value(token, low, high, names) is None:
            allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
            return f"'{token}' is not a {name} value ({allowed})"
    return None


def schedule_problem(expression: str) -> str | None:
    """Why ``expression`` is not an EventBridge ``cron(...)`` or ``rate(...)`` expression, or None."""
    if expression.startswith("rate("):
        m = RATE.match(expression)
        if m is None:
            return "a rate is 'rate(<whole number> <minute(s)|hour(s)|day(s)>)', for example rate(15 minutes)"
        value, unit = int(m["value"]), m["unit"]
        if value < 1:
            return "a rate's value must be at least 1"
        if (value == 1) != (not unit.endswith("s")):
            right = unit.rstrip("s") if value == 1 else unit + "s"
            return f"write rate({value} {right}): the unit is singular for 1 only"
        return None
    body = expression.removeprefix("cron(").removesuffix(")")
    fields = body.split()
    if len(fields) != len(FIELDS):
        return (f"a cron has {len(FIELDS)} fields (minutes hours day-of-month month day-of-week year), this one has "
                f"{len(fields)}")
    for text, field in zip(fields, FIELDS, strict=True):
        for part in text.split(","):
            if (problem := _part_problem(part, field)) is not None:
                return f"{field[0]}: {problem}"
    day_of_month, day_of_week = fields[2], fields[4]
    if (day_of_month == "?") == (day_of_week == "?"):
        return "exactly one of day-of-month and day-of-week must be '?' (EventBridge cannot combine them)"
    return None


def _names(env: Spec, kind: str, names: dict[str, Spec], project: str, path: tuple[str | int, ...],
           name: str) -> Iterator[Diagnostic]:
    spec = names.get(name)
    if spec is None:
        yield Diagnostic("E514", f"{kind} '{name}' is not defined{did_you_mean(name, set(names))}", env.doc.span(path))
    elif spec.model.spec.project != project:
        yield Diagnostic("E514", f"{kind} '{name}' belongs to project '{spec.model.spec.project}', not '{project}'",
                         env.doc.span(path))


def environment_rules(specs: SpecSet) -> Iterator[Diagnostic]:
    projects = specs.projects()
    from ndr_compiler.cadence import never_fires  # the model imports this module

    machines = {s.name: s for s in specs.state_machines()}
    pipelines = {s.name: s for s in specs.of_kind("Pipeline")}
    for env in sorted(specs.of_kind("Environment"), key=lambda s: (s.doc.file, s.name)):
        spec = env.model.spec
        if spec.project not in projects:
            if not specs.is_broken("Project", spec.project):
                known = ", ".join(sorted(projects)) or "none"
                yield Diagnostic("E501", f"project '{spec.project}' is not defined (known: {known})"
                                 f"{did_you_mean(spec.project, set(projects))}", env.doc.span(("spec", "project")))
            continue
        for group, triggers in (("events", spec.triggers.events), ("schedules", spec.triggers.schedules)):
            for name, trigger in sorted(triggers.items()):
                path = ("spec", "triggers", group, name)
                if not specs.is_broken("StateMachine", trigger.state_machine):
                    yield from _names(env, "state machine", machines, spec.project, (*path, "state_machine"),
                                      trigger.state_machine)
        for i, fresh in enumerate(spec.alarms.freshness):
            if not specs.is_broken("StateMachine", fresh.state_machine):
                yield from _names(env, "state machine", machines, spec.project,
                                  ("spec", "alarms", "freshness", i, "state_machine"), fresh.state_machine)
        for name, trigger in sorted(spec.triggers.schedules.items()):
            if (problem := schedule_problem(trigger.schedule) or never_fires(trigger.schedule)) is not None:
                yield Diagnostic("E123", f"schedule {trigger.schedule}: {problem}",
                                 env.doc.span(("spec", "triggers", "schedules", name, "schedule")))
        for kind, mapping, known in (("state machine", spec.state_machines, machines),
                                     ("pipeline", spec.pipelines, pipelines)):
            for name in sorted(mapping):
                if not specs.is_broken("StateMachine" if known is machines else "Pipeline", name):
                    field = "state_machines" if known is machines else "pipelines"
                    yield from _names(env, kind, known, spec.project, ("spec", field, name), name)


def cadence_rules(specs: SpecSet, machines: list[ir.StateMachineIR],
                  pipelines: dict[str, ir.PipelineIR]) -> Iterator[Diagnostic]:
    """W701 (E701 in a production environment): a trigger's critical path exceeds its period; E702: the
    environment gives a runtime for an entrypoint no pipeline step runs."""
    from ndr_compiler.cadence import breakdown, chunk_windows_of, load_runtimes, trigger_paths  # imports this module

    envs = sorted(specs.of_kind("Environment"), key=lambda s: (s.doc.file, s.name))
    if not envs:
        return
    measured = load_runtimes()
    by_name = {m.name: m for m in machines if not m.generated}
    entrypoints = {step.entrypoint for p in specs.of_kind("Pipeline") for step in p.model.spec.steps}
    for env in envs:
        spec = env.model.spec
        for name in sorted(set(spec.cadence.runtimes) - entrypoints):
            yield Diagnostic("E702", f"cadence.runtimes: no pipeline step runs entrypoint '{name}'"
                             f"{did_you_mean(name, entrypoints)}", env.doc.span(("spec", "cadence", "runtimes", name)))
        project = specs.projects().get(spec.project)
        chunk = chunk_windows_of(project.model.spec.defaults if project else {})
        for t in trigger_paths(spec, by_name, pipelines, measured, chunk):
            if t.overrun is None:
                continue
            code = "E701" if spec.production else "W701"
            bound = "" if t.path.exact else "at least "
            yield Diagnostic(code, f"trigger '{t.name}' ({t.machine}): its critical path exceeds its period of "
                             f"{t.period_seconds:,} s by {bound}{t.overrun:,.1f} s"
                             + (" in a production environment" if spec.production else "")
                             + f" ({'≥ ' if bound else ''}{t.path.total:,.1f} s = {breakdown(t.path)}); "
                             f"ndr-compile plan --env {env.name} shows each leg",
                             env.doc.span(("spec", "triggers", t.group, t.name)))
