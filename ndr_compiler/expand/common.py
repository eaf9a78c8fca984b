"""What every construct's expansion shares: the scope a construct sits in, and the names and retry policy
the generated states agree on."""

from __future__ import annotations

from dataclasses import dataclass

from ndr_compiler import ir

CONDITIONAL_FAILED = "DynamoDB.ConditionalCheckFailedException"
RESERVED_VARIABLES = frozenset(
    {"msg", "ctx", "params", "failure", "item", "item_index", "item_failure", "states", "rejection"}
)
TERMINAL = "['Succeeded', 'Failed', 'Stopped']"
#: for calls that may be repeated safely (reads, token-idempotent starts and stops, unconditional records):
#: a throttled or failed call is tried again before the failure path takes over
RETRY = [ir.Retrier(["States.ALL"], interval_seconds=2, max_attempts=2, backoff_rate=2.0)]
NOW = "$floor($millis() / 1000)"
OWNER = "$states.context.Execution.Id"


@dataclass
class Scope:
    """Where a construct sits: its failure target, the failure variable, whether it is in a Map, and the
    lock whose body it is in (its effects variable)."""

    fail_to: str
    failure_var: str = "failure"
    in_map: bool = False
    #: the scope of the lock whose body this is: its variables are ``<lock>_effects`` and ``<lock>_key``
    lock: str | None = None


def once_name(emit: str) -> str:
    return f"{emit}OnceChoice"
