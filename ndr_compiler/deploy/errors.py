"""AWS failures of plan and deploy as one line each, with what to do about them."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

#: every deploy client: standard retries (throttling and transient errors back off), a bounded wait
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10}, connect_timeout=10, read_timeout=60)
#: the first call (who am I): fails fast when credentials or the endpoint are wrong
PROBE_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=20)
THROTTLED = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
                       "SlowDown", "ProvisionedThroughputExceededException"})
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
REJECTED = frozenset({"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                      "AuthFailure", "InvalidAccessKeyId"})
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
_NOT_FOUND = re.compile(r"(?i)could not find|does not exist|not found")
#: what Step Functions, SageMaker and EventBridge say about a role IAM has not propagated yet
_ROLE_NOT_READY = re.compile(r"(?i)not authorized to assume|could not assume|unable to assume|cannot be assumed|"
                             r"assume the provided role|role\b.{0,200}\b(does not exist|is not valid|is invalid)")
#: waits between attempts while a new role propagates: 2, 4, 8, 15, 15, ... seconds, 8 attempts (~90 s)
ROLE_ATTEMPTS, ROLE_FIRST_WAIT, ROLE_MAX_WAIT = 8, 2.0, 15.0
SLEEP: Callable[[float], None] = time.sleep
T = TypeVar("T")


def missing(exc: ClientError) -> bool:
    """Whether ``exc`` says the resource does not exist. A ``ValidationException`` is a missing resource only when
    its message says so (moto's SageMaker reports a missing pipeline that way); any other is a real error."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code == "ValidationException":
        return bool(_NOT_FOUND.search(str(error.get("Message", ""))))
    return code in ("ResourceNotFoundException", "NoSuchEntity", "StateMachineDoesNotExist", "ResourceNotFound")


def role_not_ready(exc: BaseException) -> bool:
    """Whether ``exc`` is a service refusing a role that IAM has not propagated yet (a new role takes seconds)."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return (error.get("Code") in ("AccessDeniedException", "ValidationException", "InvalidParameterValueException",
                                  "InvalidArn", "InvalidParameterException")
            and bool(_ROLE_NOT_READY.search(str(error.get("Message", "")))))


def while_roles_propagate(call: Callable[[], T]) -> T:
    """``call()``, again with backoff while it fails only because a role has not propagated; other errors raise."""
    for attempt in range(ROLE_ATTEMPTS):
        try:
            return call()
        except ClientError as exc:
            if not role_not_ready(exc) or attempt == ROLE_ATTEMPTS - 1:
                raise
            SLEEP(min(ROLE_MAX_WAIT, ROLE_FIRST_WAIT * 2**attempt))
    raise AssertionError("unreachable")


def explain(exc: BaseException) -> str | None:
    """One line for an AWS failure a user can fix (credentials, network, throttling, permissions), else None."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: set AWS_PROFILE (then `aws sso login` if it uses SSO) or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and run again")
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (the Environment spec's region is used for every resource)"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "the AWS endpoint")
        return (f"cannot reach {url}: check the network or proxy (HTTPS_PROXY), and AWS_ENDPOINT_URL if it is set, "
                "then run again")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", "")).splitlines()[0:1]
        said = f" ({code}: {message[0]})" if message else f" ({code})"
        operation = getattr(exc, "operation_name", "a call")
        if code in THROTTLED:
            return (f"AWS throttled {operation} after 10 attempts{said}: wait a minute and run again; "
                    "the deploy converges from where it stopped")
        if code in EXPIRED:
            return f"the AWS credentials have expired{said}: refresh them (`aws sso login`) and run again"
        if code in REJECTED:
            return f"AWS rejected the credentials{said}: check AWS_PROFILE or the access key, and the account"
        if code in DENIED:
            return f"access denied to {operation}{said}: the deploying identity needs that permission"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {exc}"
    return None
