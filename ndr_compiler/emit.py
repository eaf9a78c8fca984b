"""Emit layer: the one writer of everything under ``generated/``, atomically; ``check`` compares instead.

See ``docs/design/emit.md`` for the format and the invariants.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def atomic_write(path: Path, text: str) -> None:
    import tempfile  # here, as difflib in emit(): the lint imports this module and writes nothing

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Artifact:
    """One generated file, relative to the output directory."""

    relpath: str
    text: str


@dataclass
class EmitResult:
    written: list[str]
    unchanged: list[str]
    removed: list[str]
    stale: list[str]
    diff: str


MANAGED_DIRS = ("state_machines", "pipelines", "diagrams", "schema", "iam")


def emit(artifacts: list[Artifact], out_dir: Path, check: bool = False) -> EmitResult:
    """Write (or, with ``check``, compare) the artifacts; files of managed kinds no spec produces go."""
    import difflib

    wanted = {a.relpath: a.text for a in artifacts}
    existing = {
        p.relative_to(out_dir).as_posix()
        for d in MANAGED_DIRS
        if (out_dir / d).is_dir()
        for p in (out_dir / d).rglob("*")
        if p.is_file()
    }
    written, unchanged, stale, diffs = [], [], [], []
    for rel in sorted(wanted):
        path = out_dir / rel
        new = wanted[rel]
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == new:
            unchanged.append(rel)
            continue
        stale.append(rel)
        diffs.extend(difflib.unified_diff(
            (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
            fromfile=f"a/{rel}" if old is not None else "/dev/null", tofile=f"b/{rel}",
        ))
        if not check:
            atomic_write(path, new)
            written.append(rel)
    removed = sorted(existing - set(wanted))
    for rel in removed:
        stale.append(rel)
        old = (out_dir / rel).read_text(encoding="utf-8", errors="replace")
        diffs.extend(difflib.unified_diff(old.splitlines(keepends=True), [], fromfile=f"a/{rel}",
                                          tofile="/dev/null"))
        if not check:
            (out_dir / rel).unlink()
    return EmitResult(written, unchanged, removed, stale, "".join(diffs))
