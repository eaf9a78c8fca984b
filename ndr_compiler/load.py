"""Load layer: YAML files -> plain data plus a ``{path: Span}`` index.

YAML is composed once, keeping node marks, so that every later layer (pydantic validation, lint rules,
cross-spec checks) can point at ``file:line:col``. Nothing here knows what a spec means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ndr_compiler.diagnostics import Diagnostic, DiagnosticError, Span, display_path

PathKey = tuple[str | int, ...]

#: libyaml's composer when PyYAML was built with it (same nodes and marks, several times faster)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """One YAML document of a spec file."""

    file: str
    data: Any
    spans: dict[PathKey, Span] = field(default_factory=dict)

    def span(self, path: Iterable[str | int] = ()) -> Span:
        """The span of ``path``, or of its nearest ancestor that exists in the file."""
        key = tuple(path)
        while key:
            if key in self.spans:
                return self.spans[key]
            key = key[:-1]
        return self.spans.get((), Span(self.file))


class _Constructor(yaml.constructor.SafeConstructor):
    pass


_STR = "tag:yaml.org,2002:str"


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == _STR:  # what SafeConstructor makes of a string, without building one per scalar
        return node.value
    return _Constructor().construct_object(node, deep=True)


def _span(file: str, node: yaml.Node) -> Span:
    return Span(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(file: str, node: yaml.Node, path: PathKey, spans: dict[PathKey, Span],
             diags: list[Diagnostic]) -> Any:
    """``node`` as plain data; the span of every path under ``path`` into ``spans`` (a key's at the key, an
    item's at the item: the caller records ``path``'s own)."""
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                diags.append(Diagnostic("E105", "mapping keys must be plain scalars", _span(file, key_node)))
                continue
            key = _scalar(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                diags.append(Diagnostic("E103", f"duplicate key '{key}'", _span(file, key_node)))
                continue
            at = (*path, key)
            spans[at] = _span(file, key_node)
            out[key] = _convert(file, value_node, at, spans, diags)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            spans[(*path, i)] = _span(file, item)
            items.append(_convert(file, item, (*path, i), spans, diags))
        return items
    return _scalar(node)  # type: ignore[arg-type]


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dedented_line(lines: list[str], at: int) -> tuple[int, int, int] | None:
    """``(line, indent, expected)`` when the YAML error at line ``at`` comes from the line before it, indented
    less than its block: a ``key: value`` line followed by lines indented deeper (which the parser rejects only
    there), and either right under a parent key it should be the child of, or after a line that lines up with
    the deeper ones. Otherwise (an over-indented line, say) the parser's own position is the right one."""
    content = [i for i in range(min(at, len(lines) - 1) + 1) if _content(lines[i])]
    if len(content) < 2:
        return None
    here, before = content[-1], content[-2]
    if _indent(lines[here]) <= _indent(lines[before]):
        return None
    text = lines[before].strip()
    if text.startswith("- ") or ": " not in text or text.endswith(":"):
        return None  # a sequence item or a parent key: the deeper lines may be its children
    if len(content) < 3:
        return None
    earlier = lines[content[-3]]
    key_column = _indent(earlier) + (2 if earlier.lstrip().startswith("- ") else 0)
    parent = earlier.rstrip().endswith(":") and key_column >= _indent(lines[before])  # it was its child
    sibling = not earlier.rstrip().endswith(":") and _indent(earlier) == _indent(lines[here])  # it was theirs
    return (before, _indent(lines[before]), _indent(lines[here])) if parent or sibling else None


def load_text(text: str, file: str) -> list[Document]:
    """Parse one file's text into documents; raise DiagnosticError on anything unreadable."""
    if not text.strip():
        raise DiagnosticError([Diagnostic("E104", "the spec file is empty", Span(file))])
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=_LOADER) if n is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = Span(file, mark.line + 1, mark.column + 1) if mark else Span(file)
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        lines = text.splitlines()
        at = lines[mark.line] if mark and mark.line < len(lines) else ""
        if "'\\t'" in problem or "\t" in problem or (mark and "\t" in at[: mark.column + 1]):
            raise DiagnosticError(
                [Diagnostic("E102", "tab character used for indentation; YAML allows only spaces", span)]
            ) from None
        dedented = _dedented_line(lines, mark.line) if mark else None
        if dedented is not None:
            line, indent, expected = dedented
            raise DiagnosticError([Diagnostic(
                "E109", f"this line is indented {indent} spaces, the lines after it {expected}: a block's lines line "
                        f"up (YAML: {problem})", Span(file, line + 1, indent + 1))]) from None
        raise DiagnosticError([Diagnostic("E101", f"YAML syntax error: {problem}", span)]) from None
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        mark = getattr(exc, "problem_mark", None) or None
        line = getattr(exc, "line", None)
        span = Span(file, mark.line + 1, mark.column + 1) if mark else Span(file, (line or 0) + 1)
        raise DiagnosticError([Diagnostic("E101", f"YAML syntax error: {exc}".splitlines()[0], span)]) from None
    if not nodes:
        raise DiagnosticError([Diagnostic("E104", "the spec file holds no YAML document", Span(file))])
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    for node in nodes:
        spans: dict[PathKey, Span] = {(): _span(file, node)}
        try:
            data = _convert(file, node, (), spans, diags)
        except yaml.YAMLError as exc:
            diags.append(Diagnostic("E101", f"YAML value error: {str(exc).splitlines()[0]}", _span(file, node)))
            continue
        docs.append(Document(file, data, spans))
    if diags:
        raise DiagnosticError(diags)
    return docs


def load_file(path: Path) -> list[Document]:
    file = display_path(path)
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise DiagnosticError([Diagnostic("E106", "the spec file is binary, not YAML text", Span(file))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiagnosticError(
            [Diagnostic("E106", f"the spec file is not UTF-8 text (byte {exc.start})", Span(file))]
        ) from None
    return load_text(text, file)
