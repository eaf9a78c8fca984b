"""One Spark session per process, configured the same way for every job.

* Under ``spark-submit`` (the SageMaker Processing Spark container, where ``spark_launcher`` has already
  created the session with the step's ``NDR_SPARK_CONF``) the existing session is returned: only the SQL
  semantics in ``_FORCED`` (UTC, ``TIMESTAMP_MICROS`` Parquet timestamps, ANSI mode, the corrected datetime
  parser) are set, nothing else is overridden.
* Otherwise a local session is started: ``local[*]`` (or ``NDR_SPARK_MASTER``), UTC, a few shuffle
  partitions (AQE coalesces them further), no UI, quiet logs (on stderr), Python workers on this
  interpreter, ``NDR_SPARK_DRIVER_MEMORY`` (default 2g), extra JVM options from
  ``NDR_SPARK_JAVA_OPTIONS``; then the step's ``NDR_SPARK_CONF`` (JSON, as on a cluster) on top, except the settings
  that size the cluster (shuffle partitions, parallelism, executor and driver resources).

The jobs run on the Spark of SageMaker's Spark 3.5 Processing image (docs/runtime.md), on Java 17 as there.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: log4j2 configuration of a local session: errors only (not the start-up warnings about native Hadoop or the
#: loopback address), on stderr, so that stdout carries nothing but what jobs print (their JSON summaries)
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.spark.name = org.apache.spark
logger.spark.level = error
"""


#: the step's Spark settings (JSON object), as the compiler renders ``processor.spark_config``
SPARK_CONF_ENV = "NDR_SPARK_CONF"
#: settings every session gets, even one created by someone else: data written is UTC, standard Parquet; and the SQL
#: semantics pinned rather than left to the Spark version's defaults (3.5 has ANSI mode off and the EXCEPTION parser
#: policy, 4.0 has them on and CORRECTED): ANSI casts, arithmetic and sums raise instead of returning NULL or
#: wrapping around (ndr_jobs.features.hash_agg relies on it), size(NULL) is NULL, not -1
_FORCED = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}


def _log4j2_file() -> Path:
    path = Path(tempfile.gettempdir()) / "ndr-spark-log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J2:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_LOG4J2)
        tmp.replace(path)
    return path


def local_conf(cores: int | None = None) -> dict[str, str]:
    """The configuration of a local session (exposed for tests and benchmarks)."""
    cores = cores or os.cpu_count() or 2
    master = os.environ.get("NDR_SPARK_MASTER", "local[*]")
    java_options = f"-Dlog4j2.configurationFile=file:{_log4j2_file()} {os.environ.get('NDR_SPARK_JAVA_OPTIONS', '')}"
    loopback = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}
    return {
        "spark.master": master,
        "spark.driver.memory": os.environ.get("NDR_SPARK_DRIVER_MEMORY", "2g"),
        "spark.driver.extraJavaOptions": java_options,
        **(loopback if master.startswith("local") else {}),
        **_FORCED,
        "spark.sql.shuffle.partitions": str(max(2, cores)),
        "spark.default.parallelism": str(max(2, cores)),
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "static",
        # small local jobs: no need to wait for locality
        "spark.locality.wait": "0s",
    }


#: step settings sized for the SageMaker cluster (64 shuffle partitions, executor memory, ...); a local session
#: keeps its own sizing for this machine's cores: tiny local batches would pay for dozens of empty tasks
_CLUSTER_SIZING = ("spark.sql.shuffle.partitions", "spark.default.parallelism", "spark.executor.", "spark.driver.")


def _sizes_cluster(key: str) -> bool:
    return key.startswith(_CLUSTER_SIZING)


def _under_spark_submit() -> bool:
    """True when this Python process was started by ``spark-submit`` (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(app_name: str = "ndr", conf: Mapping[str, str] | None = None) -> SparkSession:
    """The process's Spark session, created on first use (see the module doc); ``conf`` adds settings.

    Settings in ``conf`` apply when the session is created; on an existing session only runtime SQL
    settings (``spark.sql.*``) can change, and they are set.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is None and not _under_spark_submit():
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.appName(app_name)
        step_conf = {  # as spark_launcher applies it on a cluster, minus the settings that size the cluster
            k: v for k, v in json.loads(os.environ.get(SPARK_CONF_ENV, "{}")).items() if not _sizes_cluster(k)
        }
        for key, value in sorted({**local_conf(), **step_conf, **(conf or {})}.items()):
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session
    session = active or SparkSession.builder.appName(app_name).getOrCreate()
    for key, value in _FORCED.items():
        session.conf.set(key, value)
    for key, value in (conf or {}).items():
        if key.startswith("spark.sql."):
            session.conf.set(key, value)
    return session


#: for a job whose cached frame is read right after it is built (a count, then a write): compressing the cache
#: costs more than it saves (FG-A on the 5M-line benchmark batch, back to back: 8.5-9.8 s against 10.3-11.0 s)
UNCOMPRESSED_CACHE = {"spark.sql.inMemoryColumnarStorage.compressed": "false"}
#: for aggregations into many groups (FG-A's per-destination sums: ~1.4M groups from ~1.4M rows): no small
#: first-level hash map in front of the main one, which fills at once and then only adds a failed lookup per row
#: (FG-A on the 5M-line benchmark batch, alternating: 9.0-11.0 s against 10.0-12.2 s)
ONE_LEVEL_AGGREGATE_MAP = {"spark.sql.codegen.aggregate.map.twolevel.enabled": "false"}


@contextmanager
def sql_conf(session: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Runtime SQL settings (``spark.sql.*``) for the duration of a block, restored after it (a job that tunes its
    own reads does not change the session for the next job run in the same process)."""
    before = {key: session.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        session.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                session.conf.unset(key)
            else:
                session.conf.set(key, value)
