"""Load and validate a directory of specs into typed models (layers: load -> models)."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ndr_compiler.diagnostics import Diagnostic, DiagnosticError, Span, did_you_mean
from ndr_compiler.load import Document, load_file
from ndr_compiler.models import KINDS, SUPPORTED_API_VERSIONS, Project, StateMachine
from ndr_compiler.models.state_machine import STEP_KINDS
from ndr_compiler.sources import discover

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
    #: documents that did not validate, as (kind, metadata.name, raw data): their errors are reported already,
    #: so a reference to them is not reported again
    broken: list[tuple[str, str, Any]] = field(default_factory=list)

    def is_broken(self, kind: str, name: str) -> bool:
        return any(k == kind and n == name for k, n, _ in self.broken)

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


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(t) if a is not type(None)]
            if len(members) != 1:
                return t
            t = members[0]
        else:
            return t


def _fields(t: Any) -> dict[str, Any]:
    """A model's keys as written in a spec (aliases included) and their types."""
    return {f.alias or name: f.annotation for name, f in t.model_fields.items()}


def _keys_at(model: type, loc: tuple[Any, ...]) -> list[str]:
    """The keys the spec language allows in the mapping at pydantic location ``loc`` (none when unknown)."""
    t: Any = model
    for part in loc:
        t = _unwrap(t)
        origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            t = _fields(t).get(part)
        elif origin is list and isinstance(part, int):
            t = typing.get_args(t)[0]
        elif origin is dict:
            t = typing.get_args(t)[1]
        elif origin in (typing.Union, types.UnionType):  # a step: the location names the construct (its tag)
            t = next((m for m in map(_unwrap, typing.get_args(t))
                      if isinstance(m, type) and issubclass(m, BaseModel) and list(_fields(m)) == [part]), None)
        else:
            return []
        if t is None:
            return []
    t = _unwrap(t)
    return list(_fields(t)) if isinstance(t, type) and issubclass(t, BaseModel) else []


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _invalid_step(doc: Document, path: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The message of an invalid step, and the path of the key it is about."""
    where = ".".join(str(p) for p in path)
    kinds = ", ".join(sorted(STEP_KINDS))
    step = _at(doc.data, path)
    if not isinstance(step, dict) or not step:
        return f"step '{where}' must be a mapping with exactly one construct key, one of: {kinds}", path
    unknown = [k for k in step if k not in STEP_KINDS]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(key, STEP_KINDS) or f"; expected one of: {kinds}"
        return f"unknown construct '{key}' at '{where}'{hint}", (*path, key)
    second = list(step)[1]
    return (f"step '{where}' has two constructs, '{list(step)[0]}' and '{second}'; a step is exactly one: "
            "split it into two steps", (*path, second))


def _pydantic_diagnostics(doc: Document, exc: ValidationError, model: type) -> list[Diagnostic]:
    import difflib  # here: a clean lint never needs it

    diags = []
    errors = exc.errors(include_url=False)
    #: a misspelt key is one mistake: "unknown key" naming the missing field it meant, and no "missing field"
    meant: dict[tuple[Any, ...], str] = {}  # location of the unknown key -> the missing key it meant
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            missing = [str(e["loc"][-1]) for e in errors
                       if e["type"] == "missing" and tuple(e["loc"][:-1]) == loc[:-1]]
            close = difflib.get_close_matches(str(loc[-1]), missing, n=1)
            if close:
                meant[loc] = close[0]
    taken = {(*loc[:-1], key) for loc, key in meant.items()}
    for err in errors:
        path = _doc_path(err["loc"])
        where = ".".join(str(p) for p in path) or "document"
        etype = err["type"]
        if etype == "missing" and tuple(err["loc"]) in taken:
            continue
        if etype == "extra_forbidden":
            loc = tuple(err["loc"])
            hint = f"; did you mean '{meant[loc]}'?" if loc in meant else did_you_mean(str(path[-1]),
                                                                                         _keys_at(model, loc[:-1]))
            at = ".".join(str(p) for p in path[:-1]) or "top level"
            code, msg = "E110", f"unknown key '{path[-1]}' at {at}{hint}"
        elif etype == "missing":
            code, msg = "E112", f"missing required field '{where}'"
        elif etype.endswith(_TYPE_ERRORS) or etype in _TYPE_ERRORS:
            code, msg = "E111", f"wrong type at '{where}': {err['msg']}"
        elif etype == "invalid_step":
            msg, path = _invalid_step(doc, path)
            code = "E114"
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
        raise DiagnosticError(_pydantic_diagnostics(doc, exc, KINDS[kind])) from None


_KIND = re.compile(r"^kind:\s*([A-Za-z]+)\s*$", re.M)
_NAME = re.compile(r"^metadata:\s*(?:\{\s*name:\s*([^,}\s]+)|\n[ ]+name:\s*([^\s#]+))", re.M)


def _named_in(file: Path) -> list[tuple[str, str, Any]]:
    """``(kind, name, {})`` of the specs a file that does not load seems to define, read off its text, so that
    references to them are not reported too (its own error is the one to fix)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for part in re.split(r"^---\s*$", text, flags=re.M):
        kind, name = _KIND.search(part), _NAME.search(part)
        if kind and name:
            out.append((kind.group(1), (name.group(1) or name.group(2)).strip("'\""), {}))
    return out


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
            specs.broken.extend(_named_in(file))
            continue
        except Exception as exc:  # a bug of ours: still a diagnostic, never a traceback
            diags.append(Diagnostic("E001", f"loading crashed: {type(exc).__name__}: {exc}", Span(str(file))))
            continue
        for doc in docs:
            try:
                specs.specs.append(Spec(doc, validate_document(doc)))
            except DiagnosticError as exc:
                diags.extend(exc.diagnostics)
                data = doc.data if isinstance(doc.data, dict) else {}
                name = data.get("metadata", {}).get("name") if isinstance(data.get("metadata"), dict) else None
                if isinstance(data.get("kind"), str) and isinstance(name, str):
                    specs.broken.append((data["kind"], name, data))
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
