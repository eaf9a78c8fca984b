"""Run AWS Step Functions state machines written in JSONata mode fully offline.

:func:`offline_aws` enters moto's ``mock_aws`` with its ASL interpreter and applies reversible patches so that
JSONata machines run against moto's services (JSONata through jsonata-python, Step Functions' error names and
casing, scaled waits, SageMaker pipelines answered by a :class:`PipelineRuntime`). Each patch is a ``_patch_*``
function; the reasons and the known limits are in ``docs/offline-interpreter.md``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import hashlib
import json
import os
import random
import re
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import botocore.session
from botocore.model import OperationModel
from botocore.response import StreamingBody
from jsonata import Jsonata
from jsonata.utils import Utils as _JsonataUtils
from moto import mock_aws

__all__ = [
    "AWS_JSONATA_FUNCTIONS",
    "PIPELINE_EXECUTION_STATUSES",
    "Faults",
    "JSONataEvaluationError",
    "PipelineNotRunning",
    "ExecutionResult",
    "PipelineRuntime",
    "ScriptedPipelines",
    "evaluate_jsonata",
    "offline_aws",
    "run_execution",
]

PIPELINE_EXECUTION_STATUSES: frozenset[str] = frozenset({"Executing", "Stopping", "Stopped", "Failed", "Succeeded"})
"""The values SageMaker reports as ``PipelineExecutionStatus``."""


# --------------------------------------------------------------------------------------
# SageMaker pipelines, offline
# --------------------------------------------------------------------------------------


@runtime_checkable
class PipelineRuntime(Protocol):
    """What a SageMaker pipeline execution does offline."""

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        """Called once per new pipeline execution (not for idempotent replays)."""
        ...

    def describe(self, execution_arn: str) -> tuple[str, str | None]:
        """(PipelineExecutionStatus, FailureReason) — Executing|Stopping|Stopped|Failed|Succeeded."""
        ...

    def stop(self, execution_arn: str) -> None:
        """Ask a running execution to stop (it goes Stopping, then Stopped); :class:`PipelineNotRunning` when it
        already ended, as SageMaker refuses to stop a finished execution."""
        ...


class PipelineNotRunning(Exception):
    """A stop of a pipeline execution that already ended."""


class ScriptedPipelines:
    """A :class:`PipelineRuntime` whose executions follow a script, for tests.

    ``outcomes`` maps a pipeline name to the statuses that successive
    ``describePipelineExecution`` calls of *one* execution of that pipeline
    return; the last status repeats. Pipelines not in ``outcomes`` follow
    ``default`` (``["Succeeded"]`` unless given). A ``Failed`` status comes
    with a ``FailureReason``. Every start is recorded in :attr:`starts` as
    ``(pipeline_name, parameters)``, every stop in :attr:`stops`.

    A stop of an execution that has not reached a terminal status makes it
    ``Stopping`` on the next describe and ``Stopped`` after that (unless its
    pipeline is in ``unstoppable``: then the script goes on). A script that
    ends in ``Executing`` never ends by itself: :meth:`left_running` lists
    those executions that nobody stopped.
    """

    def __init__(
        self,
        outcomes: dict[str, list[str]] | None = None,
        default: list[str] | None = None,
        unstoppable: frozenset[str] = frozenset(),
    ) -> None:
        self._outcomes = {name: _checked_script(script) for name, script in (outcomes or {}).items()}
        self._default = _checked_script(default if default is not None else ["Succeeded"])
        self.unstoppable = unstoppable
        self._lock = threading.Lock()
        self._executions: dict[str, tuple[str, list[str]]] = {}
        self._describe_calls: dict[str, int] = {}
        self._last: dict[str, str] = {}
        self._stopped: dict[str, int] = {}  # execution -> describes since the stop
        self.starts: list[tuple[str, dict[str, str]]] = []
        self.stops: list[str] = []

    def script(self, pipeline_name: str, statuses: list[str] | None) -> None:
        """Set (or, with None, reset to the default) the script of the pipeline's next executions."""
        with self._lock:
            if statuses is None:
                self._outcomes.pop(pipeline_name, None)
            else:
                self._outcomes[pipeline_name] = _checked_script(statuses)

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        """Record the start and attach the pipeline's script to the execution."""
        with self._lock:
            self.starts.append((pipeline_name, dict(parameters)))
            script = self._outcomes.get(pipeline_name, self._default)
            self._executions[execution_arn] = (pipeline_name, script)
            self._describe_calls[execution_arn] = 0
            self._last[execution_arn] = "Executing"

    def describe(self, execution_arn: str) -> tuple[str, str | None]:
        """Return the next scripted status of the execution (the last one repeats)."""
        with self._lock:
            pipeline_name, script = self._executions[execution_arn]
            if execution_arn in self._stopped:
                since = self._stopped[execution_arn]
                self._stopped[execution_arn] = since + 1
                status = "Stopping" if since == 0 else "Stopped"
            else:
                calls = self._describe_calls[execution_arn]
                self._describe_calls[execution_arn] = calls + 1
                status = script[min(calls, len(script) - 1)]
            self._last[execution_arn] = status
        reason = f"Scripted failure of pipeline {pipeline_name}" if status == "Failed" else None
        return status, reason

    def stop(self, execution_arn: str) -> None:
        with self._lock:
            pipeline_name, script = self._executions[execution_arn]
            self.stops.append(execution_arn)
            if self._last[execution_arn] in ("Succeeded", "Failed", "Stopped"):
                raise PipelineNotRunning(f"pipeline execution {execution_arn} is {self._last[execution_arn]}")
            if pipeline_name not in self.unstoppable:
                self._stopped.setdefault(execution_arn, 0)

    def left_running(self) -> list[str]:
        """Executions that never end by themselves (their script ends Executing) and nobody asked to stop."""
        with self._lock:
            return sorted(arn for arn, (_, script) in self._executions.items()
                          if script[-1] in ("Executing", "Stopping") and arn not in self.stops)


