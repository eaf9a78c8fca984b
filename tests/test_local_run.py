"""``ndr-compile run``: one compiled state machine executed offline from the command line, its pipelines
running the real jobs (the failure drills, with a whole platform, are in ``test_drills.py``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndr_compiler.cli import main
from ndr_jobs.devtools.synth.generator import SynthConfig, generate
from tests.conftest import CONTRACTS, GENERATED, SPECS


def test_cli_runs_the_backfill_machine_on_the_contract_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    request = json.loads((CONTRACTS / "backfill.request.json").read_text())
    request["end_ts"] = "2026-09-14T00:30:00Z"  # the contract's request, over two windows
    (tmp_path / "request.json").write_text(json.dumps(request))
    s3 = tmp_path / "s3"
    monkeypatch.setenv("NDR_LOCAL_S3_ROOT", str(s3))
    generate(SynthConfig(start=datetime(2026, 9, 14, tzinfo=UTC), hours=0.5, hosts=5, seed=3), "s3://acme-ndr-raw")
    result = CliRunner().invoke(main, [
        "run", "sfn_ndr_backfill_reprocessing", "--input", str(tmp_path / "request.json"), "--specs", str(SPECS),
        "--generated", str(GENERATED), "--wait-scale", "0.05",
        "--value", "NdrStorageRoot=s3://acme-ndr-features/ndr-prod", "--value", "NdrOrgId=acme",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "execution: SUCCEEDED" in result.output
    assert result.output.count("pipeline backfill_windows Succeeded") == 1  # both windows in one chunk job
    progress = re.findall(r"^\[(\d)/(\d) \d+s\] sfn_ndr_backfill_reprocessing: (\w+) Succeeded \((.*)\)$",
                          result.stderr, re.MULTILINE)  # a line per pipeline on stderr, counted against the request
    assert [(n, t, spec) for n, t, spec, _ in progress] == [
        ("1", "2", "backfill_historical_extractor"), ("2", "2", "backfill_windows")]
    fg_a = s3 / "acme-ndr-features" / "ndr-prod" / "fg_a" / "feature_spec_version=v1"
    assert sorted(p.name for p in fg_a.iterdir()) == ["batch_start=20260914T0000", "batch_start=20260914T0015"]


def test_cli_reports_an_unknown_machine_and_a_bad_input(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    unknown = CliRunner().invoke(main, ["run", "sfn_nope", "--input", str(bad), "--specs", str(SPECS)])
    assert unknown.exit_code == 2 and "no state machine 'sfn_nope'" in unknown.output
    broken = CliRunner().invoke(main, ["run", "sfn_ndr_backfill_reprocessing", "--input", str(bad), "--specs",
                                       str(SPECS)])
    assert broken.exit_code == 2 and "is not JSON" in broken.output
