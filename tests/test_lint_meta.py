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
