"""Offline execution of the generated Step Functions state machines (moto-based)."""

from ndr_compiler.local.sfn_runtime import (
    ExecutionResult,
    PipelineRuntime,
    ScriptedPipelines,
    offline_aws,
    run_execution,
)

__all__ = ["ExecutionResult", "PipelineRuntime", "ScriptedPipelines", "offline_aws", "run_execution"]
