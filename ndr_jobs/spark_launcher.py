"""Run ``python -m <module> <args>`` under ``smspark-submit`` on the SageMaker Processing Spark container.

The Spark image carries this file at ``/opt/ndr/spark_launcher.py`` (see
``ndr_compiler/render/sagemaker_pipeline.py``). ``smspark-submit`` re-joins application arguments with
spaces through ``/bin/sh``, which drops empty values and strips quotes; when the processing job's config
(``/opt/ml/config/processingjobconfig.json``) carries the step's ``ContainerArguments`` with parameters
resolved, those unsplit arguments are used instead of ``sys.argv``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

JOB_CONFIG = Path("/opt/ml/config/processingjobconfig.json")


def _arguments(argv: list[str]) -> list[str]:
    try:
        config = json.loads(JOB_CONFIG.read_text())
        args = config["AppSpecification"]["ContainerArguments"]
        if isinstance(args, list) and all(isinstance(a, str) for a in args):
            return args
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return argv


def main() -> None:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in sorted(json.loads(os.environ.get("NDR_SPARK_CONF", "{}")).items()):
        builder = builder.config(key, value)
    builder.getOrCreate()  # the job's own getOrCreate() returns this session
    module = sys.argv[1]
    sys.argv = [module, *_arguments(sys.argv[2:])]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
