"""The cadence latency model (issue 22): each trigger's critical path against its period. See docs/cadence.md.

A triggered machine's critical path is its longest path of waits, read off the IR: each ``run_pipeline`` costs its
pipeline's longest chain of Processing jobs (each job: start-up + runtime) plus one full poll interval; a
``start_workflow`` (always synchronous) costs the child machine's path; a ``map`` costs its body once per item
(round). Other states are negligible (a state transition takes milliseconds) and count 0.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from ndr_compiler import ir
from ndr_compiler.models.environment import EnvironmentSpec

#: measured per-entrypoint runtimes, written by ``make bench`` (``ndr_jobs.devtools.bench --runtimes``)
RUNTIMES_FILE = Path(__file__).with_name("cadence_runtimes.json")
RUNTIMES_FILE_LABEL = "ndr_compiler/cadence_runtimes.json"


class RuntimesFileError(ValueError):
    """The measured runtimes file is missing or malformed."""


@dataclass(frozen=True)
class Measured:
    seconds: Mapping[str, float]
    source: str


def load_runtimes(path: Path = RUNTIMES_FILE) -> Measured:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimesFileError(f"{path.name}: cannot read the measured runtimes: {exc}") from exc
    seconds = doc.get("seconds") if isinstance(doc, dict) else None
    if not isinstance(seconds, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf
            for k, v in seconds.items()):
        raise RuntimesFileError(f"{path.name}: 'seconds' must map entrypoints to non-negative numbers")
    return Measured({k: float(v) for k, v in sorted(seconds.items())}, str(doc.get("source", "")))


# -- periods ---------------------------------------------------------------------------------------------------

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_RATE = re.compile(r"^rate\((\d+) (minute|hour|day)s?\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}
#: the calendar a cron's shortest gap is searched over: eight years, leap years and every weekday layout included
WINDOW_START, WINDOW_YEARS = date(2026, 1, 1), 8


def _number(token: str, names: tuple[str, ...]) -> int:
    return names.index(token.upper()) + 1 if token.upper() in names else int(token)


@functools.lru_cache(maxsize=256)
def _expand(text: str, low: int, high: int, names: tuple[str, ...] = ()) -> frozenset[int]:
    """The values a (valid) numeric cron field allows: lists, ranges (wrapping), steps, names, ``*``."""
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _number(a, names), _number(b, names)
        else:
            first = _number(base, names)
            last = high if step_text else first
        span = (last - first) % (high - low + 1) if last < first else last - first
        values.update(low + (first - low + i) % (high - low + 1) for i in range(0, span + 1, step))
    return frozenset(values)


def _last_day(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _nearest_weekday(d: date) -> date:
    """EventBridge ``nW``: the weekday nearest to ``d`` within its month."""
    if d.weekday() == 5:  # Saturday: Friday, or Monday when Friday is in the previous month
        return d - timedelta(days=1) if d.day > 1 else d + timedelta(days=2)
    if d.weekday() == 6:
        return d + timedelta(days=1) if d != _last_day(d) else d - timedelta(days=2)
    return d


def _day_of_month(text: str, d: date) -> bool:
    for part in text.split(","):
        if part == "L" and d == _last_day(d):
            return True
        if part == "LW" and d == _nearest_weekday(_last_day(d)):
            return True
        if part.endswith("W") and part[:-1].isdigit():
            day = int(part[:-1])
            if day <= _last_day(d).day and d == _nearest_weekday(d.replace(day=day)):
                return True
        elif part not in ("L", "LW") and d.day in _expand(part, 1, 31):
            return True
    return False


def _day_of_week(text: str, d: date) -> bool:
    dow = (d.weekday() + 1) % 7 + 1  # EventBridge: 1 = SUN ... 7 = SAT
    for part in text.split(","):
        if m := re.fullmatch(r"(\w+)#([1-5])", part):
            if dow == _number(m[1], _DAYS) and (d.day - 1) // 7 + 1 == int(m[2]):
                return True
        elif part == "L":
            if dow == 7:
                return True
        elif (m := re.fullmatch(r"(\w+)L", part)) and not part.isdigit():
            if dow == _number(m[1], _DAYS) and d + timedelta(days=7) > _last_day(d):
                return True
        elif dow in _expand(part, 1, 7, _DAYS):
            return True
    return False


def firing_days(expression: str, first_year: int = WINDOW_START.year, years: int = WINDOW_YEARS) -> list[date]:
    """The days a valid ``cron(...)`` expression fires on, from ``first_year`` for ``years`` years, in order."""
    _, _, dom, month, dow, year = expression.removeprefix("cron(").removesuffix(")").split()
    months, in_years = _expand(month, 1, 12, _MONTHS), _expand(year, 1970, 2199)
    days: list[date] = []
    for y in range(first_year, first_year + years):
        for m in sorted(months) if y in in_years else ():
            last = _last_day(date(y, m, 1)).day
            if dom != "?" and not any(c in dom for c in "LW"):  # plain days of the month: no day to test
                days += [date(y, m, d) for d in sorted(_expand(dom, 1, 31)) if d <= last]
            else:
                days += [d for d in (date(y, m, i) for i in range(1, last + 1))
                         if (_day_of_week(dow, d) if dom == "?" else _day_of_month(dom, d))]
    return days


def never_fires(expression: str) -> str | None:
    """Why a valid ``cron(...)`` expression never fires from the model's first year on, or None when it does (or
    is a rate, or names only years after the calendar searched)."""
    if not expression.startswith("cron("):
        return None
    year = expression.removeprefix("cron(").removesuffix(")").split()[5]
    in_years = _expand(year, 1970, 2199)
    last = WINDOW_START.year + WINDOW_YEARS - 1
    if max(in_years) < WINDOW_START.year:
        return f"its years end before {WINDOW_START.year}: it would never fire"
    if firing_days(expression) or min(in_years) > last:
        return None
    return f"no date from {WINDOW_START.year} to {last} matches its day, month and year fields: it would never fire"


def schedule_period_seconds(expression: str) -> int | None:
    """The shortest gap between two firings of a valid EventBridge ``rate(...)``/``cron(...)`` expression (lint
    E123 checks validity first); None when it fires at most once in the eight years searched."""
    if m := _RATE.match(expression):
        return int(m[1]) * _UNIT[m[2]]
    minutes, hours, *_ = expression.removeprefix("cron(").removesuffix(")").split()
    times = sorted(h * 60 + m for h in _expand(hours, 0, 23) for m in _expand(minutes, 0, 59))
    days = firing_days(expression)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)] if days else []
    gaps += [(b - a).days * 1440 + times[0] - times[-1] for a, b in zip(days, days[1:], strict=False)]
    return min(gaps) * 60 if gaps else None


# -- the model -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    startup_seconds: int
    #: entrypoint -> seconds, the runtime factor applied
    runtimes: Mapping[str, float]
    #: the what-if: a pipeline's consecutive steps on one processor as one Processing job
    fuse: bool = False


#: the 15-minute chain's entrypoints, one window each
WINDOW_CHAIN: tuple[str, ...] = tuple(f"ndr_jobs.scripts.run_{s}" for s in
                                      ("delta_builder", "fg_a_builder", "pair_counts_builder", "fg_c_builder"))
#: a job that runs the chain over a chunk of windows in one Spark session
CHUNK_JOB = "ndr_jobs.scripts.run_backfill_windows"
#: windows per chunk job when the project does not say (its ``backfill_chunk_windows``)
DEFAULT_CHUNK_WINDOWS = 96


def inputs_of(env: EnvironmentSpec, measured: Measured, fuse: bool = False,
              chunk_windows: int = DEFAULT_CHUNK_WINDOWS) -> Inputs:
    """The environment's inputs; a chunk job's runtime, unless given, is its windows' chain (measured) run back
    to back."""
    c = env.cadence
    runtimes = {k: v * c.runtime_factor for k, v in measured.seconds.items()}
    runtimes.update(c.runtimes)  # the environment's own figures are taken as they are
    if CHUNK_JOB not in runtimes and all(e in runtimes for e in WINDOW_CHAIN):
        runtimes[CHUNK_JOB] = chunk_windows * sum(runtimes[e] for e in WINDOW_CHAIN)
    return Inputs(c.startup_seconds, runtimes, fuse)


def chunk_windows_of(defaults: Mapping[str, object]) -> int:
    """A project's ``backfill_chunk_windows`` as the backfill machine bounds it (1 to 192; 96 when unset)."""
    try:
        return max(1, min(192, round(float(str(defaults.get("backfill_chunk_windows", DEFAULT_CHUNK_WINDOWS))))))
    except ValueError:
        return DEFAULT_CHUNK_WINDOWS