def _checked_script(script: list[str]) -> list[str]:
    if not script:
        raise ValueError("a pipeline script needs at least one status")
    unknown = [status for status in script if status not in PIPELINE_EXECUTION_STATUSES]
    if unknown:
        raise ValueError(
            f"unknown PipelineExecutionStatus {unknown}; expected one of {sorted(PIPELINE_EXECUTION_STATUSES)}"
        )
    return list(script)


# --------------------------------------------------------------------------------------
# JSONata evaluation with the Step Functions extension functions
# --------------------------------------------------------------------------------------

_HASH_ALGORITHMS: dict[str, str] = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


def _from_jsonata(value: Any) -> Any:
    """A JSONata value handed to a Python function, as plain JSON-like Python."""
    if value is _JsonataUtils.NULL_VALUE:
        return None
    if isinstance(value, list):
        return [_from_jsonata(item) for item in value]
    if isinstance(value, dict):
        return {key: _from_jsonata(item) for key, item in value.items()}
    return value


def _to_jsonata(value: Any) -> Any:
    """Plain Python JSON (``None`` = null) as a JSONata value (null is a sentinel there)."""
    if value is None:
        return _JsonataUtils.NULL_VALUE
    if isinstance(value, list):
        return [_to_jsonata(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_jsonata(item) for key, item in value.items()}
    return value


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _sfn_partition(array: Any = None, size: Any = None) -> list[list[Any]]:
    """``$partition(array, size)``: consecutive chunks of ``size`` items (the last may be shorter)."""
    if not isinstance(array, list):
        raise ValueError("$partition: argument 1 must be an array")
    chunk = _integer(size, "$partition: argument 2")
    if chunk <= 0:
        raise ValueError("$partition: argument 2 must be a positive integer")
    items = list(array)
    return [items[i : i + chunk] for i in range(0, len(items), chunk)]


def _sfn_range(start: Any = None, end: Any = None, step: Any = None) -> list[int]:
    """``$range(start, end, step)``: integers from ``start`` to ``end`` inclusive."""
    first = _integer(start, "$range: argument 1")
    last = _integer(end, "$range: argument 2")
    increment = _integer(step, "$range: argument 3")
    if increment == 0:
        raise ValueError("$range: step must not be 0")
    stop = last + (1 if increment > 0 else -1)
    return list(range(first, stop, increment))


def _sfn_hash(value: Any = None, algorithm: Any = "SHA-256") -> str:
    """``$hash(value, algorithm)``: hex digest; MD5, SHA-1, SHA-256 (default), SHA-384, SHA-512."""
    if not isinstance(value, str):
        raise ValueError("$hash: argument 1 must be a string")
    name = _HASH_ALGORITHMS.get(algorithm) if isinstance(algorithm, str) else None
    if name is None:
        raise ValueError(f"$hash: unsupported algorithm {algorithm!r}; expected one of {sorted(_HASH_ALGORITHMS)}")
    return hashlib.new(name, value.encode("utf-8")).hexdigest()


def _sfn_random(seed: Any = None) -> float:
    """``$random()`` / ``$random(seed)``: a number in [0, 1); the same seed gives the same number."""
    if seed is None or seed is _JsonataUtils.NULL_VALUE:
        return random.random()
    return random.Random(_integer(seed, "$random: seed")).random()


def _sfn_uuid() -> str:
    """``$uuid()``: a version 4 UUID."""
    return str(uuid.uuid4())


def _sfn_parse(text: Any = None) -> Any:
    """``$parse(jsonString)``: the JSON value the string encodes."""
    if not isinstance(text, str):
        raise ValueError("$parse: argument 1 must be a string")
    try:
        return _to_jsonata(json.loads(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"$parse: invalid JSON: {error}") from error


def _sfn_eval(*_: Any) -> Any:
    """``$eval`` is the one JSONata 2.0.6 function Step Functions does not provide."""
    raise ValueError("$eval is not available in Step Functions; use $parse instead")


def _native(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any) -> Any:
        return function(*(_from_jsonata(arg) for arg in args))

    return call


AWS_JSONATA_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "partition": _native(_sfn_partition),
    "range": _native(_sfn_range),
    "hash": _native(_sfn_hash),
    "random": _native(_sfn_random),
    "uuid": _native(_sfn_uuid),
    "parse": _native(_sfn_parse),
    "eval": _sfn_eval,
}
"""Functions Step Functions adds to (or, for ``$eval``, removes from) JSONata; names without ``$``."""


class JSONataEvaluationError(Exception):
    """A JSONata expression failed to parse or evaluate."""


_DECLARATION = re.compile(r"\$([A-Za-z0-9_]+):=")
_VALIDATION_WRAPPER = re.compile(r"\$(?:exists|type)\(")
_JSON_DECODER = json.JSONDecoder()


def _lift_declarations(expression: str) -> tuple[str, dict[str, Any]]:
    """Split moto's ``($name:=<JSON>;...;<expression>)`` into bindings and the rest.

    moto hands the evaluator a single text in which ``$states`` and every workflow
    variable are declared as JSON literals (see ``_patch_variable_encoding``). Having
    jsonata-python tokenise those literals costs ~0.2 ms per element, on *every*
    expression; ``json`` decodes them ~100x faster, and binding them as variables is
    how Step Functions itself provides ``$states``. Anything unexpected leaves the text
    untouched. moto's output validation wraps the text in ``$exists(...)``/``$type(...)``.
    """
    wrapper = _VALIDATION_WRAPPER.match(expression)
    head = wrapper.group(0) if wrapper and expression.endswith(")") else ""
    body = expression[len(head) : len(expression) - (1 if head else 0)]
    if not body.startswith("("):
        return expression, {}
    position, bindings = 1, {}
    while declaration := _DECLARATION.match(body, position):
        try:
            value, end = _JSON_DECODER.raw_decode(body, declaration.end())
        except ValueError:
            break
        if body[end : end + 1] != ";":
            break
        bindings[declaration.group(1)] = _to_jsonata(value)
        position = end + 1
    if not bindings:
        return expression, {}
    return f"{head}({body[position:]}{')' if head else ''}", bindings


@functools.lru_cache(maxsize=2048)
def _compiled(text: str) -> Jsonata:
    """A parsed expression with the Step Functions functions bound (parsing is most of the cost of an
    evaluation; a parsed expression holds no state between evaluations)."""
    compiled = Jsonata(text)
    for name, function in AWS_JSONATA_FUNCTIONS.items():
        compiled.register_lambda(name, function)
    return compiled


def evaluate_jsonata(expression: str) -> Any:
    """Evaluate a self-contained JSONata expression with the Step Functions functions bound.

    This is the evaluator installed into moto; moto passes expressions that
    already declare ``$states`` and the workflow variables.
    """
    try:
        text, bindings = _lift_declarations(expression)
        return _compiled(text).evaluate(None, bindings or None)
    except RecursionError as error:
        raise JSONataEvaluationError("JSONata evaluation exceeded the recursion limit") from error
    except Exception as error:
        raise JSONataEvaluationError(str(error)) from error


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return str(value)


def _replace_timestamps(value: Any, convert: Callable[[datetime.datetime], Any]) -> Any:
    """Replace (in place, recursively) the ``datetime`` values boto3 returns by ``convert(value)``."""
    if isinstance(value, datetime.datetime):
        return convert(value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _replace_timestamps(item, convert)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _replace_timestamps(item, convert)
    return value


def _epoch_millis(value: datetime.datetime) -> int:
    return int(value.timestamp() * 1000)


def _iso_timestamp(value: datetime.datetime) -> str:
    return value.isoformat()


def _jsonata_literal(value: Any) -> str:
    """A JSON value written as JSONata source (JSON literals are valid JSONata)."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------
# Patches of moto internals (each reversible, each with its reason)
# --------------------------------------------------------------------------------------

_MISSING = object()


class _Patches:
    """Set attributes and put them back, in reverse order, on :meth:`undo`."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, target: Any, name: str, value: Any) -> None:
        # Remember whether the attribute was the target's own, so a class attribute
        # that was inherited is deleted again rather than frozen onto the subclass.
        own = target.__dict__.get(name, _MISSING) if hasattr(target, "__dict__") else _MISSING
        self._undo.append((target, name, own))
        setattr(target, name, value)

    def undo(self) -> None:
        while self._undo:
            target, name, own = self._undo.pop()
            if own is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, own)


def _patch_jsonata_evaluator(patches: _Patches) -> None:
    """moto leaves ``_eval_jsonata`` unset (its JVM bridge was stripped): getmoto/moto#10105."""
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    patches.set(moto_jsonata, "_eval_jsonata", evaluate_jsonata)


def _patch_variable_encoding(patches: _Patches) -> None:
    """moto/LocalStack write a string variable as ``"<value>"`` without escaping, so a value
    holding ``"``, ``\\`` or a newline breaks *every* later expression of the execution."""
    from moto.stepfunctions.parser.asl.eval import states as moto_states
    from moto.stepfunctions.parser.asl.eval import variable_store as moto_variable_store

    def encode_jsonata_variable_declarations(bindings: dict[str, Any]) -> str:
        return "".join(f"{reference}:={_jsonata_literal(value)};" for reference, value in bindings.items())

    # Both modules imported the function by name.
    patches.set(moto_states, "encode_jsonata_variable_declarations", encode_jsonata_variable_declarations)
    patches.set(moto_variable_store, "encode_jsonata_variable_declarations", encode_jsonata_variable_declarations)


def _patch_intrinsic_declarations(patches: _Patches) -> None:
    """The port prepends JSONata shims for the AWS functions that would shadow the native ones:
    ``$hash``/``$uuid`` return "not supported" strings and ``$parse`` is ``$eval``."""
    from moto.stepfunctions.parser.asl.component.common.string import string_expression

    def get_intrinsic_functions_declarations(variable_references: set[str]) -> str:
        return ""

    patches.set(string_expression, "get_intrinsic_functions_declarations", get_intrinsic_functions_declarations)


def _patch_query_evaluation_errors(patches: _Patches) -> None:
    """A failing JSONata expression would otherwise surface as ``States.Runtime`` carrying a
    Python repr; Step Functions reports ``States.QueryEvaluationError`` (as moto itself does
    for expressions that return nothing)."""
    from moto.stepfunctions.parser.api import EvaluationFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.common.string.string_expression import StringJSONata
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original = StringJSONata._eval_body

    def _eval_body(self: StringJSONata, env: Any) -> None:
        try:
            original(self, env)
        except JSONataEvaluationError as error:
            error_name = StatesErrorName(typ=StatesErrorNameType.StatesQueryEvaluationError)
            details = EvaluationFailedEventDetails(
                error=error_name.error_name,
                cause=f"The JSONata expression '{self.expression}' threw an error during evaluation. {error}",
            )
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=error_name,
                    event_type=HistoryEventType.EvaluationFailed,
                    event_details=EventDetails(evaluationFailedEventDetails=details),
                )
            ) from error

    patches.set(StringJSONata, "_eval_body", _eval_body)


