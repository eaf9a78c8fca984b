"""Every broken spec gets its own code at file:line:col, exit 1, and never a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main
from tests.conftest import SPECS

BAD = Path(__file__).parent / "bad_specs"
#: every fixture's full diagnostics (file:line:col CODE message); regenerate with NDR_UPDATE_GOLDEN=1 and review
GOLDEN = BAD / "expected.txt"
NO_HEADER = {"empty.yaml": "E104", "binary.yaml": "E106"}
CONTEXT = [
    SPECS / "project.yaml",
    SPECS / "state_machines" / "sfn_ndr_prediction_publication.yaml",
    SPECS / "pipelines",
]
LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+) (?P<code>[EW]\d{3}) (?P<msg>\S.*)$")


def expected(path: Path) -> str:
    if path.name in NO_HEADER:
        return NO_HEADER[path.name]
    first = path.read_text().splitlines()[0]
    return first.removeprefix("# expect:").strip()


CASES = sorted(BAD.glob("*.yaml"))


def test_corpus_is_substantial():
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_bad_spec_gets_its_code(path: Path):
    result = CliRunner().invoke(main, ["lint", str(path), *map(str, CONTEXT)])
    assert result.exit_code == (0 if expected(path).startswith("W") else 1), result.output  # warnings exit 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if LINE.match(ln)]
    codes = {LINE.match(ln)["code"] for ln in lines}
    assert expected(path) in codes, result.output
    for ln in lines:
        m = LINE.match(ln)
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1
        assert "\n" not in m["msg"]


def diagnostics_of(path: Path) -> list[str]:
    result = CliRunner().invoke(main, ["lint", str(path), *map(str, CONTEXT)])
    return [ln for ln in result.output.splitlines() if LINE.match(ln)]


def golden_table() -> str:
    """One block per fixture: its name, then every diagnostic it gets, exactly as printed."""
    blocks = []
    for path in CASES:
        lines = diagnostics_of(path)
        blocks.append("\n".join([f"== {path.name}", *lines]))
    return "\n\n".join(blocks) + "\n"


def test_corpus_diagnostics_match_the_golden_table():
    """A change of any code, position or message of any fixture fails here; NDR_UPDATE_GOLDEN=1 rewrites it."""
    table = golden_table()
    if os.environ.get("NDR_UPDATE_GOLDEN"):
        GOLDEN.write_text(table)
    assert table == GOLDEN.read_text()


def test_diagnostic_points_at_the_offending_key():
    result = CliRunner().invoke(main, ["lint", str(BAD / "unknown_key.yaml"), *map(str, CONTEXT)])
    line = next(ln for ln in result.output.splitlines() if " E110 " in ln)
    file, lineno, col = line.split(" ")[0].split(":")
    assert file.endswith("unknown_key.yaml")
    src = (BAD / "unknown_key.yaml").read_text().splitlines()[int(lineno) - 1]
    assert src[int(col) - 1 :].startswith("colour")


def test_a_dedented_line_is_the_only_diagnostic_and_is_reported_at_itself(spec_copy: Path):
    """Not at the next line, where the parser notices it; nor as 'not defined' where another spec starts it."""
    from ndr_compiler.compile import compile_specs

    path = spec_copy / "state_machines" / "sfn_ndr_prediction_publication.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("pipeline: "))
    lines[at] = lines[at][2:]
    path.write_text("\n".join(lines) + "\n")
    [diag] = [d for d in compile_specs([spec_copy], render=False).diagnostics if d.severity == "error"]
    assert (diag.code, diag.span.line, diag.span.col) == ("E109", at + 1, len(lines[at]) - len(lines[at].lstrip()) + 1)


def test_unsupported_api_version_lists_the_supported_ones():
    result = CliRunner().invoke(main, ["lint", str(BAD / "unsupported_api_version.yaml")])
    assert "unsupported apiVersion 'ndr/v9'; supported: ndr/v1" in result.output


def test_no_specs(tmp_path: Path):
    result = CliRunner().invoke(main, ["lint", str(tmp_path)])
    assert result.exit_code == 1 and " E108 " in result.output


def test_definition_over_the_size_limit(spec_copy: Path):
    path = spec_copy / "state_machines" / "huge.yaml"
    blob = "x" * 1_100_000
    path.write_text(
        "apiVersion: ndr/v1\nkind: StateMachine\nmetadata: {name: huge}\nspec:\n  project: ndr\n  timeout_seconds: 60\n"
        "  on_failure: {name: WorkflowFailed}\n  steps:\n    - normalize: {name: NormalizeIncomingMessage}\n"
        f"    - resolve: {{name: Resolve, values: {{blob: \"{blob}\"}}}}\n"
    )
    from ndr_compiler.compile import compile_specs

    result = compile_specs([path, spec_copy / "project.yaml"])
    assert [d.code for d in result.diagnostics] == ["E402"]


def _big_pipeline(spec_copy: Path) -> Path:
    path = spec_copy / "pipelines" / "machine_inventory_unload.yaml"
    text = path.read_text()
    assert "\n  steps:\n    - name: " in text
    blob = "x" * 1_100_000
    path.write_text(text.replace("\n  steps:\n    - name: ", f"\n  steps:\n    - description: {blob}\n      name: ", 1))
    return path


def test_pipeline_definition_over_the_size_limit(spec_copy: Path):
    from ndr_compiler.compile import compile_specs

    path = _big_pipeline(spec_copy)
    result = compile_specs([spec_copy])
    [diag] = [d for d in result.diagnostics if d.severity == "error"]
    assert (diag.code, diag.span.file, diag.span.line) == ("E410", str(path), 2)
    assert "definition of pipeline 'machine_inventory_unload' is " in diag.message


def test_a_renderer_crash_is_located_at_its_pipeline(spec_copy: Path, monkeypatch):
    """Every user mistake the renderer refuses is a lint rule; what is left is a bug, still at its spec."""
    from ndr_compiler import compile as compile_module
    from ndr_compiler.render import sagemaker_pipeline

    def broken(p, name):
        raise ValueError("boom")

    monkeypatch.setattr(sagemaker_pipeline, "render_pipeline", broken)  # imported by the render path when it runs
    result = compile_module.compile_specs([spec_copy])
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert {d.code for d in errors} == {"E001"}
    assert all(d.span.file.endswith(".yaml") and d.span.line >= 1 for d in errors)
    assert any("rendering pipeline 'inference' crashed: ValueError: boom" in d.message for d in result.diagnostics)


def test_a_crashing_rule_is_a_diagnostic(monkeypatch):
    from ndr_compiler.lint import rules as lint

    def broken(machine):
        raise KeyError("boom")

    monkeypatch.setattr(lint, "IR_RULES", [*lint.IR_RULES, broken])
    result = CliRunner().invoke(main, ["lint", str(SPECS)])
    assert result.exit_code == 1
    assert " E001 rule broken crashed: KeyError" in result.output
    assert "Traceback" not in result.output


def _deployer_of(children: dict[str, list[str]]):
    from types import SimpleNamespace

    from ndr_compiler import ir
    from ndr_compiler.deploy.engine import Deployer

    machines = [SimpleNamespace(name=m, child_state_machines=[ir.PlaceholderRef(c, "Start", ir.Span("x"))
                                                               for c in cs]) for m, cs in children.items()]
    deployer = object.__new__(Deployer)
    deployer.c = SimpleNamespace(machines=machines)
    return deployer


def test_deploy_refuses_a_workflow_cycle_even_without_lint():
    from ndr_compiler.deploy.engine import DeployError

    deployer = _deployer_of({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    with pytest.raises(DeployError, match="start each other without end: a --> b --> c --> a"):
        deployer._children_first()


def test_deploy_orders_children_first_at_any_depth():
    chain = {f"m{i:04d}": [f"m{i + 1:04d}"] for i in range(3000)} | {"m3000": []}  # deeper than Python's stack
    order = _deployer_of(chain)._children_first()
    assert order == sorted(chain, reverse=True)
    assert _deployer_of({"p": ["c2", "c1"], "c1": [], "c2": ["c1"]})._children_first() == ["c1", "c2", "p"]