@dataclass(frozen=True)
class Leg:
    """One wait on the critical path: a Processing job (start-up + runtime) or the poll that notices a pipeline
    ended (one full interval: the worst case; on average half of it)."""

    at: str  # the state that waits, nested machines and maps joined with " > "
    what: str
    kind: Literal["job", "poll"]
    startup: float = 0.0
    runtime: float | None = 0.0  # None: no measured runtime (counted as 0: the total is then a lower bound)
    poll: float = 0.0
    entrypoints: tuple[str, ...] = ()
    per_item: str | None = None  # inside this Map: once per item (per round of max_concurrency items)

    @property
    def seconds(self) -> float:
        return self.startup + (self.runtime or 0.0) + self.poll


@dataclass(frozen=True)
class CriticalPath:
    legs: tuple[Leg, ...] = ()

    @property
    def total(self) -> float:
        """Each Map counted once (one item or round), unmeasured runtimes as 0: a lower bound unless ``exact``."""
        return sum(leg.seconds for leg in self.legs)

    @property
    def startup(self) -> float:
        return sum(leg.startup for leg in self.legs)

    @property
    def runtime(self) -> float:
        return sum(leg.runtime or 0.0 for leg in self.legs)

    @property
    def polls(self) -> float:
        return sum(leg.poll for leg in self.legs)

    @property
    def jobs(self) -> int:
        return sum(leg.kind == "job" for leg in self.legs)

    @property
    def unmeasured(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for leg in self.legs if leg.runtime is None for e in leg.entrypoints))

    @property
    def maps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(leg.per_item for leg in self.legs if leg.per_item))

    @property
    def exact(self) -> bool:
        return not self.unmeasured and not self.maps


