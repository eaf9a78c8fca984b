"""Load and validate a directory of specs into typed models (layers: load -> models)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ndr_compiler.diagnostics import Diagnostic, DiagnosticError, Span
from ndr_compiler.load import Document, discover, load_file
from ndr_compiler.models import KINDS, SUPPORTED_API_VERSIONS, Project, StateMachine
from ndr_compiler.models.state_machine import STEP_KINDS

_TYPE_ERRORS = ("_type", "_parsing", "model_type", "dict_type", "list_type", "is_instance_of")


@dataclass
class Spec:
    doc: Document
    model: Any

    @property
    def name(self) -> str:
        return self.model.metadata.name


@dataclass
class SpecSet:
    specs: list[Spec] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Spec]:
        return [s for s in self.specs if s.model.kind == kind]

    def projects(self) -> dict[str, Spec]:
        return {s.name: s for s in self.of_kind("Project")}

    def state_machines(self) -> list[Spec]:
        return sorted(self.of_kind("StateMachine"), key=lambda s: s.name)


def _doc_path(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """A pydantic error location as a document path (union tags are not document keys)."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and out and out[-1] == part and part in STEP_KINDS:
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _pydantic_diagnostics(doc: Document, exc: ValidationError) -> list[Diagnostic]:
    diags = []
    for err in exc.errors(include_url=False):
        path = _doc_path(err["loc"])
        where = ".".join(str(p) for p in path) or "document"
        etype = err["type"]
        if etype == "extra_forbidden":
            code, msg = "E110", f"unknown key '{path[-1]}' at {'.'.join(str(p) for p in path[:-1]) or 'top level'}"
        elif etype == "missing":
            code, msg = "E112", f"missing required field '{where}'"
        elif etype.endswith(_TYPE_ERRORS) or etype in _TYPE_ERRORS:
            code, msg = "E111", f"wrong type at '{where}': {err['msg']}"
        elif etype == "invalid_step":
            keys = ", ".join(sorted(STEP_KINDS))
            code, msg = "E114", f"step '{where}' must be a mapping with exactly one of: {keys}"
        elif etype == "union_tag_invalid":
            keys = ", ".join(sorted(STEP_KINDS))
            tag = err.get("ctx", {}).get("tag", "?")
            code, msg = "E114", f"unknown construct '{tag}' at '{where}'; expected one of: {keys}"
        else:
            code, msg = "E113", f"invalid value at '{where}': {err['msg']}"
        diags.append(Diagnostic(code, msg, doc.span(path)))
    return diags


def validate_document(doc: Document) -> Any:
    data = doc.data
    if not isinstance(data, dict):
        raise DiagnosticError([Diagnostic("E107", "a spec document must be a mapping", doc.span())])
    api = data.get("apiVersion")
    supported = ", ".join(SUPPORTED_API_VERSIONS)
    if api is None:
        raise DiagnosticError([Diagnostic("E120", f"missing apiVersion; supported: {supported}", doc.span())])
    if not isinstance(api, str) or api not in SUPPORTED_API_VERSIONS:
        raise DiagnosticError([Diagnostic(
            "E120", f"unsupported apiVersion '{api}'; supported: {supported}", doc.span(("apiVersion",)))])
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        kinds = ", ".join(sorted(KINDS))
        raise DiagnosticError([Diagnostic(
            "E121", f"unknown kind '{kind}'; expected one of: {kinds}", doc.span(("kind",)))])
    try:
        return KINDS[kind].model_validate(data)
    except ValidationError as exc:
        raise DiagnosticError(_pydantic_diagnostics(doc, exc)) from None


def load_specs(paths: Iterable[Path]) -> tuple[SpecSet, list[Diagnostic]]:
    specs = SpecSet()
    diags: list[Diagnostic] = []
    files = discover(paths)
    if not files:
        diags.append(Diagnostic("E108", "no spec files (*.yaml, *.yml) found", Span(", ".join(map(str, paths)))))
    for file in files:
        try:
            docs = load_file(file)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        except Exception as exc:  # a bug of ours: still a diagnostic, never a traceback
            diags.append(Diagnostic("E001", f"loading crashed: {type(exc).__name__}: {exc}", Span(str(file))))
            continue
        for doc in docs:
            try:
                specs.specs.append(Spec(doc, validate_document(doc)))
            except DiagnosticError as exc:
                diags.extend(exc.diagnostics)
            except Exception as exc:  # a bug of ours: still a diagnostic, never a traceback
                diags.append(Diagnostic("E001", f"validation crashed: {type(exc).__name__}: {exc}", doc.span()))
    seen: dict[tuple[str, str], Spec] = {}
    for spec in specs.specs:
        key = (spec.model.kind, spec.name)
        if key in seen:
            first = seen[key].doc.span(("metadata", "name"))
            diags.append(Diagnostic("E122", f"{key[0]} '{key[1]}' is already defined at {first}",
                                    spec.doc.span(("metadata", "name"))))
        else:
            seen[key] = spec
    return specs, diags


__all__ = ["Project", "Spec", "SpecSet", "StateMachine", "load_specs", "validate_document"]
