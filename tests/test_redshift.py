"""The Redshift Data API client (ndr_jobs.datasets.redshift): configuration checks, the checks of what reaches
SQL text, and execute-and-wait.

ExecuteStatement runs on moto's ``redshift-data``, which records a statement and leaves it ``STARTED`` (no
``Error`` field, no BatchExecuteStatement): the tests end a statement themselves at the first wait (the
injected ``sleep``). Error texts and the batch call go through botocore's Stubber, which checks the request
against the service model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ndr_jobs.datasets import redshift
from ndr_jobs.datasets.redshift import (
    RedshiftConfig,
    RedshiftConfigError,
    RedshiftStatementError,
    RedshiftTimeoutError,
    UnsafeValueError,
)

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ndr-redshift-AbCdEf"
ROLE = "arn:aws:iam::123456789012:role/ndr-redshift"
ENV_VARS = (redshift.WORKGROUP_ENV, redshift.CLUSTER_ENV, redshift.DATABASE_ENV, redshift.SECRET_ENV,
            redshift.DB_USER_ENV, redshift.IAM_ROLE_ENV, redshift.TIMEOUT_ENV, redshift.POLL_ENV)  # fmt: skip
CLUSTER = RedshiftConfig(database="ndr", cluster_id="ndr-cluster", secret_arn=SECRET, timeout_seconds=60,
                         poll_seconds=10)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def moto_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        yield redshift.data_client()


def moto_statement() -> Any:
    from moto.redshiftdata.models import redshiftdata_backends

    (statement,) = redshiftdata_backends["123456789012"]["us-east-1"].statements.values()
    return statement


def ends_as(status: str) -> Callable[[float], None]:
    """A ``sleep`` that sets the moto statement's status at the first wait and records every wait."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        moto_statement().status = status

    sleep.waits = waits  # type: ignore[attr-defined]
    return sleep


def stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


# --- execute and wait -------------------------------------------------------------------------------------------


def test_execute_sends_the_sql_target_and_parameters_and_waits(moto_client: Any):
    sleep = ends_as("FINISHED")
    sql = "DELETE FROM t WHERE feature_spec_version = :fsv"
    described = redshift.execute(moto_client, CLUSTER, sql, {"fsv": "v1"}, sleep=sleep)
    statement = moto_statement()
    assert described["Id"] == statement.id and described["Status"] == "FINISHED"
    assert statement.query_string == sql
    assert statement.query_parameters == [{"name": "fsv", "value": "v1"}]
    assert (statement.cluster_identifier, statement.database, statement.secret_arn) == ("ndr-cluster", "ndr", SECRET)
    assert sleep.waits == [10]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["FAILED", "ABORTED"])
def test_a_failed_statement_names_the_target_the_statement_and_the_status(moto_client: Any, status: str):
    with pytest.raises(RedshiftStatementError, match=rf"^redshift cluster ndr-cluster database ndr: statement "
                       rf"[0-9a-f-]{{36}} {status}: no error text$"):  # fmt: skip
        redshift.execute(moto_client, CLUSTER, "SELECT 1", sleep=ends_as(status))


def test_a_timeout_cancels_the_statement(moto_client: Any):
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    message = r"still STARTED after 60 s \(NDR_REDSHIFT_TIMEOUT_SECONDS\); cancel requested$"
    with pytest.raises(RedshiftTimeoutError, match=message):
        redshift.execute(moto_client, CLUSTER, "SELECT 1", sleep=sleep, clock=lambda: now[0])
    assert waits == [10] * 6
    assert moto_statement().status == "ABORTED"


def test_the_wait_is_bounded_even_when_the_clock_stands_still(moto_client: Any):
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert len(waits) < 100, "the wait is not bounded"

    with pytest.raises(TimeoutError, match="cancel requested"):
        redshift.execute(moto_client, CLUSTER, "SELECT 1", sleep=sleep, clock=lambda: 0.0)
    assert len(waits) == 6  # ceil(60 / 10)


def test_a_failed_cancel_is_reported(moto_client: Any):
    # the statement moves on (moto cancels only STARTED statements) and never finishes: the cancel is refused
    with pytest.raises(RedshiftTimeoutError, match=r"still PICKED after 60 s .*; cancel failed: .*ValidationException"):
        redshift.execute(moto_client, CLUSTER, "SELECT 1", sleep=ends_as("PICKED"), clock=lambda: 0.0)


