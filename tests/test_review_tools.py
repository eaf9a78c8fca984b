"""Review tooling: output formats, the spec schema, diagrams, and the semantic diff."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from ndr_compiler.cli import main
from tests.conftest import GENERATED, ROOT, SPECS
from tests.test_compile import _spec_steps

BAD = ROOT / "tests" / "bad_specs" / "lock_not_released.yaml"
CONTEXT = [str(SPECS / "project.yaml")]


def lint(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["lint", *args])
    return result.exit_code, result.output


def test_json_format():
    code, out = lint(str(BAD), *CONTEXT, "--format", "json")
    rows = json.loads(out)
    assert code == 1
    assert {"file", "line", "column", "code", "name", "severity", "message"} <= set(rows[0])
    assert any(r["code"] == "E301" and r["name"] == "lock-not-released" for r in rows)


def test_github_format_is_workflow_annotations():
    code, out = lint(str(BAD), *CONTEXT, "--format", "github")
    assert code == 1
    for line in out.strip().splitlines():
        assert re.match(r"^::error file=[^,]+,line=\d+,col=\d+,title=E\d{3}::E\d{3} .+$", line), line


def test_sarif_format():
    code, out = lint(str(BAD), *CONTEXT, "--format", "sarif")
    doc = json.loads(out)
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1


def test_select_and_ignore():
    code, out = lint(str(BAD), *CONTEXT, "--select", "E301")
    assert code == 1 and " E301 " in out and " E203 " not in out
    code, out = lint(str(BAD), *CONTEXT, "--ignore", "E2", "--ignore", "E3")
    assert code == 0


def test_schema_accepts_every_spec_and_rejects_a_broken_one():
    schema = json.loads((GENERATED / "schema" / "ndr-spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(SPECS.rglob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=") and first.endswith("ndr-spec.schema.json")
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target == (GENERATED / "schema" / "ndr-spec.schema.json").resolve()
    broken = yaml.safe_load((SPECS / "pipelines" / "inference.yaml").read_text())
    broken["spec"]["colour"] = "blue"
    assert list(validator.iter_errors(broken))


def test_diagrams_show_every_state_and_step():
    for asl_path in (GENERATED / "state_machines").glob("*.asl.json"):
        asl = json.loads(asl_path.read_text())
        diagram = (GENERATED / "diagrams" / asl_path.name.replace(".asl.json", ".md")).read_text()
        assert "```mermaid\nflowchart TD\n" in diagram
        for name in asl["States"]:
            assert f'"{name}<br/>' in diagram, name
    for p in (GENERATED / "pipelines").glob("*.json"):
        diagram = (GENERATED / "diagrams" / f"{p.stem}.md").read_text()
        for step in json.loads(p.read_text())["Steps"]:
            spec_steps = _spec_steps(step)
            if [name for name, _ in spec_steps] != [step["Name"]]:  # a fused job: a subgraph of its steps
                assert f'subgraph j0 ["{step["Name"]}: one Spark job"]' in diagram
            for name, module in spec_steps:
                assert f'"{name}<br/><i>Spark: {module}</i>"' in diagram or f'"{name}<br/><i>Processing' in diagram


def test_every_state_comment_names_its_spec_line():
    for asl_path in (GENERATED / "state_machines").glob("*.asl.json"):
        asl = json.loads(asl_path.read_text())
        for name, state in asl["States"].items():
            file, line = state["Comment"].split(" ")[0].split(":")
            assert (ROOT / file).exists()
            assert 1 <= int(line) <= len((ROOT / file).read_text().splitlines()), name


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding specs/ and generated/ as committed, for the semantic diff."""
    shutil.copytree(SPECS, tmp_path / "specs")
    shutil.copytree(GENERATED, tmp_path / "generated")
    run = lambda *a: subprocess.run(a, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return tmp_path


def test_semantic_diff_names_states_steps_and_fields(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    sm = repo / "specs" / "state_machines" / "sfn_ndr_15m_features_inference.yaml"
    sm.write_text(
        sm.read_text().replace(
            "poll: {every_seconds: 20}", "poll: {every_seconds: 10}"
        )
    )
    pl = repo / "specs" / "pipelines" / "inference.yaml"
    pl.write_text(pl.read_text().replace("processor: spark", "processor: spark\n      overrides: {instance_count: 4}"))
    result = CliRunner().invoke(main, ["diff", "specs/", "--base", "HEAD"])
    assert result.exit_code == 0, result.output
    assert "changed  state_machines/sfn_ndr_15m_features_inference.asl.json" in result.output
    # the same change to two states: one line naming both, its values once
    assert "~ states `WaitBeforeDescribe15mFeatures`, `WaitBeforeDescribeInference`: Seconds\n" \
           "      Seconds: 20 -> 10\n" in result.output
    assert "~ state `FeaturesPipelineStatusChoice`: Choices" in result.output  # the exhausted-cause text
    # a long string is shown around where it changed, not from its start
    assert re.search(r'\n      Choices\[\d\]\.Condition: "….{0,30}>= 1170 %}" -> "….{0,30}>= 2340 %}"\n', result.output)
    assert "changed  pipelines/inference.json" in result.output
    assert "~ step `InferencePredictionsStep`: processor\n" \
           "      ProcessingResources.ClusterConfig.InstanceCount: 1 -> 4\n" in result.output
    md = CliRunner().invoke(main, ["diff", "specs/", "--base", "HEAD", "--format", "markdown"]).stdout  # no warnings
    assert md.startswith("### ndr: generated changes since `HEAD`")
    assert "    - `Seconds: 20 -> 10`" in md


def test_semantic_diff_with_no_change(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["diff", "specs/"])
    assert result.exit_code == 0 and "No change to generated/ or the environments since HEAD." in result.output


def test_semantic_diff_bad_ref(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["diff", "specs/", "--base", "no-such-ref"])
    assert result.exit_code == 2 and "cannot read generated/" in result.output


def test_value_changes_are_compact_and_bounded():
    from ndr_compiler.semantic_diff import value_changes

    assert value_changes({"a": [1, 2, 3], "b": "x"}, {"a": [1, 3], "b": "y", "c": True}) == [
        "a[1]: - 2", 'b: "x" -> "y"', "c: + true"]
    long = value_changes("x" * 200, "y" * 200)[0]
    assert len(long) < 140 and long.count("…") == 2
    many = value_changes(list(range(10)), list(range(10, 20)))
    assert len(many) == 4 and many[-1] == "… and 7 more"


def test_semantic_diff_summarises_new_and_removed_files(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    subprocess.run(["git", "rm", "-q", "generated/state_machines/sfn_ndr_monthly_fg_b_baselines.asl.json",
                    "generated/pipelines/if_training.json"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before"], cwd=repo,
                   check=True)
    (repo / "specs" / "pipelines" / "delta_builder.yaml").unlink()
    out = CliRunner().invoke(main, ["diff", "specs/"]).output
    asl = json.loads((GENERATED / "state_machines" / "sfn_ndr_monthly_fg_b_baselines.asl.json").read_text())
    first = next(iter(asl["States"]))
    assert re.search(r"added    state_machines/sfn_ndr_monthly_fg_b_baselines.asl.json\n"
                     rf"    \+ new state machine sfn_ndr_monthly_fg_b_baselines: \d+ states \({first}, .*\), "
                     r"triggers: schedule cron\(0 2 1 \* \? \*\) \(dev\)\n", out), out
    steps = json.loads((GENERATED / "pipelines" / "if_training.json").read_text())["Steps"]
    assert f"    + new pipeline if_training: {len(steps)} steps ({steps[0]['Name']}, " in out
    assert re.search(r"removed  pipelines/delta_builder.json\n    - removed pipeline delta_builder: \d+ steps", out)


def test_semantic_diff_shows_environment_schedules(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    env = repo / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    schedules = doc["spec"]["triggers"]["schedules"]
    del schedules["training"]
    schedules["monthly-baselines"]["schedule"] = "cron(0 3 1 * ? *)"
    schedules["publication"] = {"state_machine": "sfn_ndr_prediction_publication", "schedule": "rate(15 minutes)"}
    doc["spec"]["values"]["NdrOrgId"] = "other"
    env.write_text(yaml.safe_dump(doc))
    prod = dict(doc, metadata={"name": "prod"})
    (env.parent / "prod.yaml").write_text(yaml.safe_dump(prod))
    result = CliRunner().invoke(main, ["diff", "specs/"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "changed  environment dev\n" in out
    assert "    + schedule `publication`: rate(15 minutes) -> sfn_ndr_prediction_publication\n" in out
    assert "    - schedule `training`: cron(0 4 2 * ? *) -> sfn_ndr_training_orchestrator" in out
    assert '    ~ schedule `monthly-baselines`: schedule\n      schedule: "cron(0 2 1 * ? *)" -> "cron(0 3 1 * ? *)"' \
        in out
    assert '    ~ values.NdrOrgId: "acme" -> "other"' in out
    assert "added    environment prod\n    + new environment prod: account 123456789012, us-east-1" in out


def test_progress_rewrites_one_line_on_a_terminal_and_logs_lines_otherwise():
    import io

    from ndr_jobs.interface.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, tty in ((Terminal(), True), (io.StringIO(), False)):
        with Progress(2, "deploy", stream) as p:
            p.step("create a")
            p.step("create b")
        text = stream.getvalue()
        if tty:
            assert re.fullmatch(r"\r\x1b\[K\[1/2 \d+s\] deploy: create a\r\x1b\[K\[2/2 \d+s\] deploy: create b"
                                r"\r\x1b\[Kdeploy: 2/2 in \d+s\n", text), repr(text)
        else:
            assert re.fullmatch(r"\[1/2 \d+s\] deploy: create a\n\[2/2 \d+s\] deploy: create b\n", text), repr(text)


def test_progress_keeps_its_line_below_other_output_and_counts_without_a_total():
    import io

    from ndr_jobs.interface.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, tty in ((Terminal(), True), (io.StringIO(), False)):
        out: list[str] = []
        with Progress(None, "backfill", stream) as p:
            p.echo("before any step", out.append)
            p.step("window 1")
            p.echo("pipeline ended", out.append)
        assert out == ["before any step", "pipeline ended"]
        text = stream.getvalue()
        if tty:  # the line is cleared before the other output and drawn again after it
            assert re.fullmatch(r"\r\x1b\[K\[1 \d+s\] backfill: window 1\r\x1b\[K\r\x1b\[K\[1 \d+s\] backfill: window 1"
                                r"\r\x1b\[Kbackfill: 1 in \d+s\n", text), repr(text)
        else:
            assert re.fullmatch(r"\[1 \d+s\] backfill: window 1\n", text), repr(text)