def _patch_dynamodb_failure_passthrough(patches: _Patches) -> None:
    """The optimised DynamoDB integration turns *every* non-ClientError into
    ``DynamoDB.AmazonDynamoDBException`` with an empty cause, hiding e.g. a
    ``States.QueryEvaluationError`` raised while evaluating ``Arguments``. Pass failure
    events through unchanged, as the base class (and the Lambda integration) does."""
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb import (  # noqa: E501
        StateTaskServiceDynamoDB,
    )

    original = StateTaskServiceDynamoDB._from_error

    def _from_error(self: Any, env: Any, ex: Exception) -> Any:
        if isinstance(ex, FailureEventException):
            return ex.failure_event
        return original(self, env, ex)

    patches.set(StateTaskServiceDynamoDB, "_from_error", _from_error)


def _patch_default_execution_name(patches: _Patches) -> None:
    """moto's interpreter backend builds the execution ARN from ``name`` even when it is
    omitted (``…:execution:<machine>:None``), so a second unnamed start of the same machine
    (e.g. a nested ``startExecution`` without ``Name``) fails with ExecutionAlreadyExists.
    Step Functions generates a UUID name; so does moto's non-interpreting backend."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution

    def start_execution(
        self: Any,
        state_machine_arn: str,
        name: str | None = None,
        execution_input: str | None = None,
        trace_header: str | None = None,
    ) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), execution_input, trace_header)

    patches.set(StepFunctionsParserBackend, "start_execution", start_execution)


def _patch_execution_output_serialisation(patches: _Patches) -> None:
    """The interpreter stores the execution output as a Python value, and moto's
    DescribeExecution returns a ``str`` value *as is* (assuming it is JSON text): an execution
    whose output is the JSON string ``"abc"`` answered ``output: abc`` (not JSON), which also
    breaks a parent's ``.sync:2`` task. A stray ``datetime`` made DescribeExecution raise.
    Store the output as JSON text, which DescribeExecution then returns unchanged."""
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    original = BaseExecutionWorkerCommunication._reflect_execution_status

    def _reflect_execution_status(self: Any) -> None:
        original(self)
        execution = self.execution
        if execution.exec_status == "SUCCEEDED":
            execution.output = json.dumps(execution.output, default=_json_default, separators=(",", ":"))

    patches.set(BaseExecutionWorkerCommunication, "_reflect_execution_status", _reflect_execution_status)


class _DefaultTaken(str):
    """The next state's name, when a Choice state took its ``Default``."""

    __slots__ = ()


