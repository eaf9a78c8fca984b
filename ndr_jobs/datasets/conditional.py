"""Compare-and-swap on single objects: S3 conditional writes, and the same semantics on local files.

:func:`read` gives an object's bytes and its *tag* (the S3 ETag; locally the MD5 of the bytes, which is what
S3's ETag of a single-part upload is). :func:`write` replaces an object only if its tag is still the one read
(``If-Match``), or creates it only if it does not exist (``If-None-Match: *``); a lost race raises
:class:`PreconditionFailedError`. Locally the check and the rename run under an exclusive ``flock`` on a
hidden sidecar file, so every conditional writer of a path is serialised. Plain readers need no lock (the
rename is atomic). Design: ``docs/design/jobs.md`` (Model store).
"""

from __future__ import annotations

import fcntl
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from ndr_jobs.datasets import storage

T = TypeVar("T")

#: S3 error codes of a conditional write that lost (412; 409 while another conditional write is in flight)
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


class PreconditionFailedError(RuntimeError):
    """A conditional write lost: the object changed (or appeared, or went) since it was read."""


class RetriesExhaustedError(RuntimeError):
    """A read-modify-write kept losing to concurrent writers for its whole retry budget."""


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the tag a conditional write of it must match."""

    data: bytes
    tag: str


def _tag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _s3(path: str) -> tuple[Any, str, str]:
    import boto3

    parsed = urlparse(path)
    if not parsed.netloc:
        raise ValueError(f"not an S3 path with a bucket: {path!r}")
    return boto3.client("s3"), parsed.netloc, parsed.path.lstrip("/")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def read(path: str) -> Versioned | None:
    """The object and its tag, or ``None`` when it does not exist."""
    real = storage.backing(path)
    if storage.is_s3(real):
        client, bucket, key = _s3(real)
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return None
        return Versioned(response["Body"].read(), response["ETag"].strip('"'))
    target = storage.local_path(real)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    return Versioned(data, _tag(data))


@contextmanager
def _local_lock(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.cas-lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write(path: str, data: bytes, expected: str | None) -> str:
    """Write ``data`` if the object's tag is ``expected`` (``None``: only if it does not exist); the new tag.

    Raises :class:`PreconditionFailedError` when the condition does not hold.
    """
    real = storage.backing(path)
    if storage.is_s3(real):
        from botocore.exceptions import ClientError

        client, bucket, key = _s3(real)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": f'"{expected}"'}
        try:
            response = client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _CONFLICT_CODES or (expected is not None and code in ("NoSuchKey", "404")):
                raise PreconditionFailedError(f"{path}: conditional write lost ({code})") from None
            raise
        return str(response["ETag"]).strip('"')
    target = storage.local_path(real)
    with _local_lock(target):
        current = read(path)
        if expected is None and current is not None:
            raise PreconditionFailedError(f"{path}: exists already")
        if expected is not None and (current is None or current.tag != expected):
            raise PreconditionFailedError(f"{path}: changed since it was read")
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    return _tag(data)


#: attempts of a read-modify-write, the base of its randomised exponential back-off and its longest wait
#: (seconds); 8 writers racing on one object needed up to 7 attempts each (docs/design/jobs.md)
MAX_ATTEMPTS = 16
BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0


def update(
    path: str,
    change: Callable[[Versioned | None], tuple[bytes | None, T]],
    attempts: int = MAX_ATTEMPTS,
    backoff: float = BACKOFF_SECONDS,
) -> tuple[T, int]:
    """Read ``path``, let ``change`` compute ``(new bytes or None to leave it, result)``, write conditionally.

    A lost race reads again and calls ``change`` again, up to ``attempts`` times (randomised exponential
    back-off in between, at most :data:`MAX_BACKOFF_SECONDS`); then :class:`RetriesExhaustedError`.
    Returns ``(result, conflicts seen)``.
    """
    for attempt in range(attempts):
        current = read(path)
        data, result = change(current)
        if data is None:
            return result, attempt
        try:
            write(path, data, None if current is None else current.tag)
        except PreconditionFailedError:
            if attempt + 1 < attempts:
                wait = min(backoff * (2**attempt), MAX_BACKOFF_SECONDS)
                time.sleep(wait * (0.5 + random.random()))  # noqa: S311 - jitter, not security
            continue
        return result, attempt
    raise RetriesExhaustedError(f"{path}: {attempts} conditional writes in a row lost to concurrent writers")
