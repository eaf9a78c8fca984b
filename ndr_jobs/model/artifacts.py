"""Deterministic artifacts: canonical JSON, reproducible tarballs and the run directory of a training run.

Each file is written whole; a stage writes its status artifact last, so a stage whose status artifact exists
has finished. The run directory's files: ``docs/datasets.md`` (``models``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import tarfile
from dataclasses import dataclass
from typing import Any

from ndr_jobs.datasets import storage

#: a run key, project name or spec version: one plain path segment
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ArtifactError(ValueError):
    """An artifact is missing, malformed or belongs to another run."""


def check_segment(what: str, value: str) -> str:
    """``value`` if it is a plain path segment, else a clear error naming ``what``."""
    if not SEGMENT.match(value or ""):
        raise ValueError(f"{what} {value!r} must match {SEGMENT.pattern} (it becomes a path segment)")
    return value


def _clean(value: Any) -> Any:
    """JSON-ready: tuples as lists, numpy scalars as Python ones, non-finite floats refused."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number {value!r} in an artifact")
    return value


def dumps(payload: Any) -> str:
    """Canonical JSON text: sorted keys, indent 2, a trailing newline."""
    return json.dumps(_clean(payload), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str, payload: Any) -> None:
    storage.write_text(path, dumps(payload))


def read_json(path: str) -> Any:
    try:
        return json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def read_json_if_exists(path: str) -> Any | None:
    return read_json(path) if storage.exists(path) else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A reproducible ``.tar.gz`` of ``{name: bytes}``: sorted members, zero times and owners, gzip mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def untar_gz(data: bytes) -> dict[str, bytes]:
    """The regular files of a ``.tar.gz`` as ``{name: bytes}``."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    out[member.name] = handle.read()
    return out


@dataclass(frozen=True)
class RunPaths:
    """The artifact paths of one training run (``docs/datasets.md``, ``models``)."""

    root: str
    feature_spec_version: str
    run_key: str

    @property
    def base(self) -> str:
        version = check_segment("feature spec version", self.feature_spec_version)
        key = check_segment("run key", self.run_key)
        return storage.join(self.root, "models", f"feature_spec_version={version}", f"run_key={key}")

    def path(self, *parts: str) -> str:
        return storage.join(self.base, *parts)

    @property
    def run(self) -> str:
        return self.path("run.json")

    @property
    def verify(self) -> str:
        return self.path("verify_status.json")

    @property
    def remediation(self) -> str:
        return self.path("remediation.json")

    @property
    def reverify(self) -> str:
        return self.path("reverify_status.json")

    @property
    def metrics(self) -> str:
        return self.path("train", "metrics.json")

    @property
    def preprocessing(self) -> str:
        return self.path("train", "preprocessing.json")

    @property
    def model(self) -> str:
        return self.path("train", "model.tar.gz")

    @property
    def final_report(self) -> str:
        return self.path("train", "final_report.json")

    @property
    def success(self) -> str:
        return self.path("train", "SUCCESS")

    @property
    def publish(self) -> str:
        return self.path("publish_status.json")

    @property
    def attributes(self) -> str:
        return self.path("attributes.json")

    @property
    def deploy(self) -> str:
        return self.path("deploy_status.json")
