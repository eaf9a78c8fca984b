"""Run a compiled SageMaker pipeline on this machine: its steps in dependency order, each as
``python -m <module> <arguments>`` exactly as the generated definition says (parameters resolved, the
Spark launcher replaced by the local interpreter and local Spark), with the step's environment.

This is the local stand-in for a SageMaker pipeline execution; the offline Step Functions runtime uses it
so that ``startPipelineExecution`` really runs the jobs.

A fused step (``spark_launcher.py --fused ...``) runs through the launcher itself, as
``python -m ndr_jobs.runtime.spark_launcher --fused ...``: its jobs in one process and Spark session. The
launcher's per-step report (``NDR_FUSED_REPORT``) gives one :class:`StepResult` per spec step, under the spec
step's own name (``job`` names the Processing step); the steps after a failure are ``NotStarted``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndr_compiler.deploy.placeholders import PLACEHOLDER
from ndr_jobs.interface import fused
from ndr_jobs.runtime import spark_launcher
from ndr_local.step_worker import StepOutcome, SubprocessExecutor, WarmExecutor

Executor = SubprocessExecutor | WarmExecutor

SPARK_SUBMIT = "smspark-submit"
LAUNCHER_MODULE = "ndr_jobs.runtime.spark_launcher"


class PipelineRunError(Exception):
    pass


@dataclass
class StepResult:
    name: str
    status: str  # Succeeded | Failed | NotStarted
    seconds: float = 0.0
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    argv: list[str] = field(default_factory=list)
    #: the Processing step that ran it (a fused job's name; the step's own otherwise)
    job: str = ""
    spark_application_id: str | None = None

    @property
    def summary(self) -> dict[str, Any] | None:
        """The job's summary: the last stdout line when it is a JSON object (every ndr job prints one)."""
        lines = self.stdout.strip().splitlines()
        if not lines:
            return None
        try:
            value = json.loads(lines[-1])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


@dataclass
class PipelineRun:
    pipeline: str
    status: str  # Succeeded | Failed | Stopped
    steps: list[StepResult]

    @property
    def failure_reason(self) -> str | None:
        for s in self.steps:
            if s.status == "Failed":
                tail = (s.stderr.strip().splitlines() or [f"exit code {s.exit_code}"])[-1]
                return f"step {s.name} failed (exit {s.exit_code}): {tail}"
        return None


def load_definition(generated: Path, pipeline: str) -> dict[str, Any]:
    path = generated / "pipelines" / f"{pipeline}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (generated / "pipelines").glob("*.json")))
        raise PipelineRunError(f"no compiled pipeline '{pipeline}' in {generated}/pipelines (known: {known})")
    return json.loads(path.read_text())


