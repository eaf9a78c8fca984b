"""Compile the job library's numba functions at image build time, into their on-disk caches (``cache=True``), so
that the first batch a container runs loads machine code instead of compiling it (seconds per function).

The warm-up runs the delta job's per-task path (``partial_rows``: raw lines read from files, parsed, aggregated in
the compiled hash table) on a few synthetic batches, plain and with CRLF line endings, so every function compiles
for the argument types production passes. It then checks that every numba function of every ``ndr_jobs`` module
this image can import has a compiled signature: a new jit function nothing here reaches fails the build.
``--check-cached`` (a second run, in a new process) checks that nothing compiles: everything loads from the cache.

Set ``NUMBA_CPU_NAME=generic`` (the Dockerfiles do) so the cache holds code for any x86-64 instance type.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def dispatchers() -> dict[str, Any]:
    """Every numba function defined in an importable ``ndr_jobs`` module, by qualified name. A module that needs
    a library this image lacks (pyspark in the Python image, matplotlib) cannot run here, so it needs no cache."""
    from numba.core.dispatcher import Dispatcher

    import ndr_jobs

    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(ndr_jobs.__path__, "ndr_jobs."):
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "ndr_jobs").startswith("ndr_jobs"):
                raise
            continue
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ == info.name:
                found[f"{info.name}.{name}"] = value
    return found


def run_jobs(workdir: Path) -> int:
    """The delta job's per-task path over synthetic raw files; returns the number of lines read."""
    from ndr_jobs.datasets import storage
    from ndr_jobs.devtools.synth.generator import SynthConfig, generate
    from ndr_jobs.parsing import raw_lines
    from ndr_jobs.processing.delta_builder_job import partial_rows

    start = datetime(2024, 1, 1, tzinfo=UTC)
    generate(SynthConfig(start=start, hours=0.5, hosts=8, seed=7, attacks=("portscan",), noise_rate=0.05,
                         files_per_batch=2), str(workdir / "raw"))
    objects = storage.list_objects(str(workdir / "raw"))
    first = Path(objects[0].path)
    crlf = workdir / "crlf.log"
    crlf.write_bytes(first.read_bytes().replace(b"\n", b"\r\n"))  # the scanner that handles \r
    objects.append(storage.ObjectInfo(str(crlf), crlf.stat().st_size))
    lines = 0

    def batches() -> Any:
        nonlocal lines
        for index, split in enumerate(raw_lines.plan_splits(objects), start=1):
            for batch in raw_lines.read_lines(split):
                lines += len(batch)
                yield batch, index

    start_us = int(start.timestamp() * 1_000_000)
    for _ in partial_rows(batches(), start_us, start_us + 30 * 60 * 1_000_000):
        pass
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-cached", action="store_true",
                        help="fail if any function compiled instead of loading from the cache")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ndr-warm-") as tmp:
        lines = run_jobs(Path(tmp))
    found = dispatchers()
    # a function only other jit functions call has no signature of its own once its callers load from the
    # cache (its code is inside theirs): reachability is checked on the compiling run
    cold = sorted(name for name, d in found.items() if not d.signatures)
    if cold and not args.check_cached:
        print(f"error: numba function(s) the warm-up does not reach: {', '.join(cold)}; extend "
              "docker/warm_numba.py so the image ships their compiled code", file=sys.stderr)
        return 1
    compiled = sorted(name for name, d in found.items() if d.stats.cache_misses)
    if args.check_cached and (compiled or not any(d.stats.cache_hits for d in found.values())):
        print(f"error: compiled instead of loaded from the cache: {', '.join(compiled) or 'everything'}",
              file=sys.stderr)
        return 1
    signatures = sum(len(d.signatures) for d in found.values())
    loaded = sum(bool(d.stats.cache_hits) for d in found.values())
    print(f"numba: {len(found)} functions, {signatures} signatures ({len(compiled)} compiled, "
          f"{loaded} loaded from the cache) warmed on {lines} lines in "
          f"{time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
