"""List the raw mini-batches of a time range and write the backfill window manifest.

Entry: :func:`run_historical_windows_extractor_from_runtime_config`. The backfill state machine reads the
manifest's ``windows`` and runs the 15-minute chain per item. Objects that do not fit the raw layout are counted
and listed, never dropped silently. Manifest: ``docs/datasets.md``; rules: ``docs/design/jobs.md``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ndr_jobs.datasets import storage
from ndr_jobs.interface.contract import iso, parse_utc
from ndr_jobs.runtime.config import BackfillRuntime
from ndr_jobs.runtime.summary import emit

MANIFEST_VERSION = 1
WINDOW = timedelta(minutes=15)
MAX_SKIPPED_LISTED = 50
MAX_RANGE_DAYS = 366
MAX_BYTES_ENV = "NDR_BACKFILL_MANIFEST_MAX_BYTES"
#: Step Functions' 256 KiB limit on a state's result, less room for the rest of the getObject response
DEFAULT_MAX_BYTES = 250_000
#: ``.../pan-traffic/<org>/<project>/<fsv>`` at the end of a prefix
_PROJECT_PREFIX = re.compile(r"(?:^|/)pan-traffic/(?P<org>[^/]+)/(?P<project>[^/]+)/(?P<fsv>[^/]+)/?$")
_HHMM = re.compile(r"^(?P<hh>[01]\d|2[0-3])(?P<mm>[0-5]\d)$")


@dataclass(frozen=True)
class Window:
    """One mini-batch window found under the project prefix."""

    start: datetime
    folder: str
    objects: int
    bytes: int

    def item(self, org_id: str, runtime: BackfillRuntime) -> dict[str, str]:
        stamp = self.start.strftime("%Y%m%dT%H%M")
        return {
            "mini_batch_id": f"{org_id}-{runtime.project_name}-{runtime.feature_spec_version}-{stamp}",
            "batch_start_ts": iso(self.start),
            "batch_end_ts": iso(self.start + WINDOW),
            "batch_folder": self.folder,
        }


def project_prefix(runtime: BackfillRuntime) -> tuple[str, str]:
    """(the project's raw prefix ``.../pan-traffic/<org>/<project>/<fsv>``, the org id); see ``docs/design/jobs.md``."""
    given = runtime.raw_prefix.strip()
    if given:
        match = _PROJECT_PREFIX.search(given)
        if match:
            found = (match["project"], match["fsv"])
            if found != (runtime.project_name, runtime.feature_spec_version):
                raise ValueError(
                    f"raw prefix {given!r} is project {found[0]!r} version {found[1]!r}, but the run is for "
                    f"project {runtime.project_name!r} version {runtime.feature_spec_version!r}"
                )
            return given.rstrip("/"), match["org"]
        root, origin = given, "--raw-prefix"
    else:
        root, origin = os.environ.get("NDR_RAW_ROOT", ""), "NDR_RAW_ROOT"
        if not root:
            raise ValueError("no --raw-prefix given and NDR_RAW_ROOT is not set")
    org_id = os.environ.get("NDR_ORG_ID", "")
    if not org_id:
        raise ValueError(
            f"{origin} {root!r} is a raw root, not a project prefix (.../pan-traffic/<org>/<project>/<version>/): "
            "set NDR_ORG_ID to say which org's batches to list"
        )
    prefix = storage.join(root, "pan-traffic", org_id, runtime.project_name, runtime.feature_spec_version)
    return prefix, org_id


def _days(start: datetime, end: datetime) -> list[datetime]:
    """The UTC days (midnights) that ``[start, end)`` touches."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < end:
        out.append(day)
        day += timedelta(days=1)
    return out


def find_windows(prefix: str, start: datetime, end: datetime) -> tuple[list[Window], list[dict[str, str]]]:
    """The windows starting in ``[start, end)`` under ``prefix`` (sorted), and the skipped objects."""
    found: dict[datetime, list[storage.ObjectInfo]] = {}
    skipped: list[dict[str, str]] = []
    for day in _days(start, end):
        day_prefix = storage.join(prefix, day.strftime("%Y/%m/%d"))
        for obj in storage.list_objects(day_prefix):
            relative = obj.path[len(day_prefix) :].lstrip("/")
            folder, _, rest = relative.partition("/")
            match = _HHMM.match(folder)
            if not rest:
                skipped.append({"path": obj.path, "reason": "not in an HHMM batch folder"})
            elif not match:
                skipped.append({"path": obj.path, "reason": f"folder {folder!r} is not HHMM"})
            elif int(match["mm"]) % 15:
                skipped.append({"path": obj.path, "reason": f"batch folder {folder} is not on a 15-minute boundary"})
            else:
                moment = day.replace(hour=int(match["hh"]), minute=int(match["mm"]))
                if start <= moment < end:
                    found.setdefault(moment, []).append(obj)
    windows = [
        Window(moment, storage.join(prefix, moment.strftime("%Y/%m/%d/%H%M")) + "/", len(objs),
               sum(o.size for o in objs))
        for moment, objs in sorted(found.items())
    ]  # fmt: skip
    return windows, sorted(skipped, key=lambda s: s["path"])


def _max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{MAX_BYTES_ENV}={raw!r} is not a positive number of bytes")
    return int(raw)


def build_manifest(runtime: BackfillRuntime) -> tuple[dict[str, Any], list[Window], list[dict[str, str]]]:
    """The manifest document (``docs/datasets.md``), its windows and every skipped object."""
    start = parse_utc(runtime.start_ts, "start_ts")
    end = parse_utc(runtime.end_ts, "end_ts")
    if end <= start:
        raise ValueError(f"empty or reversed range: end_ts {runtime.end_ts} is not after start_ts {runtime.start_ts}")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise ValueError(f"range {runtime.start_ts} .. {runtime.end_ts} is longer than {MAX_RANGE_DAYS} days")
    if not runtime.manifest_uri.strip():
        raise ValueError("no manifest URI given")
    prefix, org_id = project_prefix(runtime)
    windows, skipped = find_windows(prefix, start, end)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "project_name": runtime.project_name,
        "feature_spec_version": runtime.feature_spec_version,
        "org_id": org_id,
        "start_ts": iso(start),
        "end_ts": iso(end),
        "raw_prefix": prefix + "/",
        "window_minutes": int(WINDOW.total_seconds() // 60),
        "objects": sum(w.objects for w in windows),
        "bytes": sum(w.bytes for w in windows),
        "skipped_count": len(skipped),
        "skipped": skipped[:MAX_SKIPPED_LISTED],
        "windows": [w.item(org_id, runtime) for w in windows],
    }
    return manifest, windows, skipped


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest's canonical text: compact JSON, keys sorted, one trailing newline."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n"


class HistoricalWindowsExtractorJob:
    """``HistoricalWindowsExtractorJob(runtime).run()``: write the manifest; print and return the summary."""

    def __init__(self, runtime: BackfillRuntime) -> None:
        self.runtime = runtime

    def run(self) -> dict[str, Any]:
        began = time.perf_counter()
        manifest, windows, skipped = build_manifest(self.runtime)
        text = manifest_text(manifest)
        size, limit = len(text.encode()), _max_bytes()
        if size > limit:
            raise ValueError(
                f"the manifest of {len(windows)} windows is {size} bytes, over {limit} ({MAX_BYTES_ENV}; Step "
                "Functions' 256 KiB limit on a state's result): split the range into shorter backfills"
            )
        for item in skipped:
            print(f"warning: skipped {item['path']}: {item['reason']}", file=sys.stderr)
        storage.write_text(self.runtime.manifest_uri, text)
        summary: dict[str, Any] = {
            "job": "historical_windows_extractor",
            "project_name": self.runtime.project_name,
            "feature_spec_version": self.runtime.feature_spec_version,
            "start_ts": manifest["start_ts"],
            "end_ts": manifest["end_ts"],
            "raw_prefix": manifest["raw_prefix"],
            "manifest_uri": self.runtime.manifest_uri,
            "manifest_bytes": size,
            "windows": len(windows),
            "first_window": manifest["windows"][0]["batch_start_ts"] if windows else None,
            "last_window": manifest["windows"][-1]["batch_start_ts"] if windows else None,
            "objects": manifest["objects"],
            "bytes": manifest["bytes"],
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
            "seconds": round(time.perf_counter() - began, 3),
        }
        emit(summary)
        return summary


def run_historical_windows_extractor_from_runtime_config(runtime: BackfillRuntime) -> dict[str, Any]:
    """The same as ``HistoricalWindowsExtractorJob(runtime).run()`` (the naming of the other jobs)."""
    return HistoricalWindowsExtractorJob(runtime).run()
