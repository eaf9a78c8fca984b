"""The model store (versions index, ``promoted`` pointer) and the SageMaker Model Registry.

Model store -- always written, under the storage root (a local directory, or S3 in AWS)::

    <root>/model_registry/<project>/feature_spec_version=<v>/
        index.json               {"versions": [{version, run_key, model_uri, model_sha256, ...}], ...}
        versions/<n>/model.tar.gz
        versions/<n>/metadata.json
        promoted.json            the version inference uses: {version, run_key, model_uri, model_sha256, ...}

Versions count from 1 in publish order; publishing a run key that the index already holds returns its
version (idempotent). ``index.json`` and ``promoted.json`` change only through conditional writes
(:mod:`ndr_jobs.datasets.conditional`: S3 ``If-Match`` / ``If-None-Match``, the same locally): a publish that
loses the race reads the index again and takes the next version (bounded retries). The index entry is the
commit point of a version number; its files are written after it by the only run that owns it, and a
re-publish of the run key writes what is missing. ``promoted.json`` is the only thing inference reads; the
deploy stage writes it, and a pointer is believed only if it names a version of the index by its own path
and digest (:meth:`ModelStore.load_promoted_model`).

    <root>/model_registry/<project>/training.lock.json   the per-project training lock (:class:`TrainingLock`)

SageMaker Model Registry -- with ``NDR_MODEL_REGISTRY=sagemaker``: publish also creates the model package
group if needed (``NDR_MODEL_PACKAGE_GROUP``, default ``<project>-<spec version>-isolation-forest`` with
every character outside ``[A-Za-z0-9-]`` turned into ``-``) and a model package version whose
``ModelDataUrl`` is the store's S3 ``model.tar.gz`` and whose container image is ``NDR_MODEL_IMAGE_URI``,
``PendingManualApproval``, with the run key in its metadata and a ``ClientToken`` derived from group and
run key (a retried call creates no second package). Deploy sets it ``Approved`` or ``Rejected``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from ndr_jobs.datasets import conditional, storage
from ndr_jobs.model import artifacts

REGISTRY_ENV = "NDR_MODEL_REGISTRY"
GROUP_ENV = "NDR_MODEL_PACKAGE_GROUP"
IMAGE_ENV = "NDR_MODEL_IMAGE_URI"


#: ``ModelStore.promote(pointer)`` without a tag: replace whatever pointer is there
ANY = object()


class NoPromotedModelError(LookupError):
    """No model is promoted for a project and feature spec version."""


class UntrustedModelError(artifacts.ArtifactError):
    """The promoted pointer or the model it names does not match the store's index (tampered or corrupt)."""


class TrainingLockHeldError(RuntimeError):
    """Another training run of the project holds the training lock."""