def test_redshift_error_text_reaches_the_message():
    client, stub = stubbed()
    stub.add_response("execute_statement", {"Id": "s-1"}, {"Sql": "UNLOAD ...", "Database": "ndr",
                                                            "WorkgroupName": "ndr-wg"})  # fmt: skip
    error = 'ERROR: relation "machine_inventory" does not exist'
    stub.add_response("describe_statement", {"Id": "s-1", "Status": "FAILED", "Error": error}, {"Id": "s-1"})
    config = RedshiftConfig(database="ndr", workgroup="ndr-wg")
    with stub, pytest.raises(RedshiftStatementError, match=re.escape(f"workgroup ndr-wg database ndr: statement s-1 "
                                                                     f"FAILED: {error}")):  # fmt: skip
        redshift.execute(client, config, "UNLOAD ...", sleep=lambda s: None)
    stub.assert_no_pending_responses()


def test_a_refused_statement_is_a_statement_error():
    client, stub = stubbed()
    stub.add_client_error("execute_statement", "ValidationException", "Workgroup ndr-wg not found")
    refused = "ExecuteStatement was refused: .*Workgroup ndr-wg not found"
    with stub, pytest.raises(RedshiftStatementError, match=refused):
        redshift.execute(client, RedshiftConfig(database="ndr", workgroup="ndr-wg"), "SELECT 1")


def test_a_batch_runs_as_one_transaction_with_shared_parameters_and_reports_the_failed_statement():
    client, stub = stubbed()
    sqls = ["DELETE FROM t WHERE v = :v", "COPY t FROM 's3://b/p/' IAM_ROLE default FORMAT AS PARQUET"]
    expected = {"Sqls": sqls, "Database": "ndr", "WorkgroupName": "ndr-wg", "Parameters": [{"name": "v", "value": "1"}]}
    stub.add_response("batch_execute_statement", {"Id": "b-1"}, expected)
    stub.add_response("describe_statement", {"Id": "b-1", "Status": "STARTED"}, {"Id": "b-1"})
    stub.add_response("describe_statement", {"Id": "b-1", "Status": "FINISHED"}, {"Id": "b-1"})
    stub.add_response("batch_execute_statement", {"Id": "b-2"}, expected)
    failed = {"Id": "b-2", "Status": "FAILED", "SubStatements": [
        {"Id": "b-2:1", "Status": "FINISHED", "QueryString": sqls[0]},
        {"Id": "b-2:2", "Status": "FAILED", "QueryString": sqls[1], "Error": "S3 access denied"},
    ]}  # fmt: skip
    stub.add_response("describe_statement", failed, {"Id": "b-2"})
    config = RedshiftConfig(database="ndr", workgroup="ndr-wg")
    with stub:
        assert redshift.execute(client, config, sqls, {"v": "1"}, sleep=lambda s: None)["Status"] == "FINISHED"
        with pytest.raises(RedshiftStatementError, match=re.escape(f"b-2 FAILED: S3 access denied (in: {sqls[1]})")):
            redshift.execute(client, config, sqls, {"v": "1"}, sleep=lambda s: None)
    stub.assert_no_pending_responses()


