"""The SageMaker Python SDK's rendering of a :class:`~ndr_compiler.ir.PipelineIR`: the oracle the compiler's
own renderer (``ndr_compiler.render.sagemaker_pipeline``) is held to, byte for byte, in
``tests/test_pipeline_render.py``.

The definition is built by the SDK's workflow API (``Pipeline(...).definition()``): each step is a
``ProcessingStep`` whose ``step_args`` come from ``Processor.run(arguments=...)`` under a ``PipelineSession``.
Rendering is kept offline and deterministic: fixed region and dummy credentials for the duration of the call,
no SDK config files, no Studio project config, a ``before-send`` hook refusing any AWS request, one session per
process, no local session per step; ``PipelineExperimentConfig``/``MlflowConfig`` are turned off and their
null keys dropped, step ``Tags`` dropped, keys sorted. See ``docs/design/render.md`` for why each is needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from ndr_compiler import ir
from ndr_compiler.render.sagemaker_pipeline import _sorted_keys, container, retry_families, typed_default

#: the region of the SDK session; it does not appear in the definition (no image URI is looked up)
REGION = "us-east-1"

_SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
_DUMMY_CREDENTIAL = "ndr-offline-render"
_ENV_OVERLAY = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": _DUMMY_CREDENTIAL,
    "AWS_SECRET_ACCESS_KEY": _DUMMY_CREDENTIAL,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_ENV_REMOVED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION")
_ENV_LOCK = threading.Lock()
_NULL_TOP_LEVEL = ("PipelineExperimentConfig", "MlflowConfig")
_QUIET_LOGGERS = ("sagemaker", "botocore.credentials")


class OfflineRenderError(RuntimeError):
    """The SDK tried to reach AWS (or to need a bucket or account) while rendering."""


def sdk_render_pipeline(p: ir.PipelineIR, pipeline_name: str) -> dict[str, Any]:
    """The pipeline definition of ``p`` as built by ``Pipeline(...).definition()``, parsed.

    Offline (no credentials, network, or uploads) and deterministic; see the module docstring.
    """
    with _ENV_LOCK, _offline_aws() as boto_session, _quiet_sdk_logs(), warnings.catch_warnings(), \
            contextlib.ExitStack() as stack:
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sagemaker\.")  # SDK-internal shims
        sdk = _import_sdk()
        _silence_sdk_loggers()
        session = _offline_session(sdk, boto_session)
        stack.enter_context(_no_local_session_per_step())
        parameters = {prm.name: _parameter(sdk, prm) for prm in p.parameters}
        steps = [_step(sdk, session, s, parameters) for s in p.steps]
        pipeline = sdk.Pipeline(
            name=pipeline_name,
            parameters=list(parameters.values()),
            steps=steps,
            sagemaker_session=session,
            pipeline_experiment_config=None,
            mlflow_config=None,
        )
        definition = json.loads(pipeline.definition())
    for key in _NULL_TOP_LEVEL:
        if definition.get(key, None) is not None:
            raise ValueError(f"the SDK set {key} although it was turned off: {definition[key]!r}")
        definition.pop(key, None)
    for step in definition["Steps"]:
        step.get("Arguments", {}).pop("Tags", None)
    return _sorted_keys(definition)


# -- the SDK ---------------------------------------------------------------------------------------------


def _import_sdk() -> SimpleNamespace:
    from sagemaker.core.processing import Processor
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

    return SimpleNamespace(
        Pipeline=Pipeline,
        PipelineSession=PipelineSession,
        Processor=Processor,
        ProcessingStep=ProcessingStep,
        CacheConfig=CacheConfig,
        ParameterString=ParameterString,
        ParameterInteger=ParameterInteger,
        ParameterFloat=ParameterFloat,
        ParameterBoolean=ParameterBoolean,
        StepRetryPolicy=StepRetryPolicy,
        StepExceptionTypeEnum=StepExceptionTypeEnum,
        SageMakerJobStepRetryPolicy=SageMakerJobStepRetryPolicy,
        SageMakerJobExceptionTypeEnum=SageMakerJobExceptionTypeEnum,
    )


#: the offline boto3 session and SDK session, made once per process: each new SDK session made ~12 boto3
#: clients and validated its config schema (most of a compile's time with one per pipeline)
_SESSIONS: dict[str, Any] = {}


@contextlib.contextmanager
def _offline_aws() -> Iterator[Any]:
    """Fixed region, dummy credentials, no profile or metadata lookups; yields the offline boto3 session."""
    import boto3

    saved = {k: os.environ.get(k) for k in (*_ENV_OVERLAY, *_ENV_REMOVED)}
    saved_default = boto3.DEFAULT_SESSION
    try:
        for k in _ENV_REMOVED:
            os.environ.pop(k, None)
        os.environ.update(_ENV_OVERLAY)
        session = _SESSIONS.get("boto")
        if session is None:
            session = boto3.Session(
                aws_access_key_id=_DUMMY_CREDENTIAL, aws_secret_access_key=_DUMMY_CREDENTIAL, region_name=REGION
            )
            session.events.register("before-send", _refuse_request)
            _SESSIONS["boto"] = session
        boto3.DEFAULT_SESSION = session
        yield session
    finally:
        boto3.DEFAULT_SESSION = saved_default
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_sdk_logs() -> Iterator[None]:
    """Below ERROR, the SDK only says what this module arranged (a WARNING per step that ProcessingJobName is
    dropped, credentials found in the environment, SDK defaults applied)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    saved = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def _silence_sdk_loggers() -> None:
    """The SDK gives its own loggers levels at import (``sagemaker.config`` logs at INFO which defaults files
    it skipped); a compiler's output is its diagnostics, so those loggers say only errors."""
    for name in list(logging.root.manager.loggerDict):
        if name == "sagemaker" or name.startswith("sagemaker."):
            logging.getLogger(name).setLevel(logging.ERROR)


