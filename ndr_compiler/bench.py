"""``make bench``: whole-process wall times, with references measured in the same run, into docs/benchmarks.md.

Compiler rows: ``ndr-compile lint specs/`` and a full ``ndr-compile specs/`` (into a temporary directory),
beside asl-validator (the outside ASL check) on the same generated state machines; then where the lint's time
goes (start-up, imports, work), each part timed as a process of its own.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNS = int(os.environ.get("NDR_BENCH_RUNS", "5"))


def wall(cmd: list[str]) -> float:
    """Median wall time of ``RUNS`` runs (after one warm-up run)."""
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bar_chart(title: str, bars: list[tuple[str, float]]) -> list[str]:
    """A Mermaid bar chart (rendered where the Markdown is read: GitHub, IDEs), as Markdown lines."""
    top = max(t for _, t in bars)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        "    x-axis [" + ", ".join(f'"{name}"' for name, _ in bars) + "]",
        f'    y-axis "seconds" 0 --> {top * 1.2:.2f}',
        "    bar [" + ", ".join(f"{t:.3f}" for _, t in bars) + "]",
        "```",
    ]


#: the lint in one process, timed part by part (``perf_counter`` marks); what precedes the first mark is start-up
PROBE = """
import json, time
marks = [time.perf_counter()]
from pydantic import BaseModel
class _M(BaseModel):
    a: int
marks.append(time.perf_counter())
import yaml, click, jsonata
marks.append(time.perf_counter())
import ndr_compiler.models.state_machine
marks.append(time.perf_counter())
from ndr_compiler.cli import main
marks.append(time.perf_counter())
try:
    main(["lint", "specs/", "--no-cache"])
except SystemExit as exc:
    assert not exc.code, exc.code
marks.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
"""
LINT_PARTS = [
    "pydantic imported, one model built",
    "PyYAML, click, jsonata imported",
    "the spec models built, with the constructs, IR and expansion modules they import "
    "(`ndr_compiler.models.state_machine`)",
    "the rest of the compiler the lint imports (`ndr_compiler.cli`)",
    "the work: load, validate, expand and lint the 16 specs",
]


def lint_parts() -> list[tuple[str, float]]:
    """Median seconds of each part of the lint (start-up first), over ``RUNS`` runs after a warm-up."""
    cmd = [sys.executable, "-c", PROBE]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    runs = []
    for _ in range(RUNS):
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        total = time.perf_counter() - t
        parts = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append([total - sum(parts), *parts])
    names = ["Python start-up and exit (the process's wall time minus the parts below)", *LINT_PARTS]
    return [(name, statistics.median(r[i] for r in runs)) for i, name in enumerate(names)]


def main() -> None:
    machines = sorted(str(p) for p in (ROOT / "generated" / "state_machines").glob("*.asl.json"))
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    # bytecode caches, as an installed package has them (pip compiles on install; a checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module of ours on every run)
    for package in ("ndr_compiler", "ndr_jobs", "ndr_local"):
        compileall.compile_dir(ROOT / package, quiet=1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        os.environ["NDR_CACHE_DIR"] = cache  # the bench's own lint cache, filled by the cached row's warm-up
        rows = [
            ("lint all specs from scratch (`ndr-compile lint specs/ --no-cache`)",
             wall([str(BIN / "ndr-compile"), "lint", "specs/", "--no-cache"])),
            ("lint unchanged specs (`ndr-compile lint specs/`, its cached result)",
             wall([str(BIN / "ndr-compile"), "lint", "specs/"])),
            ("full compile (`ndr-compile specs/ --out tmp`)",
             wall([str(BIN / "ndr-compile"), "specs/", "--out", out])),
        ]
    args = [a for m in machines for a in ("--json-path", m)]
    reference = wall([str(validator), *args])
    rows.append((f"asl-validator on the {len(machines)} generated state machines (reference)", reference))
    parts = lint_parts()
    load_after = [round(x, 2) for x in os.getloadavg()]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`python -m ndr_compiler.bench`): median whole-process wall time of {RUNS} runs",
        "after a warm-up, on this machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. Ratios are against",
        "asl-validator measured in the same run.",
        "",
        "## Compiler",
        "",
        "| what | wall time (s) | vs asl-validator |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {t:.3f} | {t / reference:.2f}x |" for name, t in rows]
    lines += ["", *bar_chart("Compiler wall time (s)", [("lint", rows[0][1]), ("lint, cached", rows[1][1]),
                                                         ("full compile", rows[2][1]), ("asl-validator", reference)])]
    lines += [
        "",
        "Goals (issue 21): a full compile at most 1.3x, and the lint at most 0.2x, asl-validator's time. A lint "
        "whose inputs (spec files, compiler source, validator versions) are unchanged replays its result from "
        "`.ndr_cache/` without importing pydantic; from scratch it pays the spec models' build. The console "
        "script ends a lint or compile as soon as its output is flushed, without the interpreter's teardown "
        "(`ndr_compiler.cli.entry`; about 40 ms of CPU), and pydantic skips its plugin scan. Pipeline "
        "definitions are rendered by the compiler itself (no SageMaker SDK import; the SDK is the oracle of "
        "`tests/test_pipeline_render.py`, which holds every definition to what it builds, byte for byte).",
        "",
        f"Load average (1/5/15 min) at the start {load_before}, at the end {load_after}: with more than "
        f"{os.cpu_count()} the machine was shared and every figure is pessimistic (asl-validator, which uses "
        "more than one thread, may suffer more than the single-threaded lint). Our modules run from their "
        "bytecode caches, which the bench compiles first, as an install has them.",
        "",
        "### Where the lint's time goes",
        "",
        "The lint in one process, timed part by part (median of each part over as many runs; start-up is the "
        "process's wall time minus the parts), so the parts add up to about one lint run.",
        "",
        "| part | wall time (s) | share |",
        "|---|---:|---:|",
    ]
    whole = sum(t for _, t in parts)
    lines += [f"| {name} | {t:.3f} | {t / whole:.0%} |" for name, t in parts]
    lines.append(f"| sum | {whole:.3f} | |")
    lines.append("")
    # `python -m ndr_jobs.devtools.bench`, run first by `make bench`; the test lanes' wall times, measured by hand
    for part in ("benchmarks-data.md", "benchmarks-tests.md"):
        if (ROOT / "docs" / part).exists():
            lines += [(ROOT / "docs" / part).read_text().rstrip(), ""]
    text = "\n".join(lines)
    (ROOT / "docs" / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