# --- configuration ------------------------------------------------------------------------------------------------


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(redshift.CLUSTER_ENV, "ndr-cluster")
    monkeypatch.setenv(redshift.DATABASE_ENV, "ndr")
    monkeypatch.setenv(redshift.DB_USER_ENV, "loader")
    config = RedshiftConfig.from_env(600)
    assert (config.timeout_seconds, config.poll_seconds, config.iam_role) == (600, 5, "default")
    assert config.target() == {"Database": "ndr", "ClusterIdentifier": "ndr-cluster", "DbUser": "loader"}
    assert config.iam_role_clause() == "IAM_ROLE default"
    monkeypatch.setenv(redshift.IAM_ROLE_ENV, ROLE)
    monkeypatch.setenv(redshift.TIMEOUT_ENV, "90")
    monkeypatch.setenv(redshift.POLL_ENV, "2.5")
    config = RedshiftConfig.from_env(600)
    assert (config.timeout_seconds, config.poll_seconds) == (90, 2.5)
    assert config.iam_role_clause() == f"IAM_ROLE '{ROLE}'"
    assert redshift.configured()


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({}, "set exactly one of NDR_REDSHIFT_WORKGROUP and NDR_REDSHIFT_CLUSTER_ID; set NDR_REDSHIFT_DATABASE"),
        ({"NDR_REDSHIFT_WORKGROUP": "ndr-wg", "NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d"},
         "set exactly one of"),
        ({"NDR_REDSHIFT_WORKGROUP": "ndr-wg", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_DB_USER": "u"},
         "NDR_REDSHIFT_DB_USER goes with NDR_REDSHIFT_CLUSTER_ID only"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_SECRET_ARN": SECRET,
          "NDR_REDSHIFT_DB_USER": "u"}, "and not with NDR_REDSHIFT_SECRET_ARN"),
        ({"NDR_REDSHIFT_WORKGROUP": "ndr-wg", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_IAM_ROLE": "admin"},
         "NDR_REDSHIFT_IAM_ROLE='admin' is neither an IAM role ARN nor 'default'"),
        ({"NDR_REDSHIFT_WORKGROUP": "ndr-wg", "NDR_REDSHIFT_DATABASE": "d",
          "NDR_REDSHIFT_IAM_ROLE": ROLE + "' FORMAT CSV --"}, "is neither an IAM role ARN"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "Ndr Cluster", "NDR_REDSHIFT_DATABASE": "d"},
         "NDR_REDSHIFT_CLUSTER_ID='Ndr Cluster' is not a Redshift cluster identifier"),
        ({"NDR_REDSHIFT_WORKGROUP": "wg", "NDR_REDSHIFT_DATABASE": "d"},
         "NDR_REDSHIFT_WORKGROUP='wg' is not a Redshift Serverless workgroup name"),
        ({"NDR_REDSHIFT_WORKGROUP": "ndr-wg", "NDR_REDSHIFT_DATABASE": "d; drop"},
         "NDR_REDSHIFT_DATABASE='d; drop' is not a plain database name"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_SECRET_ARN": "ndr-secret"},
         "NDR_REDSHIFT_SECRET_ARN='ndr-secret' is not a Secrets Manager secret ARN"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_TIMEOUT_SECONDS": "soon"},
         "NDR_REDSHIFT_TIMEOUT_SECONDS='soon' is not a positive number of seconds"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_POLL_SECONDS": "0"},
         "NDR_REDSHIFT_POLL_SECONDS='0' is not a positive number of seconds"),
        ({"NDR_REDSHIFT_CLUSTER_ID": "c", "NDR_REDSHIFT_DATABASE": "d", "NDR_REDSHIFT_TIMEOUT_SECONDS": "inf"},
         "NDR_REDSHIFT_TIMEOUT_SECONDS='inf' is not a positive number of seconds"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_variables(monkeypatch: pytest.MonkeyPatch, env: dict, error: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RedshiftConfigError, match=re.escape(error) + r".*; use the local file$"):
        RedshiftConfig.from_env(600, "use the local file")


# --- what reaches SQL text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ndr_publication", "ndr.publication", "dev.ndr.inventory_$1", "_t"])
def test_plain_table_names_pass(name: str):
    assert redshift.check_table(name) == name


@pytest.mark.parametrize("name", ["", "1t", "t;", "a.b.c.d", '"t"', "t --", "t.", "a b", "t\n"])
def test_other_table_names_are_refused(name: str):
    with pytest.raises(UnsafeValueError, match=re.escape(f"NDR_X={name!r} is not a plain")):
        redshift.check_table(name, "NDR_X")


def test_s3_uris_reach_sql_only_without_quotes_backslashes_or_control_characters():
    ok = "s3://acme-ndr/root/publication_staged/feature_spec_version=v1/batch_start=20261001T0600/"
    assert redshift.check_s3_uri(ok) == ok
    for bad in ("s3://acme-ndr/p' IAM_ROLE default --", "s3://acme-ndr/p\\", "s3://acme-ndr/p\n", "s3://A_B/p",
                "/local/p", "s3://acme-ndr/p\x7f"):  # fmt: skip
        with pytest.raises(UnsafeValueError):
            redshift.check_s3_uri(bad)


def test_an_unchecked_role_never_reaches_the_sql():
    with pytest.raises(UnsafeValueError):
        RedshiftConfig(database="d", workgroup="ndr-wg", iam_role="x' --").iam_role_clause()
