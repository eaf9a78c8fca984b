"""The model store (versions index, ``promoted`` pointer) and the SageMaker Model Registry.

Model store -- always written, under the storage root (a local directory, or S3 in AWS)::

    <root>/model_registry/<project>/feature_spec_version=<v>/
        index.json               {"versions": [{version, run_key, model_uri, model_sha256, ...}], ...}
        versions/<n>/model.tar.gz
        versions/<n>/metadata.json
        promoted.json            the version inference uses: {version, run_key, model_uri, model_sha256, ...}

Versions count from 1 in publish order; publishing a run key that the index already holds returns its
version (idempotent). The index is read, extended and rewritten whole: publishes of one project and spec
version must not run concurrently (the training orchestrator runs one training at a time per project).
``promoted.json`` is the only thing inference reads; the deploy stage writes it.

SageMaker Model Registry -- with ``NDR_MODEL_REGISTRY=sagemaker``: publish also creates the model package
group if needed (``NDR_MODEL_PACKAGE_GROUP``, default ``<project>-<spec version>-isolation-forest`` with
every character outside ``[A-Za-z0-9-]`` turned into ``-``) and a model package version whose
``ModelDataUrl`` is the store's S3 ``model.tar.gz`` and whose container image is ``NDR_MODEL_IMAGE_URI``,
``PendingManualApproval``, with the run key in its metadata and a ``ClientToken`` derived from group and
run key (a retried call creates no second package). Deploy sets it ``Approved`` or ``Rejected``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ndr_jobs.datasets import storage
from ndr_jobs.model import artifacts

REGISTRY_ENV = "NDR_MODEL_REGISTRY"
GROUP_ENV = "NDR_MODEL_PACKAGE_GROUP"
IMAGE_ENV = "NDR_MODEL_IMAGE_URI"


class NoPromotedModelError(LookupError):
    """No model is promoted for a project and feature spec version."""


@dataclass(frozen=True)
class ModelStore:
    """The model store of one project and feature spec version."""

    root: str
    project: str
    feature_spec_version: str

    @property
    def base(self) -> str:
        return storage.join(
            self.root, "model_registry", artifacts.check_segment("project name", self.project),
            f"feature_spec_version={artifacts.check_segment('feature spec version', self.feature_spec_version)}",
        )  # fmt: skip

    @property
    def index_path(self) -> str:
        return storage.join(self.base, "index.json")

    @property
    def promoted_path(self) -> str:
        return storage.join(self.base, "promoted.json")

    def version_dir(self, version: int) -> str:
        return storage.join(self.base, "versions", str(version))

    def index(self) -> dict[str, Any]:
        found = artifacts.read_json_if_exists(self.index_path)
        return found or {"project": self.project, "feature_spec_version": self.feature_spec_version, "versions": []}

    def entry_for(self, run_key: str) -> dict[str, Any] | None:
        return next((v for v in self.index()["versions"] if v["run_key"] == run_key), None)

    def publish(self, run_key: str, model: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
        """Add the run's model as the next version (or return the version it already has)."""
        existing = self.entry_for(run_key)
        if existing is not None:
            return existing
        index = self.index()
        version = 1 + max((v["version"] for v in index["versions"]), default=0)
        folder = self.version_dir(version)
        model_uri = storage.join(folder, "model.tar.gz")
        entry = {
            "version": version,
            "run_key": run_key,
            "model_uri": model_uri,
            "model_sha256": artifacts.sha256(model),
            "metadata_uri": storage.join(folder, "metadata.json"),
        }
        storage.write_bytes(model_uri, model)
        artifacts.write_json(entry["metadata_uri"], {**metadata, **entry})
        index["versions"] = [*index["versions"], entry]
        artifacts.write_json(self.index_path, index)
        return entry

    def promoted(self) -> dict[str, Any] | None:
        return artifacts.read_json_if_exists(self.promoted_path)

    def require_promoted(self) -> dict[str, Any]:
        found = self.promoted()
        if found is None:
            raise NoPromotedModelError(
                f"no promoted model for project {self.project!r}, feature spec version {self.feature_spec_version!r} "
                f"({self.promoted_path} does not exist): run the training pipeline (if_training) through its deploy "
                "stage first"
            )
        return found

    def promote(self, pointer: dict[str, Any]) -> None:
        artifacts.write_json(self.promoted_path, pointer)

    def load_promoted_model(self) -> tuple[dict[str, Any], bytes]:
        """The promoted pointer and the model bytes it names (checked against its sha256)."""
        pointer = self.require_promoted()
        data = storage.read_bytes(pointer["model_uri"])
        if artifacts.sha256(data) != pointer["model_sha256"]:
            raise artifacts.ArtifactError(f"{pointer['model_uri']} does not match the promoted model's sha256")
        return pointer, data


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
