"""The progress line of long commands: the compiler's deploy, ``make run``, local backfills and ``make eval``.

It lives in the job library's interface because every layer may import it (the compiler imports nothing of
``ndr_jobs`` but ``ndr_jobs.interface``, and ``ndr_jobs`` imports nothing above it). Standard library only.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def _print(text: str) -> None:
    print(text, flush=True)


class Progress:
    """``[3/12 4s] deploy: create state-machine ndr-dev-x``: on a terminal one line, rewritten in place at each
    step and ended by :meth:`close`; otherwise (a pipe, CI, a log) a plain line per step. Writes to stderr, so
    that a command's stdout stays its result. Use as a context manager, calling :meth:`step` before each item
    (``total`` None: a count without an end, ``[3 4s]``); print other lines through :meth:`echo`, which keeps
    the progress line below them on a terminal. Thread-safe (local pipelines end on their own threads)."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._line = ""
        self._lock = threading.Lock()

    def _draw(self) -> None:
        width = shutil.get_terminal_size().columns - 1
        line = self._line if len(self._line) <= width else self._line[: width - 1] + "…"
        self.stream.write(f"\r\x1b[K{line}")

    def step(self, what: str) -> None:
        with self._lock:
            self.done += 1
            count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
            self._line = f"[{count} {time.monotonic() - self.started:.0f}s] {self.label}: {what}"
            if self.tty:
                self._draw()
            else:
                self.stream.write(self._line + "\n")
            self.stream.flush()

    def echo(self, text: str, write: Callable[[str], object] | None = None) -> None:
        """Print a line of other output (with ``write``, default ``print``) above the progress line."""
        with self._lock:
            if self.tty and self._line:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            (write or _print)(text)
            if self.tty and self._line:
                self._draw()
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty and self.done:
                seconds = time.monotonic() - self.started
                count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
                self.stream.write(f"\r\x1b[K{self.label}: {count} in {seconds:.0f}s\n")
                self.stream.flush()
            self._line = ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