def resolve_parameters(definition: dict[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise PipelineRunError(f"unknown parameter(s): {', '.join(unknown)} (declared: {', '.join(declared)})")
    values = {}
    for name, p in declared.items():
        if name in given:
            values[name] = str(given[name])
        elif "DefaultValue" in p:
            v = p["DefaultValue"]
            values[name] = ("true" if v else "false") if isinstance(v, bool) else str(v)
        else:
            raise PipelineRunError(f"parameter '{name}' is required (no default)")
    return values


def _value(arg: Any, params: Mapping[str, str]) -> str:
    if isinstance(arg, dict) and "Get" in arg and str(arg["Get"]).startswith("Parameters."):
        return params[arg["Get"].removeprefix("Parameters.")]
    if isinstance(arg, str):
        return arg
    raise PipelineRunError(f"unsupported argument expression {arg!r}")


def step_command(step: dict[str, Any], params: Mapping[str, str]) -> list[str]:
    app = step["Arguments"]["AppSpecification"]
    entry = list(app["ContainerEntrypoint"])
    args = [_value(a, params) for a in app.get("ContainerArguments", [])]
    if entry and entry[0] == SPARK_SUBMIT and entry[-1] == fused.FUSED_FLAG:
        return [sys.executable, "-m", LAUNCHER_MODULE, fused.FUSED_FLAG, *args]  # the launcher runs them
    if entry and entry[0] == SPARK_SUBMIT:
        module = entry[-1]  # smspark-submit <launcher> <module>: locally, the module on local Spark
    elif entry[:2] in (["python3", "-m"], ["python", "-m"]):
        module = entry[2]
    else:
        raise PipelineRunError(f"step {step['Name']}: unsupported entrypoint {entry}")
    return [sys.executable, "-m", module, *args]


def is_fused(argv: list[str]) -> bool:
    return argv[2:4] == [LAUNCHER_MODULE, fused.FUSED_FLAG]


def part_commands(step: dict[str, Any], params: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Each spec step a compiled step runs, as ``(name, [python, -m, module, *args])``: a fused step's commands
    in order, or the step itself."""
    argv = step_command(step, params)
    if not is_fused(argv):
        return [(step["Name"], argv)]
    try:
        parts = fused.parse_fused(argv[4:])
    except fused.FusedArgumentsError as exc:
        raise PipelineRunError(f"step {step['Name']}: {exc}") from exc
    return [(p.name, [sys.executable, "-m", p.module, *p.arguments]) for p in parts]


def _fused_results(step: dict[str, Any], parts: list[tuple[str, list[str]]], outcome: StepOutcome,
                   report: list[dict[str, Any]], seconds: float, stopped: bool) -> list[StepResult]:
    """One result per spec step of a fused job, from the launcher's report; a step it did not report is the one
    that failed when the job failed before reporting it (e.g. a dead worker), and those after it NotStarted;
    when the run was stopped and the launcher stopped, the unreported steps are NotStarted."""
    by_name = {r["step"]: r for r in report}
    results: list[StepResult] = []
    ended = False  # a step failed, or the job stopped: the steps after it never started
    for name, argv in parts:
        r = by_name.get(name)
        if ended:
            results.append(StepResult(name, "NotStarted", argv=argv, job=step["Name"]))
        elif r is not None:
            ok = r["exit_code"] == 0
            ended = not ok
            results.append(StepResult(name, "Succeeded" if ok else "Failed", float(r["seconds"]), r["exit_code"],
                                      r["stdout"], r["stderr"] if ok else r["stderr"] or outcome.stderr, argv,
                                      step["Name"], r.get("spark_application_id")))
        elif stopped:
            ended = True
            results.append(StepResult(name, "NotStarted", argv=argv, job=step["Name"]))
        elif outcome.exit_code != 0:
            ended = True
            results.append(StepResult(name, "Failed", seconds, outcome.exit_code, outcome.stdout, outcome.stderr,
                                      argv, step["Name"]))
        else:
            raise PipelineRunError(f"fused step {step['Name']} succeeded without running {name}")
    return results


def _run_fused(executor: Executor, argv: list[str], env: dict[str, str], cwd: Path | None,
               stop: threading.Event | None) -> tuple[StepOutcome, list[dict[str, Any]]]:
    """Run a fused job through the launcher with a report file and, while ``stop`` may be set, a stop file the
    launcher checks before each of its steps (so a stop lands between two spec steps, as between two jobs)."""
    with tempfile.TemporaryDirectory(prefix="ndr-fused-") as tmp:
        report_path, stop_path = Path(tmp) / "report.jsonl", Path(tmp) / "stop"
        env = {**env, spark_launcher.REPORT_ENV: str(report_path), spark_launcher.STOP_ENV: str(stop_path)}
        done = threading.Event()

        def watch() -> None:
            while stop is not None and not done.is_set():
                if stop.wait(0.2):
                    stop_path.touch()
                    return

        watcher = threading.Thread(target=watch, name="fused-stop-watch", daemon=True)
        watcher.start()
        try:
            outcome = executor.run(argv, env, str(cwd) if cwd else None)
        finally:
            done.set()
            watcher.join()
        lines = report_path.read_text(encoding="utf-8").splitlines() if report_path.exists() else []
    return outcome, [json.loads(line) for line in lines]


def _order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {s["Name"]: s for s in steps}
    done: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in trail:
            raise PipelineRunError(f"dependency cycle: {' -> '.join([*trail, name])}")
        for dep in by_name[name].get("DependsOn", []):
            visit(dep, (*trail, name))
        done.append(name)

    for s in steps:
        visit(s["Name"], ())
    return [by_name[n] for n in done]


def run_pipeline(generated: Path, pipeline: str, given: Mapping[str, str], values: Mapping[str, str],
                 cwd: Path | None = None, echo: Any = None, executor: Executor | None = None,
                 stop: threading.Event | None = None) -> PipelineRun:
    """Run every step; ``values`` resolves ``${...}`` in step environments (e.g. NdrStorageRoot).

    ``executor`` runs each ``python -m`` command: a fresh process per step by default, or a
    :class:`~ndr_local.step_worker.WarmExecutor` that keeps one Spark JVM across steps. Once
    ``stop`` is set, no further step starts and the run ends ``Stopped`` (the step under way finishes: the
    local stand-in of SageMaker stopping a pipeline's running processing job).
    """
    executor = executor or SubprocessExecutor()
    definition = load_definition(generated, pipeline)
    params = resolve_parameters(definition, given)
    results: list[StepResult] = []
    failed = stopped = False
    for step in _order(definition["Steps"]):
        argv = step_command(step, params)
        parts = part_commands(step, params)
        stopped = stopped or (stop is not None and stop.is_set() and not failed)
        if failed or stopped:
            results += [StepResult(name, "NotStarted", argv=a, job=step["Name"]) for name, a in parts]
            continue
        env = dict(os.environ)
        for key, raw in step["Arguments"].get("Environment", {}).items():
            resolved = PLACEHOLDER.sub(lambda m: values.get(m.group(1), os.environ.get(m.group(1), m.group(0))), raw)
            if not PLACEHOLDER.search(resolved):  # a value nobody gave stays unset, never a literal ${...}
                env[key] = resolved
        if echo:
            echo(f"  {pipeline} / {step['Name']}: {' '.join(argv[1:])}")
        t = time.perf_counter()
        if is_fused(argv):
            outcome, report = _run_fused(executor, argv, env, cwd, stop)
            halted = stop is not None and stop.is_set() and outcome.exit_code == spark_launcher.STOPPED_EXIT
            fused = _fused_results(step, parts, outcome, report, time.perf_counter() - t, halted)
            failed = failed or any(r.status == "Failed" for r in fused) or (outcome.exit_code != 0 and not halted)
            stopped = stopped or (halted and not failed)
            results += fused
            continue
        outcome = executor.run(argv, env, str(cwd) if cwd else None)
        status = "Succeeded" if outcome.exit_code == 0 else "Failed"
        failed = failed or status == "Failed"
        results.append(StepResult(step["Name"], status, time.perf_counter() - t, outcome.exit_code, outcome.stdout,
                                  outcome.stderr, argv, step["Name"]))
    return PipelineRun(pipeline, "Failed" if failed else "Stopped" if stopped else "Succeeded", results)
