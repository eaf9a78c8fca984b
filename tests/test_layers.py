"""One-way layers: ndr_jobs.interface <- ndr_compiler <- ndr_local, and ndr_jobs -> nothing above it.

The compiler's lint path loads no heavy library and nothing of the job library but its declared interface
(checked in a fresh interpreter); the import directions are checked statically over the source with ``ast``,
lazy imports inside functions included.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pyspark", "numba", "sagemaker", "sklearn", "pandas", "pyarrow", "moto", "duckdb")

PROBE = """
import json, sys
from ndr_compiler import cli
code = None
try:
    cli.main(["lint", "specs/"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_lint_loads_only_the_compiler_and_the_jobs_interface():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["code"] == 0, done.stdout + done.stderr
    modules = probe["modules"]
    assert "ndr_compiler.lint" in modules  # the probe ran the linter
    assert sorted({m.split(".")[0] for m in modules} & set(HEAVY)) == []
    jobs = [m for m in modules if m == "ndr_jobs" or m.startswith("ndr_jobs.")]
    assert "ndr_jobs.interface.entrypoints" in jobs
    assert [m for m in jobs if m != "ndr_jobs" and not m.startswith("ndr_jobs.interface")] == []
    assert [m for m in modules if m.split(".")[0] == "ndr_local"] == []
    # what only compiling needs stays out of the lint's start-up (issue 21: the lint is timed)
    assert [m for m in modules if m.startswith("ndr_compiler.render")] == []
    assert "difflib" not in modules


def imports(source: str) -> Iterator[tuple[str, bool]]:
    """Each module a source imports (``import``, ``from``, ``importlib.import_module("...")``), and whether the
    import runs inside a function (lazily) rather than when the module is imported."""

    def walk(node: ast.AST, lazy: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                yield from ((alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield from ((f"{child.module}.{alias.name}", lazy) for alias in child.names)
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute | ast.Name)
                and getattr(child.func, "attr", getattr(child.func, "id", None)) in ("import_module", "__import__")
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                yield child.args[0].value, lazy
            yield from walk(child, inner)

    yield from walk(ast.parse(source), False)


def violations(package: str) -> list[str]:
    """Every import in ``package`` that goes against the layers."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for name, lazy in imports(path.read_text()):
            top = name.split(".")[0]
            if package == "ndr_jobs" and top in ("ndr_compiler", "ndr_local"):
                found.append(f"{where}: {name}")
            if package == "ndr_compiler":
                if top == "ndr_local" and not (lazy and where == "ndr_compiler/cli.py"):
                    found.append(f"{where}: {name}")
                if top == "ndr_jobs" and not name.startswith("ndr_jobs.interface"):
                    found.append(f"{where}: {name}")
    return found


@pytest.mark.parametrize("package", ["ndr_jobs", "ndr_compiler"])
def test_imports_go_one_way(package: str):
    assert violations(package) == []


def test_the_import_reader_sees_lazy_dynamic_and_top_level_imports():
    source = (
        "import ndr_local.demo\n"
        "from ndr_jobs import datasets\n"
        "def run():\n"
        "    from ndr_local.platform import stand_up\n"
        "    importlib.import_module('ndr_compiler.cli')\n"
    )
    assert sorted(imports(source)) == [
        ("ndr_compiler.cli", True), ("ndr_jobs.datasets", False), ("ndr_local.demo", False),
        ("ndr_local.platform.stand_up", True),
    ]
