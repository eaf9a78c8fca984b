"""The central table of diagnostic codes. Codes are never reused; a retired code keeps its row."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    family: str
    summary: str
    status: str = "stable"


FAMILIES = {
    "E0": "internal",
    "E1": "schema",
    "E2": "graph",
    "E3": "locks and polling",
    "E4": "AWS limits",
    "E5": "cross-spec references",
    "E6": "JSONata",
}

_CODES = [
    Code("E001", "internal-error", "internal", "a rule crashed; the message names it (please report it)"),
    Code("E101", "yaml-syntax", "schema", "the file is not valid YAML"),
    Code("E102", "yaml-tab", "schema", "a tab character is used for indentation"),
    Code("E103", "duplicate-key", "schema", "a mapping repeats a key"),
    Code("E104", "empty-file", "schema", "the spec file is empty"),
    Code("E105", "complex-key", "schema", "a mapping key is not a plain scalar"),
    Code("E106", "not-text", "schema", "the spec file is binary or not UTF-8"),
    Code("E107", "not-a-mapping", "schema", "a spec document is not a mapping"),
    Code("E108", "no-specs", "schema", "no spec files were found"),
    Code("E109", "yaml-dedent", "schema", "a line is indented less than the block it belongs to"),
    Code("E110", "unknown-key", "schema", "a key the spec language does not define"),
    Code("E111", "wrong-type", "schema", "a value has the wrong type"),
    Code("E112", "missing-field", "schema", "a required field is missing"),
    Code("E113", "invalid-value", "schema", "a value is out of range or does not match its pattern"),
    Code("E114", "invalid-step", "schema", "a step is not exactly one known construct"),
    Code("E115", "spark-config-not-spark", "schema", "spark_config is set on a processor profile that is not Spark"),
    Code("E116", "reserved-environment-variable", "schema",
         "a processor environment sets NDR_SPARK_CONF, which carries spark_config"),
    Code("E117", "spark-argument-unsafe", "schema",
         "a literal argument of a Spark step is not [A-Za-z0-9_@%+=:,./-]+"),
    Code("E120", "unsupported-api-version", "schema", "apiVersion is missing or not supported"),
    Code("E121", "unknown-kind", "schema", "kind is not one of the spec kinds"),
    Code("E122", "duplicate-spec", "schema", "two specs of one kind share a name"),
    Code("E123", "schedule-expression", "schema",
         "a schedule is not a valid EventBridge cron(...) or rate(...) expression"),
    Code("E201", "duplicate-state", "graph", "two states of a state machine share a name"),
    Code("E202", "dangling-next", "graph", "a transition names a state that does not exist"),
    Code("E203", "unreachable-state", "graph", "a state cannot be reached from the start"),
    Code("E204", "no-terminal", "graph", "no path ends the execution"),
    Code("E205", "duplicate-step", "graph", "two steps of a pipeline share a name"),
    Code("E206", "workflow-cycle", "graph", "state machines start each other (start_workflow) in a cycle"),
    Code("E207", "fuse-unknown-step", "graph", "a fuse group names no step of the pipeline, or a step already fused"),
    Code("E208", "fuse-not-a-chain", "graph",
         "a fused step is not declared right after the previous one, or does not depend on it alone"),
    Code("E209", "fuse-processor-mismatch", "graph",
         "fused steps differ in processor profile, overrides, retry or cache"),
    Code("E210", "fuse-not-spark", "graph", "a fuse group runs on a processor profile that is not a Spark one"),
    Code("E211", "fuse-inner-dependency", "graph", "a step outside a fuse group depends on one of its inner steps"),
    Code("E212", "fused-job-name", "graph",
         "a fuse group's Processing step name (first-last) is over 64 characters or already taken"),
    Code("E301", "lock-not-released", "locks and polling", "a path leaves a lock body without releasing it"),
    Code("E302", "unbounded-loop", "locks and polling", "a loop has no bounded exit"),
    Code("E303", "reserved-variable", "locks and polling", "a spec assigns a variable the constructs own"),
    Code("E304", "lease-shorter-than-timeout", "locks and polling",
         "a lock's RUNNING lease is shorter than the machine's timeout"),
    Code("E305", "poll-budget-short", "locks and polling",
         "a poll budget is shorter than what the pipeline may run on its own limits"),
    Code("E306", "untrusted-uncaught", "locks and polling",
         "untrusted input is evaluated in a state no Catch holds"),
    Code("E307", "effect-after-success-mark", "locks and polling",
         "an effect runs after the lock that guards it is marked succeeded"),
    Code("E401", "state-name-limit", "AWS limits", "a state name is over 80 characters or has forbidden characters"),
    Code("E402", "definition-size", "AWS limits", "a state machine definition is over 1,048,576 bytes"),
    Code("E403", "sagemaker-name", "AWS limits", "a pipeline step or parameter name is not [A-Za-z0-9_-]{1,64}"),
    Code("E404", "parameter-value-length", "AWS limits", "a pipeline parameter value is over 1,024 characters"),
    Code("E406", "pipeline-name", "AWS limits", "a pipeline name is not [a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}"),
    Code("E407", "container-arguments-limit", "AWS limits", "a pipeline step has over 100 container arguments"),
    Code("E408", "container-argument-length", "AWS limits", "a container argument is over 256 characters"),
    Code("E409", "environment-value-length", "AWS limits",
         "a processor environment value (or spark_config as JSON) is over 256 characters"),
    Code("E410", "pipeline-definition-size", "AWS limits", "a pipeline definition is over 1,048,576 bytes"),
    Code("E411", "fused-job-limits", "AWS limits",
         "a fuse group's summed max runtime is over 432,000 s, or its description over 4,096 characters"),
    Code("E501", "unknown-project", "cross-spec references", "spec.project names no Project spec"),
    Code("E502", "unknown-state-machine", "cross-spec references", "start_workflow names no StateMachine spec"),
    Code("E503", "unserved-placeholder", "cross-spec references", "a ${PipelineName...} is served by no Pipeline spec"),
    Code("E504", "unknown-pipeline-parameter", "cross-spec references", "a start passes a parameter not declared"),
    Code("E505", "missing-pipeline-parameter", "cross-spec references", "a start omits a required parameter"),
    Code("E506", "parameter-type", "cross-spec references", "a literal is not of the parameter's type"),
    Code("E507", "unknown-parameter-binding", "cross-spec references", "a step argument binds an undeclared parameter"),
    Code("E508", "missing-entrypoint", "cross-spec references", "an entrypoint module is not in ndr_jobs"),
    Code("E509", "entrypoint-arguments", "cross-spec references", "the script's parser rejects the step's arguments"),
    Code("E510", "unknown-step-reference", "cross-spec references",
         "a depends_on names no step declared before it in the pipeline"),
    Code("E511", "duplicate-placeholder", "cross-spec references", "two pipeline specs serve one placeholder"),
    Code("E512", "unknown-placeholder", "cross-spec references", "a ${Name} has no value in an Environment spec"),
    Code("E513", "unknown-processor", "cross-spec references", "a step's processor names no profile of its project"),
    Code("E514", "unknown-environment-reference", "cross-spec references",
         "an Environment names a state machine or pipeline spec its project does not define"),
    Code("E601", "jsonata-syntax", "JSONata", "a JSONata expression does not parse"),
    Code("E602", "states-result-scope", "JSONata", "$states.result used where Step Functions does not set it"),
    Code("E603", "states-error-scope", "JSONata", "$states.errorOutput used outside a Catch"),
    Code("E604", "unknown-variable", "JSONata", "an expression reads a variable nothing assigns"),
]

CODES: dict[str, Code] = {c.code: c for c in _CODES}
