"""The command line of every ``python -m ndr_jobs.scripts.run_*`` entrypoint, declared once.

Each script builds its parser from its declaration here (:func:`build_parser`), and the compiler checks a
pipeline step's command line against the same parser without importing the script or anything it runs.
Standard library and :mod:`ndr_jobs.interface.contract` only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ndr_jobs.interface import contract


@dataclass(frozen=True)
class Arg:
    """One ``--flag``: what ``parser.add_argument`` receives."""

    flag: str
    type: Callable[[Any], Any] | None = None
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    help: str | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        options: dict[str, Any] = {"required": self.required, "help": self.help}
        if self.type is not None:
            options["type"] = self.type
        if self.choices is not None:
            options["choices"] = list(self.choices)
        if not self.required:
            options["default"] = self.default
        parser.add_argument(self.flag, **options)


PROJECT = (
    Arg("--project-name", contract.identifier, required=True),
    Arg("--feature-spec-version", contract.identifier, required=True),
)
BATCH = (
    *PROJECT,
    Arg("--mini-batch-id", contract.identifier, required=True),
    Arg("--batch-start-ts-iso", contract.window_start, required=True),
    Arg("--batch-end-ts-iso", contract.timestamp, required=True),
)

#: the share of a batch's non-blank lines that may be quarantined before the delta builder fails the batch
DEFAULT_MAX_QUARANTINE_RATIO = 0.5

TRAINING_STAGES = ("verify", "remediate", "reverify", "train", "publish", "attributes", "deploy")


@dataclass(frozen=True)
class AwsAccess:
    """An AWS call a job makes besides its storage: compiled into the pipelines' role (one statement per sid).
    Resources are ARN templates with ``${Region}`` and ``${AccountId}``."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


#: the Redshift Data API, with the secret it authenticates with (``NDR_REDSHIFT_SECRET_ARN`` must name a secret
#: whose name starts with ``ndr``: the role reads no other secret)
REDSHIFT = (
    AwsAccess("RedshiftData", ("redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement"),
              ("arn:aws:redshift-serverless:${Region}:${AccountId}:workgroup/*",
               "arn:aws:redshift:${Region}:${AccountId}:cluster:*")),
    AwsAccess("RedshiftStatements", ("redshift-data:CancelStatement", "redshift-data:DescribeStatement",
                                     "redshift-data:GetStatementResult"), ("*",)),
    AwsAccess("RedshiftSecret", ("secretsmanager:GetSecretValue",),
              ("arn:aws:secretsmanager:${Region}:${AccountId}:secret:ndr*",)),
    AwsAccess("RedshiftCredentials", ("redshift:GetClusterCredentials", "redshift-serverless:GetCredentials"),
              ("arn:aws:redshift:${Region}:${AccountId}:dbuser:*/*",
               "arn:aws:redshift-serverless:${Region}:${AccountId}:workgroup/*")),
)
#: the SageMaker Model Registry (ndr_jobs.model.registry)
MODEL_REGISTRY = (
    AwsAccess("ModelRegistry", ("sagemaker:CreateModelPackage", "sagemaker:CreateModelPackageGroup",
                                "sagemaker:DescribeModelPackageGroup", "sagemaker:UpdateModelPackage"),
              ("arn:aws:sagemaker:${Region}:${AccountId}:model-package-group/*",
               "arn:aws:sagemaker:${Region}:${AccountId}:model-package/*")),
)


@dataclass(frozen=True)
class Entrypoint:
    """A script's arguments, in parser order, and the AWS calls it makes besides its storage."""

    args: tuple[Arg, ...]
    aws: tuple[AwsAccess, ...] = ()


def _batch(*extra: Arg) -> Entrypoint:
    return Entrypoint((*BATCH, *extra))


ENTRYPOINTS: dict[str, Entrypoint] = {
    "ndr_jobs.scripts.run_delta_builder": _batch(
        Arg("--raw-batch-folder", contract.optional(contract.storage_uri), default="",
            help="the mini-batch folder of raw logs"),
        Arg("--max-quarantine-ratio", contract.ratio, default=DEFAULT_MAX_QUARANTINE_RATIO,
            help="fail the batch when a larger share of its non-blank lines is quarantined (1: never)"),
    ),
    "ndr_jobs.scripts.run_fg_a_builder": _batch(),
    "ndr_jobs.scripts.run_pair_counts_builder": _batch(),
    "ndr_jobs.scripts.run_fg_c_builder": _batch(),
    "ndr_jobs.scripts.run_inference_predictions": _batch(),
    "ndr_jobs.scripts.run_prediction_feature_join": Entrypoint(
        (*BATCH, Arg("--publication-target", choices=("s3", "redshift"), default="s3")), aws=REDSHIFT,
    ),
    "ndr_jobs.scripts.run_machine_inventory_unload": Entrypoint(
        (*PROJECT, Arg("--reference-month", contract.month, required=True)), aws=REDSHIFT,
    ),
    "ndr_jobs.scripts.run_fg_b_builder": Entrypoint((
        *PROJECT,
        Arg("--reference-month", contract.month, required=True),
        Arg("--baseline-mode", choices=("regular", "backfill"), default="regular"),
    )),
    "ndr_jobs.scripts.run_if_training": Entrypoint((
        Arg("--stage", required=True, choices=TRAINING_STAGES),
        *PROJECT,
        Arg("--training-start-ts-iso", contract.timestamp, required=True),
        Arg("--training-end-ts-iso", contract.timestamp, required=True),
        Arg("--run-key", contract.run_key, required=True, help="idempotency key of the training run"),
        Arg("--missing-windows-override", contract.window_list, default=[],
            help="JSON array of window start timestamps to remediate instead of the verifier's list"),
    ), aws=MODEL_REGISTRY),
    "ndr_jobs.scripts.run_backfill_windows": Entrypoint((
        *PROJECT,
        Arg("--manifest-uri", contract.storage_uri, required=True,
            help="the window manifest the historical windows extractor wrote (JSON)"),
        Arg("--report-uri", contract.storage_uri, required=True,
            help="this job's per-window progress report (JSON): read to resume, rewritten after each window"),
        Arg("--window-starts", contract.window_list, default=[],
            help="JSON array of the manifest's window starts to run (empty: every window of the manifest)"),
        Arg("--first-window", contract.window_start, default=None,
            help="with --window-mask: the start of the mask's first window"),
        Arg("--window-mask", contract.window_mask, default=None,
            help="one 1 (run) or 0 (skip) per consecutive window from --first-window: the windows to run, "
                 "compact enough for a container argument (instead of --window-starts)"),
        Arg("--max-quarantine-ratio", contract.ratio, default=DEFAULT_MAX_QUARANTINE_RATIO,
            help="the delta builder's guard, per window"),
        Arg("--force", choices=("true", "false"), default="false",
            help="rerun windows the report records as succeeded"),
    )),
    "ndr_jobs.scripts.run_historical_windows_extractor": Entrypoint((
        *PROJECT,
        Arg("--start-ts-iso", contract.timestamp, required=True),
        Arg("--end-ts-iso", contract.timestamp, required=True),
        Arg("--manifest-uri", contract.storage_uri, required=True, help="where to write the window manifest (JSON)"),
        Arg("--raw-prefix", contract.optional(contract.storage_uri), default="",
            help="raw mini-batch prefix; empty: the project's routing"),
    )),
}


def build_parser(module: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of entrypoint ``module`` (a key of :data:`ENTRYPOINTS`); KeyError when it is not declared."""
    entry = ENTRYPOINTS[module]
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    for arg in entry.args:
        arg.add_to(parser)
    return parser
