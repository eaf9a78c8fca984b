from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
GENERATED = ROOT / "generated"
SHARED = ROOT.parent / "shared"
CONTRACTS = SHARED / "contracts" / "events"


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    """A writable copy of specs/ for tests that break one thing."""
    dst = tmp_path / "specs"
    shutil.copytree(SPECS, dst)
    return dst
