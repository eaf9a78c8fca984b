"""The one Redshift Data API client of the jobs: its configuration, the checks of what reaches SQL, execute-and-wait.

Configuration is the ``NDR_REDSHIFT_*`` environment (:meth:`RedshiftConfig.from_env`; table in
``docs/design/jobs.md``). Only checked identifiers, S3 URIs and the IAM role clause enter SQL text; every other
value is a Data API parameter. :func:`execute` waits, cancels past the timeout and raises on failure.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WORKGROUP_ENV = "NDR_REDSHIFT_WORKGROUP"
CLUSTER_ENV = "NDR_REDSHIFT_CLUSTER_ID"
DATABASE_ENV = "NDR_REDSHIFT_DATABASE"
SECRET_ENV = "NDR_REDSHIFT_SECRET_ARN"
DB_USER_ENV = "NDR_REDSHIFT_DB_USER"
IAM_ROLE_ENV = "NDR_REDSHIFT_IAM_ROLE"
TIMEOUT_ENV = "NDR_REDSHIFT_TIMEOUT_SECONDS"
POLL_ENV = "NDR_REDSHIFT_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,126}"
#: a plain (unquoted) name: database, user
_NAME = re.compile(rf"{_IDENTIFIER}")
#: a [database.][schema.]table name of plain identifiers: nothing to quote
_TABLE = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER}){{0,2}}")
_CLUSTER = re.compile(r"[a-z](?!.*--)[a-z0-9-]{0,62}(?<!-)")
_WORKGROUP = re.compile(r"[a-z0-9-]{3,64}")
#: a secret whose name starts with ``ndr``: the only ones the pipelines' role may read (entrypoints.REDSHIFT)
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:ndr[A-Za-z0-9/_+=.@-]*")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]+")
#: an S3 URI safe inside a SQL string literal: a valid bucket name, no quote, backslash or control character
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^'\\\x00-\x1f\x7f]*)?")


class RedshiftError(RuntimeError):
    """Anything that went wrong talking to Redshift (the base of the errors below)."""


class RedshiftConfigError(RedshiftError, ValueError):
    """The Redshift settings are missing or malformed (the message names the variables)."""


class UnsafeValueError(RedshiftError, ValueError):
    """A value refused before it could reach SQL text (not a plain identifier, S3 URI or role)."""


class RedshiftStatementError(RedshiftError):
    """A statement refused by the Data API or ended FAILED / ABORTED (Redshift's error text and the id)."""


class RedshiftTimeoutError(RedshiftError, TimeoutError):
    """A statement still running after the timeout (it was cancelled)."""


def configured() -> bool:
    """Whether the environment points at a Redshift (a workgroup or a cluster is set)."""
    return bool(os.environ.get(WORKGROUP_ENV, "").strip() or os.environ.get(CLUSTER_ENV, "").strip())


def check_table(name: str, setting: str = "table") -> str:
    """``name`` if it is a plain ``[database.][schema.]table`` name, else :class:`UnsafeValueError`."""
    if not _TABLE.fullmatch(name):
        raise UnsafeValueError(f"{setting}={name!r} is not a plain [database.][schema.]table name")
    return name


def check_s3_uri(uri: str) -> str:
    """``uri`` if it is an ``s3://bucket/key`` URI safe inside a SQL string literal, else :class:`UnsafeValueError`."""
    if not _S3_URI.fullmatch(uri):
        raise UnsafeValueError(
            f"{uri!r} is not an s3://bucket/key URI without quotes, backslashes or control characters"
        )
    return uri


def quote_literal(text: str) -> str:
    """A SQL string literal: single quotes, embedded ones doubled."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class RedshiftConfig:
    """Where statements run, as whom, and how long to wait for them (the variables: ``docs/design/jobs.md``)."""

    database: str
    workgroup: str = ""
    cluster_id: str = ""
    secret_arn: str = ""
    db_user: str = ""
    iam_role: str = "default"
    timeout_seconds: float = 1800.0
    poll_seconds: float = DEFAULT_POLL_SECONDS

    @classmethod
    def from_env(cls, default_timeout: float, local_hint: str = "") -> RedshiftConfig:
        """The configuration from the environment; every problem at once in one :class:`RedshiftConfigError`
        (``local_hint``, e.g. the variable of the job's local stand-in, is appended to its message)."""
        names = (WORKGROUP_ENV, CLUSTER_ENV, DATABASE_ENV, SECRET_ENV, DB_USER_ENV, IAM_ROLE_ENV, TIMEOUT_ENV,
                 POLL_ENV)  # fmt: skip
        env = {k: os.environ.get(k, "").strip() for k in names}
        problems: list[str] = []
        if bool(env[WORKGROUP_ENV]) == bool(env[CLUSTER_ENV]):
            problems.append(f"set exactly one of {WORKGROUP_ENV} and {CLUSTER_ENV}")
        if not env[DATABASE_ENV]:
            problems.append(f"set {DATABASE_ENV}")
        if env[DB_USER_ENV] and (env[WORKGROUP_ENV] or env[SECRET_ENV]):
            problems.append(f"{DB_USER_ENV} goes with {CLUSTER_ENV} only, and not with {SECRET_ENV}")
        checks = ((WORKGROUP_ENV, _WORKGROUP, "a Redshift Serverless workgroup name"),
                  (CLUSTER_ENV, _CLUSTER, "a Redshift cluster identifier"),
                  (DATABASE_ENV, _NAME, "a plain database name"),
                  (SECRET_ENV, _SECRET_ARN, "a Secrets Manager secret ARN whose name starts with 'ndr' (the only "
                   "secrets the pipelines' role may read)"),
                  (DB_USER_ENV, _NAME, "a plain database user name"))  # fmt: skip
        for name, pattern, what in checks:
            if env[name] and not pattern.fullmatch(env[name]):
                problems.append(f"{name}={env[name]!r} is not {what}")
        role = env[IAM_ROLE_ENV] or "default"
        if role != "default" and not _ROLE_ARN.fullmatch(role):
            problems.append(f"{IAM_ROLE_ENV}={role!r} is neither an IAM role ARN nor 'default'")
        timeout = _positive(env[TIMEOUT_ENV], TIMEOUT_ENV, default_timeout, problems)
        poll = _positive(env[POLL_ENV], POLL_ENV, DEFAULT_POLL_SECONDS, problems)
        if problems:
            hint = f"; {local_hint}" if local_hint else ""
            raise RedshiftConfigError(f"Redshift is not configured ({'; '.join(problems)}){hint}")
        return cls(env[DATABASE_ENV], env[WORKGROUP_ENV], env[CLUSTER_ENV], env[SECRET_ENV], env[DB_USER_ENV], role,
                   timeout, poll)  # fmt: skip

    def target(self) -> dict[str, str]:
        """The connection arguments of ``ExecuteStatement`` / ``BatchExecuteStatement``."""
        args = {"Database": self.database}
        if self.workgroup:
            args["WorkgroupName"] = self.workgroup
        else:
            args["ClusterIdentifier"] = self.cluster_id
        if self.secret_arn:
            args["SecretArn"] = self.secret_arn
        if self.db_user:
            args["DbUser"] = self.db_user
        return args

    def iam_role_clause(self) -> str:
        """``IAM_ROLE default`` (the keyword) or ``IAM_ROLE '<checked role ARN>'``."""
        if self.iam_role == "default":
            return "IAM_ROLE default"
        if not _ROLE_ARN.fullmatch(self.iam_role):
            raise UnsafeValueError(f"IAM role {self.iam_role!r} is neither an IAM role ARN nor 'default'")
        return f"IAM_ROLE {quote_literal(self.iam_role)}"

    def describe(self) -> str:
        where = f"workgroup {self.workgroup}" if self.workgroup else f"cluster {self.cluster_id}"
        return f"redshift {where} database {self.database}"


def _positive(raw: str, name: str, default: float, problems: list[str]) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or math.isinf(value):
        problems.append(f"{name}={raw!r} is not a positive number of seconds")
    return value


def data_client() -> Any:
    """A boto3 ``redshift-data`` client (region and credentials from the environment)."""
    import boto3

    return boto3.client("redshift-data")


def _failure_text(described: Mapping[str, Any]) -> str:
    if described.get("Error"):
        return str(described["Error"])
    for sub in described.get("SubStatements") or []:  # a batch: the statement that failed says why
        if sub.get("Error"):
            return f"{sub['Error']} (in: {sub.get('QueryString', '?')})"
    return "no error text"


def execute(
    client: Any,
    config: RedshiftConfig,
    sql: str | Sequence[str],
    parameters: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run ``sql`` (one statement, or a list run as one transaction) and wait; the final ``DescribeStatement``.

    ``parameters`` are the values of the ``:name`` placeholders in the SQL, sent as Data API parameters.
    """
    from botocore.exceptions import ClientError

    args: dict[str, Any] = config.target()
    if parameters:
        args["Parameters"] = [{"name": name, "value": value} for name, value in parameters.items()]
    batch = not isinstance(sql, str)
    operation = "BatchExecuteStatement" if batch else "ExecuteStatement"
    try:
        if batch:
            statement_id = client.batch_execute_statement(Sqls=list(sql), **args)["Id"]
        else:
            statement_id = client.execute_statement(Sql=sql, **args)["Id"]
    except ClientError as exc:
        raise RedshiftStatementError(f"{config.describe()}: {operation} was refused: {exc}") from exc
    deadline = clock() + config.timeout_seconds
    max_waits = math.ceil(config.timeout_seconds / config.poll_seconds)
    waits = 0
    while True:
        try:
            described = client.describe_statement(Id=statement_id)
        except ClientError as exc:
            raise RedshiftStatementError(f"{config.describe()}: statement {statement_id}: {exc}") from exc
        status = described.get("Status", "")
        if status == "FINISHED":
            return described
        if status in ("FAILED", "ABORTED"):
            raise RedshiftStatementError(
                f"{config.describe()}: statement {statement_id} {status}: {_failure_text(described)}"
            )
        if waits >= max_waits or clock() >= deadline:
            try:
                client.cancel_statement(Id=statement_id)
                cancelled = "cancel requested"
            except ClientError as exc:
                cancelled = f"cancel failed: {exc}"
            raise RedshiftTimeoutError(
                f"{config.describe()}: statement {statement_id} still {status or 'without a status'} after "
                f"{config.timeout_seconds:g} s ({TIMEOUT_ENV}); {cancelled}"
            )
        sleep(config.poll_seconds)
        waits += 1
