"""Render a :class:`~ndr_compiler.ir.PipelineIR` into a SageMaker pipeline definition, through the SDK.

The definition is built by the SageMaker Python SDK's workflow API (``Pipeline(...).definition()``), not by
hand: processors, steps, parameters, retry policies and cache configs are SDK objects, and this module only
picks them and sets them up. The SDK (``sagemaker-mlops``, which brings ``sagemaker-core``) is imported
lazily inside :func:`render_pipeline`, so the lint path never imports it.

SDK classes used (SageMaker Python SDK 3.27: ``sagemaker-mlops`` 1.27, ``sagemaker-core`` 2.27)::

    sagemaker.mlops.workflow.pipeline.Pipeline
    sagemaker.mlops.workflow.steps.ProcessingStep, CacheConfig
    sagemaker.mlops.workflow.retry.StepRetryPolicy, SageMakerJobStepRetryPolicy,
                                   StepExceptionTypeEnum, SageMakerJobExceptionTypeEnum
    sagemaker.core.workflow.pipeline_context.PipelineSession
    sagemaker.core.workflow.parameters.ParameterString, ParameterInteger, ParameterFloat, ParameterBoolean
    sagemaker.core.processing.Processor

Each step is a ``ProcessingStep`` whose ``step_args`` come from ``Processor.run(arguments=...)`` under a
``PipelineSession`` (the SDK's documented way: ``run`` is intercepted and returns the request instead of
starting a job). An argument bound to a parameter is passed as the SDK ``Parameter`` object itself, so the
SDK renders it ``{"Get": "Parameters.<Name>"}`` in ``ContainerArguments``.

Plain steps
    ``ContainerEntrypoint = ["python", "-m", <module>]``, ``ContainerArguments`` = the step's command line.

Spark steps (``processor.spark``)
    The SDK's ``PySparkProcessor`` renders ``ContainerEntrypoint = ["smspark-submit", <options>,
    "/opt/ml/processing/input/code/<app>.py"]`` with the step's arguments in ``ContainerArguments`` and a
    ``code`` ``ProcessingInput`` that downloads the app from S3; ``run()`` uploads a local app (and any
    ``configuration=``, as ``configuration.json`` in a ``conf`` channel) to S3 at build time. Both uploads
    are ruled out here (offline, and the code is in the image), so ``PySparkProcessor`` is not used. A Spark
    step is the same SDK ``Processor`` as a plain step, with the entrypoint ``PySparkProcessor`` would use
    but an app baked into the image::

        ContainerEntrypoint = ["smspark-submit", "/opt/ndr/spark_launcher.py", <module>]
        ContainerArguments  = the step's command line

    ``smspark-submit`` (the Spark container's entrypoint) bootstraps YARN over every instance of the job, so
    ``instance_count > 1`` is a cluster, and runs ``spark-submit --master yarn --deploy-mode client <app>
    <app arguments>`` on the primary host. ``spark-submit`` takes a ``.py`` file, not ``-m <module>``, hence
    the launcher, which the Spark image must carry at :data:`SPARK_LAUNCHER` (it is part of the image, like
    ``ndr_jobs`` itself; nothing is uploaded at compile or deploy time). Its contract::

        import json, os, runpy, sys
        from pyspark.sql import SparkSession
        builder = SparkSession.builder
        for key, value in sorted(json.loads(os.environ.get("NDR_SPARK_CONF", "{}")).items()):
            builder = builder.config(key, value)
        builder.getOrCreate()          # the job's own getOrCreate() returns this session
        module = sys.argv[1]
        sys.argv = [module, *sys.argv[2:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)   # = python -m <module> <args>

    ``smspark-submit`` has no ``--conf`` (Spark settings normally come from an uploaded
    ``configuration.json``), so ``processor.spark_config`` travels in the environment variable
    :data:`SPARK_CONF_ENV` as sorted, compact JSON, and the launcher sets it on the session before the job
    starts (enough for ``spark.sql.*`` and executor settings; driver-JVM settings would need the image).

    ``smspark-submit`` quotes every argument with ``shlex.quote`` and runs the command line with ``/bin/sh``
    (``smspark/cli.py::_construct_spark_submit_command`` in aws/sagemaker-spark-container): values reach the
    job unchanged, whatever they hold; ``tests/test_launcher.py`` runs the launcher that way. Literal
    arguments of a Spark step are still kept to ``[A-Za-z0-9_@%+=:,./-]+``, so that the rendered command line
    reads the same with or without the quoting. Values bound to parameters are checked at run time, twice:
    by the state machine's intake before the pipeline starts, and by the job's parser
    (``ndr_jobs.contract``).

Offline and deterministic
    * The SDK insists on an AWS session (and, at import, ``sagemaker.ai_registry.air_hub`` creates a boto3
      client at class-definition time, failing with ``NoRegionError`` without a region; ``ProcessingStep``
      builds a throwaway ``LocalSession()`` from the environment). For the duration of the call only, under
      a lock, the process environment gets a fixed region (:data:`REGION`) and dummy credentials, the
      instance-metadata lookup is disabled, ``~/.aws`` files and ``AWS_PROFILE`` are set aside, and
      ``boto3.DEFAULT_SESSION`` is an offline session; all are restored afterwards.
    * The ``PipelineSession`` is created with an explicit SDK config (``TelemetryOptOut``), which keeps it
      from loading the SDK config files (``~/.config/sagemaker``, ``SAGEMAKER_*_CONFIG_OVERRIDE``, possibly
      on S3) whose defaults (tags, KMS keys, network config, environment...) would be merged into the steps;
      the config is then emptied (SDK defaults only; a non-empty one is re-validated on every lookup, which
      made rendering ~5x slower). Its ``expand_role`` returns the role as given (the SDK would call IAM for a
      role without ``/``, such as ``${SageMakerPipelineRoleArn}``, which passes through unchanged),
      ``default_bucket``/``account_id`` raise (nothing here may need S3 or STS), and a ``before-send`` hook
      refuses any request made with its clients. SDK telemetry (STS plus an HTTP call) is emitted only by
      ``ScriptProcessor.run``, ``FrameworkProcessor.run``, ``Pipeline.create``/``start`` and the like, none of
      which rendering calls.
    * ``ProcessingJobName`` (timestamped) is dropped by the SDK itself (``PipelineDefinitionConfig``
      default); environments are sorted; the returned dict has its keys in sorted order at every level
      (lists keep their order), so the JSON does not depend on the SDK's construction order.
    * ``Tags`` of a step's arguments are dropped: the IR defines none, and the SDK adds them only from an
      ambient SageMaker Studio ``.sagemaker-code-config`` in the working directory or above it.

Fields the vendor schema rejects
    ``Pipeline.definition()`` always writes ``PipelineExperimentConfig`` and ``MlflowConfig`` at the top
    level; the AWS schema (2025-04) allows neither. Both are turned off through the SDK
    (``pipeline_experiment_config=None``: no SageMaker Experiment and trial per execution; with the SDK
    default the definition would carry ``{"ExperimentName": {"Get": "Execution.PipelineName"}, "TrialName":
    {"Get": "Execution.PipelineExecutionId"}}``; ``mlflow_config=None``: no MLflow tracking). The SDK then
    still writes the keys with ``null``, which the service treats as absent (the SDK itself sends ``null``
    for regions without Experiments), so :func:`render_pipeline` removes them only when they are ``null``
    and raises if the SDK ever fills them. Retry policies carry ``"ExceptionType": [...]``, a list, as the
    service documents and the SDK writes; the vendor schema, which says a string, is the one that is out of
    date there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from ndr_compiler import ir

#: the region of the SDK session; it does not appear in the definition (no image URI is looked up)
REGION = "us-east-1"
#: the SageMaker Spark container's job entrypoint (``_SparkProcessorBase._default_command`` in the SDK)
SMSPARK_SUBMIT = "smspark-submit"
#: the launcher baked into the Spark image: ``spark_launcher.py <module> <args...>`` = ``python -m <module> <args>``
SPARK_LAUNCHER = "/opt/ndr/spark_launcher.py"
#: environment variable carrying ``processor.spark_config`` to the launcher (JSON object)
SPARK_CONF_ENV = "NDR_SPARK_CONF"

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
#: what ``shlex.quote`` leaves unquoted: survives smspark-submit's ``shell=True`` unchanged
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+", re.ASCII)
#: AWS limits on ``ContainerArguments`` (items, length of each) and ``Environment`` values
_MAX_ARGUMENTS = 100
_MAX_ARGUMENT = 256
_MAX_ENV_VALUE = 256
_NULL_TOP_LEVEL = ("PipelineExperimentConfig", "MlflowConfig")
_QUIET_LOGGERS = ("sagemaker", "botocore.credentials")


class OfflineRenderError(RuntimeError):
    """The SDK tried to reach AWS (or to need a bucket or account) while rendering."""


def render_pipeline(p: ir.PipelineIR, pipeline_name: str) -> dict[str, Any]:
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
    }.get(prm.type)
    if cls is None:
        raise ValueError(f"parameter '{prm.name}' has unknown type {prm.type!r}")
    default = None if prm.default is None else _typed_default(prm)
    return cls(name=prm.name, default_value=default)


def _typed_default(prm: ir.PipelineParameter) -> str | int | float | bool:
    d = prm.default
    if prm.type == "String":
        return ("true" if d else "false") if isinstance(d, bool) else str(d)
    if prm.type == "Boolean":
        if isinstance(d, bool):
            return d
        if isinstance(d, str) and d.lower() in ("true", "false"):
            return d.lower() == "true"
    elif prm.type == "Integer":
        if isinstance(d, int) and not isinstance(d, bool):
            return d
        if isinstance(d, float) and d.is_integer():
            return int(d)
        if isinstance(d, str) and re.fullmatch(r"[+-]?[0-9]+", d.strip()):
            return int(d)
    elif prm.type == "Float" and not isinstance(d, bool):
        with contextlib.suppress(TypeError, ValueError):
            return float(d)
    raise ValueError(f"default {d!r} of parameter '{prm.name}' is not a {prm.type}")


def _step(sdk: SimpleNamespace, session: Any, s: ir.PipelineStep, parameters: dict[str, Any]) -> Any:
    proc = s.processor
    arguments: list[Any] = []
    for flag, value in s.arguments:
        arguments.append(flag)
        if isinstance(value, ir.ParamRef):
            if value.name not in parameters:
                raise ValueError(f"step '{s.name}': argument {flag} is bound to undeclared parameter '{value.name}'")
            arguments.append(parameters[value.name])
        else:
            arguments.append(value)
    if len(arguments) > _MAX_ARGUMENTS:
        raise ValueError(f"step '{s.name}': {len(arguments)} container arguments; the limit is {_MAX_ARGUMENTS}")
    for a in arguments:
        if isinstance(a, str) and len(a) > _MAX_ARGUMENT:
            raise ValueError(f"step '{s.name}': argument {a[:40]!r}... is over {_MAX_ARGUMENT} characters")

    environment = dict(sorted(proc.environment.items()))
    if proc.spark:
        entrypoint = [SMSPARK_SUBMIT, SPARK_LAUNCHER, s.module]
        for a in [s.module, *arguments]:
            if isinstance(a, str) and not _SHELL_SAFE.fullmatch(a):
                raise ValueError(
                    f"Spark step '{s.name}': argument {a!r} is not shell-safe; smspark-submit runs the "
                    "command line through /bin/sh, so Spark step literals must match [A-Za-z0-9_@%+=:,./-]+"
                )
        if proc.spark_config:
            if SPARK_CONF_ENV in environment:
                raise ValueError(f"Spark step '{s.name}': environment variable {SPARK_CONF_ENV} is reserved")
            environment[SPARK_CONF_ENV] = json.dumps(proc.spark_config, sort_keys=True, separators=(",", ":"))
            environment = dict(sorted(environment.items()))
    else:
        if proc.spark_config:
            raise ValueError(f"step '{s.name}': spark_config is set on a processor that is not a Spark one")
        entrypoint = ["python", "-m", s.module]
    for key, value in environment.items():
        if len(value) > _MAX_ENV_VALUE:
            raise ValueError(f"step '{s.name}': environment variable {key} is over {_MAX_ENV_VALUE} characters")

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
    return sdk.ProcessingStep(
        name=s.name,
        step_args=processor.run(arguments=arguments or None),
        description=s.description,
        cache_config=(
            sdk.CacheConfig(enable_caching=True, expire_after=s.cache_expire_after) if s.cache_expire_after else None
        ),
        depends_on=list(s.depends_on) or None,
        retry_policies=_retry_policies(sdk, s) or None,
    )


def _retry_policies(sdk: SimpleNamespace, s: ir.PipelineStep) -> list[Any]:
    """One SDK policy per family: ``Step.*`` (StepRetryPolicy) and ``SageMaker.*`` (SageMakerJobStepRetryPolicy).

    The SDK keeps the two families in separate policy classes, so an IR policy that mixes them becomes two
    policies with the same attempts, interval and backoff.
    """
    r = s.retry
    if r is None:
        return []
    # by value, not Enum(value): the SDK's DefaultEnumMeta ignores a positional value and returns the first member
    step_enum = {e.value: e for e in sdk.StepExceptionTypeEnum}
    job_enum = {e.value: e for e in sdk.SageMakerJobExceptionTypeEnum}
    step_types, job_types = [], []
    for name in r.exception_types:
        if name in step_enum:
            step_types.append(step_enum[name])
        elif name in job_enum:
            job_types.append(job_enum[name])
        else:
            raise ValueError(f"step '{s.name}': unknown retry exception type {name!r}")
    timing = {"max_attempts": r.max_attempts, "interval_seconds": r.interval_seconds, "backoff_rate": r.backoff_rate}
    policies = []
    if step_types:
        policies.append(sdk.StepRetryPolicy(exception_types=step_types, **timing))
    if job_types:
        policies.append(sdk.SageMakerJobStepRetryPolicy(exception_types=job_types, **timing))
    return policies


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value
