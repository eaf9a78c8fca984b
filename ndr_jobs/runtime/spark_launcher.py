"""Run ``python -m <module> <args>`` under ``smspark-submit`` on the SageMaker Processing Spark container.

The Spark image carries this file at ``/opt/ndr/spark_launcher.py`` (see
``ndr_compiler/render/sagemaker_pipeline.py``). ``smspark-submit`` builds the ``spark-submit`` command line
with every argument passed through ``shlex.quote`` and runs it with ``/bin/sh``
(``smspark/cli.py::_construct_spark_submit_command`` in aws/sagemaker-spark-container), so the arguments
arrive here exactly as the step's ``ContainerArguments`` hold them; ``tests/test_launcher.py`` runs this
file that way with hostile values. The job's parser then checks each value against ``ndr_jobs.interface.contract``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def main() -> None:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in sorted(json.loads(os.environ.get("NDR_SPARK_CONF", "{}")).items()):
        builder = builder.config(key, value)
    builder.getOrCreate()  # the job's own getOrCreate() returns this session
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
