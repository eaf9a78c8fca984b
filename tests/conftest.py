from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red main must be a real regression, reproducible); explore with
# `pytest --hypothesis-profile=explore`, which draws new ones
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
GENERATED = ROOT / "generated"
SHARED = ROOT.parent / "shared"
#: the project's own copy of the inbound events (tests/test_contracts.py checks it against ../shared when there)
CONTRACTS = SPECS / "contracts" / "events"
REFERENCE_STATES = SPECS / "contracts" / "reference_states.json"


@pytest.fixture(scope="session")
def spark():  # noqa: ANN201 - a SparkSession (spark_session() reuses one per process)
    from ndr_jobs.runtime.spark import spark_session

    return spark_session()


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    """A writable copy of specs/ for tests that break one thing."""
    dst = tmp_path / "specs"
    shutil.copytree(SPECS, dst)
    return dst


PIPELINE_SCHEMA = SHARED / "vendor" / "sagemaker-pipeline-definition.schema.json"


OWN_PIPELINE_SCHEMA = ROOT / "tests" / "data" / "pipeline-definition.schema.json"


def aws_pipeline_schema() -> dict:
    """The AWS pipeline-definition schema (read from shared/vendor, never copied), with one correction; without
    it beside the checkout, the project's own description of the shape it renders (``tests/data``).

    ``RetryPolicy.ExceptionType`` is a string in the vendor schema, but the service takes (and documents, and
    the SDK writes) a list of exception types: the correction keeps the enum and accepts the list.
    """
    import copy
    import json

    if not PIPELINE_SCHEMA.exists():
        return json.loads(OWN_PIPELINE_SCHEMA.read_text())
    s = copy.deepcopy(json.loads(PIPELINE_SCHEMA.read_text()))
    exception_type = s["definitions"]["RetryPolicy"]["properties"]["ExceptionType"]
    s["definitions"]["RetryPolicy"]["properties"]["ExceptionType"] = {"type": "array", "items": exception_type}
    return s
