"""What every ``run_*`` script shares: argument groups and the exit-code contract.

Exit codes: 0 success; 2 bad arguments (argparse); 3 job not implemented; 1 job failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ndr_jobs.runtime import JobNotImplementedError, iso_timestamp


def project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-name", required=True)
    parser.add_argument("--feature-spec-version", required=True)


def batch_arguments(parser: argparse.ArgumentParser) -> None:
    project_arguments(parser)
    parser.add_argument("--mini-batch-id", required=True)
    parser.add_argument("--batch-start-ts-iso", required=True, type=iso_timestamp)
    parser.add_argument("--batch-end-ts-iso", required=True, type=iso_timestamp)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    try:
        main(argv)
    except JobNotImplementedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0
