"""What every ``run_*`` script shares: argument groups and the exit-code contract.

Exit codes: 0 success; 2 bad arguments (argparse); 1 job failed (the traceback, then one last ``error:`` line
that the local runner and the state machines' failure causes show).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ndr_jobs import contract
from ndr_jobs.runtime import BatchRuntime


def project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-name", required=True, type=contract.identifier)
    parser.add_argument("--feature-spec-version", required=True, type=contract.identifier)


def batch_arguments(parser: argparse.ArgumentParser) -> None:
    project_arguments(parser)
    parser.add_argument("--mini-batch-id", required=True, type=contract.identifier)
    parser.add_argument("--batch-start-ts-iso", required=True, type=contract.window_start)
    parser.add_argument("--batch-end-ts-iso", required=True, type=contract.timestamp)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    try:
        main(argv)
    except Exception as exc:  # the traceback for the logs, then one line saying what went wrong
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


class BatchScript:
    """A ``run_*`` script over one mini-batch window: the batch arguments, optional extras, one job function.

    ``extra`` adds script-specific arguments; ``fields`` maps the parsed namespace to the extra runtime fields.
    """

    def __init__(
        self,
        module: str,
        doc: str | None,
        job: str,
        function: str,
        runtime: type[BatchRuntime] = BatchRuntime,
        extra: Callable[[argparse.ArgumentParser], None] | None = None,
        fields: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
    ) -> None:
        self.module, self.doc, self.job, self.function = module, doc, job, function
        self.runtime, self.extra, self.fields = runtime, extra, fields

    def build_parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m {self.module}", description=self.doc)
        batch_arguments(parser)
        if self.extra:
            self.extra(parser)
        return parser

    def parse_runtime(self, argv: Sequence[str] | None = None) -> BatchRuntime:
        parser = self.build_parser()
        a = parser.parse_args(argv)
        try:
            contract.window(a.batch_start_ts_iso, a.batch_end_ts_iso)
        except contract.ContractError as exc:
            parser.error(str(exc))
        return self.runtime(
            project_name=a.project_name,
            feature_spec_version=a.feature_spec_version,
            mini_batch_id=a.mini_batch_id,
            batch_start_ts=a.batch_start_ts_iso,
            batch_end_ts=a.batch_end_ts_iso,
            **(self.fields(a) if self.fields else {}),
        )

    def main(self, argv: Sequence[str] | None = None) -> None:
        job = importlib.import_module(self.job)  # processing modules may import Spark: only when run
        getattr(job, self.function)(self.parse_runtime(argv))