def _patch_choice_default_detection(patches: _Patches) -> None:
    """moto decides that a Choice took its ``Default`` by comparing the next state's *name*
    with Default's, so when a matching rule leads to the same state as Default, the
    state-level ``Assign``/``Output`` (meant for Default) run after the rule's and overwrite
    its variables. Mark the Default branch explicitly instead (same logic otherwise)."""
    from moto.stepfunctions.parser.asl.component.state.choice.state_choice import StateChoice

    def _eval_state(self: Any, env: Any) -> None:
        for rule in self.choices_decl.rules:
            rule.eval(env)
            if env.stack.pop() is True:
                if not rule.next_stmt:
                    raise RuntimeError(f"Missing Next definition for state_choice rule '{rule}' in '{self}'.")
                env.stack.append(rule.next_stmt.name)
                return
        if self.default_state is None:
            raise RuntimeError(f"No branching option reached in state {self.name}")
        env.stack.append(_DefaultTaken(self.default_state.state_name))

    def _eval_state_output(self: Any, env: Any) -> None:
        next_state_name = env.stack.pop()
        if isinstance(next_state_name, _DefaultTaken):
            if self.assign_decl:
                self.assign_decl.eval(env=env)
            if self.output:
                self.output.eval(env=env)
        if self._is_language_query_jsonpath():
            if self.output_path:
                self.output_path.eval(env=env)
            else:
                env.states.reset(input_value=env.stack.pop())
        env.next_state_name = str(next_state_name)

    patches.set(StateChoice, "_eval_state", _eval_state)
    patches.set(StateChoice, "_eval_state_output", _eval_state_output)


@functools.cache
def _operation_model(service: str, snake_action: str) -> OperationModel:
    model = botocore.session.get_session().get_service_model(service)
    for operation_name in model.operation_names:
        if botocore.xform_name(operation_name) == snake_action:
            return model.operation_model(operation_name)
    raise KeyError(f"{service} has no operation {snake_action}")


def _patch_sfn_normalisation(patches: _Patches) -> None:
    """The port emptied ``_normalise_parameters``/``_normalise_response``: the nested
    ``states:startExecution`` task passed ``StateMachineArn`` to a boto3 API that wants
    ``stateMachineArn`` and read ``ExecutionArn`` from a response that has ``executionArn``.
    Restore LocalStack's shape-driven casing for this integration only."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    original_parameters = StateTaskServiceSfn._normalise_parameters

    def _normalise_parameters(
        self: Any,
        parameters: dict,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        original_parameters(self, parameters, boto_service_name, service_action_name)
        operation = _operation_model(
            self._get_boto_service_name(boto_service_name),
            self._get_boto_service_action(service_action_name),
        )
        if operation.input_shape is not None:
            self._to_boto_request(parameters, operation.input_shape)

    def _normalise_response(
        self: Any,
        response: Any,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        operation = _operation_model(
            self._get_boto_service_name(boto_service_name),
            self._get_boto_service_action(service_action_name),
        )
        if operation.output_shape is not None:
            self._from_boto_response(response, operation.output_shape)
        # boto3 parses timestamps into datetime objects, which then reach the execution output
        # raw and break DescribeExecution; Step Functions returns them as epoch milliseconds.
        _replace_timestamps(response, _epoch_millis)

    patches.set(StateTaskServiceSfn, "_normalise_parameters", _normalise_parameters)
    patches.set(StateTaskServiceSfn, "_normalise_response", _normalise_response)


def _patch_aws_sdk_integration(patches: _Patches) -> None:
    """Two gaps of the port's ``aws-sdk:*`` integration:

    * errors are named ``<service>.<Exception>`` with the service name only mapped for
      DynamoDB/SFN (``sagemaker.ResourceNotFoundException``); Step Functions (and LocalStack)
      use the service id: ``SageMaker.ResourceNotFoundException``, ``S3.NoSuchKeyException``;
    * the response is not normalised, so ``s3:getObject`` returned a ``StreamingBody`` object
      (serialised as its repr) where Step Functions returns the body as a string.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )

    known_names: dict[str, str] = aws_sdk._SERVICE_ERROR_NAMES

    @functools.cache  # a new botocore session parses the service's model file (~0.3 s for SageMaker's)
    def _normalise_service_error_name(service_name: str) -> str:
        if service_name.lower() in known_names:
            return known_names[service_name.lower()]
        try:
            return botocore.session.get_session().get_service_model(service_name).service_id.replace(" ", "")
        except Exception:
            return service_name

    def _normalise_response(
        self: Any,
        response: Any,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        if isinstance(response, dict):
            for key, value in list(response.items()):
                if isinstance(value, StreamingBody):
                    response[key] = value.read().decode("utf-8")
        # datetime objects would reach a task's raw result (and break DescribeExecution).
        _replace_timestamps(response, _iso_timestamp)

    patches.set(
        aws_sdk.StateTaskServiceAwsSdk,
        "_normalise_service_error_name",
        staticmethod(_normalise_service_error_name),
    )
    patches.set(aws_sdk.StateTaskServiceAwsSdk, "_normalise_response", _normalise_response)


#: moto's Step Functions modules that build a boto3 client per Task state (``boto_client_for``)
_CLIENT_MODULES = tuple(f"moto.stepfunctions.parser.asl.component.state.exec.state_task.{name}" for name in (
    "service.state_task_service_aws_sdk", "service.state_task_service_dynamodb", "service.state_task_service_events",
    "service.state_task_service_sfn", "service.state_task_service_sqs", "service.state_task_service_sns",
    "lambda_eval_utils",
))


def _patch_boto_clients(patches: _Patches) -> None:
    """moto builds a new boto3 client for every Task state it runs (several milliseconds each, the largest cost
    of a short Task). Its clients differ only by region and service (fixed dummy credentials, no endpoint while
    moto intercepts), so keep one per (region, service) for the block; botocore clients are thread-safe."""
    import importlib

    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    clients: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        with lock:
            client = clients.get((region, service))
            if client is None:
                client = clients[(region, service)] = original(region, service, state_credentials)
            return client

    for name in _CLIENT_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "boto_client_for"):
            patches.set(module, "boto_client_for", boto_client_for)


