"""What changed between two versions of ``generated/`` and of the environments, in domain terms, short enough
for a PR comment.

State machines: states added, removed, or changed, with each changed field's old -> new value. Pipelines:
parameters and steps added, removed, or changed (processor, command line, dependencies, retry and cache
named separately), with old -> new values. A new file is summarised (states, steps, triggers). Environments
are not in ``generated/``: their specs are compared directly, so that a new or removed schedule or event rule
shows (the deploy turns each into an EventBridge rule).

A line starting with ``+``, ``-`` or ``~`` names a change; a line starting with two spaces is a detail of the
change above it (a value's old -> new).
"""

from __future__ import annotations

import difflib
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ndr_compiler import ir

#: the widest a value is shown; longer ones are cut around their first difference
WIDTH = 60
#: at most this many old -> new lines per changed field, state or step
LIMIT = 4


@dataclass
class FileChange:
    path: str
    status: str  # added | removed | changed
    lines: list[str] = field(default_factory=list)


# -- values -----------------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def short(value: Any, width: int = WIDTH) -> str:
    """A value as compact JSON, cut in the middle to ``width`` characters (an ARN keeps its name)."""
    text = _text(value)
    half = (width - 1) // 2
    return text if len(text) <= width else text[:half] + "…" + text[len(text) - (width - 1 - half):]


