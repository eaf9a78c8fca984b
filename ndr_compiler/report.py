"""Diagnostic output formats: text (default), json, github (workflow annotations), sarif (code scanning)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ndr_compiler import __version__
from ndr_compiler.diagnostics import Diagnostic

FORMATS = ("text", "json", "github", "sarif")


def _codes() -> dict:
    """The code table, imported on use: importing the lint package loads its rules, which a cached lint skips."""
    from ndr_compiler.lint.registry import CODES

    return CODES


def _text(diags: Sequence[Diagnostic]) -> str:
    return "".join(d.format() + "\n" for d in diags)


def _json(diags: Sequence[Diagnostic]) -> str:
    CODES = _codes()
    rows = [
        {"file": d.span.file, "line": d.span.line, "column": d.span.col, "code": d.code,
         "name": CODES[d.code].name if d.code in CODES else None, "severity": d.severity, "message": d.message}
        for d in diags
    ]
    return json.dumps(rows, indent=2) + "\n"


def _escape_property(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(",", "%2C")


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github(diags: Sequence[Diagnostic]) -> str:
    lines = []
    for d in diags:
        level = "warning" if d.severity == "warning" else "error"
        props = (f"file={_escape_property(d.span.file)},line={d.span.line},col={d.span.col},"
                 f"title={_escape_property(d.code)}")
        lines.append(f"::{level} {props}::{_escape_data(d.code + ' ' + d.message)}\n")
    return "".join(lines)


def _sarif(diags: Sequence[Diagnostic]) -> str:
    CODES = _codes()
    used = sorted({d.code for d in diags})
    rules = [
        {"id": c, "name": CODES[c].name if c in CODES else c,
         "shortDescription": {"text": CODES[c].summary if c in CODES else c},
         "helpUri": f"docs/rules.md#{c.lower()}"}
        for c in used
    ]
    results = [
        {"ruleId": d.code, "ruleIndex": used.index(d.code),
         "level": "warning" if d.severity == "warning" else "error",
         "message": {"text": d.message},
         "locations": [{"physicalLocation": {
             "artifactLocation": {"uri": d.span.file},
             "region": {"startLine": d.span.line, "startColumn": d.span.col}}}]}
        for d in diags
    ]
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "ndr-compile", "version": __version__, "rules": rules}},
                  "results": results}],
    }
    return json.dumps(doc, indent=2) + "\n"


def render(diags: Sequence[Diagnostic], fmt: str) -> str:
    return {"text": _text, "json": _json, "github": _github, "sarif": _sarif}[fmt](diags)


def select(diags: Sequence[Diagnostic], selected: Sequence[str], ignored: Sequence[str]) -> list[Diagnostic]:
    """Keep diagnostics whose code starts with a selected prefix (all when none) and no ignored prefix."""
    out = []
    for d in diags:
        if selected and not any(d.code.startswith(s) for s in selected):
            continue
        if any(d.code.startswith(i) for i in ignored):
            continue
        out.append(d)
    return out
