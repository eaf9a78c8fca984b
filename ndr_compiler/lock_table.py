"""The lock table's layout, in one place: what the lock construct, the run records, the janitor, the
table definitions and the local platform all read and write.

Two kinds of item share the table (partition key ``lock_key``):

* a **lock** (``record_type = lock``): ``<scope>#<parts as a JSON array>``, with ``lock_status``
  RUNNING | SUCCEEDED | FAILED, the ``owner_execution`` that holds it, ``expires_at`` (epoch seconds: the
  RUNNING lease, then the retention of a finished lock; also the table's TTL attribute) and the ``effects``
  (a JSON array of the effect states the body completed, so that a rerun does not repeat them);
* a **pipeline run** (``record_type = pipeline_run``): ``run#[<execution>, <start state>, <item index>]``,
  written right after a pipeline starts, with its ``pipeline_execution_arn`` and the ``owner_execution``.

The index :data:`OWNER_INDEX` (partition key ``owner_execution``) is how the janitor finds what a
stopped, timed-out or failed execution left behind.
"""

from __future__ import annotations

KEY = "lock_key"
RECORD_TYPE = "record_type"
STATUS = "lock_status"
OWNER = "owner_execution"
ACQUIRED_AT = "acquired_at"
FINISHED_AT = "finished_at"
EXPIRES_AT = "expires_at"
EFFECTS = "effects"
PIPELINE_EXECUTION = "pipeline_execution_arn"
RELEASED_BY = "released_by"

LOCK = "lock"
PIPELINE_RUN = "pipeline_run"
RUNNING, SUCCEEDED, FAILED = "RUNNING", "SUCCEEDED", "FAILED"

OWNER_INDEX = "owner_execution"
#: the routing table's index by project (a backfill request names a project, not an org)
ROUTING_PROJECT_INDEX = "project_name"
