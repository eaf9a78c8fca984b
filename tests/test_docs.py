"""docs/specs.md cannot drift from the spec models.

Every model reachable from a spec kind has a field table in docs/specs.md, under a ``<!-- fields: Model -->``
marker. The first three columns (field, type, default) are rendered from the pydantic model; only the fourth
(meaning) is written by hand. ``UPDATE_DOCS=1 pytest tests/test_docs.py`` rewrites the first three columns
(and adds rows for new fields, meaning from the field's description); the test then fails on any row whose
meaning is still empty, on a table with no marker, and on a marker no model has.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ndr_compiler.models import KINDS
from ndr_compiler.models.state_machine import STEP_KINDS
from tests.conftest import ROOT

SPECS_MD = ROOT / "docs" / "specs.md"
ENVELOPE = ["apiVersion", "kind", "metadata", "spec"]
WRAPPERS = set(STEP_KINDS.values())  # ``{normalize: ...}`` and the like: one key, the construct's own table
MARKER = re.compile(r"^<!-- fields: (\w+) -->$")


def _models() -> dict[str, type[BaseModel]]:
    """Every model a spec document can contain, by class name (names are unique), documents excluded."""
    found: dict[str, type[BaseModel]] = {}

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in WRAPPERS or tp in KINDS.values():
                for f in tp.model_fields.values():
                    walk(f.annotation)
                return
            if tp.__name__ in found:
                assert found[tp.__name__] is tp, f"two models named {tp.__name__}: give the doc markers modules"
                return
            found[tp.__name__] = tp
            for f in tp.model_fields.values():
                walk(f.annotation)
            return
        for arg in typing.get_args(tp):
            walk(arg)

    for kind in KINDS.values():
        walk(kind)
    return found


def _constraints(metadata: list[Any]) -> list[str]:
    out = []
    for m in metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(m, getattr(at, attr.capitalize())):
                out.append(f"{sym} {getattr(m, attr)}")
        if isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length}")
        if isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length}")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"`{pattern}`")
    return out


def render_type(tp: Any, metadata: list[Any] | None = None) -> str:
    """A field's type, as the reference writes it."""
    extra = _constraints(metadata or [])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *meta = args
        if typing.get_origin(base) is typing.Union and any(a in WRAPPERS for a in map(_annotated_base,
                                                                                    typing.get_args(base))):
            return "step"
        text = render_type(base, [m for x in meta for m in ([x] if not isinstance(x, FieldInfo) else x.metadata)])
    elif origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(render_type(a) for a in parts)
    elif origin is typing.Literal:
        text = " or ".join(f"`{json.dumps(a)}`" for a in args)
    elif origin is list:
        text = f"list of {render_type(args[0])}"
    elif origin is dict:
        text = f"map of {render_type(args[0])} to {render_type(args[1])}"
    elif tp is Any:
        text = "any"
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        text = f"`{tp.__name__}`"
    elif isinstance(tp, type):
        text = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    else:
        text = str(tp)
    return f"{text} ({', '.join(extra)})" if extra else text


def _annotated_base(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def render_default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, list) and len(text) > 80:  # a whole catalogue: its first item and its size
        return f"`[{json.dumps(value[0])}, ...]` ({len(value)} items)"
    return f"`{text}`"


