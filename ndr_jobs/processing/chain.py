"""The 15-minute feature chain, in the order its jobs run, defined once.

Each job reads what the jobs before it wrote for the same window: delta -> fg_a -> pair_counts -> fg_c (FG-C
also reads the month's FG-B baselines). The training job's remediation, the benchmark and the evaluation
run the chain from here; the ``features_15m`` pipeline spec declares the same order for SageMaker.
"""

from __future__ import annotations

FEATURE_CHAIN: tuple[str, ...] = ("delta_builder", "fg_a_builder", "pair_counts_builder", "fg_c_builder")


def job_function(name: str) -> tuple[str, str]:
    """(module, function) of a chain job: ``ndr_jobs.processing.<name>_job.run_<name>_from_runtime_config``."""
    return f"ndr_jobs.processing.{name}_job", f"run_{name}_from_runtime_config"
