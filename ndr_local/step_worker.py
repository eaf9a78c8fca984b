"""Warm step execution: one long-lived Python process runs pipeline steps, keeping Spark's JVM between them.

A step is still ``python -m <module> <arguments>`` with the step's environment, exactly as the compiled
definition says; only the process is reused, as a SageMaker warm pool reuses an instance. Starting a JVM
and a Spark session costs seconds per step, more than a local 15-minute batch takes to process, so local
runs of many windows (``make run``, backfills, failure drills) use this executor by default;
``--isolated`` (a fresh process per step, :class:`SubprocessExecutor`) remains available.

What differs from a fresh process, by design: the Spark session (and its static settings, e.g. driver
memory) is created once and shared; imported modules stay imported. What does not: ``sys.argv``, the
environment (replaced for the step and restored after), the working directory, ``__main__`` semantics
(``runpy``), exit codes (``SystemExit`` and uncaught exceptions map as the interpreter maps them), and
stdout/stderr (captured per step). The worker's own file descriptors 1 and 2 (where the JVM logs) go to
a log file. A worker that dies mid-step fails that step and is replaced on the next one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int
    stdout: str
    stderr: str


def _exit_code(exc: SystemExit) -> tuple[int, str]:
    code = exc.code
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, f"{code}\n"  # sys.exit("message"): printed to stderr, status 1


def run_module(argv: list[str], env: dict[str, str], cwd: str | None) -> StepOutcome:
    """Run ``python -m argv[0] argv[1:]`` in this process, as a fresh interpreter would; restore state after."""
    module, args = argv[0], argv[1:]
    saved_env, saved_argv, saved_cwd, saved_path = dict(os.environ), list(sys.argv), os.getcwd(), list(sys.path)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.clear()
        os.environ.update(env)
        if cwd:
            os.chdir(cwd)
        sys.path.insert(0, os.getcwd())  # as `python -m` puts the working directory first
        sys.argv = [module, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                code, message = _exit_code(exc)
                err.write(message)
            except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and status 1, as python does
                code = 1
                err.write(traceback.format_exc())
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return StepOutcome(code, out.getvalue(), err.getvalue())


def serve(requests: IO[str], responses: IO[str]) -> None:
    """The worker loop: one JSON request per line in, one JSON outcome per line out, until EOF."""
    for line in requests:
        request = json.loads(line)
        outcome = run_module(request["argv"], request["env"], request.get("cwd"))
        responses.write(json.dumps(asdict(outcome)) + "\n")
        responses.flush()


class WarmExecutor:
    """Runs steps one at a time in a reused worker process (see the module doc). Thread-safe."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path or Path(tempfile.gettempdir()) / "ndr-step-worker.log"
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._responses: IO[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        with open(self.log_path, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ndr_local.step_worker", str(write_fd)],
                stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_fd,), text=True,
            )  # fmt: skip
        os.close(write_fd)
        self._process, self._responses = process, os.fdopen(read_fd, "r")
        return process

    def run(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> StepOutcome:
        """Run one step; ``argv`` is ``[python, "-m", module, *args]`` as the runner builds it."""
        if argv[1:2] != ["-m"]:
            raise ValueError(f"not a python -m command: {argv}")
        with self._lock:
            alive = self._process is not None and self._process.poll() is None
            process = self._process if alive and self._process else self._start()
            assert process.stdin is not None and self._responses is not None
            try:
                process.stdin.write(json.dumps({"argv": argv[2:], "env": env, "cwd": cwd}) + "\n")
                process.stdin.flush()
                line = self._responses.readline()
            except (OSError, BrokenPipeError):
                line = ""
            if not line:
                code = process.wait(timeout=30)
                self.close()
                return StepOutcome(1, "", f"the step worker died (exit code {code}); see {self.log_path}\n")
            return StepOutcome(**json.loads(line))

    def close(self) -> None:
        process, self._process = self._process, None
        if self._responses is not None:
            self._responses.close()
            self._responses = None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> WarmExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubprocessExecutor:
    """A fresh ``python -m`` process per step (what a SageMaker processing job is)."""

    def run(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> StepOutcome:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
        return StepOutcome(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        pass


if __name__ == "__main__":  # the worker: requests on stdin, outcomes on the file descriptor given
    with os.fdopen(int(sys.argv[1]), "w") as out:
        serve(sys.stdin, out)
