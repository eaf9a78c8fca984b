"""The fused command line a pipeline spec's ``fuse`` group compiles to (the compiler writes it, the launcher and the
local runner read it): ``--fused`` then, for each spec step in order, ``<step name> <module> <n> <n arguments>``.
Names, modules and counts are literals the compiler writes; a parameter's value is only ever inside a counted run
of arguments, so it cannot shift a boundary. Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FUSED_FLAG = "--fused"
STEP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
MODULE = re.compile(r"ndr_jobs(\.[a-z_][a-z0-9_]*)+", re.ASCII)
COUNT = re.compile(r"(0|[1-9][0-9]{0,3})", re.ASCII)


class FusedArgumentsError(ValueError):
    """The ``--fused`` command line is malformed (what the compiler never writes)."""


@dataclass(frozen=True)
class FusedStep:
    name: str
    module: str
    #: the values as the command line holds them (strings; in a rendered definition, also parameter references)
    arguments: list[Any]


def parse_fused(argv: list[Any]) -> list[FusedStep]:
    """``(<name> <module> <n> <n arguments>)...`` into its steps; :class:`FusedArgumentsError` on anything else."""
    steps: list[FusedStep] = []
    i = 0
    while i < len(argv):
        if len(argv) - i < 3:
            raise FusedArgumentsError(
                f"fused step {len(steps) + 1}: expected <name> <module> <count>, got {argv[i:]!r}")
        name, module, count = argv[i:i + 3]
        if not (isinstance(name, str) and STEP_NAME.fullmatch(name)):
            raise FusedArgumentsError(f"fused step {len(steps) + 1}: {name!r} is not a step name")
        if not (isinstance(module, str) and MODULE.fullmatch(module)):
            raise FusedArgumentsError(f"fused step {name}: {module!r} is not an ndr_jobs module")
        if not (isinstance(count, str) and COUNT.fullmatch(count)):
            raise FusedArgumentsError(f"fused step {name}: argument count {count!r} is not a number")
        n = int(count)
        if len(argv) - i - 3 < n:
            raise FusedArgumentsError(f"fused step {name}: {n} arguments announced, {len(argv) - i - 3} left")
        if any(s.name == name for s in steps):
            raise FusedArgumentsError(f"fused step {name} is named twice")
        steps.append(FusedStep(name, module, list(argv[i + 3:i + 3 + n])))
        i += 3 + n
    if not steps:
        raise FusedArgumentsError("--fused names no step")
    return steps