@dataclass(frozen=True)
class ModelStore:
    """The model store of one project and feature spec version."""

    root: str
    project: str
    feature_spec_version: str

    @property
    def project_base(self) -> str:
        return storage.join(self.root, "model_registry", artifacts.check_segment("project name", self.project))

    @property
    def base(self) -> str:
        version = artifacts.check_segment("feature spec version", self.feature_spec_version)
        return storage.join(self.project_base, f"feature_spec_version={version}")

    @property
    def index_path(self) -> str:
        return storage.join(self.base, "index.json")

    @property
    def promoted_path(self) -> str:
        return storage.join(self.base, "promoted.json")

    def version_dir(self, version: int) -> str:
        return storage.join(self.base, "versions", str(version))

    def _empty_index(self) -> dict[str, Any]:
        return {"project": self.project, "feature_spec_version": self.feature_spec_version, "versions": []}

    def _parse(self, path: str, found: conditional.Versioned | None) -> Any:
        if found is None:
            return None
        try:
            return json.loads(found.data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise artifacts.ArtifactError(f"{path} is not valid JSON: {exc}") from None

    def index(self) -> dict[str, Any]:
        return self._parse(self.index_path, conditional.read(self.index_path)) or self._empty_index()

    def entry_for(self, run_key: str) -> dict[str, Any] | None:
        return next((v for v in self.index()["versions"] if v["run_key"] == run_key), None)

    def publish(self, run_key: str, model: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
        """Add the run's model as the next version (or return the version it already has)."""
        return self.publish_counted(run_key, model, metadata)[0]

    def publish_counted(self, run_key: str, model: bytes, metadata: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """:meth:`publish`, and how many conditional index writes it lost to concurrent publishes."""
        artifacts.check_segment("run key", run_key)
        digest = artifacts.sha256(model)

        def claim(found: conditional.Versioned | None) -> tuple[bytes | None, dict[str, Any]]:
            index = self._parse(self.index_path, found) or self._empty_index()
            existing = next((v for v in index["versions"] if v["run_key"] == run_key), None)
            if existing is not None:
                return None, existing
            version = 1 + max((v["version"] for v in index["versions"]), default=0)
            folder = self.version_dir(version)
            entry = {
                "version": version,
                "run_key": run_key,
                "model_uri": storage.join(folder, "model.tar.gz"),
                "model_sha256": digest,
                "metadata_uri": storage.join(folder, "metadata.json"),
            }
            index["versions"] = [*index["versions"], entry]
            return artifacts.dumps(index).encode(), entry

        entry, conflicts = conditional.update(self.index_path, claim)
        if entry["model_sha256"] != digest:
            raise artifacts.ArtifactError(
                f"run key {run_key!r} is published as version {entry['version']} with another model "
                f"(sha256 {entry['model_sha256']}, not {digest}): use a new run key"
            )
        # the version is this run's alone: write its files (again, if an earlier attempt stopped half-way)
        current = storage.read_bytes(entry["model_uri"]) if storage.exists(entry["model_uri"]) else None
        if current != model:
            storage.write_bytes(entry["model_uri"], model)
        artifacts.write_json(entry["metadata_uri"], {**metadata, **entry})
        return entry, conflicts

    def promoted(self) -> dict[str, Any] | None:
        return self._parse(self.promoted_path, conditional.read(self.promoted_path))

    def promoted_versioned(self) -> tuple[dict[str, Any] | None, str | None]:
        """The promoted pointer and the tag a conditional :meth:`promote` must match (``None``: none yet)."""
        found = conditional.read(self.promoted_path)
        return self._parse(self.promoted_path, found), None if found is None else found.tag

    def require_promoted(self) -> dict[str, Any]:
        found = self.promoted()
        if found is None:
            raise NoPromotedModelError(
                f"no promoted model for project {self.project!r}, feature spec version {self.feature_spec_version!r} "
                f"({self.promoted_path} does not exist): run the training pipeline (if_training) through its deploy "
                "stage first"
            )
        return found

    def promote(self, pointer: dict[str, Any], expected: str | None | object = ANY) -> None:
        """Write ``promoted.json``: only over the pointer tagged ``expected`` (``None``: only if none is
        promoted; :data:`ANY`: over whatever is there, still as a conditional write).

        Raises :class:`~ndr_jobs.datasets.conditional.PreconditionFailedError` when ``expected`` is stale.
        """
        data = artifacts.dumps(pointer).encode()
        if expected is ANY:
            conditional.update(self.promoted_path, lambda _found: (data, None))
        else:
            conditional.write(self.promoted_path, data, expected if isinstance(expected, str) else None)

    def load_promoted_model(self) -> tuple[dict[str, Any], bytes]:
        """The promoted pointer and the model bytes it names, both checked against the index.

        The pointer must be this store's, name a version of the index with that version's own path, run key
        and digest, and the bytes must have that digest; anything else is :class:`UntrustedModelError`.
        """
        pointer = self.require_promoted()
        if not isinstance(pointer, dict):
            raise UntrustedModelError(f"{self.promoted_path} is not a JSON object")
        where = f"the promoted pointer {self.promoted_path}"
        for key, want in (("project_name", self.project), ("feature_spec_version", self.feature_spec_version)):
            if pointer.get(key) != want:
                raise UntrustedModelError(f"{where} names {key} {pointer.get(key)!r}, not {want!r}")
        version = pointer.get("model_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UntrustedModelError(f"{where} has no valid model_version ({version!r})")
        expected_uri = storage.join(self.version_dir(version), "model.tar.gz")
        if pointer.get("model_uri") != expected_uri:
            raise UntrustedModelError(
                f"{where} names model {pointer.get('model_uri')!r}; version {version} of this store is {expected_uri}"
            )
        entry = next((v for v in self.index()["versions"] if v.get("version") == version), None)
        if entry is None:
            raise UntrustedModelError(f"{where} names version {version}, which {self.index_path} does not hold")
        for key in ("run_key", "model_uri", "model_sha256"):
            if entry.get(key) != pointer.get(key):
                raise UntrustedModelError(
                    f"{where} and {self.index_path} disagree on version {version}'s {key}: "
                    f"{pointer.get(key)!r} != {entry.get(key)!r}"
                )
        data = storage.read_bytes(expected_uri)
        if artifacts.sha256(data) != entry["model_sha256"]:
            raise UntrustedModelError(f"{expected_uri} does not match the promoted model's sha256")
        return pointer, data


# --- the training lock ---------------------------------------------------------------------------------------

LOCK_SECONDS_ENV = "NDR_TRAINING_LOCK_SECONDS"
#: the lease of the training lock, renewed by every stage: longer than a stage with its retries
DEFAULT_LOCK_SECONDS = 3 * 3600


@dataclass(frozen=True)
class TrainingLock:
    """One project's training lock: a lease object written with conditional writes.

    A run key holds it from its first stage to the end of its deploy stage (or a failed stage); each stage
    takes it again, which renews the lease. Another run key finds it held until it is released or its lease
    runs out (a run whose container died), and fails with :class:`TrainingLockHeldError`.
    """

    store: ModelStore
    run_key: str
    lease_seconds: int = DEFAULT_LOCK_SECONDS

    @classmethod
    def for_run(cls, store: ModelStore, run_key: str) -> TrainingLock:
        raw = os.environ.get(LOCK_SECONDS_ENV, "").strip()
        if not raw:
            return cls(store, run_key)
        if not raw.isdigit() or not 60 <= int(raw) <= 7 * 86400:
            raise ValueError(f"{LOCK_SECONDS_ENV} must be a whole number of seconds in [60, 604800], not {raw!r}")
        return cls(store, run_key, int(raw))

    @property
    def path(self) -> str:
        return storage.join(self.store.project_base, "training.lock.json")

    def _holder(self, found: conditional.Versioned | None) -> dict[str, Any] | None:
        value = self.store._parse(self.path, found)
        return value if isinstance(value, dict) else None

    def acquire(self, now: float | None = None) -> dict[str, Any]:
        """Take or renew the lock for this run key; the lease written."""

        def take(found: conditional.Versioned | None) -> tuple[bytes | None, dict[str, Any]]:
            moment = time.time() if now is None else now
            holder = self._holder(found)
            others = holder and not holder.get("released") and holder.get("run_key") != self.run_key
            if others and float(holder.get("expires_at", 0)) > moment:
                raise TrainingLockHeldError(
                    f"training run {holder.get('run_key')!r} of project {self.store.project!r} holds "
                    f"{self.path} until {_iso(holder.get('expires_at', 0))}: run again once it has finished (if it "
                    f"died: python -m ndr_jobs.model.registry unlock --root {self.store.root} --project "
                    f"{self.store.project} --run-key {holder.get('run_key')})"
                )
            lease = {"run_key": self.run_key, "acquired_at": _r(moment), "expires_at": _r(moment + self.lease_seconds),
                     "released": False}  # fmt: skip
            return artifacts.dumps(lease).encode(), lease

        return conditional.update(self.path, take)[0]

    def release(self) -> bool:
        """Give the lock up if this run key holds it; whether it did."""

        def give(found: conditional.Versioned | None) -> tuple[bytes | None, bool]:
            holder = self._holder(found)
            if not holder or holder.get("run_key") != self.run_key or holder.get("released"):
                return None, False
            return artifacts.dumps({**holder, "released": True}).encode(), True

        return conditional.update(self.path, give)[0]


def _r(value: float) -> float:
    return round(float(value), 3)


def _iso(epoch: Any) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- SageMaker Model Registry --------------------------------------------------------------------------------


def sagemaker_enabled() -> bool:
    mode = os.environ.get(REGISTRY_ENV, "local").strip().lower()
    if mode not in ("local", "sagemaker"):
        raise ValueError(f"{REGISTRY_ENV} must be 'local' or 'sagemaker', not {mode!r}")
    return mode == "sagemaker"


def package_group_name(project: str, feature_spec_version: str) -> str:
    """``$NDR_MODEL_PACKAGE_GROUP`` or ``<project>-<fsv>-isolation-forest`` made a valid group name."""
    name = os.environ.get(GROUP_ENV) or f"{project}-{feature_spec_version}-isolation-forest"
    name = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", name)).strip("-")[:63]
    if not name:
        raise ValueError("empty model package group name")
    return name


def _sagemaker() -> Any:
    import boto3

    return boto3.client("sagemaker")


def ensure_package_group(client: Any, group: str, description: str) -> None:
    """Create the model package group unless it exists."""
    from botocore.exceptions import ClientError

    try:
        client.describe_model_package_group(ModelPackageGroupName=group)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
            raise
        client.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description)


def register_package(
    project: str, feature_spec_version: str, run_key: str, model_uri: str, metadata: dict[str, str], client: Any = None
) -> dict[str, str]:
    """Create the run's model package version in the registry; returns ``{group, model_package_arn}``."""
    if not storage.is_s3(model_uri):
        raise ValueError(f"the SageMaker Model Registry needs an S3 model artifact, not {model_uri!r}")
    image = os.environ.get(IMAGE_ENV)
    if not image:
        raise ValueError(f"{IMAGE_ENV} (the inference container image) must be set with {REGISTRY_ENV}=sagemaker")
    client = client or _sagemaker()
    group = package_group_name(project, feature_spec_version)
    ensure_package_group(
        client, group, f"ndr Isolation Forest models of {project}, feature spec {feature_spec_version}"
    )
    s3_uri = "s3://" + model_uri.split("://", 1)[1]
    response = client.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"run {run_key}",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": s3_uri}],
            "SupportedContentTypes": ["application/x-parquet"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={k: str(v) for k, v in sorted(metadata.items())},
        ClientToken=artifacts.sha256(f"{group}/{run_key}".encode())[:32],
    )
    return {"group": group, "model_package_arn": response["ModelPackageArn"]}


def set_package_approval(arn: str, approved: bool, reason: str, client: Any = None) -> None:
    """Approve (promoted) or reject (refused) a model package."""
    client = client or _sagemaker()
    client.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="Approved" if approved else "Rejected",
        ApprovalDescription=reason[:1000],
    )


# --- the operator's command: a training lock left by a run that died -----------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m ndr_jobs.model.registry lock|unlock --root R --project P [--run-key K]``.

    ``lock`` prints the project's training lock; ``unlock`` releases it, but only while the run key given is
    the holder (the one the ``TrainingLockHeldError`` named), so a run that took the lock since is never broken.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.model.registry", description=main.__doc__.split("\n")[0])
    parser.add_argument("command", choices=("lock", "unlock"))
    parser.add_argument("--root", required=True, help="the project's storage root (s3://bucket/prefix or a directory)")
    parser.add_argument("--project", required=True)
    parser.add_argument("--run-key", default=None, help="unlock: the holder's run key, as the error named it")
    args = parser.parse_args(argv)
    try:
        store = ModelStore(args.root, args.project, "v0")
        lock = TrainingLock(store, args.run_key or "")
        holder = lock._holder(conditional.read(lock.path))
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "lock":
        print(json.dumps(holder, sort_keys=True) if holder else f"{lock.path}: no lock")
        return 0
    if not args.run_key:
        parser.error("unlock needs --run-key: the run key of the holder")
    if lock.release():
        print(f"{lock.path}: released the lock of run {args.run_key!r}")
        return 0
    now = holder and holder.get("run_key")
    print(f"{lock.path}: not held by run {args.run_key!r} (holder: {now!r}); nothing changed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
