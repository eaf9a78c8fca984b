"""The data-plane benchmark in its smoke mode: the report's shape (not its timings), the DuckDB reference
agreeing with the Spark delta on the same batch, the batch-size calibration and the projection's arithmetic."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ndr_jobs.devtools.bench import (
    MODEL_STAGES,
    REFERENCE,
    STAGES,
    TABLE_HEADER,
    Batch,
    SizeResult,
    StageResult,
    merge_runs,
    projection,
    run_size,
    runtimes_document,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS = 10_000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """One quick run: no warm-up, the delta stage only (the others alone take longer than this file's budget)."""
    out = tmp_path_factory.mktemp("bench")
    args = ["--quick", "--rows", str(ROWS), "--warmup", "0", "--stages", "delta_builder",
            "--out", str(out / "bench.md"), "--json", str(out / "bench.json")]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "ndr_jobs.devtools.bench", *args], capture_output=True, text=True,
                          cwd=ROOT, env=os.environ, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "bench.md").read_text()
    assert proc.stdout.strip() == text.strip()
    return text, json.loads((out / "bench.json").read_text())


def table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_report_has_the_command_machine_and_one_row_per_stage(report: tuple[str, dict]):
    text, _ = report
    assert text.startswith("## Data plane: the 15-minute chain on local Spark\n")
    assert f"Command: `python -m ndr_jobs.devtools.bench --quick --rows {ROWS} --warmup 0" in text
    machine = next(line for line in text.splitlines() if line.startswith("Machine: "))
    assert re.search(r"Machine: \d+ cores .*, [\d.]+ GiB memory, .*(openjdk|java) version .*PySpark .*DuckDB", machine)
    assert "No warm-up (`--warmup 0`)" in text
    rows = table(text, TABLE_HEADER)
    assert [r[0] for r in rows] == [*STAGES, *MODEL_STAGES, REFERENCE]
    assert all(len(r) == 8 for r in rows)
    by_stage = {r[0]: r for r in rows}
    for name in ("delta_builder", REFERENCE):
        status, seconds, lines_per_s, output_rows, jvm, workers, driver = by_stage[name][1:]
        assert status == "ok"
        assert float(seconds) > 0 and int(lines_per_s.replace(",", "")) > 0 and int(output_rows.replace(",", "")) > 0
        assert all(re.fullmatch(r"[\d,]+", v) for v in (jvm, workers, driver))
    assert int(by_stage["delta_builder"][5].replace(",", "")) > 0  # the JVM was found and sampled
    for name in STAGES[1:]:
        assert by_stage[name][1:] == ["skipped (not selected (--stages))", *["–"] * 6]
    for name in MODEL_STAGES:
        assert by_stage[name][1:] == ["skipped (no model: FG-A or FG-C was not built)", *["–"] * 6]


def test_the_model_stages_score_and_publish_the_window_with_a_model_trained_on_it(tmp_path: Path):
    """The whole chain on a small batch, then inference and the join with a model promoted on the window: each
    host of the window is scored and published, and the cadence model gets both jobs' runtimes."""
    size = run_size(2_000, str(tmp_path))
    by_stage = {s.stage: s for s in size.stages}
    assert [s.stage for s in size.chain] == list(STAGES) and all(s.status == "ok" for s in size.jobs)
    hosts = by_stage["fg_a_builder"].output_rows
    assert hosts and by_stage["inference_predictions"].output_rows == hosts
    assert by_stage["prediction_feature_join"].output_rows == hosts
    machine = {"spark_master": "local[*]", "pyspark": "3.5", "cores": 2}
    seconds = runtimes_document(size, machine, "bench")["seconds"]
    assert {f"ndr_jobs.scripts.run_{name}" for name in (*STAGES, *MODEL_STAGES)} == set(seconds)


def test_duckdb_reference_equals_the_spark_delta(report: tuple[str, dict]):
    text, doc = report
    (size,) = doc["sizes"]
    assert size["delta_identical"] is True and size["delta_check"] == "identical"
    rows = {s["stage"]: s for s in size["stages"]}
    assert rows[REFERENCE]["output_rows"] == rows["delta_builder"]["output_rows"] > 0
    assert size["spark_duckdb_ratio"] > 0
    assert re.search(r"Spark delta / DuckDB: [\d.]+x \(goal: at most 4x\); the two deltas: identical\.", text)


def test_batch_has_about_the_requested_lines(report: tuple[str, dict]):
    (size,) = report[1]["sizes"]
    assert abs(size["batch"]["lines"] - ROWS) < 0.05 * ROWS
    assert size["batch"]["hosts"] == ROWS // 200