def _patch_s3_read_through(patches: _Patches, local_s3_root: Path) -> None:
    """S3 objects the jobs wrote reach the state machines: the jobs run in other processes and write
    ``s3://bucket/key`` to ``<local_s3_root>/bucket/key`` (``NDR_LOCAL_S3_ROOT``); a read of moto's S3 (e.g. a
    ``read_json`` state's ``s3:getObject``) first copies the local file, when there is one, into moto."""
    from moto.s3.models import S3Backend

    original = S3Backend.get_object

    def get_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        local = local_s3_root / bucket_name / key_name
        if local.is_file() and bucket_name in self.buckets:
            self.put_object(bucket_name, key_name, local.read_bytes())
        return original(self, bucket_name, key_name, *args, **kwargs)

    patches.set(S3Backend, "get_object", get_object)


def _patch_map_iteration_abort(patches: _Patches) -> None:
    """When an execution is stopped (or times out) while a Map iteration runs, moto builds the iteration's
    abort event with the stop's error *string* where a details dict belongs, and the Map state then crashes
    reading it (``'str' object has no attribute 'get'``); the Map's failure then overwrites the stopped
    program state with an error, so the execution ended FAILED. Read a string detail as the error name, and
    keep a stopped or timed-out program so: the execution ends ABORTED or TIMED_OUT, as in Step Functions."""
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped, ProgramTimedOut

    original = ExecutionState._construct_error_output_value
    original_set_error = Environment.set_error

    def set_error(self: Any, error: Any) -> None:
        if not isinstance(self._program_state, ProgramStopped | ProgramTimedOut):
            original_set_error(self, error)

    patches.set(Environment, "set_error", set_error)

    def _construct_error_output_value(failure_event: Any) -> Any:
        details = list(failure_event.event_details.values())
        if len(details) == 1 and isinstance(details[0], str):
            return {"Error": details[0], "Cause": ""}
        return original(failure_event)

    patches.set(ExecutionState, "_construct_error_output_value", staticmethod(_construct_error_output_value))


#: parse trees of the definitions parsed in any block, by definition text (read-only once built), the most recent
#: last: standing a platform up again (a test each) parses nothing again
_PARSE_TREES: collections.OrderedDict[str, Any] = collections.OrderedDict()
_PARSE_TREES_MAX = 256
_PARSE_TREES_LOCK = threading.Lock()


def _patch_parse_cache(patches: _Patches) -> None:
    """moto parses a definition with ANTLR at every execution start (most of the time of a short execution) and
    at every ``CreateStateMachine``. Keep the parse tree of each definition, across blocks; the evaluation
    components are still built afresh each time."""
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    original = asl_parser.AmazonStateLanguageParser.parse

    def parse(definition: str) -> tuple[Any, Any]:
        with _PARSE_TREES_LOCK:
            tree = _PARSE_TREES.get(definition)
            if tree is not None:
                _PARSE_TREES.move_to_end(definition)
        if tree is None:
            _program, tree = original(definition)  # raises ASLParserException on a syntax error
            with _PARSE_TREES_LOCK:
                _PARSE_TREES[definition] = tree
                while len(_PARSE_TREES) > _PARSE_TREES_MAX:
                    _PARSE_TREES.popitem(last=False)
        return Preprocessor().visit(tree), tree

    patches.set(asl_parser.AmazonStateLanguageParser, "parse", staticmethod(parse))


#: a SageMaker pipeline execution's ARN, as the machines keep it in a variable to poll it
_PIPELINE_EXECUTION_ARN = re.compile(r"arn:aws:sagemaker:[^:]*:\d*:pipeline/[^/]+/execution/[^/]+")


def _pipeline_executions(env: Any) -> list[str]:
    """The pipeline execution ARNs held in the variables an execution's state sees."""
    store = env.variable_store
    values = [*store._outer_scope.values(), *store._inner_scope.values()]
    return [v for v in values if isinstance(v, str) and _PIPELINE_EXECUTION_ARN.fullmatch(v)]