@dataclass
class ProcessingJob:
    steps: list[ir.PipelineStep]
    depends_on: list[int] = field(default_factory=list)


def processing_jobs(p: ir.PipelineIR, fuse: bool = False) -> list[ProcessingJob]:
    """The pipeline's Processing jobs in declared order: one per IR step. With ``fuse`` (the what-if), a step joins
    the job of its only dependency when it is that step's only dependant and runs on the same processor."""
    jobs: list[ProcessingJob] = []
    job_of: dict[str, int] = {}
    for s in p.steps:
        prev = s.depends_on[0] if len(s.depends_on) == 1 else None
        if (fuse and prev in job_of and jobs[job_of[prev]].steps[-1].name == prev
                and jobs[job_of[prev]].steps[-1].processor == s.processor
                and [o.name for o in p.steps if prev in o.depends_on] == [s.name]):
            job_of[s.name] = job_of[prev]
            jobs[job_of[prev]].steps.append(s)
        else:
            job_of[s.name] = len(jobs)
            jobs.append(ProcessingJob([s], sorted({job_of[d] for d in s.depends_on if d in job_of})))
    return jobs


def pipeline_legs(p: ir.PipelineIR, inputs: Inputs, at: str) -> list[Leg]:
    """The pipeline's longest chain of dependent Processing jobs (ties: the first declared)."""
    jobs = processing_jobs(p, inputs.fuse)
    legs: list[Leg] = []
    for job in jobs:
        entrypoints = tuple(c.module for s in job.steps for c in s.commands)  # a fused step: each of its steps'
        known = [inputs.runtimes.get(e) for e in entrypoints]
        runtime = None if any(k is None for k in known) else sum(k or 0.0 for k in known)
        label = " + ".join(s.name + (f" ({' + '.join(s.spec_steps)})" if s.fused else "") for s in job.steps)
        legs.append(Leg(at, f"{p.name}: {label}", "job",
                        startup=float(inputs.startup_seconds), runtime=runtime, entrypoints=entrypoints))
    finish: list[float] = []
    before: list[int | None] = []
    for i, job in enumerate(jobs):
        prev = max(job.depends_on, key=lambda d: (finish[d], -d), default=None)
        finish.append(legs[i].seconds + (finish[prev] if prev is not None else 0.0))
        before.append(prev)
    chain: list[Leg] = []
    last: int | None = max(range(len(jobs)), key=lambda i: (finish[i], -i)) if jobs else None
    while last is not None:
        chain.append(legs[last])
        last = before[last]
    return chain[::-1]


