"""The SageMaker pipeline renderer: valid against the AWS schema, deterministic, offline, and byte for byte what
the SageMaker Python SDK builds from the same steps (``tests/sdk_oracle.py``).

Every test runs with no AWS credentials, profile or region in the environment and with the network cut at
the socket level: any connection or DNS lookup attempted while rendering fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndr_compiler import ir
from ndr_compiler.diagnostics import Span
from ndr_compiler.render.sagemaker_pipeline import (
    JOB_EXCEPTIONS,
    SMSPARK_SUBMIT,
    SPARK_CONF_ENV,
    SPARK_LAUNCHER,
    STEP_EXCEPTIONS,
    render_pipeline,
)
from tests.conftest import aws_pipeline_schema
from tests.sdk_oracle import sdk_render_pipeline

ROOT = Path(__file__).resolve().parents[1]
AWS_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED",
)
ROLE = "${SageMakerPipelineRoleArn}"  # no "/": the SDK would look it up in IAM
SPAN = Span("test.yaml")


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch):
    """No AWS credentials, profile or region; every network attempt recorded and refused."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    attempts: list[str] = []

    def refuse(what: str):
        def _refuse(*args, **kwargs):
            attempts.append(f"{what}{args!r}")
            raise OSError(f"network disabled in tests: {what}")

        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    yield
    assert attempts == [], f"rendering tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def schema() -> dict:
    return aws_pipeline_schema()


def validate(definition: dict, schema: dict) -> None:
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(definition)


# -- IR builders ---------------------------------------------------------------------------------------------


def processor(**overrides) -> ir.Processor:
    fields = dict(
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/ndr-processing:1.0",
        instance_type="ml.m5.xlarge",
        instance_count=1,
        volume_size_gb=30,
        max_runtime_seconds=3600,
        role_arn=ROLE,
        environment={"NDR_STORAGE_ROOT": "${NdrStorageRoot}", "LOG_LEVEL": "INFO"},
    )
    fields.update(overrides)
    return ir.Processor(**fields)


def spark_processor(**overrides) -> ir.Processor:
    fields = dict(
        image_uri="${NdrSparkProcessingImageUri}",
        instance_type="ml.m5.2xlarge",
        instance_count=3,
        volume_size_gb=50,
        max_runtime_seconds=1800,
        spark=True,
        spark_config={"spark.sql.shuffle.partitions": "64", "spark.sql.session.timeZone": "UTC"},
    )
    fields.update(overrides)
    return processor(**fields)


def pipeline(steps: list[ir.PipelineStep], parameters: list[ir.PipelineParameter]) -> ir.PipelineIR:
    return ir.PipelineIR(
        name="test", file="test.yaml", origin=SPAN, placeholders=[], parameters=parameters,
        steps=steps,
    )


def param(name: str, type_: str = "String", default=None) -> ir.PipelineParameter:
    return ir.PipelineParameter(name, type_, default, SPAN, required=default is None)


def single_step_ir() -> ir.PipelineIR:
    step = ir.PipelineStep(
        name="UnloadStep",
        origin=SPAN,
        module="ndr_jobs.scripts.run_machine_inventory_unload",
        arguments=[("--project-name", ir.ParamRef("ProjectName")), ("--stage", "verify")],
        processor=processor(),
    )
    return pipeline([step], [param("ProjectName")])


def spark_chain_ir() -> ir.PipelineIR:
    batch = [
        ("--project-name", ir.ParamRef("ProjectName")),
        ("--mini-batch-id", ir.ParamRef("MiniBatchId")),
        ("--batch-start-ts-iso", ir.ParamRef("BatchStartTsIso")),
    ]
    retry = ir.RetryPolicy(["Step.SERVICE_FAULT", "Step.THROTTLING", "SageMaker.CAPACITY_ERROR"], 2, 30, 2.0)
    names = ["DeltaBuilderStep", "FGABuilderStep", "PairCountsBuilderStep", "FGCBuilderStep"]
    depends = [[], ["DeltaBuilderStep"], ["DeltaBuilderStep"], ["FGABuilderStep", "PairCountsBuilderStep"]]
    steps = [
        ir.PipelineStep(
            name=name,
            origin=SPAN,
            module=f"ndr_jobs.scripts.run_{name.removesuffix('Step').lower()}",
            arguments=[*batch, ("--partitions", ir.ParamRef("Partitions"))] if i == 3 else list(batch),
            processor=spark_processor(environment={"NDR_STORAGE_ROOT": "${NdrStorageRoot}", "STEP": name}),
            depends_on=dep,
            retry=retry if i != 2 else ir.RetryPolicy(["SageMaker.JOB_INTERNAL_ERROR"], 3, 10, 1.5),
            cache_expire_after="P30D" if i in (1, 3) else None,
            description=f"step {i}",
        )
        for i, (name, dep) in enumerate(zip(names, depends, strict=True))
    ]
    parameters = [param("ProjectName"), param("MiniBatchId"), param("BatchStartTsIso")]
    return pipeline(steps, [*parameters, param("Partitions", "Integer", 8)])


