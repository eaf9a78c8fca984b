"""JSONata rules (E6xx): every ``{% %}`` expression of a spec parses (checked where the user wrote it, once),
and ``$states`` fields are used where Step Functions sets them (checked on the generated states)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import jsonata

from ndr_compiler import ir
from ndr_compiler.constructs import CONSTRUCTS
from ndr_compiler.diagnostics import Diagnostic, did_you_mean
from ndr_compiler.expand.snippets import expr_body
from ndr_compiler.lint.graph import graphs
from ndr_compiler.load import Document, PathKey

RESULT_RE = re.compile(r"\$states\.result\b")
ERROR_RE = re.compile(r"\$states\.errorOutput\b")


def strings(value: Any) -> list[str]:
    """The JSONata sources of the ``{% %}`` strings in ``value`` (keys included), in order."""
    out: list[str] = []

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                collect(k)
                collect(item)
        elif isinstance(v, list):
            for item in v:
                collect(item)
        else:
            body = expr_body(v)
            if body is not None:
                out.append(body)

    collect(value)
    return out


def fields(state: ir.State) -> Iterator[tuple[str, Any]]:
    """(field, value) pairs of a state that may hold JSONata, named as in ASL."""
    yield "Output", state.output
    yield "Assign", state.assign
    if isinstance(state, ir.Task):
        yield "Arguments", state.arguments
    if isinstance(state, ir.Map):
        yield "Items", state.items
        yield "ItemSelector", state.item_selector
    if isinstance(state, ir.Choice):
        for r in state.rules:
            yield "Condition", r.condition
            yield "Choice.Assign", r.assign
    if isinstance(state, ir.Wait):
        yield "Seconds", state.seconds
    if isinstance(state, ir.Fail):
        yield "Error", state.error
        yield "Cause", state.cause
    if isinstance(state, ir.Task | ir.Map):
        for c in state.catch:
            yield "Catch.Assign", c.assign
            yield "Catch.Output", c.output


@functools.lru_cache(maxsize=4096)
def _parse(src: str) -> tuple[Any, str | None]:
    """``(ast, None)``, or ``(None, message)`` when ``src`` does not parse: once per expression (E601 and E604
    read the same expressions; the AST is only read)."""
    try:
        return jsonata.Jsonata(src).ast, None
    except Exception as exc:  # jsonata-python raises JException (a RuntimeError) with a message
        where = getattr(exc, "location", None)
        return None, f"{exc}" + (f" (at character {where})" if where is not None else "")


def _parse_error(src: str) -> str | None:
    return _parse(src)[1]


def spec_expressions(doc: Document) -> Iterator[Diagnostic]:
    """E601 at the key of every spec value ``{% ... %}`` that does not parse, once, with the position inside
    the user's own expression (the compiler's own wrapping is tested, not linted)."""

    def walk(value: Any, path: PathKey) -> Iterator[Diagnostic]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, (*path, i))
        elif (body := expr_body(value)) is not None:
            err = _parse_error(body)
            if err:
                where = ".".join(str(p) for p in path)
                yield Diagnostic("E601", f"the JSONata of {where} does not parse: {err}", doc.span(path))

    yield from walk(doc.data, ())


def expressions(machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    for g in graphs(machine):
        for state in g.states:
            result_ok = isinstance(state, ir.Task | ir.Map)
            for field, value in fields(state):
                for src in strings(value):
                    if RESULT_RE.search(src) and not (result_ok and field in ("Output", "Assign")):
                        yield Diagnostic("E602", f"state '{state.name}' {field}: $states.result is only set in "
                                                 "the Output and Assign of a Task, Map or Parallel state",
                                         state.origin)
                    if ERROR_RE.search(src) and not field.startswith("Catch."):
                        yield Diagnostic("E603", f"state '{state.name}' {field}: $states.errorOutput is only "
                                                 "set in a Catch's Output and Assign", state.origin)


#: functions Step Functions adds to JSONata; the library's own are its static frame's bindings
AWS_FUNCTIONS = ("partition", "range", "hash", "random", "uuid", "parse")


@functools.lru_cache(maxsize=4096)
def free_variables(src: str) -> frozenset[str]:
    """The ``$names`` an expression reads that it does not bind itself (``:=``, function parameters) and that are
    not functions of JSONata or Step Functions; empty when it does not parse (E601 reports that)."""
    tree = _parse(src)[0]
    if tree is None:
        return frozenset()
    symbol = jsonata.parser.Parser.Symbol
    walked = (symbol, list)
    used: set[str] = set()
    bound: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, symbol) or id(node) in seen:
            continue
        seen.add(id(node))
        if node.type == "variable" and isinstance(node.value, str):
            used.add(node.value)
        elif node.type == "bind" and getattr(node.lhs, "type", None) == "variable":
            bound.add(node.lhs.value)
        elif node.type == "lambda":
            bound.update(a.value for a in node.arguments or () if getattr(a, "type", None) == "variable")
        todo.extend(v for v in vars(node).values() if isinstance(v, walked))  # not _outer_instance: a Parser
    return frozenset(used - bound - _builtin_names())


@functools.cache
def _builtin_names() -> frozenset[str]:
    return frozenset(jsonata.Jsonata.static_frame.bindings) | frozenset(AWS_FUNCTIONS) | {"", "$", "states"}


def _construct_names(key: str, body: Any) -> set[str]:
    """Names a construct binds for the expressions written inside it (its registry ``binds``)."""
    construct = CONSTRUCTS.get(key)
    return construct.binds(body) if construct is not None and isinstance(body, dict) else set()


def spec_variables(doc: Document, machine: ir.StateMachineIR) -> Iterator[Diagnostic]:
    """E604 at the key of a spec expression that reads a variable nothing assigns (a misspelt ``$parms``), with
    the closest one that is."""
    assigned: set[str] = set()
    for g in graphs(machine):
        for state in g.states:
            for name, value in fields(state):
                if name.endswith("Assign") and isinstance(value, dict):
                    assigned.update(value)

    def walk(value: Any, path: PathKey, scope: frozenset[str]) -> Iterator[Diagnostic]:
        if isinstance(value, dict):
            for key, item in value.items():
                names = _construct_names(key, item) if isinstance(key, str) else None
                yield from walk(item, (*path, key), scope | names if names else scope)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, (*path, i), scope)
        elif (body := expr_body(value)) is not None:
            for name in sorted(free_variables(body) - scope):
                hint = did_you_mean(f"${name}", (f"${v}" for v in scope))
                where = ".".join(str(p) for p in path)
                yield Diagnostic("E604", f"the JSONata of {where} reads ${name}, which nothing assigns{hint}",
                                 doc.span(path))

    yield from walk(doc.data, (), frozenset(assigned))
