"""``python -m ndr_jobs.scripts.run_pair_counts_builder``: count (src_ip, dst_ip, dst_port) per 15-minute slice."""

from __future__ import annotations

import sys

from ndr_jobs.scripts._cli import BatchScript, run

SCRIPT = BatchScript(
    __name__.replace("__main__", "ndr_jobs.scripts.run_pair_counts_builder"),
    __doc__,
    "ndr_jobs.processing.pair_counts_builder_job",
    "run_pair_counts_builder_from_runtime_config",
)
build_parser, parse_runtime, main = SCRIPT.build_parser, SCRIPT.parse_runtime, SCRIPT.main

if __name__ == "__main__":
    sys.exit(run(main))
