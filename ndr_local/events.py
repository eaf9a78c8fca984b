"""The inbound events of local runs, shaped exactly as the upstream contracts (``shared/contracts/events``).

``tests/test_demo.py`` checks every builder against the contract file it imitates: same keys, same
nesting, same value types; only the values (org, folder, times) differ.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ndr_jobs.interface.contract import iso

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _event_id(*parts: str) -> str:
    """A deterministic UUID-shaped id (runs are reproducible)."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def batch_completed(raw_bucket: str, org_id: str, project_name: str, feature_spec_version: str,
                    batch_start: datetime, object_count: int, total_bytes: int) -> dict[str, Any]:
    """``15m_batch_completed.eventbridge.json``: ingestion announces a completed 15-minute mini-batch."""
    end = batch_start + timedelta(minutes=15)
    folder = (f"s3://{raw_bucket}/pan-traffic/{org_id}/{project_name}/{feature_spec_version}/"
              f"{batch_start.astimezone(UTC):%Y/%m/%d/%H%M}/")
    return {
        "version": "0",
        "id": _event_id("batch", folder),
        "detail-type": "Batch Completed",
        "source": "ndr.ingestion",
        "account": ACCOUNT,
        "time": iso(end + timedelta(minutes=1, seconds=4)),
        "region": REGION,
        "resources": [],
        "detail": {
            "event_type": "batch_completed",
            "org_id": org_id,
            "batch_folder": folder,
            "batch_end_ts": iso(end),
            "object_count": object_count,
            "total_bytes": total_bytes,
        },
    }


def as_sqs(event: dict[str, Any]) -> list[dict[str, Any]]:
    """``15m_batch_completed.sqs.json``: the event as the body of an SQS record (EventBridge Pipes batch)."""
    body = json.dumps(event)
    return [{
        "messageId": _event_id("sqs", body),
        "receiptHandle": "local",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1",
                       "SentTimestamp": str(int(datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
                                                .timestamp() * 1000))},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum is MD5
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:ndr-batch-events",
        "awsRegion": REGION,
    }]


def monthly_baselines(project_name: str, feature_spec_version: str, reference_month: str) -> dict[str, Any]:
    """``monthly_baselines.scheduler.json``."""
    return {"project_name": project_name, "feature_spec_version": feature_spec_version,
            "reference_month": reference_month}


def training_request(project_name: str, feature_spec_version: str, start: datetime, end: datetime,
                     missing_windows_override: list[str] | None = None) -> dict[str, Any]:
    """``training.request.json``."""
    return {"project_name": project_name, "feature_spec_version": feature_spec_version,
            "training_start": iso(start), "training_end": iso(end),
            "missing_windows_override": list(missing_windows_override or [])}


def backfill_request(project_name: str, feature_spec_version: str, start: datetime, end: datetime,
                     raw_prefix: str, requested_by: str = "make-run@localhost") -> dict[str, Any]:
    """``backfill.request.json``."""
    return {"project_name": project_name, "feature_spec_version": feature_spec_version,
            "start_ts": iso(start), "end_ts": iso(end), "raw_prefix": raw_prefix, "requested_by": requested_by}


def as_sns(event: dict[str, Any]) -> dict[str, Any]:
    """``15m_batch_completed.sns.json``: the event as the ``Message`` string of an SNS notification."""
    message = json.dumps(event)
    sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00")) + timedelta(seconds=1)
    return {
        "Type": "Notification",
        "MessageId": _event_id("sns", message),
        "TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ndr-batch-events",
        "Subject": None,
        "Message": message,
        "Timestamp": sent.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "1",
        "Signature": "LOCAL",
        "SigningCertURL": "https://example.invalid/cert.pem",
        "UnsubscribeURL": "https://example.invalid/unsub",
    }