def _refuse_request(request: Any, **_: Any) -> None:
    raise OfflineRenderError(f"the SageMaker SDK tried to call AWS while rendering: {request.method} {request.url}")


@contextlib.contextmanager
def _no_local_session_per_step() -> Iterator[None]:
    """``ProcessingStep`` builds a whole local SDK session per step only to read a method's name
    (``LocalSagemakerClient().create_processing_job.__name__``): give it a class with that name, nothing more."""
    from sagemaker.mlops.workflow import steps

    class NameOnly:
        def create_processing_job(self, *_: Any, **__: Any) -> None:
            raise OfflineRenderError("the SageMaker SDK tried to run a processing job locally while rendering")

    original = steps.LocalSagemakerClient
    steps.LocalSagemakerClient = NameOnly
    try:
        yield
    finally:
        steps.LocalSagemakerClient = original


def _offline_session(sdk: SimpleNamespace, boto_session: Any) -> Any:
    if "sdk" not in _SESSIONS:
        _SESSIONS["sdk"] = _new_offline_session(sdk, boto_session)
    return _SESSIONS["sdk"]


def _new_offline_session(sdk: SimpleNamespace, boto_session: Any) -> Any:
    class OfflinePipelineSession(sdk.PipelineSession):
        def expand_role(self, role: str) -> str:
            return role  # an ARN or a ${Placeholder} resolved at deploy: never looked up in IAM

        def default_bucket(self) -> str:
            raise OfflineRenderError("the SageMaker SDK asked for an S3 bucket (an upload or a generated S3 URI)")

        def account_id(self) -> str:
            raise OfflineRenderError("the SageMaker SDK asked for the AWS account id")

    # A non-empty config keeps the session from loading the SDK config files; then it is emptied, because
    # every later lookup re-validates a non-empty config against the SDK's config schema (~0.3 s, ~15 per step).
    session = OfflinePipelineSession(boto_session=boto_session, sagemaker_config=_SDK_CONFIG)
    session.sagemaker_config = {}
    return session


# -- IR -> SDK objects -----------------------------------------------------------------------------------


def _parameter(sdk: SimpleNamespace, prm: ir.PipelineParameter) -> Any:
    cls = {
        "String": sdk.ParameterString,
        "Integer": sdk.ParameterInteger,
        "Float": sdk.ParameterFloat,
        "Boolean": sdk.ParameterBoolean,
    }[prm.type]
    return cls(name=prm.name, default_value=None if prm.default is None else typed_default(prm))


def _step(sdk: SimpleNamespace, session: Any, s: ir.PipelineStep, parameters: dict[str, Any]) -> Any:
    proc = s.processor
    entrypoint, arguments, environment = container(s, set(parameters))
    processor = sdk.Processor(
        role=proc.role_arn,
        image_uri=proc.image_uri,
        instance_count=proc.instance_count,
        instance_type=proc.instance_type,
        entrypoint=entrypoint,
        volume_size_in_gb=proc.volume_size_gb,
        max_runtime_in_seconds=proc.max_runtime_seconds,
        env=environment or None,
        sagemaker_session=session,
    )
    args = [parameters[a.name] if isinstance(a, ir.ParamRef) else a for a in arguments]
    return sdk.ProcessingStep(
        name=s.name,
        step_args=processor.run(arguments=args or None),
        description=s.description,
        cache_config=(
            sdk.CacheConfig(enable_caching=True, expire_after=s.cache_expire_after) if s.cache_expire_after else None
        ),
        depends_on=list(s.depends_on) or None,
        retry_policies=_retry_policies(sdk, s) or None,
    )


def _retry_policies(sdk: SimpleNamespace, s: ir.PipelineStep) -> list[Any]:
    """One SDK policy per family: ``Step.*`` (StepRetryPolicy) and ``SageMaker.*`` (SageMakerJobStepRetryPolicy)."""
    r = s.retry
    # by value, not Enum(value): the SDK's DefaultEnumMeta ignores a positional value and returns the first member
    step_enum = {e.value: e for e in sdk.StepExceptionTypeEnum}
    job_enum = {e.value: e for e in sdk.SageMakerJobExceptionTypeEnum}
    policies = []
    for family in retry_families(r):
        assert r is not None
        timing = {"max_attempts": r.max_attempts, "interval_seconds": r.interval_seconds,
                  "backoff_rate": r.backoff_rate}
        if family[0] in step_enum:
            policies.append(sdk.StepRetryPolicy(exception_types=[step_enum[t] for t in family], **timing))
        else:
            policies.append(sdk.SageMakerJobStepRetryPolicy(exception_types=[job_enum[t] for t in family], **timing))
    return policies