class _Walker:
    def __init__(self, machines: Mapping[str, ir.StateMachineIR], pipelines: Mapping[str, ir.PipelineIR],
                 inputs: Inputs) -> None:
        self.machines = machines
        self.by_placeholder = {ph: p for p in sorted(pipelines.values(), key=lambda p: p.name)
                               for ph in p.placeholders}
        self.inputs = inputs

    def machine(self, name: str, at: str, per_item: str | None, active: tuple[str, ...]) -> list[Leg]:
        machine = self.machines.get(name)
        if machine is None or name in active:  # not compiled (reported elsewhere), or a cycle (E206)
            return []
        return self.graph(machine, machine.graph, at, per_item, (*active, name))

    def graph(self, machine: ir.StateMachineIR, graph: ir.Graph, at: str, per_item: str | None,
              active: tuple[str, ...]) -> list[Leg]:
        states = graph.by_name()
        polls = {p.start: p for p in machine.polls}
        children = {c.state: c.name for c in machine.child_state_machines}
        edges = _forward_edges(graph)
        best: dict[str, list[Leg]] = {}

        def own(state: ir.State) -> list[Leg]:
            where = f"{at} > {state.name}" if at else state.name
            if state.name in polls:
                loop = polls[state.name]
                pipeline = self.by_placeholder.get(loop.pipeline)
                legs = pipeline_legs(pipeline, self.inputs, where) if pipeline else []
                legs.append(Leg(where, f"poll every {loop.every_seconds} s", "poll", poll=float(loop.every_seconds)))
                return [_item(leg, per_item) for leg in legs]
            if state.name in children:
                return self.machine(children[state.name], where, per_item, active)
            if isinstance(state, ir.Map) and state.processor is not None:
                return self.graph(machine, state.processor, where, per_item or state.name, active)
            return []

        def longest(name: str) -> list[Leg]:
            if name not in best:
                tails = [longest(n) for n in edges.get(name, ())]
                tail = max(tails, key=lambda legs: sum(leg.seconds for leg in legs), default=[])
                best[name] = own(states[name]) + tail
            return best[name]

        return longest(graph.start_at) if graph.start_at in states else []


def _item(leg: Leg, per_item: str | None) -> Leg:
    return leg if per_item is None or leg.per_item else dataclasses.replace(leg, per_item=per_item)


def _forward_edges(graph: ir.Graph) -> dict[str, list[str]]:
    """The graph's edges without the back edges of a depth-first walk from the start (the poll loops)."""
    states = graph.by_name()
    edges: dict[str, list[str]] = {}
    on_stack: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        on_stack.add(name)
        edges[name] = []
        for nxt in ir.successors(states[name]):
            if nxt not in states or nxt in on_stack:
                continue
            edges[name].append(nxt)
            if nxt not in done:
                visit(nxt)
        on_stack.discard(name)
        done.add(name)

    if graph.start_at in states:
        visit(graph.start_at)
    return edges


def critical_path(machine: str, machines: Mapping[str, ir.StateMachineIR], pipelines: Mapping[str, ir.PipelineIR],
                  inputs: Inputs) -> CriticalPath:
    return CriticalPath(tuple(_Walker(machines, pipelines, inputs).machine(machine, "", None, ())))


@dataclass(frozen=True)
class TriggerPath:
    group: Literal["events", "schedules"]
    name: str
    machine: str
    period_seconds: int | None
    period_source: str
    path: CriticalPath
    #: the what-if path with each pipeline's consecutive same-processor steps as one Processing job
    fused: CriticalPath

    @property
    def overrun(self) -> float | None:
        """Seconds by which the path exceeds the period (at least, unless the path is exact); None: it fits or
        the trigger has no period."""
        if self.period_seconds is None or self.path.total <= self.period_seconds:
            return None
        return self.path.total - self.period_seconds


