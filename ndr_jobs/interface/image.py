"""The runtime the Spark jobs ship on: SageMaker's Spark Processing image, as the SageMaker SDK names it, and the
versions tied to it (docs/runtime.md). ``tests/test_packaging.py`` checks these against the SDK's image config,
the lock files and the installed PySpark; the job library's tests run on that PySpark.
"""

from __future__ import annotations

#: the SDK's framework version of the image (``image_uris.retrieve("spark", region, version=..., py_version=...)``)
SPARK_FRAMEWORK_VERSION = "3.5"
#: the image's Python variant, and that Python (AL2023's python3.12; PYSPARK_PYTHON=/usr/local/bin/python3)
SPARK_PY_VERSION = "py312"
SPARK_IMAGE_PYTHON = "3.12"
#: the Spark inside: the 3.5 py312 image installs EMR 7.12.0's Spark (3.5.6-amzn-1) from EMR's yum repository
#: (aws/sagemaker-spark-container, spark/processing/3.5/py3/yum/emr-apps.repo); ``pyspark`` is pinned to it
SPARK_VERSION = "3.5.6"
EMR_RELEASE = "emr-7.12.0"
#: the repository of the image in SageMaker's ECR registry of each region
SPARK_IMAGE_REPOSITORY = "sagemaker-spark-processing"
