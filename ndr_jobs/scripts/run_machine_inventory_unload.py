"""``python -m ndr_jobs.scripts.run_machine_inventory_unload``: unload the active machine inventory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndr_jobs.interface import entrypoints
from ndr_jobs.runtime.config import MonthlyRuntime
from ndr_jobs.scripts._cli import run


def build_parser() -> argparse.ArgumentParser:
    return entrypoints.build_parser("ndr_jobs.scripts.run_machine_inventory_unload", __doc__)


def parse_runtime(argv: Sequence[str] | None = None) -> MonthlyRuntime:
    a = build_parser().parse_args(argv)
    return MonthlyRuntime(
        project_name=a.project_name, feature_spec_version=a.feature_spec_version, reference_month=a.reference_month
    )


def main(argv: Sequence[str] | None = None) -> None:
    from ndr_jobs.processing.machine_inventory_unload_job import run_machine_inventory_unload_from_runtime_config

    run_machine_inventory_unload_from_runtime_config(parse_runtime(argv))


if __name__ == "__main__":
    sys.exit(run(main))