def trigger_paths(env: EnvironmentSpec, machines: Mapping[str, ir.StateMachineIR],
                  pipelines: Mapping[str, ir.PipelineIR], measured: Measured,
                  chunk_windows: int = DEFAULT_CHUNK_WINDOWS) -> Iterator[TriggerPath]:
    """Every trigger of ``env`` whose machine compiled, events then schedules, by name (invalid schedules: E123)."""
    from ndr_compiler.lint.environments import schedule_problem  # here: lint.environments imports this module

    plain, fused = inputs_of(env, measured, chunk_windows=chunk_windows), inputs_of(
        env, measured, fuse=True, chunk_windows=chunk_windows)
    triggers: list[tuple[Literal["events", "schedules"], str, str, int | None, str]] = []
    for name, ev in sorted(env.triggers.events.items()):
        period = ev.period_minutes * 60 if ev.period_minutes else None
        source = f"period_minutes: {ev.period_minutes}" if ev.period_minutes else "on demand: no period_minutes"
        triggers.append(("events", name, ev.state_machine, period, source))
    for name, sc in sorted(env.triggers.schedules.items()):
        if schedule_problem(sc.schedule) is not None:
            continue
        period = schedule_period_seconds(sc.schedule)
        triggers.append(("schedules", name, sc.state_machine, period,
                         f"{sc.schedule}, shortest gap" if period else f"{sc.schedule}, fires at most once"))
    for group, name, machine, period, source in triggers:
        if machine not in machines:
            continue
        yield TriggerPath(group, name, machine, period, source, critical_path(machine, machines, pipelines, plain),
                          critical_path(machine, machines, pipelines, fused))


# -- printing --------------------------------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    return "unmeasured" if seconds is None else f"{seconds:,.1f}"


def _bound(path: CriticalPath) -> str:
    return "" if path.exact else "≥ "


def breakdown(path: CriticalPath) -> str:
    runtime = f"runtime {_bound(path) if path.unmeasured else ''}{path.runtime:,.1f} s"
    if path.unmeasured:
        runtime += f" ({len(path.unmeasured)} entrypoint(s) unmeasured)"
    return f"{path.jobs} Processing job(s): start-up {path.startup:,.1f} s, {runtime}; polls {path.polls:,.1f} s"


def summary(path: CriticalPath) -> str:
    return f"{_bound(path)}{path.total:,.1f} s = {breakdown(path)}"


def verdict(t: TriggerPath, path: CriticalPath) -> str:
    if t.period_seconds is None:
        return "no period to compare with"
    diff = t.period_seconds - path.total
    if diff >= 0:
        return f"slack {'≤ ' if not path.exact else ''}{diff:,.1f} s"
    return f"OVERRUN by {_bound(path)}{-diff:,.1f} s"


def render_plan(env_name: str, env: EnvironmentSpec, measured: Measured, paths: list[TriggerPath]) -> str:
    """What ``ndr-compile plan`` prints: per trigger, its period, every leg of its critical path, the verdict."""
    c = env.cadence
    out = [f"cadence of {env_name} (docs/cadence.md): start-up {c.startup_seconds} s per Processing job; runtimes "
           f"from {RUNTIMES_FILE_LABEL} x {c.runtime_factor:g} (runtime_factor)"
           + (f" and the environment's cadence.runtimes ({len(c.runtimes)})" if c.runtimes else "")
           + "; each poll one full interval"]
    for t in paths:
        period = f"{t.period_seconds:,} s" if t.period_seconds is not None else "none"
        out += ["", f"trigger {t.group}/{t.name} -> {t.machine}: period {period} ({t.period_source})",
                "  | state | Processing job or poll | start-up s | runtime s | poll s |",
                "  |---|---|---:|---:|---:|"]
        for leg in t.path.legs:
            at = leg.at + (f" (per item of {leg.per_item})" if leg.per_item else "")
            if leg.kind == "job":
                out.append(f"  | {at} | {leg.what} | {_s(leg.startup)} | {_s(leg.runtime)} | |")
            else:
                out.append(f"  | {at} | {leg.what} | | | {_s(leg.poll)} |")
        out.append(f"  critical path {summary(t.path)}; {verdict(t, t.path)}")
        if t.path.maps:
            out.append(f"  each of {', '.join(t.path.maps)} counted once: the path grows by its legs per item "
                       "(per round of max_concurrency items); the item count is data-dependent")
        if t.fused.jobs != t.path.jobs:
            out.append(f"  what if each pipeline's consecutive steps on one processor ran as one Processing job: "
                       f"{summary(t.fused)}; {verdict(t, t.fused)}")
    return "\n".join(out) + "\n"