def all_types_ir() -> ir.PipelineIR:
    parameters = [
        param("Name"),  # required: no default
        param("Mode", "String", "regular"),
        param("Empty", "String", ""),
        param("Count", "Integer", 3),
        param("Ratio", "Float", 0.25),
        param("WholeRatio", "Float", 1),
        param("Enabled", "Boolean", True),
        param("Dry", "Boolean", False),
    ]
    step = ir.PipelineStep(
        name="AllTypesStep",
        origin=SPAN,
        module="ndr_jobs.scripts.run_x",
        arguments=[(f"--{p.name.lower()}", ir.ParamRef(p.name)) for p in parameters],
        processor=processor(),
    )
    return pipeline([step], parameters)


def dump(definition: dict) -> str:
    return json.dumps(definition, indent=2)


# -- tests ----------------------------------------------------------------------------------------------------


def test_single_plain_step(schema: dict):
    d = render_pipeline(single_step_ir(), "ndr-test")
    validate(d, schema)
    assert set(d) == {"Version", "Metadata", "Parameters", "Steps"}
    assert d["Parameters"] == [{"Name": "ProjectName", "Type": "String"}]
    (step,) = d["Steps"]
    assert step["Name"] == "UnloadStep" and step["Type"] == "Processing"
    assert not {"DependsOn", "RetryPolicies", "CacheConfig", "Description"} & set(step)
    args = step["Arguments"]
    assert args["AppSpecification"] == {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ndr-processing:1.0",
        "ContainerEntrypoint": ["python", "-m", "ndr_jobs.scripts.run_machine_inventory_unload"],
        "ContainerArguments": ["--project-name", {"Get": "Parameters.ProjectName"}, "--stage", "verify"],
    }
    assert args["RoleArn"] == ROLE  # passed through, never looked up
    assert args["ProcessingResources"] == {
        "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
    }
    assert args["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert list(args["Environment"].items()) == [("LOG_LEVEL", "INFO"), ("NDR_STORAGE_ROOT", "${NdrStorageRoot}")]
    assert not {"ProcessingJobName", "ProcessingInputs", "ProcessingOutputConfig", "Tags"} & set(args)


def test_spark_chain(schema: dict):
    d = render_pipeline(spark_chain_ir(), "ndr-test-spark")
    validate(d, schema)
    steps = d["Steps"]
    names = ["DeltaBuilderStep", "FGABuilderStep", "PairCountsBuilderStep", "FGCBuilderStep"]
    assert [s["Name"] for s in steps] == names
    assert [s.get("DependsOn") for s in steps] == [
        None, ["DeltaBuilderStep"], ["DeltaBuilderStep"], ["FGABuilderStep", "PairCountsBuilderStep"]
    ]
    assert [s.get("CacheConfig") for s in steps] == [
        None, {"Enabled": True, "ExpireAfter": "P30D"}, None, {"Enabled": True, "ExpireAfter": "P30D"}
    ]
    assert [s["Description"] for s in steps] == ["step 0", "step 1", "step 2", "step 3"]
    # an IR policy mixing the two families becomes one SDK policy per family, same timing
    assert steps[0]["RetryPolicies"] == [
        {"ExceptionType": ["Step.SERVICE_FAULT", "Step.THROTTLING"], "MaxAttempts": 2, "IntervalSeconds": 30,
         "BackoffRate": 2.0},
        {"ExceptionType": ["SageMaker.CAPACITY_ERROR"], "MaxAttempts": 2, "IntervalSeconds": 30, "BackoffRate": 2.0},
    ]
    assert steps[2]["RetryPolicies"] == [
        {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "MaxAttempts": 3, "IntervalSeconds": 10, "BackoffRate": 1.5}
    ]
    for s in steps:
        args = s["Arguments"]
        app = args["AppSpecification"]
        assert app["ImageUri"] == "${NdrSparkProcessingImageUri}"
        module = f"ndr_jobs.scripts.run_{s['Name'].removesuffix('Step').lower()}"
        assert app["ContainerEntrypoint"] == [SMSPARK_SUBMIT, SPARK_LAUNCHER, module]
        assert app["ContainerArguments"][:6] == [
            "--project-name", {"Get": "Parameters.ProjectName"},
            "--mini-batch-id", {"Get": "Parameters.MiniBatchId"},
            "--batch-start-ts-iso", {"Get": "Parameters.BatchStartTsIso"},
        ]
        assert args["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 3
        assert args["Environment"] == {
            SPARK_CONF_ENV: '{"spark.sql.session.timeZone":"UTC","spark.sql.shuffle.partitions":"64"}',
            "NDR_STORAGE_ROOT": "${NdrStorageRoot}",
            "STEP": s["Name"],
        }
        assert list(args["Environment"]) == sorted(args["Environment"])
        assert "ProcessingInputs" not in args  # nothing uploaded: the launcher and the code are in the image
    assert steps[3]["Arguments"]["AppSpecification"]["ContainerArguments"][6:] == [
        "--partitions", {"Get": "Parameters.Partitions"}
    ]
    assert d["Parameters"][-1] == {"Name": "Partitions", "Type": "Integer", "DefaultValue": 8}


def test_spark_entrypoint_is_the_sdk_one():
    from sagemaker.core.spark.processing import _SparkProcessorBase

    assert _SparkProcessorBase._default_command == SMSPARK_SUBMIT


def test_parameters_of_each_type(schema: dict):
    d = render_pipeline(all_types_ir(), "ndr-test-types")
    validate(d, schema)
    assert d["Parameters"] == [
        {"Name": "Name", "Type": "String"},
        {"Name": "Mode", "Type": "String", "DefaultValue": "regular"},
        {"Name": "Empty", "Type": "String", "DefaultValue": ""},
        {"Name": "Count", "Type": "Integer", "DefaultValue": 3},
        {"Name": "Ratio", "Type": "Float", "DefaultValue": 0.25},
        {"Name": "WholeRatio", "Type": "Float", "DefaultValue": 1.0},
        {"Name": "Enabled", "Type": "Boolean", "DefaultValue": True},
        {"Name": "Dry", "Type": "Boolean", "DefaultValue": False},
    ]
    args = d["Steps"][0]["Arguments"]["AppSpecification"]["ContainerArguments"]
    names = [p["Name"] for p in d["Parameters"]]
    assert args == [x for n in names for x in (f"--{n.lower()}", {"Get": f"Parameters.{n}"})]


def test_schema_rejects_what_the_sdk_adds_by_default(schema: dict):
    """Why the oracle turns PipelineExperimentConfig/MlflowConfig off and the renderer never writes them."""
    import jsonschema

    d = render_pipeline(single_step_ir(), "ndr-test")
    for extra in ({"PipelineExperimentConfig": None}, {"MlflowConfig": None}):
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            validate({**d, **extra}, schema)


def test_rendering_twice_is_byte_identical():
    for build in (single_step_ir, spark_chain_ir, all_types_ir):
        assert dump(render_pipeline(build(), "ndr-test")) == dump(render_pipeline(build(), "ndr-test"))


def test_identical_in_a_fresh_interpreter():
    """No hash-seed, timestamp or first-import effect: another process with another hash seed agrees."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_pipeline_render as t; "
        "print(t.dump(t.render_pipeline(t.spark_chain_ir(), 'ndr-test')))"
    )
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env["PYTHONHASHSEED"] = "12345"
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == dump(render_pipeline(spark_chain_ir(), "ndr-test")) + "\n"


def test_oracle_restores_the_environment_and_ignores_ambient_aws_settings(monkeypatch: pytest.MonkeyPatch):
    import boto3

    baseline = dump(sdk_render_pipeline(single_step_ir(), "ndr-test"))
    default_session = boto3.DEFAULT_SESSION
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # boto3 would raise ProfileNotFound
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert dump(sdk_render_pipeline(single_step_ir(), "ndr-test")) == baseline
    assert os.environ["AWS_PROFILE"] == "no-such-profile" and os.environ["AWS_DEFAULT_REGION"] == "eu-west-3"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE"} & set(os.environ)
    assert boto3.DEFAULT_SESSION is default_session


def test_oracle_ignores_sdk_defaults_files_and_studio_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A user's SDK defaults config and a Studio project config would otherwise inject fields into steps."""
    baseline = dump(sdk_render_pipeline(single_step_ir(), "ndr-test"))
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text(
        "SchemaVersion: '1.0'\n"
        "SageMaker:\n"
        "  ProcessingJob:\n"
        "    Environment: {INJECTED: 'yes'}\n"
        "    Tags: [{Key: injected, Value: 'yes'}]\n"
        "    ProcessingOutputConfig: {KmsKeyId: injected-key}\n"
    )
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    (tmp_path / ".sagemaker-code-config").write_text(
        json.dumps({"sagemakerProjectId": "p-123", "sagemakerProjectName": "injected"})
    )
    monkeypatch.chdir(tmp_path)
    assert dump(sdk_render_pipeline(single_step_ir(), "ndr-test")) == baseline


def test_spark_literal_that_the_shell_would_mangle_is_rejected():
    p = spark_chain_ir()
    p.steps[0].arguments.append(("--note", "two words"))
    with pytest.raises(ValueError, match="not shell-safe"):
        render_pipeline(p, "ndr-test")
    plain = single_step_ir()
    plain.steps[0].arguments.append(("--note", "two words"))
    args = render_pipeline(plain, "ndr-test")["Steps"][0]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert args[-2:] == ["--note", "two words"]  # no shell in between for a plain step


def test_argument_bound_to_an_undeclared_parameter():
    p = single_step_ir()
    p.steps[0].arguments.append(("--run-key", ir.ParamRef("RunKey")))
    with pytest.raises(ValueError, match="undeclared parameter 'RunKey'"):
        render_pipeline(p, "ndr-test")


def test_the_renderer_does_not_import_the_sdk():
    """Rendering is the compiler's own: a compile never loads the SDK (it costs ~4 s to import)."""
    code = (
        "import sys, ndr_compiler.render.sagemaker_pipeline as r, tests.test_pipeline_render as t; "
        "r.render_pipeline(t.spark_chain_ir(), 'x'); "
        "sys.exit(sorted(m for m in sys.modules if m == 'sagemaker' or m.startswith('sagemaker.')) != [])"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# -- parity with the SDK ----------------------------------------------------------------------------------------


def _spec_pipelines() -> dict[str, ir.PipelineIR]:
    from ndr_compiler.compile import compile_specs

    result = compile_specs([ROOT / "specs"])
    assert result.ok
    return dict(sorted(result.pipelines.items()))


SPEC_PIPELINES = _spec_pipelines()


@pytest.mark.parametrize("name", list(SPEC_PIPELINES))
def test_every_spec_pipeline_is_what_the_sdk_builds(name: str):
    p = SPEC_PIPELINES[name]
    assert dump(render_pipeline(p, name)) == dump(sdk_render_pipeline(p, name))


@pytest.mark.parametrize("build", [single_step_ir, spark_chain_ir, all_types_ir])
def test_every_construct_is_what_the_sdk_builds(build):
    assert dump(render_pipeline(build(), "ndr-test")) == dump(sdk_render_pipeline(build(), "ndr-test"))


_names = st.from_regex(r"[A-Z][A-Za-z0-9]{0,11}", fullmatch=True)
_literal = st.from_regex(r"[A-Za-z0-9_.:/=-]{1,20}", fullmatch=True)


@st.composite
def pipelines(draw) -> ir.PipelineIR:
    types = draw(st.lists(st.sampled_from(["String", "Integer", "Float", "Boolean"]), max_size=4))
    defaults = {"String": st.text(max_size=8), "Integer": st.integers(-5, 5), "Float": st.floats(-2, 2),
                "Boolean": st.booleans()}
    parameters = [param(f"P{i}{t}", t, draw(st.none() | defaults[t])) for i, t in enumerate(types)]
    steps = []
    for i in range(draw(st.integers(1, 3))):
        spark = draw(st.booleans())
        refs = [(f"--p{k}", ir.ParamRef(prm.name)) for k, prm in enumerate(parameters) if draw(st.booleans())]
        literals = [(f"--l{k}", draw(_literal)) for k in range(draw(st.integers(0, 2)))]
        exceptions = draw(st.lists(st.sampled_from(STEP_EXCEPTIONS + JOB_EXCEPTIONS), unique=True, max_size=4))
        steps.append(ir.PipelineStep(
            name=f"S{i}{draw(_names)}",
            origin=SPAN,
            module=f"ndr_jobs.scripts.run_{i}",
            arguments=draw(st.permutations(refs + literals)),
            processor=(spark_processor if spark else processor)(
                instance_count=draw(st.integers(1, 4)),
                environment=draw(st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), _literal,
                                                 max_size=3)),
                **({"spark_config": draw(st.dictionaries(st.sampled_from(["spark.a", "spark.b"]), _literal))}
                   if spark else {}),
            ),
            depends_on=[s.name for s in steps if draw(st.booleans())],
            retry=ir.RetryPolicy(exceptions, draw(st.integers(1, 5)), draw(st.integers(1, 60)),
                                 draw(st.sampled_from([1.0, 1.5, 2.0]))) if exceptions else None,
            cache_expire_after=draw(st.none() | st.sampled_from(["P30D", "PT1H"])),
            description=draw(st.none() | st.text(min_size=1, max_size=12)),
        ))
    return pipeline(steps, parameters)


@settings(deadline=None, max_examples=40)  # the SDK takes ~0.1-0.3 s a pipeline
@given(pipelines())
def test_any_pipeline_is_what_the_sdk_builds(p: ir.PipelineIR):
    assert dump(render_pipeline(p, "ndr-x")) == dump(sdk_render_pipeline(p, "ndr-x"))
