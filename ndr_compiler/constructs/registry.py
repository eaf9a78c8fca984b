"""What a construct is: the YAML key it is written under, the model of its body, its expansion into IR
states, the state it starts at, and the step lists it nests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ndr_compiler import ir
    from ndr_compiler.diagnostics import Diagnostic, Span
    from ndr_compiler.expand.common import Scope
    from ndr_compiler.expand.state_machine import Expander
    from ndr_compiler.load import PathKey


def _no_children(_: Any) -> list[tuple[str, list[Any]]]:
    return []


@dataclass(frozen=True)
class CheckContext:
    """What a construct's own checks may look at beyond its body: the machine it is in and its project's."""

    machine: str
    machines: frozenset[str]
    span: Callable[[PathKey], Span]
    #: machines whose spec did not validate: not reported again as undefined
    broken_machines: frozenset[str] = frozenset()


def _binds_nothing(_: dict[str, Any]) -> set[str]:
    return set()


def _no_checks(_: Any, __: PathKey, ___: CheckContext) -> Iterator[Diagnostic]:
    return iter(())


@dataclass(frozen=True)
class Construct:
    #: the step's one key in a spec (``lock``, ``run_pipeline``...)
    key: str
    #: the pydantic model (or type) of the value under that key
    model: Any
    #: ``expand(expander, body, path, next_state, scope)``: the construct's IR states, in order
    expand: Callable[[Expander, Any, PathKey, str | None, Scope], list[ir.State]]
    #: ``entry(body, in_lock)``: the name of the state the construct starts at
    entry: Callable[[Any, bool], str]
    #: ``children(body)``: the nested step lists, as ``(key, steps)``
    children: Callable[[Any], list[tuple[str, list[Any]]]] = field(default=_no_children)
    #: ``binds(raw_body)``: variables the construct binds for the expressions written inside it (E604)
    binds: Callable[[dict[str, Any]], set[str]] = field(default=_binds_nothing)
    #: ``check(body, path, context)``: the construct's own diagnostics (cross-spec references, names)
    check: Callable[[Any, PathKey, CheckContext], Iterator[Diagnostic]] = field(default=_no_checks)

    @property
    def step_model_name(self) -> str:
        return "".join(part.title() for part in self.key.split("_")) + "Step"


def kind(step: Any) -> str:
    """The construct key of a validated step."""
    return next(iter(type(step).model_fields))
