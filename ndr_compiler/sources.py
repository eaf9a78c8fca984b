"""Which files a compilation reads: the spec files under the paths given (stdlib only, so that the lint cache
can key on them without loading YAML)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPEC_SUFFIXES = (".yaml", ".yml")


def discover(paths: Iterable[Path]) -> list[Path]:
    """Spec files under the given files or directories, in a stable order."""
    found: set[Path] = set()
    for p in paths:
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.suffix in SPEC_SUFFIXES and f.is_file())
        elif p.exists():
            found.add(p)
    return sorted(found, key=lambda f: f.as_posix())