def test_report_projects_both_estates(report: tuple[str, dict]):
    text, doc = report
    header = next(line for line in text.splitlines() if line.startswith("| estate (logs/s)"))
    rows = table(text, header)
    assert [r[0] for r in rows] == ["10,000", "50,000"]
    assert [r[1] for r in rows] == ["9,000,000", "45,000,000"]
    assert all(int(r[4]) >= 1 for r in rows)
    assert "Partial: fg_a_builder" in text  # skipped stages make the projection partial, and it says so
    assert doc["projection"]["stages_missing"][0] == "fg_a_builder"


def _size(seconds: list[float | None], lines: int = 1_000_000) -> SizeResult:
    batch = Batch(lines, lines, 5000, 1.0, "/raw", "/raw/f/", 4, 1, 1.0)
    pairs = zip(STAGES, seconds, strict=True)
    stages = [StageResult(n, "ok" if s is not None else "failed", s) for n, s in pairs]
    return SizeResult(batch, [*stages, StageResult(REFERENCE, "ok", 2.0)])


def test_projection_arithmetic():
    plan = projection(_size([10.0, 6.0, 2.0, 2.0]), cores=2)  # 1M lines in 20 s on 2 cores: 25,000/s per core
    assert plan["per_core_lines_per_s"] == 25_000 and plan["stages_missing"] == []
    ten, fifty = plan["estates"]
    # 10k logs/s: 9M lines in 300 s = 30,000 lines/s; / (25,000 x 0.6) = 2 vCPUs -> 1 instance
    assert (ten["lines_per_s_needed"], ten["vcpus"], ten["instances"]) == (30_000, 2.0, 1)
    # 50k logs/s: 150,000 lines/s / 15,000 = 10 vCPUs -> 1 instance (15 usable vCPUs each)
    assert (fifty["lines_per_s_needed"], fifty["vcpus"], fifty["instances"]) == (150_000, 10.0, 1)
    slow = projection(_size([100.0, 60.0, 20.0, None]), cores=2)  # 1M in 180 s: 2,778/s per core
    assert slow["stages_missing"] == ["fg_c_builder"]
    assert slow["estates"][1]["instances"] == math.ceil(150_000 / (1_000_000 / 180 / 2 * 0.6) / 15)


def test_repeated_runs_report_their_median_and_every_run():
    runs = [StageResult("delta_builder", "ok", s, jvm_peak_mib=p) for s, p in ((50.0, 900), (40.0, 1000), (44.0, 950))]
    merged = merge_runs(runs, lines=1_000_000)
    assert (merged.seconds, merged.runs, merged.jvm_peak_mib) == (44.0, [50.0, 40.0, 44.0], 1000)
    assert merged.lines_per_s == round(1_000_000 / 44.0)
    failed = StageResult("delta_builder", "failed", detail="ValueError: boom")
    assert merge_runs([runs[0], failed, runs[2]], lines=1).detail == "ValueError: boom"
    skipped = StageResult("fg_a_builder", "skipped", detail="not selected (--stages)")
    assert merge_runs([skipped, skipped], lines=1) == skipped
    size = SizeResult(_size([10.0, 6.0, 2.0, 2.0]).batch,
                      [merged, merge_runs([StageResult(REFERENCE, "ok", s) for s in (10.0, 11.0, 12.0)], lines=1)])
    assert size.ratio == 4.0 and size.first_ratio == 5.0


def test_runtimes_file_is_each_measured_stage_by_entrypoint(tmp_path: Path):
    """What `make bench --runtimes` writes, read back as the compiler's cadence model reads it."""
    from ndr_compiler.cadence import load_runtimes
    from ndr_jobs.interface.entrypoints import ENTRYPOINTS

    doc = runtimes_document(_size([10.0, 6.0, 2.5, None]), {"spark_master": "local[*]", "pyspark": "3.5.6",
                                                             "cores": 2}, "python -m ndr_jobs.devtools.bench --quick")
    assert doc["seconds"] == {"ndr_jobs.scripts.run_delta_builder": 10.0, "ndr_jobs.scripts.run_fg_a_builder": 6.0,
                              "ndr_jobs.scripts.run_pair_counts_builder": 2.5}  # the failed fg_c is left out
    assert set(doc["seconds"]) <= set(ENTRYPOINTS)
    assert doc["batch_lines"] == 1_000_000 and "--quick: the 1,000,000-line batch" in doc["source"]
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps(doc))
    assert dict(load_runtimes(path).seconds) == doc["seconds"]
