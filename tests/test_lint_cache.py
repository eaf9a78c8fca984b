"""The lint's result cache (`ndr_compiler.lint_cache`): a hit replays exactly what a fresh lint reports, without
loading the spec models; any change to a spec, to the compiler or to the arguments is a miss."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ndr_compiler import lint_cache
from tests.conftest import ROOT

#: the spec files of the repository's specs/ (a lint reports how many it checked)
SPEC_FILES = sum(1 for _ in (ROOT / "specs").rglob("*.yaml"))
#: runs the CLI's lint in a fresh interpreter and prints, last, whether pydantic was imported
PROBE = """
import sys
from ndr_compiler.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print('pydantic' in sys.modules, code)
"""


def lint(args: list[str], cwd: Path, cache: Path, *, use_cache: bool = True) -> tuple[str, str, bool, int]:
    env = {**os.environ, "NDR_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("NDR_NO_CACHE")
    if not use_cache:
        env["NDR_NO_CACHE"] = "1"
    done = subprocess.run([sys.executable, "-c", PROBE, "lint", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)
    *out, last = done.stdout.splitlines()
    imported, code = last.split()
    return "\n".join(out), done.stderr, imported == "True", int(code)


@pytest.fixture
def work(tmp_path: Path, spec_copy: Path) -> Path:
    return spec_copy.parent


def test_a_hit_replays_the_result_without_the_models(work: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = lint(["specs/"], work, cache)
    assert first[2] and first[3] == 0 and f"{SPEC_FILES} spec(s) checked" in first[0]
    assert (cache / "lint.json").exists() and (cache / ".gitignore").read_text().strip().endswith("*")
    second = lint(["specs/"], work, cache)
    assert second[:2] == first[:2] and second[3] == 0
    assert not second[2], "a cache hit imported pydantic: it paid for the models it was meant to skip"


def test_an_edited_spec_misses_and_its_errors_replay_in_every_format(work: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lint(["specs/"], work, cache)
    spec = work / "specs" / "pipelines" / "inference.yaml"
    spec.write_text(spec.read_text().replace("processor:", "procesor:", 1))
    fresh = lint(["specs/", "--format", "json"], work, cache)
    assert fresh[2] and fresh[3] == 1, "an edited spec must be linted again"
    rows = json.loads(fresh[0])
    assert any(r["file"].endswith("inference.yaml") and r["code"] == "E110" for r in rows)
    replay = lint(["specs/", "--format", "json"], work, cache)
    assert not replay[2] and replay[:2] == fresh[:2] and replay[3] == 1
    for fmt in ("text", "sarif", "github"):
        assert lint(["specs/", "--format", fmt], work, cache)[:2] == lint(
            ["specs/", "--format", fmt], work, cache, use_cache=False)[:2]


def test_no_cache_neither_reads_nor_writes(work: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = lint(["specs/"], work, cache, use_cache=False)
    assert out[2] and not cache.exists()


def test_a_corrupt_or_foreign_cache_is_a_miss(work: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for junk in ("{not json", json.dumps({"key": "x", "specs": 1, "diagnostics": []}), json.dumps([1, 2])):
        (cache / "lint.json").write_text(junk)
        out = lint(["specs/"], work, cache)
        assert out[2] and out[3] == 0 and f"{SPEC_FILES} spec(s) checked" in out[0]


def test_the_key_covers_specs_arguments_and_the_compiler(work: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    base = lint_cache.key([Path("specs")])
    assert lint_cache.key([Path("specs")]) == base
    assert lint_cache.key([Path("specs/pipelines")]) != base
    (work / "specs" / "extra.yml").write_text("# a new spec file\n")
    assert lint_cache.key([Path("specs")]) != base
    (work / "specs" / "extra.yml").unlink()
    assert lint_cache.key([Path("specs")]) == base
    code = tmp_path / "code"
    for sub in ("ndr_compiler", "ndr_jobs/interface"):
        shutil.copytree(ROOT / sub, code / sub, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(lint_cache, "_CODE_ROOT", code)
    copied = lint_cache.key([Path("specs")])
    rule = code / "ndr_compiler" / "lint" / "graph.py"
    rule.write_text(rule.read_text() + "\n# a changed rule\n")
    assert lint_cache.key([Path("specs")]) != copied


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_console_script_ends_with_its_output_whole_and_its_exit_code(work: Path, tmp_path: Path,
                                                                          fmt: str) -> None:
    """`entry` (the console script) skips the interpreter's teardown after a lint or compile: the report is still
    flushed whole, the exit code kept, and the --output file written, exactly as `main` gives them."""
    (work / "specs" / "broken.yaml").write_text((ROOT / "tests" / "bad_specs" / "dangling_next.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NDR_NO_CACHE": "1"}
    args = ["lint", "specs/", "--format", fmt]
    hard = subprocess.run([sys.executable, "-m", "ndr_compiler.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    soft = subprocess.run([sys.executable, "-c", "import sys; from ndr_compiler.cli import main; main(sys.argv[1:])",
                           *args], cwd=work, env=env, capture_output=True, text=True)
    assert hard.returncode == soft.returncode == 1
    assert (hard.stdout, hard.stderr) == (soft.stdout, soft.stderr) and "E" in hard.stdout + hard.stderr
    out = tmp_path / "report.txt"
    written = subprocess.run([sys.executable, "-m", "ndr_compiler.cli", *args, "--output", str(out)], cwd=work,
                             env=env, capture_output=True, text=True)
    assert written.returncode == 1 and out.read_text() == soft.stdout
    clean = subprocess.run([sys.executable, "-m", "ndr_compiler.cli", "lint", str(ROOT / "specs")], cwd=work,
                           env=env, capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stdout.endswith("no problems\n")


def test_the_console_script_is_the_hard_exiting_entry() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ndr-compile"] == "ndr_compiler.cli:entry"
