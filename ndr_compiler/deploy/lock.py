"""One deploy at a time per environment: a conditional item in the project's lock table, with a lease (TTL)."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from ndr_compiler import lock_table as lt

#: a deploy that dies keeps the others out for at most this long (the item is also the table's TTL)
LEASE_SECONDS = 3600


class DeployLocked(Exception):
    """Another deploy of the environment holds the lock."""


def holder(commit: str) -> str:
    return f"deploy by {getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} at {commit}"


@contextmanager
def deploy_lock(ddb: Any, table: str, prefix: str, owner: str, lease_s: int = LEASE_SECONDS) -> Iterator[None]:
    """Hold ``deploy#<prefix>`` while the block runs; :class:`DeployLocked` names the holder when it is taken."""
    key = {lt.KEY: {"S": f"deploy#{prefix}"}}
    now = int(time.time())
    try:
        ddb.put_item(
            TableName=table,
            Item={**key, lt.RECORD_TYPE: {"S": "deploy_lock"}, lt.STATUS: {"S": lt.RUNNING},
                  lt.OWNER: {"S": owner}, lt.ACQUIRED_AT: {"N": str(now)}, lt.EXPIRES_AT: {"N": str(now + lease_s)}},
            ConditionExpression=f"attribute_not_exists({lt.KEY}) OR {lt.EXPIRES_AT} < :now",
            ExpressionAttributeValues={":now": {"N": str(now)}},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item", {})
        who = item.get(lt.OWNER, {}).get("S", "another deploy")
        since = int(item.get(lt.ACQUIRED_AT, {}).get("N", now))
        until = int(item.get(lt.EXPIRES_AT, {}).get("N", now))
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        raise DeployLocked(f"{who} holds the deploy lock of {prefix} since {started} (lease ends in "
                           f"{max(0, until - now)} s); wait for it to finish, or delete item deploy#{prefix} of "
                           f"table {table} if that deploy is dead") from None
    try:
        yield
    finally:
        try:
            ddb.delete_item(TableName=table, Key=key, ConditionExpression=f"{lt.OWNER} = :me",
                            ExpressionAttributeValues={":me": {"S": owner}})
        except ClientError as exc:  # taken over after our lease ended: not ours to delete
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
