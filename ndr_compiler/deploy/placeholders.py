"""``${...}`` placeholders in generated definitions, resolved per environment."""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")


class UnresolvedPlaceholder(KeyError):
    pass


def placeholders(text: str) -> list[str]:
    """The placeholder names used in ``text``, sorted and unique."""
    return sorted(set(PLACEHOLDER.findall(text)))


def resolve(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``${Name}``; a name without a value is an error, never left behind silently."""
    missing = [name for name in placeholders(text) if name not in values]
    if missing:
        raise UnresolvedPlaceholder(f"no value for placeholder(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def state_machine_arn_placeholder(name: str) -> str:
    return f"StateMachineArn_{name}"
