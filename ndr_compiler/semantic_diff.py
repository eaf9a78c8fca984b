"""What changed between two versions of ``generated/``, in domain terms, short enough for a PR comment.

State machines: states added, removed, or changed (with the changed fields). Pipelines: parameters and
steps added, removed, or changed (processor, command line, dependencies, retry and cache separately).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileChange:
    path: str
    status: str  # added | removed | changed
    lines: list[str] = field(default_factory=list)


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


def _state_machine(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    a, b = _flatten_states(old.get("States", {})), _flatten_states(new.get("States", {}))
    for name in b:
        if name not in a:
            lines.append(f"+ state `{name}` ({b[name].get('Type')})")
    for name in a:
        if name not in b:
            lines.append(f"- state `{name}` ({a[name].get('Type')})")
    comment_only = 0
    for name in b:
        if name in a and a[name] != b[name]:
            fields = _changed_fields(a[name], b[name], skip=("ItemProcessor",) if b[name].get("Type") == "Map" else ())
            if fields == ["Comment"]:
                comment_only += 1  # the source map moved: the spec line changed, not the state
            elif fields:
                lines.append(f"~ state `{name}`: {', '.join(f for f in fields if f != 'Comment')}")
    if comment_only:
        lines.append(f"~ {comment_only} state(s): source-map Comment only")
    for key in _changed_fields(old, new, skip=("States",)):
        lines.append(f"~ {key}")
    return lines


def _pipeline(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    pa = {p["Name"]: p for p in old.get("Parameters", [])}
    pb = {p["Name"]: p for p in new.get("Parameters", [])}
    lines += [f"+ parameter `{n}` ({pb[n].get('Type')})" for n in pb if n not in pa]
    lines += [f"- parameter `{n}`" for n in pa if n not in pb]
    for n in pb:
        if n in pa and pa[n] != pb[n]:
            lines.append(f"~ parameter `{n}`: {', '.join(_changed_fields(pa[n], pb[n]))}")
    sa = {s["Name"]: s for s in old.get("Steps", [])}
    sb = {s["Name"]: s for s in new.get("Steps", [])}
    lines += [f"+ step `{n}`" for n in sb if n not in sa]
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
    return lines


def diff_artifacts(base: dict[str, str], head: dict[str, str]) -> list[FileChange]:
    changes = []
    for path in sorted(set(base) | set(head)):
        if path not in base:
            changes.append(FileChange(path, "added"))
        elif path not in head:
            changes.append(FileChange(path, "removed"))
        elif base[path] != head[path]:
            lines: list[str] = []
            if path.endswith(".json") and path.startswith(("state_machines/", "pipelines/")):
                old, new = json.loads(base[path]), json.loads(head[path])
                lines = _state_machine(old, new) if path.startswith("state_machines/") else _pipeline(old, new)
            changes.append(FileChange(path, "changed", lines))
    return changes


def artifacts_at(ref: str, out_dir: str = "generated") -> dict[str, str]:
    """The committed ``generated/`` files at a git ref."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, f"{out_dir}/"], capture_output=True,
                             text=True, check=True).stdout.split()
    files = {}
    for path in listing:
        blob = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout
        files[path.removeprefix(f"{out_dir}/")] = blob
    return files


def render(changes: list[FileChange], fmt: str, base: str) -> str:
    if not changes:
        return f"No change to generated/ since {base}.\n"
    out = []
    if fmt == "markdown":
        out.append(f"### ndr: generated changes since `{base}`\n")
        for c in changes:
            out.append(f"- **{c.status}** `{c.path}`")
            out.extend(f"  - `{line[0]}` {line[2:]}" for line in c.lines)
        return "\n".join(out) + "\n"
    for c in changes:
        out.append(f"{c.status:8} {c.path}")
        out.extend(f"    {line}" for line in c.lines)
    return "\n".join(out) + "\n"
