"""Diagnostics: what every layer reports instead of raising.

A diagnostic is ``(code, message, span)``; the code's first letter is its severity (E error, W warning).
Layers collect diagnostics; only the CLI decides how to print them and which exit code to use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, order=True)
class Span:
    """A place in a spec file: 1-based line and column."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    hint: str | None = field(default=None, compare=False)

    @property
    def severity(self) -> str:
        return "warning" if self.code.startswith("W") else "error"

    def format(self) -> str:
        return f"{self.span} {self.code} {self.message}"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)


class DiagnosticError(Exception):
    """Raised by a layer that cannot go on; carries the diagnostics that stopped it."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("\n".join(d.format() for d in diagnostics))
        self.diagnostics = diagnostics


def display_path(path: Path) -> str:
    """A path as users expect to see it in diagnostics: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest candidate, or nothing when none is close."""
    import difflib  # here: a clean lint never needs it

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.8)
    return f"; did you mean '{close[0]}'?" if close else ""