def rows(model: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(field, type, default) of every field, in declaration order, as the YAML spells the key."""
    return [
        (f"`{info.alias or name}`", render_type(info.annotation, info.metadata), render_default(info))
        for name, info in model.model_fields.items()
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _split(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def _tables(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Marker name -> (first, end) line indexes of the table rows under it (header and rule excluded)."""
    out: dict[str, tuple[int, int]] = {}
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            j += 1
        first = j + 2
        end = first
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        assert m.group(1) not in out, f"two tables for {m.group(1)}"
        out[m.group(1)] = (first, end)
    return out


def _update() -> None:
    lines = SPECS_MD.read_text().split("\n")
    models = _models()
    for name, (first, end) in sorted(_tables(lines).items(), key=lambda kv: -kv[1][0]):
        if name not in models:
            continue
        meaning = {_split(r)[0]: _split(r)[3] for r in lines[first:end]}
        info = models[name].model_fields
        new = []
        for field, tp, default in rows(models[name]):
            key = field.strip("`")
            described = next((i.description for n, i in info.items() if (i.alias or n) == key), None) or ""
            new.append(f"| {field} | {_cell(tp)} | {_cell(default)} | {meaning.get(field) or _cell(described)} |")
        lines[first:end] = new
    SPECS_MD.write_text("\n".join(lines))


def test_every_model_field_is_in_docs_specs_md():
    if os.environ.get("UPDATE_DOCS"):
        _update()
    lines = SPECS_MD.read_text().split("\n")
    tables = _tables(lines)
    models = _models()
    assert sorted(set(models) - set(tables)) == [], "models without a <!-- fields: Model --> table in docs/specs.md"
    assert sorted(set(tables) - set(models)) == [], "tables of models the spec language no longer has"
    for name, (first, end) in tables.items():
        documented = [_split(r) for r in lines[first:end]]
        assert [tuple(r[:3]) for r in documented] == rows(models[name]), (
            f"the {name} table is stale: UPDATE_DOCS=1 pytest tests/test_docs.py")
        blank = [r[0] for r in documented if len(r) < 4 or not r[3]]
        assert blank == [], f"{name}: fields with no meaning written"


def test_documents_are_the_envelope_and_every_kind_has_a_section():
    text = SPECS_MD.read_text()
    for kind, model in KINDS.items():
        assert list(model.model_fields) == ENVELOPE, kind
        assert re.search(rf"^##+ `{kind}`", text, re.M), f"no section for kind {kind}"


def test_every_construct_has_a_section():
    headings = "\n".join(re.findall(r"^### (.*)$", SPECS_MD.read_text(), re.M))
    assert [k for k in STEP_KINDS if f"`{k}`" not in headings] == []


def test_every_cli_exit_code_is_documented():
    cli = (ROOT / "ndr_compiler" / "cli.py").read_text()
    used = {int(c) for c in re.findall(r"sys\.exit\((\d)\)", cli)} | {0}
    section = SPECS_MD.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(c) for c in re.findall(r"^\| `(\d)` \|", section, re.M)}
    assert documented == used


def test_renderer_reads_constraints_defaults_and_aliases():
    """The renderer itself: a field it misreads would make every table agree with a wrong reference."""
    from ndr_compiler.constructs.parse_context import ParseContext
    from ndr_compiler.models.project import Polling

    polling = dict((r[0], r[1:]) for r in rows(Polling))
    assert polling["`every_seconds`"] == ("integer (≥ 1, ≤ 3600)", "`30`")
    assert ("`validate`", "string (at least 1)", '`"ValidateIncomingEvent"`') in rows(ParseContext)
    assert render_type(dict[str, list[int]]) == "map of string to list of integer"


DESIGN = ROOT / "docs" / "design"
LAYER_SECTIONS = ("## Imports", "## Invariants", "## Decisions", "## Tested")


def test_every_design_page_is_indexed_and_complete():
    index = (DESIGN / "README.md").read_text()
    pages = sorted(p.name for p in DESIGN.glob("*.md") if p.name != "README.md")
    assert pages and [p for p in pages if f"]({p})" not in index] == []
    for page in pages:
        text = (DESIGN / page).read_text()
        assert [s for s in LAYER_SECTIONS if s not in text] == [], page


def test_relative_links_of_the_docs_resolve():
    broken = []
    for page in [SPECS_MD, *DESIGN.glob("*.md"), ROOT / "README.md"]:
        prose = re.sub(r"`[^`]*`", "", page.read_text())  # a link is never inside a code span
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
