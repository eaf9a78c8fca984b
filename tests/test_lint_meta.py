"""The rule registry: every code is documented, triggered by a fixture, and used by the code base."""

from __future__ import annotations

import re
from pathlib import Path

from ndr_compiler.lint import docs
from ndr_compiler.lint.registry import CODES
from tests.conftest import ROOT


def test_every_code_has_a_triggering_fixture_or_a_named_test():
    found = docs.fixtures()
    missing = [c for c in CODES if c not in found and c not in docs.UNTRIGGERABLE]
    assert missing == []


def test_every_fixture_still_triggers_its_code():
    for code, path in docs.fixtures().items():
        assert not docs.snapshot(path, code).startswith("(no diagnostic"), (code, path)


def test_docs_rules_md_is_up_to_date():
    assert (ROOT / "docs" / "rules.md").read_text() == docs.render(), (
        "docs/rules.md is stale: python -m ndr_compiler.lint.docs > docs/rules.md"
    )


def test_every_code_the_code_base_emits_is_registered():
    emitted = set()
    for path in (ROOT / "ndr_compiler").rglob("*.py"):
        emitted.update(re.findall(r'Diagnostic\(\s*"([EW]\d{3})"', path.read_text()))
    assert emitted, "no diagnostics found: the pattern is broken"
    assert sorted(emitted - set(CODES)) == []


def test_codes_are_unique_and_well_formed():
    for code, entry in CODES.items():
        assert re.fullmatch(r"[EW]\d{3}", code) and entry.code == code
        assert entry.status in ("stable", "preview", "deprecated", "removed")
    names = [c.name for c in CODES.values()]
    assert len(names) == len(set(names))


def test_lint_path_imports_no_sdk():
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from ndr_compiler.compile import compile_specs; "
        "compile_specs([Path('specs')], render=False); "
        "bad = [m for m in sys.modules if m.startswith(('sagemaker', 'pyspark', 'moto'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(ROOT))


#: model fields nothing reads on purpose: free-form for people and tools, or a switch with one value so far
UNREAD_ON_PURPOSE = {("Metadata", "labels"), ("EnvironmentSpec", "on_missing_value")}


def test_every_model_field_is_read_by_the_compiler():
    """A spec key the compiler ignores is a promise it does not keep (the Pipeline spec's `builder` was one)."""
    import ast
    import inspect

    from pydantic import BaseModel

    from ndr_compiler import models
    from ndr_compiler.models.state_machine import STEP_KINDS

    read: set[str] = set()  # attribute names and string keys in the compiler's code (docstrings are not code)
    for path in (ROOT / "ndr_compiler").rglob("*.py"):
        if "models" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.value) for n in ast.walk(tree)
                      if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                read.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                read.add(node.value)
    unread = []
    for module in (models.base, models.pipeline, models.project, models.state_machine, models.environment):
        for name, cls in vars(module).items():
            if not (inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == module.__name__):
                continue
            for f in cls.model_fields:
                if f in STEP_KINDS or (name, f) in UNREAD_ON_PURPOSE:
                    continue  # a step's construct key is read by its tag
                if f not in read and (cls.model_fields[f].alias or f) not in read:
                    unread.append(f"{name}.{f}")
    assert unread == []
