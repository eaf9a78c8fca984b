"""``make bench``: whole-process wall times, with references measured in the same run, into docs/benchmarks.md.

Compiler rows: ``ndr-compile lint specs/`` and a full ``ndr-compile specs/`` (into a temporary directory),
beside asl-validator (the outside ASL check) on the same generated state machines.
"""

from __future__ import annotations

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


def main() -> None:
    machines = sorted(str(p) for p in (ROOT / "generated" / "state_machines").glob("*.asl.json"))
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    with tempfile.TemporaryDirectory() as out:
        rows = [
            ("lint all specs (`ndr-compile lint specs/`)", wall([str(BIN / "ndr-compile"), "lint", "specs/"])),
            ("full compile (`ndr-compile specs/ --out tmp`)",
             wall([str(BIN / "ndr-compile"), "specs/", "--out", out])),
        ]
    args = [a for m in machines for a in ("--json-path", m)]
    reference = wall([str(validator), *args])
    rows.append((f"asl-validator on the {len(machines)} generated state machines (reference)", reference))
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
    lines += ["", *bar_chart("Compiler wall time (s)", [("lint", rows[0][1]), ("full compile", rows[1][1]),
                                                         ("asl-validator", reference)])]
    lines += [
        "",
        "Goals (issue 21): a full compile at most 1.3x, and the lint at most 0.2x, asl-validator's time. Pipeline "
        "definitions are rendered by the compiler itself (no SageMaker SDK import; the SDK is the oracle of "
        "`tests/test_pipeline_render.py`, which holds every definition to what it builds, byte for byte).",
        "",
    ]
    # `python -m ndr_jobs.devtools.bench`, run first by `make bench`; the test lanes' wall times, measured by hand
    for part in ("benchmarks-data.md", "benchmarks-tests.md"):
        if (ROOT / "docs" / part).exists():
            lines += [(ROOT / "docs" / part).read_text().rstrip(), ""]
    text = "\n".join(lines)
    (ROOT / "docs" / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
