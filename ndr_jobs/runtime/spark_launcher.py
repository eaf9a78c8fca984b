"""Run ``python -m <module> <args>`` under ``smspark-submit`` on the SageMaker Processing Spark container.

The Spark image carries this file at ``/opt/ndr/spark_launcher.py`` (see
``ndr_compiler/render/sagemaker_pipeline.py``). ``smspark-submit`` builds the ``spark-submit`` command line
with every argument passed through ``shlex.quote`` and runs it with ``/bin/sh``
(``smspark/cli.py::_construct_spark_submit_command`` in aws/sagemaker-spark-container), so the arguments
arrive here exactly as the step's ``ContainerArguments`` hold them; ``tests/test_launcher.py`` runs this
file that way with hostile values. The job's parser then checks each value against ``ndr_jobs.interface.contract``.

A fused Processing job (a pipeline spec's ``fuse`` group) runs ``spark_launcher.py --fused`` followed by, for
each spec step in order, ``<step name> <module> <n> <n arguments>``: the jobs run one after the other in this
one process and Spark session, and the first that fails ends the job with its exit code and a last stderr line
naming it. Names, modules and counts are literals the compiler wrote; a parameter value is only ever inside a
counted run of arguments, so it cannot shift a boundary. With ``NDR_FUSED_REPORT`` set to a file path, one JSON
line per step that ran is appended to it (name, exit code, seconds, Spark application id, its stdout and stderr):
how the local runner reports each fused step under its own name. With ``NDR_FUSED_STOP`` set to a path, the job
stops before its next step once that file exists (exit status 143, as a stopped container's): the local
stand-in of SageMaker stopping the job.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import time
import traceback
from typing import IO, Any

from ndr_jobs.interface.fused import FUSED_FLAG, FusedArgumentsError, parse_fused

REPORT_ENV = "NDR_FUSED_REPORT"
STOP_ENV = "NDR_FUSED_STOP"
#: the exit status of a job stopped between two steps (128 + SIGTERM, what a stopped container reports)
STOPPED_EXIT = 143


class _Tee(io.TextIOBase):
    """Writes through to ``target`` and keeps a copy (a fused step's own output, for its report)."""

    def __init__(self, target: IO[str]) -> None:
        self.target = target
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()


def _run_module(module: str, arguments: list[str]) -> int:
    """``python -m module arguments`` in this process: its exit status (an uncaught exception: traceback, 1)."""
    saved = list(sys.argv)
    sys.argv = [module, *arguments]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - reported as python reports it, then named by the caller
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
    return 0


def _application_id() -> str | None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    return session.sparkContext.applicationId if session is not None else None


def _session() -> None:
    """The one Spark session of the job, before its first step: under spark-submit with the step's
    ``NDR_SPARK_CONF`` (as a single step gets it); elsewhere (a local run) as ``ndr_jobs.runtime.spark`` starts
    a local one. Every job's own ``getOrCreate()`` then returns it."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        for key, value in sorted(json.loads(os.environ.get("NDR_SPARK_CONF", "{}")).items()):
            builder = builder.config(key, value)
        builder.getOrCreate()
    else:
        from ndr_jobs.runtime.spark import spark_session

        spark_session()


def run_fused(argv: list[str]) -> int:
    """Run each step of a ``--fused`` command line in order in one Spark session; the first failure ends it."""
    try:
        steps = parse_fused(argv)
    except FusedArgumentsError as exc:
        print(f"spark_launcher: FusedArgumentsError: {exc}", file=sys.stderr)
        return 2
    report_path = os.environ.get(REPORT_ENV)
    stop_path = os.environ.get(STOP_ENV)
    for k, step in enumerate(steps, start=1):
        if stop_path and os.path.exists(stop_path):
            print(f"spark_launcher: FusedJobStopped: stopped before step {step.name} ({k} of {len(steps)})",
                  file=sys.stderr)
            return STOPPED_EXIT
        if k == 1:
            _session()
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _run_module(step.module, step.arguments)
            if code != 0:
                tail = (err.copy.getvalue().strip().splitlines() or [f"exit code {code}"])[-1]
                print(f"spark_launcher: FusedStepFailed: step {step.name} ({k} of {len(steps)}, {step.module}) "
                      f"failed with exit code {code}: {tail}", file=sys.stderr)
        sys.stdout.flush()
        if report_path:
            record: dict[str, Any] = {
                "step": step.name, "module": step.module, "exit_code": code,
                "seconds": round(time.perf_counter() - started, 3), "spark_application_id": _application_id(),
                "stdout": out.copy.getvalue(), "stderr": err.copy.getvalue(),
            }
            with open(report_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        if code != 0:
            return code
    return 0


def main() -> None:
    if sys.argv[1:2] == [FUSED_FLAG]:
        sys.exit(run_fused(sys.argv[2:]))
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
