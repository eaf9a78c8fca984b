"""The platform on one machine, above both the compiler and the job library: an AWS emulator over moto
that runs the generated state machines, a local SageMaker pipeline runner over the job scripts, and the
``demo``. The compiler's CLI imports it only inside its ``run`` and ``demo`` commands."""

from ndr_local.sfn_runtime import (
    ExecutionResult,
    PipelineRuntime,
    ScriptedPipelines,
    offline_aws,
    run_execution,
)

__all__ = ["ExecutionResult", "PipelineRuntime", "ScriptedPipelines", "offline_aws", "run_execution"]