def _pair(old: Any, new: Any, width: int = WIDTH) -> str:
    """``old -> new``; two long strings are shown around where they differ, not from their start."""
    if isinstance(old, str) and isinstance(new, str) and max(len(_text(old)), len(_text(new))) > width:
        prefix = len(_common_prefix(old, new))
        suffix = len(_common_prefix(old[prefix:][::-1], new[prefix:][::-1]))
        start = max(0, prefix - 12)

        def cut(s: str) -> str:
            end = min(len(s), len(s) - suffix + 12)
            piece = s[start:end]
            text = ("…" if start else "") + _text(piece)[1:-1] + ("…" if end < len(s) else "")
            return '"' + (text if len(text) <= width else text[: width - 1] + "…") + '"'

        return f"{cut(old)} -> {cut(new)}"
    return f"{short(old, width)} -> {short(new, width)}"


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _leaves(old: Any, new: Any, path: str) -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{p}: + {short(new[k])}")
            elif k not in new:
                out.append(f"{p}: - {short(old[k])}")
            else:
                out += _leaves(old[k], new[k], p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        matcher = difflib.SequenceMatcher(a=[_text(x) for x in old], b=[_text(x) for x in new], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "replace" and i2 - i1 == j2 - j1:
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                    out += _leaves(old[i], new[j], f"{path}[{j}]")
                continue
            out += [f"{path}[{i}]: - {short(old[i])}" for i in range(i1, i2)]
            out += [f"{path}[{j}]: + {short(new[j])}" for j in range(j1, j2)]
        return out
    return [f"{path or 'value'}: {_pair(old, new)}"]


def value_changes(old: Any, new: Any, path: str = "", limit: int = LIMIT) -> list[str]:
    """Each leaf that differs, as ``path: old -> new`` (``path: + new``, ``path: - old``), at most ``limit``."""
    out = _leaves(old, new, path)
    if len(out) > limit:
        out = out[: limit - 1] + [f"… and {len(out) - limit + 1} more"]
    return out


def _details(lines: Iterable[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", … (+{len(names) - shown})" if len(names) > shown else "")


# -- state machines and pipelines -------------------------------------------------------------------------------
def _flatten_states(states: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, state in states.items():
        out[prefix + name] = state
        if state.get("Type") == "Map":
            out.update(_flatten_states(state.get("ItemProcessor", {}).get("States", {}), f"{prefix}{name}/"))
    return out


def _changed_fields(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k not in skip and old.get(k) != new.get(k)]


def _without(d: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def state_machine_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    a, b = _flatten_states(old.get("States", {})), _flatten_states(new.get("States", {}))
    for name in b:
        if name not in a:
            lines.append(f"+ state `{name}` ({b[name].get('Type')})")
    for name in a:
        if name not in b:
            lines.append(f"- state `{name}` ({a[name].get('Type')})")
    comment_only = 0
    same: dict[tuple[str, ...], list[str]] = {}  # states changed alike (a retry added to every task) share a line
    for name in b:
        if name in a and a[name] != b[name]:
            skip = ("ItemProcessor",) if b[name].get("Type") == "Map" else ()
            fields = _changed_fields(a[name], b[name], skip=skip)
            if fields == ["Comment"]:
                comment_only += 1  # the source map moved: the spec line changed, not the state
            elif fields:
                skip += ("Comment",)
                change = (", ".join(f for f in fields if f != "Comment"),
                          *_details(value_changes(_without(a[name], skip), _without(b[name], skip))))
                same.setdefault(change, []).append(name)
    for (what, *details), names in same.items():
        lines.append(f"~ state{'s' if len(names) > 1 else ''} {', '.join(f'`{n}`' for n in names)}: {what}")
        lines += details
    if comment_only:
        lines.append(f"~ {comment_only} state(s): source-map Comment only")
    for key in _changed_fields(old, new, skip=("States",)):
        lines.append(f"~ {key}")
        lines += _details(value_changes(old.get(key), new.get(key), key))
    return lines


def pipeline_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    pa = {p["Name"]: p for p in old.get("Parameters", [])}
    pb = {p["Name"]: p for p in new.get("Parameters", [])}
    lines += [f"+ parameter `{n}` ({pb[n].get('Type')}, default {short(pb[n].get('DefaultValue'))})"
              for n in pb if n not in pa]
    lines += [f"- parameter `{n}`" for n in pa if n not in pb]
    for n in pb:
        if n in pa and pa[n] != pb[n]:
            lines.append(f"~ parameter `{n}`: {', '.join(_changed_fields(pa[n], pb[n]))}")
            lines += _details(value_changes(pa[n], pb[n]))
    sa = {s["Name"]: s for s in old.get("Steps", [])}
    sb = {s["Name"]: s for s in new.get("Steps", [])}
    lines += [f"+ step `{n}` ({sb[n].get('Type')})" for n in sb if n not in sa]
    lines += [f"- step `{n}`" for n in sa if n not in sb]
    for n in sb:
        if n not in sa or sa[n] == sb[n]:
            continue
        what = []
        args_a, args_b = sa[n].get("Arguments", {}), sb[n].get("Arguments", {})
        app_a, app_b = args_a.get("AppSpecification", {}), args_b.get("AppSpecification", {})
        if app_a.get("ContainerArguments") != app_b.get("ContainerArguments") or \
                app_a.get("ContainerEntrypoint") != app_b.get("ContainerEntrypoint"):
            what.append("command line")
        if app_a.get("ImageUri") != app_b.get("ImageUri") or any(
                args_a.get(k) != args_b.get(k) for k in ("ProcessingResources", "StoppingCondition", "Environment",
                                                         "RoleArn")):
            what.append("processor")
        for key, label in (("DependsOn", "dependencies"), ("RetryPolicies", "retry"), ("CacheConfig", "cache")):
            if sa[n].get(key) != sb[n].get(key):
                what.append(label)
        rest = [k for k in _changed_fields(sa[n], sb[n]) if k not in ("Arguments", "DependsOn", "RetryPolicies",
                                                                      "CacheConfig")]
        lines.append(f"~ step `{n}`: {', '.join(what + rest) or 'arguments'}")
        # the Arguments' own keys read better without their "Arguments." prefix
        lines += _details(value_changes({**_without(sa[n], ("Arguments",)), **args_a},
                                        {**_without(sb[n], ("Arguments",)), **args_b}))
    return lines


# -- summaries of whole files -----------------------------------------------------------------------------------
def machine_triggers(environments: dict[str, dict[str, Any]], machines: Iterable[ir.StateMachineIR]
                     ) -> dict[str, list[str]]:
    """What starts each state machine: the environments' schedules and event rules (named with their
    environment), the machines that start it as a child, and, for the lock janitor, the other machines' ends."""
    out: dict[str, list[str]] = {}
    machines = list(machines)
    for env_name, env in sorted(environments.items()):
        triggers = env.get("triggers") or {}
        for s in (triggers.get("schedules") or {}).values():
            out.setdefault(s["state_machine"], []).append(f"schedule {s['schedule']} ({env_name})")
        for e in (triggers.get("events") or {}).values():
            out.setdefault(e["state_machine"], []).append(f"event {_event(e)} ({env_name})")
    for m in machines:
        for child in m.child_state_machines:
            out.setdefault(child.name, []).append(f"started by {m.name}")
        if m.generated:
            out.setdefault(m.name, []).append("the other machines' executions ending ABORTED, FAILED or TIMED_OUT")
    return out


def _event(e: dict[str, Any]) -> str:
    return f"{'|'.join(e.get('source', []))} {'|'.join(e.get('detail_type', []))}".strip()


def state_machine_summary(name: str, definition: dict[str, Any], triggers: list[str] | None = None,
                          verb: str = "new") -> str:
    """``new state machine sfn_x: 12 states (A, B, …), triggers: schedule rate(15 minutes) (dev)``; the states
    named are the top-level ones, the count includes those inside Map iterations."""
    top = list(definition.get("States", {}))
    line = f"{verb} state machine {name}: {len(_flatten_states(definition.get('States', {})))} states ({_names(top)})"
    return line if triggers is None else line + f", triggers: {'; '.join(triggers) or 'none'}"


def pipeline_summary(name: str, definition: dict[str, Any], verb: str = "new") -> str:
    """``new pipeline p: 4 steps (A, B, C, D), 3 parameters``; with fused steps, ``... in 1 Processing job``."""
    from ndr_compiler.render.sagemaker_pipeline import spec_step_names

    jobs = definition.get("Steps", [])
    steps = [n for s in jobs for n in spec_step_names(s)]
    params = definition.get("Parameters", [])
    fused = f" in {len(jobs)} Processing job{'s' if len(jobs) != 1 else ''}" if len(jobs) != len(steps) else ""
    return f"{verb} pipeline {name}: {len(steps)} steps ({_names(steps)}){fused}, {len(params)} parameters"


def _summary(path: str, text: str, added: bool, triggers: dict[str, list[str]]) -> list[str]:
    sign, verb = ("+", "new") if added else ("-", "removed")
    if path.startswith("state_machines/") and path.endswith(".asl.json"):
        name = path.removeprefix("state_machines/").removesuffix(".asl.json")
        started_by = triggers.get(name, []) if added else None
        return [f"{sign} {state_machine_summary(name, json.loads(text), started_by, verb)}"]
    if path.startswith("pipelines/") and path.endswith(".json"):
        name = path.removeprefix("pipelines/").removesuffix(".json")
        return [f"{sign} {pipeline_summary(name, json.loads(text), verb)}"]
    return []


def diff_artifacts(base: dict[str, str], head: dict[str, str],
                   triggers: dict[str, list[str]] | None = None) -> list[FileChange]:
    changes = []
    for path in sorted(set(base) | set(head)):
        if path not in base:
            changes.append(FileChange(path, "added", _summary(path, head[path], True, triggers or {})))
        elif path not in head:
            changes.append(FileChange(path, "removed", _summary(path, base[path], False, {})))
        elif base[path] != head[path]:
            lines: list[str] = []
            if path.endswith(".json") and path.startswith(("state_machines/", "pipelines/")):
                old, new = json.loads(base[path]), json.loads(head[path])
                lines = (state_machine_changes(old, new) if path.startswith("state_machines/")
                         else pipeline_changes(old, new))
            changes.append(FileChange(path, "changed", lines))
    return changes


# -- environments -----------------------------------------------------------------------------------------------
def _schedule(s: dict[str, Any]) -> str:
    line = f"{s['schedule']} -> {s['state_machine']}"
    return line + (f", input {short(s['input'])}" if s.get("input") else "")


def _triggers(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    for group, label, describe in (("schedules", "schedule", _schedule),
                                   ("events", "event rule", lambda e: f"{_event(e)} -> {e['state_machine']}")):
        a, b = (old.get("triggers") or {}).get(group) or {}, (new.get("triggers") or {}).get(group) or {}
        lines += [f"+ {label} `{k}`: {describe(b[k])}" for k in b if k not in a]
        lines += [f"- {label} `{k}`: {describe(a[k])} (the deploy leaves its rule in place: delete it by hand)"
                  for k in a if k not in b]
        for k in b:
            if k in a and a[k] != b[k]:
                lines.append(f"~ {label} `{k}`: {', '.join(_changed_fields(a[k], b[k]))}")
                lines += _details(value_changes(a[k], b[k]))
    return lines


def diff_environments(base: dict[str, dict[str, Any]], head: dict[str, dict[str, Any]]) -> list[FileChange]:
    """Environment specs (their ``spec`` mappings, by name) compared: triggers one by one, the rest by value."""
    changes = []
    for name in sorted(set(base) | set(head)):
        if name not in base:
            env = head[name]
            lines = [f"+ new environment {name}: account {env.get('account')}, {env.get('region')}, "
                     f"prefix {env.get('prefix')}"]
            changes.append(FileChange(f"environment {name}", "added", lines + _triggers({}, env)))
        elif name not in head:
            changes.append(FileChange(f"environment {name}", "removed",
                                      ["- its deployed resources are left in place: delete them by hand"]))
        elif base[name] != head[name]:
            old, new = base[name], head[name]
            lines = _triggers(old, new)
            rest = value_changes(_without(old, ("triggers",)), _without(new, ("triggers",)), limit=2 * LIMIT)
            lines += [f"~ {line}" for line in rest]
            changes.append(FileChange(f"environment {name}", "changed", lines))
    return changes


def _git_show(ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout


def environments_at(ref: str, paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The Environment specs (name -> ``spec`` mapping) committed at a git ref under ``paths``."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", "--full-name", ref, "--", *paths],
                             capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for path in listing:
        if not path.endswith((".yaml", ".yml")):
            continue
        text = _git_show(ref, path)
        if "Environment" not in text:  # parse only what may be one (the pipeline and machine specs are large)
            continue
        for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(doc, dict) and doc.get("kind") == "Environment":
                out[doc["metadata"]["name"]] = doc.get("spec") or {}
    return out


def artifacts_at(ref: str, out_dir: str = "generated") -> dict[str, str]:
    """The committed ``generated/`` files at a git ref."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, f"{out_dir}/"], capture_output=True,
                             text=True, check=True).stdout.split()
    return {path.removeprefix(f"{out_dir}/"): _git_show(ref, path) for path in listing}


# -- output -----------------------------------------------------------------------------------------------------
def render(changes: list[FileChange], fmt: str, base: str) -> str:
    if not changes:
        return f"No change to generated/ or the environments since {base}.\n"
    out = []
    if fmt == "markdown":
        out.append(f"### ndr: generated changes since `{base}`\n")
        for c in changes:
            out.append(f"- **{c.status}** `{c.path}`")
            for line in c.lines:
                out.append(f"    - `{line.strip()}`" if line.startswith("  ") else f"  - `{line[0]}` {line[2:]}")
        return "\n".join(out) + "\n"
    for c in changes:
        out.append(f"{c.status:8} {c.path}")
        out.extend(f"    {line}" for line in c.lines)
    return "\n".join(out) + "\n"
