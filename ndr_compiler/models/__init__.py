"""Models layer: pydantic models of the ``ndr/v1`` spec language (unknown keys are rejected)."""

from ndr_compiler.models.base import SUPPORTED_API_VERSIONS, Metadata
from ndr_compiler.models.environment import Environment
from ndr_compiler.models.pipeline import Pipeline
from ndr_compiler.models.project import Project
from ndr_compiler.models.state_machine import StateMachine
from ndr_jobs.interface.feature_spec import FeatureSpecDocument as FeatureSpec  # the jobs read it; the compiler too

KINDS: dict[str, type] = {
    "Project": Project, "StateMachine": StateMachine, "Pipeline": Pipeline, "Environment": Environment,
    "FeatureSpec": FeatureSpec,
}

__all__ = [
    "Environment", "FeatureSpec", "KINDS", "SUPPORTED_API_VERSIONS", "Metadata", "Pipeline", "Project", "StateMachine",
]
