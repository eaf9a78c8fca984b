"""``python -m ndr_jobs.scripts.run_fg_a_builder``: build FG-A current-behaviour windowed features."""

from __future__ import annotations

import sys

from ndr_jobs.scripts._cli import BatchScript, run

SCRIPT = BatchScript(
    __name__.replace("__main__", "ndr_jobs.scripts.run_fg_a_builder"),
    __doc__,
    "ndr_jobs.processing.fg_a_builder_job",
    "run_fg_a_builder_from_runtime_config",
)
build_parser, parse_runtime, main = SCRIPT.build_parser, SCRIPT.parse_runtime, SCRIPT.main

if __name__ == "__main__":
    sys.exit(run(main))
