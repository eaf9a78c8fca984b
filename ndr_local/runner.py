"""``ndr-compile run``: a compiled state machine executed offline, its pipelines running the real jobs.

Step Functions is moto's interpreter (see ``sfn_runtime``); DynamoDB tables are seeded from the project
spec; ``startPipelineExecution`` starts :func:`run_pipeline` on a background thread, so an execution moves
Executing -> Succeeded or Failed as the jobs do; events go to a capture queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndr_compiler.expand.pipeline import default_pipeline_name
from ndr_jobs.interface.contract import parse_utc
from ndr_jobs.interface.progress import Progress
from ndr_local.pipeline_runner import Executor, PipelineRun, run_pipeline
from ndr_local.sfn_runtime import PipelineNotRunning


@dataclass
class LocalPipelines:
    """A :class:`~ndr_local.sfn_runtime.PipelineRuntime` that runs the compiled pipelines' jobs."""

    generated: Path
    names: dict[str, str]  # SageMaker pipeline name -> pipeline spec name
    values: Mapping[str, str]
    echo: Callable[[str], None] | None = None
    executor: Executor | None = None
    #: stepped as each pipeline run ends
    progress: Progress | None = None
    runs: list[tuple[str, dict[str, str], PipelineRun | None]] = field(default_factory=list)
    #: every start, as (pipeline spec, parameters, execution ARN), in order
    started: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _state: dict[str, PipelineRun | None] = field(default_factory=dict)
    _stops: dict[str, threading.Event] = field(default_factory=dict)
    #: notified as each run ends (on ``_lock``)
    _ended: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._ended = threading.Condition(self._lock)

    def start(self, pipeline_name: str, execution_arn: str, parameters: dict[str, str]) -> None:
        spec = self.names[pipeline_name]
        stop = threading.Event()
        with self._lock:
            self._state[execution_arn] = None
            self._stops[execution_arn] = stop
            self.started.append((spec, dict(parameters), execution_arn))
        if self.echo:
            self.echo(f"pipeline {spec} started ({parameters.get('MiniBatchId') or parameters.get('RunKey') or ''})")

        def work() -> None:
            run = run_pipeline(self.generated, spec, parameters, self.values, executor=self.executor, stop=stop)
            with self._lock:
                self._state[execution_arn] = run
                self.runs.append((spec, dict(parameters), run))
                self._ended.notify_all()
            if self.echo:
                steps = ", ".join(f"{s.name} {s.status}" + (f" {s.seconds:.1f}s" if s.status != "NotStarted" else "")
                                  for s in run.steps)
                self.echo(f"pipeline {spec} {run.status}: {steps}")
            if self.progress:
                what = parameters.get("MiniBatchId") or parameters.get("RunKey") or ""
                self.progress.step(f"{spec} {run.status} ({what})")

        threading.Thread(target=work, name=f"pipeline-{spec}", daemon=True).start()

    def describe(self, execution_arn: str) -> tuple[str, str | None]:
        with self._lock:
            run = self._state[execution_arn]
            stopping = self._stops[execution_arn].is_set()
        if run is None:
            return ("Stopping" if stopping else "Executing"), None
        return run.status, run.failure_reason

    def wait_for_end(self, execution_arns: list[str], timeout_s: float, interrupt: threading.Event) -> str:
        """Sleep ``timeout_s``, but return as soon as ``interrupt`` is set or every execution of
        ``execution_arns`` that this runtime started has ended (the whole time when it started none of them);
        returns why: ``ended``, ``interrupted`` or ``elapsed``."""
        deadline = time.monotonic() + timeout_s
        with self._ended:
            while not interrupt.is_set():
                mine = [arn for arn in execution_arns if arn in self._state]
                if mine and all(self._state[arn] is not None for arn in mine):
                    return "ended"
                left = deadline - time.monotonic()
                if left <= 0:
                    return "elapsed"
                self._ended.wait(min(left, 0.05))  # short, to see ``interrupt`` too
        return "interrupted"

    def stop(self, execution_arn: str) -> None:
        with self._lock:
            run = self._state[execution_arn]
            if run is not None:
                raise PipelineNotRunning(f"pipeline execution {execution_arn} is {run.status}")
            self._stops[execution_arn].set()
        if self.echo:
            self.echo(f"pipeline execution {execution_arn.rsplit('/', 1)[-1]} asked to stop")


def local_pipeline_names(pipelines: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(placeholder -> local SageMaker name, local SageMaker name -> pipeline spec name)."""
    placeholders, names = {}, {}
    for spec_name, p in pipelines.items():
        local = default_pipeline_name(spec_name)
        names[local] = spec_name
        for ph in p.placeholders:
            placeholders[ph] = local
    return placeholders, names


def expected_runs(payload: Any, chunk_windows: Any = None) -> int | None:
    """How many pipeline runs an execution input asks for, when it says: a backfill request (``start_ts`` ..
    ``end_ts``) runs the historical windows extractor, then one job per chunk of ``chunk_windows`` windows (the
    project's ``backfill_chunk_windows``, 96 by default; the extractor may find fewer windows with data);
    otherwise None."""
    if not isinstance(payload, dict) or not {"start_ts", "end_ts"} <= payload.keys():
        return None
    try:
        seconds = (parse_utc(payload["end_ts"]) - parse_utc(payload["start_ts"])).total_seconds()
        chunk = max(1, min(192, round(float(chunk_windows if chunk_windows is not None else 96))))
    except (AttributeError, TypeError, ValueError):
        return None
    windows = max(0, -(-int(seconds) // 900))
    return 1 + -(-windows // chunk)