def _patch_time(patches: _Patches, wait_time_scale: float, pipelines: PipelineRuntime) -> None:
    """Wait states, retry intervals and ``.sync`` polling sleep for real in moto; compress them
    so executions that poll a pipeline every few minutes finish in milliseconds. When the runtime can tell
    (``wait_for_end``, real jobs), a Wait between two describes of a pipeline execution the machine holds ends as
    soon as that execution has ended, not at the machine's next poll: the next describe sees the end, so the poll
    budget is never spent faster than in scaled time."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback,
    )
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    wait_for_end = getattr(pipelines, "wait_for_end", None)

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        # Still wakes up early when the execution is stopped, like the original.
        if wait_seconds > 0 and wait_time_scale > 0:
            polled = _pipeline_executions(env) if wait_for_end is not None else []
            if polled:
                wait_for_end(polled, wait_seconds * wait_time_scale, env.program_state_event)
            else:
                env.program_state_event.wait(wait_seconds * wait_time_scale)

    def sleep(seconds: float) -> None:
        if seconds > 0 and wait_time_scale > 0:
            time.sleep(seconds * wait_time_scale)

    patches.set(WaitFunction, "_wait_interval", _wait_interval)
    patches.set(retrier_decl, "time", types.SimpleNamespace(sleep=sleep))
    patches.set(state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", 0.01)


def _pipeline_name(pipeline_name_or_arn: str) -> str:
    if pipeline_name_or_arn.startswith("arn:"):
        return pipeline_name_or_arn.split(":pipeline/", 1)[-1].split("/", 1)[0]
    return pipeline_name_or_arn


def _patch_sagemaker_pipelines(patches: _Patches, pipelines: PipelineRuntime) -> None:
    """moto's SageMaker answers every pipeline execution ``Succeeded`` at once, raises
    ``ValidationException`` for an unknown pipeline (SageMaker: ``ResourceNotFound``) and
    ignores ``ClientRequestToken``. Hook its backend, so both the state machine's
    ``aws-sdk:sagemaker:*`` tasks (which go through boto3 to moto) and test code see the
    same executions, with status and failure reason from ``pipelines``."""
    from moto.sagemaker.exceptions import ResourceNotFound, ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    original_start = SageMakerModelBackend.start_pipeline_execution
    original_describe = SageMakerModelBackend.describe_pipeline_execution

    def start_pipeline_execution(
        self: SageMakerModelBackend,
        pipeline_name: str,
        pipeline_execution_display_name: str,
        pipeline_parameters: list[dict[str, Any]],
        pipeline_execution_description: str,
        parallelism_configuration: dict[str, int],
        client_request_token: str,
    ) -> dict[str, str]:
        name = _pipeline_name(pipeline_name or "")
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            arn = f"arn:{self.partition}:sagemaker:{self.region_name}:{self.account_id}:pipeline/{name}"
            raise ResourceNotFound(message=f"Pipeline '{arn}' does not exist.")
        if client_request_token is not None and not 32 <= len(client_request_token) <= 128:
            raise ValidationError(
                message="1 validation error detected: Value at 'clientRequestToken' failed to satisfy "
                "constraint: Member must have length between 32 and 128"
            )
        parameters: dict[str, str] = {}
        for parameter in pipeline_parameters or []:
            value = parameter.get("Value")
            if not isinstance(parameter.get("Name"), str) or not isinstance(value, str):
                raise ValidationError(
                    message=f"PipelineParameters need a string Name and a string Value, got {parameter!r}"
                )
            parameters[parameter["Name"]] = value
        if client_request_token is not None:
            for execution in pipeline.pipeline_executions.values():
                if execution.client_request_token == client_request_token:
                    return {"PipelineExecutionArn": execution.arn}
        response = original_start(
            self,
            name,
            pipeline_execution_display_name,
            pipeline_parameters,
            pipeline_execution_description,
            parallelism_configuration,
            client_request_token,
        )
        execution_arn = response["PipelineExecutionArn"]
        pipeline.pipeline_executions[execution_arn].pipeline_execution_status = "Executing"
        pipelines.start(name, execution_arn, parameters)
        return response

    def describe_pipeline_execution(self: SageMakerModelBackend, pipeline_execution_arn: str) -> dict[str, Any]:
        try:
            response = original_describe(self, pipeline_execution_arn)
        except (ValidationError, IndexError) as error:
            raise ResourceNotFound(message=f"Pipeline execution '{pipeline_execution_arn}' does not exist.") from error
        status, reason = pipelines.describe(pipeline_execution_arn)
        execution = self.pipelines[_pipeline_name(response["PipelineArn"])].pipeline_executions[pipeline_execution_arn]
        execution.pipeline_execution_status = status
        execution.pipeline_execution_failure_reason = reason
        response["PipelineExecutionStatus"] = status
        response.pop("FailureReason", None)
        if reason is not None:
            response["FailureReason"] = reason
        return response

    def stop_pipeline_execution(self: SageMakerModelBackend, pipeline_execution_arn: str,
                                client_request_token: str | None) -> dict[str, Any]:
        try:
            original_describe(self, pipeline_execution_arn)
        except (ValidationError, IndexError) as error:
            raise ResourceNotFound(message=f"Pipeline execution '{pipeline_execution_arn}' does not exist.") from error
        try:
            pipelines.stop(pipeline_execution_arn)
        except PipelineNotRunning as error:
            raise ValidationError(message=str(error)) from error
        return {"PipelineExecutionArn": pipeline_execution_arn}

    def stop_pipeline_execution_response(self: Any) -> Any:  # moto has no StopPipelineExecution: its route
        from moto.core.responses import ActionResult

        return ActionResult(self.sagemaker_backend.stop_pipeline_execution(
            self._get_param("PipelineExecutionArn"), self._get_param("ClientRequestToken")))

    patches.set(SageMakerModelBackend, "start_pipeline_execution", start_pipeline_execution)
    patches.set(SageMakerModelBackend, "describe_pipeline_execution", describe_pipeline_execution)
    patches.set(SageMakerModelBackend, "stop_pipeline_execution", stop_pipeline_execution)
    patches.set(SageMakerResponse, "stop_pipeline_execution", stop_pipeline_execution_response)


@dataclass
class Faults:
    """Faults injected into the executions whose name starts with ``prefix`` (and the child executions they
    start), for fault-injection tests. Change the fields between executions; :attr:`fired` records each fault
    as ``(kind, state)``.

    * ``fail``: Task states whose service call fails (a ``ServiceUnavailable`` error from the service);
    * ``stop_at``: the execution is stopped (ABORTED) when it enters this state, before the state runs;
    * ``time_out_at``: the execution times out (TIMED_OUT) when it enters this state, before it runs.
    """

    prefix: str = "fault-"
    fail: frozenset[str] = frozenset()
    stop_at: str | None = None
    time_out_at: str | None = None
    fired: list[tuple[str, str]] = field(default_factory=list)

    def applies(self, context: dict[str, Any]) -> bool:
        execution = context.get("Execution", {})
        if str(execution.get("Name", "")).startswith(self.prefix):
            return True
        parent = (execution.get("Input") or {}) if isinstance(execution.get("Input"), dict) else {}
        return f":{self.prefix}" in str(parent.get("AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID", ""))


class InjectedFault(Exception):
    pass


def _execution(arn: str) -> Any:
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    for account_backends in stepfunctions_parser_backends.values():
        for backend in account_backends.values():
            for execution in backend._get_executions():
                if execution.exec_arn == arn:
                    return execution
    raise KeyError(arn)


def _patch_faults(patches: _Patches, faults: Faults) -> None:
    """Task calls fail, and executions stop or time out, where ``faults`` says (see :class:`Faults`)."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original_execution = StateTaskService._eval_execution
    original_body = CommonStateField._eval_body

    def _eval_execution(self: Any, env: Any) -> None:
        context = env.states.context_object.context_object_data
        name = context.get("State", {}).get("Name")
        if name in faults.fail and faults.applies(context):
            faults.fired.append(("fail", name))
            error = "Injected.ServiceUnavailable"  # not NDR.*: a fault that escapes every Catch is visible
            details = TaskFailedEventDetails(error=error, cause=f"injected fault at {name}",
                                             resource=self._get_sfn_resource(),
                                             resourceType=self._get_sfn_resource_type())
            raise FailureEventException(FailureEvent(
                env=env, error_name=CustomErrorName(error), event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(taskFailedEventDetails=details)))
        original_execution(self, env)

    def _eval_body(self: Any, env: Any) -> None:
        context = env.states.context_object.context_object_data
        if self.name in (faults.stop_at, faults.time_out_at) and faults.applies(context):
            execution = _execution(context["Execution"]["Id"])
            if self.name == faults.stop_at:
                faults.fired.append(("stop", self.name))
                execution.stop(stop_date=datetime.datetime.now(tz=datetime.UTC), error="Injected.Stop",
                               cause=f"stopped at {self.name}")
            else:
                faults.fired.append(("timeout", self.name))
                execution.exec_worker.env.set_timed_out()
            return  # the state does not run
        original_body(self, env)

    patches.set(StateTaskService, "_eval_execution", _eval_execution)
    patches.set(CommonStateField, "_eval_body", _eval_body)


