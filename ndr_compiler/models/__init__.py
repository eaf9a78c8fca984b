"""Models layer: pydantic models of the ``ndr/v1`` spec language (unknown keys are rejected).

``StateMachine`` (and ``KINDS``, which holds it) load on first use: its step union is built from the construct
registry, whose modules import this package's base models. The model modules do without
``from __future__ import annotations``: pydantic would compile every string annotation back (issue 21).
"""

from typing import Any

from ndr_compiler.models.base import SUPPORTED_API_VERSIONS, Metadata
from ndr_compiler.models.environment import Environment
from ndr_compiler.models.pipeline import Pipeline
from ndr_compiler.models.project import Project
from ndr_jobs.interface.feature_spec import FeatureSpecDocument as FeatureSpec  # the jobs read it; the compiler too

__all__ = [
    "Environment", "FeatureSpec", "KINDS", "SUPPORTED_API_VERSIONS", "Metadata", "Pipeline", "Project", "StateMachine",
]


def __getattr__(name: str) -> Any:
    if name not in ("StateMachine", "KINDS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ndr_compiler.models.state_machine import StateMachine

    kinds: dict[str, type] = {
        "Project": Project, "StateMachine": StateMachine, "Pipeline": Pipeline, "Environment": Environment,
        "FeatureSpec": FeatureSpec,
    }
    globals().update(StateMachine=StateMachine, KINDS=kinds)
    return globals()[name]
