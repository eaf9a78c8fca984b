"""The feature spec: the repository's v1 loads, the loader finds versions and reports bad ones clearly, and the
models refuse unknown features, windows and keys. No Spark here (the compiler imports this module)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

from ndr_jobs.interface.feature_spec import (
    FG_A_CATALOGUE,
    FeatureSpecDocument,
    IsolationForestParams,
    glob_matcher,
    load_feature_spec,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "specs" / "features" / "v1.yaml"


def v1_document() -> dict:
    return yaml.safe_load(V1.read_text())


def write(directory: Path, name: str, document: dict | str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    (directory / f"{name}.yaml").write_text(text)


def test_v1_loads_and_declares_what_the_jobs_need(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NDR_FEATURE_SPEC_DIR", raising=False)
    schema_line = "# yaml-language-server: $schema=../../generated/schema/ndr-spec.schema.json"
    assert V1.read_text().splitlines()[0] == schema_line
    spec = load_feature_spec("v1")
    assert spec.fg_a.windows == ["15m", "1h", "24h"]
    assert spec.fg_b.horizons == ["7d", "30d"] and spec.fg_c.baseline_horizon == "7d"
    assert {f.name for f in spec.fg_a.features} <= set(FG_A_CATALOGUE)
    assert spec.fg_a.columns()[:3] == ["sessions_15m", "sessions_1h", "sessions_24h"]
    assert "periodic_max_score_24h" in spec.fg_a.columns() and "periodic_max_score_15m" not in spec.fg_a.columns()
    assert all(c.endswith(("_15m", "_1h")) for c in spec.zscore_columns())
    assert spec.network.internal_networks == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert isinstance(spec.isolation_forest, IsolationForestParams)
    assert (spec.isolation_forest.n_estimators, spec.isolation_forest.validation_fraction) == (300, 0.2)
    FeatureSpecDocument.model_validate(v1_document())  # the whole document, as the compiler lints it


def test_the_module_does_not_import_spark() -> None:
    code = (
        "import sys, ndr_jobs.interface.feature_spec as f; "
        "f.load_feature_spec('v1'); print('pyspark' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_spec_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = v1_document()
    document["metadata"]["name"] = "v2"
    document["spec"]["fg_b"]["horizons"] = ["7d"]
    write(tmp_path, "v2", document)
    monkeypatch.setenv("NDR_FEATURE_SPEC_DIR", str(tmp_path))
    assert load_feature_spec("v2").fg_b.horizons == ["7d"]
    with pytest.raises(ValueError, match=r"unknown feature spec version 'v1'.*known: v2"):
        load_feature_spec("v1")


def test_an_unknown_version_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NDR_FEATURE_SPEC_DIR", raising=False)
    with pytest.raises(ValueError, match=r"unknown feature spec version 'v9'.*known: .*v1"):
        load_feature_spec("v9")
    with pytest.raises(ValueError, match="unknown feature spec version"):
        load_feature_spec("../specs/project")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["fg_a"]["features"].append({"name": "telepathy", "windows": ["15m"]}),
         r"unknown FG-A features \['telepathy'\]"),
        (lambda s: s["fg_a"]["features"][0].update(windows=["2h"]), r"windows \['2h'\] not declared"),
        (lambda s: s["fg_a"].update(windows=["15m", "20m"]), "not a positive multiple of 15 minutes"),
        (lambda s: s["fg_a"].update(windows=["1h"]), "the 15m window"),
        (lambda s: s["fg_b"].update(horizons=["36h"]), "not a whole number of days"),
        (lambda s: s["fg_b"].update(statistics=["mean", "median"]), "must include median and mad"),
        (lambda s: s["fg_c"].update(baseline_horizon="90d"), "is not one of fg_b.horizons"),
        (lambda s: s["fg_c"].update(features=["pairs", "vibes"]), r"unknown FG-C features \['vibes'\]"),
        (lambda s: s["fg_c"]["zscore"].update(features=["telepathy"]), "are not FG-A features"),
        (lambda s: s["network"].update(internal_networks=["10.0.0.0/33"]), "not a CIDR network"),
        (lambda s: s["network"]["segments"].append({"cidr": "10.0.0.1/8", "segment": "x"}), "not a CIDR"),
        (lambda s: s["isolation_forest"].update(n_trees=5), "isolation_forest.n_trees: Extra inputs"),
        (lambda s: s["isolation_forest"].update(validation_fraction=1.5), "validation_fraction"),
        (lambda s: s["isolation_forest"]["families"].update(c2=["rare_dst_*", "telepathy_*"]),
         r"families.c2 patterns \['telepathy_\*'\] match no model column"),
        (lambda s: s["isolation_forest"]["families"].update(x=["sessions_24h"]),  # excluded: no forest sees it
         r"families.x patterns \['sessions_24h'\] match no model column"),
        (lambda s: s["isolation_forest"]["families"].update(all_features=["sessions_*"]), "is reserved"),
        (lambda s: s["isolation_forest"]["families"].update({"C2 beacons": ["rare_dst_*"]}), "pattern"),
        (lambda s: s["isolation_forest"].update(calibration_tail=0.0), "calibration_tail"),
    ],
)  # fmt: skip
def test_invalid_specs_are_refused_with_the_reason(change, message: str, tmp_path: Path,  # noqa: ANN001
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    document = v1_document()
    change(document["spec"])
    write(tmp_path, "v1", document)
    monkeypatch.setenv("NDR_FEATURE_SPEC_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=rf"invalid feature spec .*v1\.yaml: .*{message}"):
        load_feature_spec("v1")


def test_broken_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDR_FEATURE_SPEC_DIR", str(tmp_path))
    write(tmp_path, "v1", "spec: [unclosed\n")
    with pytest.raises(ValueError, match="not YAML"):
        load_feature_spec("v1")
    document = v1_document()
    document["kind"] = "StateMachine"
    write(tmp_path, "v1", document)
    with pytest.raises(ValueError, match="kind"):
        load_feature_spec("v1")
    document = v1_document()
    document["metadata"]["name"] = "v7"
    write(tmp_path, "v1", document)
    with pytest.raises(ValueError, match="metadata.name 'v7'"):
        load_feature_spec("v1")


def test_durations() -> None:
    assert [parse_duration(v) for v in ("15m", "1h", "7d")] == [timedelta(minutes=15), timedelta(hours=1),
                                                                 timedelta(days=7)]  # fmt: skip
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1w")


def test_glob_matcher_is_fnmatchcase():
    """Its shortcuts (a plain name, ``prefix*``) and its fallback agree with fnmatch on every pair."""
    names = ["rare_dst_x", "rare_dst_", "rare_ds", "abc", "a*c", "a?c", "a[b]c", "ab", "", "x\ny", "aXc", "abc*"]
    patterns = ["rare_dst_*", "abc", "a*c", "a?c", "a[b]c", "*", "", "ab*", "a[*", "*c", "abc*", "a\\*", "[a]*"]
    for name, pattern in itertools.product(names, patterns):
        assert glob_matcher(pattern)(name) == fnmatchcase(name, pattern), (name, pattern)