class _ExecutionEnds:
    """The executions that ended in an :func:`offline_aws` block, in the order they ended, so waiters wake when
    theirs ends (not at their next poll) and :func:`ended_executions` needs no listing of every execution."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._ended: list[str] = []
        self._seen: set[str] = set()

    def ended(self, arn: str) -> None:
        with self._condition:
            if arn not in self._seen:
                self._seen.add(arn)
                self._ended.append(arn)
            self._condition.notify_all()

    def wait(self, arn: str, timeout_s: float) -> None:
        with self._condition:
            self._condition.wait_for(lambda: arn in self._seen, timeout=timeout_s)

    def since(self, start: int) -> list[str]:
        with self._condition:
            return self._ended[start:]


_ENDS: _ExecutionEnds | None = None


def _set_ends(ends: _ExecutionEnds | None) -> None:
    global _ENDS
    _ENDS = ends


def ended_executions(start: int = 0) -> list[str]:
    """ARNs of the executions that ended in the current :func:`offline_aws` block, in the order they ended, from
    the ``start``-th on (empty outside a block)."""
    return _ENDS.since(start) if _ENDS is not None else []


def _patch_execution_ends(patches: _Patches, ends: _ExecutionEnds) -> None:
    """Note each execution as its worker ends (whatever its status) in ``ends``."""
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    original = BaseExecutionWorkerCommunication.terminated

    def terminated(self: Any) -> None:
        try:
            original(self)
        finally:
            ends.ended(self.execution.exec_arn)

    patches.set(BaseExecutionWorkerCommunication, "terminated", terminated)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------

_OFFLINE_LOCK = threading.Lock()


@contextmanager
def offline_aws(
    pipelines: PipelineRuntime | None = None,
    region: str = "us-east-1",
    *,
    wait_time_scale: float = 0.0,
    local_s3_root: Path | None = None,
    faults: Faults | None = None,
) -> Iterator[None]:
    """moto mock_aws with the SFN interpreter on, JSONata evaluated by jsonata-python with the AWS
    extension functions, nested startExecution(.sync:2) normalisation fixed, Wait states not actually
    sleeping (time compressed so tests are fast), and SageMaker start/describePipelineExecution
    answered by `pipelines`. Patches are applied on enter and undone on exit.

    ``region`` becomes ``AWS_DEFAULT_REGION`` inside the block. ``wait_time_scale``
    multiplies every Wait state / retry interval (``0`` = no sleeping at all).
    ``local_s3_root`` (the jobs' ``NDR_LOCAL_S3_ROOT``) makes S3 reads see the objects jobs wrote there.
    ``pipelines`` defaults to :class:`ScriptedPipelines` (every execution succeeds).
    The patches are process-wide, so blocks can neither nest nor run concurrently
    (``RuntimeError``). Executions still running when the block exits are stopped.
    """
    runtime: PipelineRuntime = pipelines if pipelines is not None else ScriptedPipelines()
    if not _OFFLINE_LOCK.acquire(blocking=False):
        raise RuntimeError("offline_aws() is already active: its blocks cannot nest or run concurrently")
    with ExitStack() as stack:
        stack.callback(_OFFLINE_LOCK.release)
        patches = _Patches()
        stack.callback(patches.undo)
        previous_region = os.environ.get("AWS_DEFAULT_REGION")
        stack.callback(_restore_env, "AWS_DEFAULT_REGION", previous_region)
        os.environ["AWS_DEFAULT_REGION"] = region

        _patch_jsonata_evaluator(patches)
        _patch_variable_encoding(patches)
        _patch_intrinsic_declarations(patches)
        _patch_query_evaluation_errors(patches)
        _patch_sfn_normalisation(patches)
        _patch_aws_sdk_integration(patches)
        _patch_boto_clients(patches)
        _patch_dynamodb_failure_passthrough(patches)
        _patch_default_execution_name(patches)
        _patch_choice_default_detection(patches)
        _patch_execution_output_serialisation(patches)
        _patch_time(patches, wait_time_scale, runtime)
        _patch_parse_cache(patches)
        _patch_map_iteration_abort(patches)
        _patch_sagemaker_pipelines(patches, runtime)
        if local_s3_root is not None:
            _patch_s3_read_through(patches, Path(local_s3_root))
        if faults is not None:
            _patch_faults(patches, faults)
        ends = _ExecutionEnds()
        _set_ends(ends)
        stack.callback(_set_ends, None)
        _patch_execution_ends(patches, ends)

        stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        stack.callback(_stop_running_executions)
        yield


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _stop_running_executions() -> None:
    """Stop executions left running, so their threads do not outlive the patches."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    now = datetime.datetime.now(tz=datetime.UTC)
    for account_backends in stepfunctions_parser_backends.values():
        for backend in account_backends.values():
            for state_machine in backend.state_machines:
                for execution in state_machine.executions:
                    if execution.status == "RUNNING":
                        # Best effort during teardown.
                        with contextlib.suppress(Exception):
                            execution.stop(stop_date=now, error="States.Aborted", cause="offline_aws exited")


@dataclass
class ExecutionResult:
    """The outcome of one state machine execution."""

    status: str
    """``SUCCEEDED``, ``FAILED``, ``TIMED_OUT`` or ``ABORTED``."""
    output: Any
    """The parsed execution output (``None`` unless the execution succeeded)."""
    error: str | None
    cause: str | None
    path: list[str]
    """Names of the states entered, in history order (Map iterations included)."""
    _history: list[dict] | Callable[[], list[dict]] = field(repr=False, compare=False)

    @property
    def history(self) -> list[dict]:
        """The raw ``get_execution_history`` events (fetched on first use)."""
        if callable(self._history):
            self._history = self._history()
        return self._history


def run_execution(
    sfn_client: Any,
    state_machine_arn: str,
    input: dict | list | str,  # noqa: A002 - mirrors the Step Functions API
    name: str | None = None,
    timeout_s: float = 60,
) -> ExecutionResult:
    """start_execution, wait until it is no longer RUNNING, return status, output (parsed), error, cause and
    the visited state path: the list of state names entered, in order, read from get_execution_history
    (StateEntered events; for Map iterations include inner states too, in order).

    A ``str`` input is sent as is (it must already be a JSON document). Raises
    :class:`TimeoutError` when the execution is still running after ``timeout_s``.
    """
    document = input if isinstance(input, str) else json.dumps(input)
    start_arguments: dict[str, Any] = {"stateMachineArn": state_machine_arn, "input": document}
    if name is not None:
        start_arguments["name"] = name
    execution_arn = sfn_client.start_execution(**start_arguments)["executionArn"]

    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        description = sfn_client.describe_execution(executionArn=execution_arn)
        if description["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_arn} still RUNNING after {timeout_s} s")
        ends = _ENDS
        if ends is not None:  # in an offline_aws block: woken as the execution ends
            ends.wait(execution_arn, delay)
        else:
            time.sleep(delay)
        delay = min(delay * 2, 0.1)

    # in an offline_aws block, the path and failure are read from moto's own events (the same dicts
    # get_execution_history serialises, which costs more than the run of a short execution); the API's
    # history is then fetched only when asked for
    events = _ENDS is not None and _moto_history(execution_arn)
    history: list[dict] | Callable[[], list[dict]] = functools.partial(_execution_history, sfn_client, execution_arn)
    if not events:
        events = history = history()
    path = [
        event["stateEnteredEventDetails"]["name"]
        for event in events
        if event["type"].endswith("StateEntered") and "stateEnteredEventDetails" in event
    ]
    error, cause = description.get("error"), description.get("cause")
    if error is None and cause is None:
        error, cause = _failure_from_history(events)
    output = json.loads(description["output"]) if description.get("output") is not None else None
    return ExecutionResult(
        status=description["status"],
        output=output,
        error=error,
        cause=cause,
        path=path,
        _history=history,
    )


def _moto_history(execution_arn: str) -> list[dict] | None:
    """The history events of an ended execution as moto holds them (``type`` an enum, ``timestamp`` a string)."""
    try:
        events = _execution(execution_arn).to_history_output()["events"]
    except (KeyError, AttributeError):
        return None
    return sorted(events, key=lambda event: event["id"])


def _execution_history(sfn_client: Any, execution_arn: str) -> list[dict]:
    events: list[dict] = []
    arguments: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn_client.get_execution_history(**arguments)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return sorted(events, key=lambda event: event["id"])
        arguments["nextToken"] = page["nextToken"]


def _failure_from_history(history: list[dict]) -> tuple[str | None, str | None]:
    for event in reversed(history):
        for key in (
            "executionFailedEventDetails",
            "executionAbortedEventDetails",
            "executionTimedOutEventDetails",
        ):
            if key in event:
                return event[key].get("error"), event[key].get("cause")
    return None, None
