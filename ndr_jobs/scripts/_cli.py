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

from ndr_jobs.interface import contract, entrypoints
from ndr_jobs.runtime.config import BatchRuntime


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    try:
        main(argv)
    except Exception as exc:  # the traceback for the logs, then one line saying what went wrong
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


class BatchScript:
    """A ``run_*`` script over one mini-batch window: its declared arguments, one job function.

    ``fields`` maps the parsed namespace to the runtime fields beyond the batch window.
    """

    def __init__(
        self,
        module: str,
        doc: str | None,
        job: str,
        function: str,
        runtime: type[BatchRuntime] = BatchRuntime,
        fields: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
    ) -> None:
        self.module, self.doc, self.job, self.function = module, doc, job, function
        self.runtime, self.fields = runtime, fields

    def build_parser(self) -> argparse.ArgumentParser:
        return entrypoints.build_parser(self.module, self.doc)

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
