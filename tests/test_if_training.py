"""The Isolation Forest lifecycle on hand-made FG-A/FG-C partitions: each stage, bounded remediation, the
deploy gate, idempotent re-runs (artifact bytes unchanged), determinism, and the SageMaker registry (moto)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.interface.entrypoints import TRAINING_STAGES
from ndr_jobs.model import artifacts, registry
from ndr_jobs.model.artifacts import ArtifactError, RunPaths
from ndr_jobs.model.features import Preprocessor, explain, join_features
from ndr_jobs.model.forest import ks, psi
from ndr_jobs.processing import if_training_job as job
from ndr_jobs.processing.chain import FEATURE_CHAIN
from ndr_jobs.runtime.config import BatchRuntime, TrainingRuntime

FSV = "v1"
PROJECT = "ndr-prod"
T0 = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
HOSTS = [f"10.10.1.{i}" for i in range(10, 50)]
FG_A_FEATURES = ("bytes_out_log_15m", "fan_out_15m", "sessions_15m", "sessions_1h")
FG_C_FEATURES = ("cold_start", "novel_pairs", "z_host_sessions_15m")


# --- hand-made features (the layout of fg_a / fg_c) -------------------------------------------------------


def windows(n: int, start: datetime = T0) -> list[datetime]:
    return [start + i * layout.BATCH for i in range(n)]


def fg_frames(start: datetime, hosts: list[str], seed: int, mode: str = "normal") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One window's FG-A and FG-C rows; ``mode`` ``bimodal`` makes a differently shaped population."""
    index = int((start - T0) / layout.BATCH)
    rng = np.random.default_rng([seed, index])
    n = len(hosts)
    base = np.linspace(5, 60, n)  # each host has its own level
    sessions = base * rng.lognormal(0, 0.25, n)
    if mode == "bimodal":
        sessions = np.where(np.arange(n) % 2 == 0, sessions * rng.lognormal(3, 1.5, n), sessions * 0.01)
    keys = {
        "host_ip": hosts,
        "batch_start_ts": [start] * n,
        "batch_end_ts": [start + layout.BATCH] * n,
    }
    fg_a = pd.DataFrame(
        {
            **keys,
            "sessions_15m": sessions,
            "sessions_1h": sessions * 4 * rng.lognormal(0, 0.1, n),
            "fan_out_15m": np.round(np.sqrt(sessions) * rng.lognormal(0, 0.2, n)),
            "bytes_out_log_15m": np.log1p(sessions * 2000 * rng.lognormal(0, 0.5, n)),
        }
    )
    fg_c = pd.DataFrame(
        {
            **keys,
            "z_host_sessions_15m": rng.normal(0, 1, n),
            "novel_pairs": rng.poisson(0.3, n).astype(np.int64),
            "cold_start": np.zeros(n, dtype=np.int32),
        }
    )
    return fg_a, fg_c


def write_window(root: Path, dataset: str, start: datetime, frame: pd.DataFrame) -> None:
    stamps = ("batch_start_ts", "batch_end_ts")  # naive UTC into Arrow, then marked UTC (no tz-aware .values)
    frame = frame.assign(**{n: pd.to_datetime(frame[n], utc=True).dt.tz_localize(None) for n in stamps})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ts = pa.timestamp("us", tz="UTC")
    for name in stamps:
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(ts))
    storage.write_table(table, str(root), dataset, layout.batch_partition(FSV, start))


def write_features(
    root: Path,
    starts: list[datetime],
    seed: int = 0,
    hosts: list[str] | None = None,
    skip_a: tuple[datetime, ...] = (),
    skip_c: tuple[datetime, ...] = (),
    mode: str = "normal",
) -> None:
    """FG-A and FG-C partitions for ``starts`` (minus the skipped ones)."""
    for start in starts:
        fg_a, fg_c = fg_frames(start, hosts or HOSTS, seed, mode)
        if start not in skip_a:
            write_window(root, layout.FG_A, start, fg_a)
        if start not in skip_c:
            write_window(root, layout.FG_C, start, fg_c)


def training(stage: str, run_key: str = "run-1", n: int = 12, start: datetime = T0, **kw: object) -> TrainingRuntime:
    return TrainingRuntime(
        project_name=PROJECT,
        feature_spec_version=FSV,
        stage=stage,
        training_start_ts=contract.iso(start),
        training_end_ts=contract.iso(start + n * layout.BATCH),
        run_key=run_key,
        **kw,  # type: ignore[arg-type]
    )


def run(stage: str, **kw: object) -> dict:
    return job.run_if_training_from_runtime_config(training(stage, **kw))


def test_the_job_runs_exactly_the_stages_its_command_line_declares():
    assert tuple(job.STAGES) == TRAINING_STAGES


def run_all(run_key: str = "run-1", n: int = 12, start: datetime = T0) -> dict:
    out = {}
    for stage in job.STAGES:
        out[stage] = run(stage, run_key=run_key, n=n, start=start)
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """The artifacts (the training lock's lease is operational state, with times: left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for base in ("models", "model_registry")
        for p in sorted((root / base).rglob("*"))
        if p.is_file() and p.name != "training.lock.json"
    }


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    monkeypatch.setenv("NDR_RAW_ROOT", str(tmp_path / "raw"))
    monkeypatch.setenv("NDR_ORG_ID", "acme")
    monkeypatch.delenv("NDR_MODEL_REGISTRY", raising=False)
    for name in list(os.environ):
        if name.startswith("NDR_GATE_"):
            monkeypatch.delenv(name)
    return store


# --- verify -----------------------------------------------------------------------------------------------


def test_verify_lists_the_windows_either_dataset_lacks(root: Path):
    ws = windows(8)
    write_features(root, ws, skip_a=(ws[2],), skip_c=(ws[5],))
    status = run("verify", n=8)
    assert status["missing_windows"] == [contract.iso(ws[2]), contract.iso(ws[5])]
    assert status["missing_fg_a"] == [contract.iso(ws[2])] and status["missing_fg_c"] == [contract.iso(ws[5])]
    assert status["expected_windows"] == 8 and status["present_windows"] == 6 and status["coverage_ok"] is False
    path = RunPaths(str(root), FSV, "run-1").verify
    before = Path(path).read_bytes()
    write_features(root, ws)  # the gaps are filled, but verify of this run key is done: nothing changes
    assert run("verify", n=8) == status
    assert Path(path).read_bytes() == before
    assert before.decode().endswith("}\n") and '"generated_at"' not in before.decode()


def test_a_run_key_is_pinned_to_its_range_and_bad_input_is_refused(root: Path):
    write_features(root, windows(8))
    run("verify", n=8)
    with pytest.raises(ArtifactError, match="belongs to another run"):
        run("verify", n=6)
    with pytest.raises(ValueError, match="15-minute boundary"):
        run("verify", start=T0 + timedelta(minutes=7))
    with pytest.raises(ValueError, match="run key"):
        run("verify", run_key="../escape")
    with pytest.raises(ValueError, match="not in the training range|not a 15-minute window start"):
        run("remediate", n=8, missing_windows_override=["2030-01-01T00:00:00Z"])
    with pytest.raises(job.StageOrderError, match="reverify"):
        run("train", n=8)


# --- remediation ------------------------------------------------------------------------------------------


class FakeChain:
    """Stand-ins for the four 15-minute builders: they record calls and write hand-made features."""

    def __init__(self, root: Path, fail_at: str | None = None) -> None:
        self.root, self.fail_at, self.calls = root, fail_at, []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeChain:
        for name, module, function in job.REMEDIATION_CHAIN:
            monkeypatch.setattr(f"{module}.{function}", self._builder(name))
        return self

    def _builder(self, name: str):
        def build(runtime: BatchRuntime) -> None:
            self.calls.append((name, runtime.batch_start_ts, runtime.mini_batch_id))
            if name == self.fail_at:
                raise RuntimeError("boom")
            start = contract.parse_utc(runtime.batch_start_ts)
            fg_a, fg_c = fg_frames(start, HOSTS, 0)
            if name == "fg_a_builder":
                write_window(self.root, layout.FG_A, start, fg_a)
            if name == "fg_c_builder":
                write_window(self.root, layout.FG_C, start, fg_c)

        return build


def raw_batch(tmp_path: Path, start: datetime) -> None:
    folder = tmp_path / "raw" / "pan-traffic" / "acme" / PROJECT / FSV / start.strftime("%Y/%m/%d/%H%M")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "traffic.log").write_text("x\n")


def test_remediation_rebuilds_missing_windows_in_order_and_reverify_passes(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = windows(8)
    write_features(root, ws, skip_a=(ws[3],), skip_c=(ws[1], ws[3]))
    for w in (ws[1], ws[3]):
        raw_batch(tmp_path, w)
    chain = FakeChain(root).install(monkeypatch)
    run("verify", n=8)
    record = run("remediate", n=8)
    assert [c[0] for c in chain.calls] == [*FEATURE_CHAIN] * 2
    assert [c[1] for c in chain.calls[::4]] == [contract.iso(ws[1]), contract.iso(ws[3])]
    assert chain.calls[0][2] == f"acme-{PROJECT}-{FSV}-{layout.stamp(ws[1])}"
    assert record["status"] == "succeeded" and len(record["attempts"]) == 1
    before = Path(RunPaths(str(root), FSV, "run-1").remediation).read_bytes()
    run("remediate", n=8)  # the same remediation succeeded already: no attempt, no call, same bytes
    assert len(chain.calls) == 8
    assert Path(RunPaths(str(root), FSV, "run-1").remediation).read_bytes() == before
    status = run("reverify", n=8)
    assert status["status"] == "passed" and status["missing_windows"] == [] and len(status["usable_windows"]) == 8


def test_remediation_stops_after_two_attempts(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = windows(8)
    write_features(root, ws, skip_a=(ws[4],))
    raw_batch(tmp_path, ws[4])
    chain = FakeChain(root, fail_at="fg_a_builder").install(monkeypatch)
    run("verify", n=8)
    for attempt in (1, 2):
        with pytest.raises(
            job.RemediationFailedError, match=f"attempt {attempt}/2 failed .* fg_a_builder: RuntimeError"
        ):
            run("remediate", n=8)
    with pytest.raises(job.RemediationExhaustedError, match="already used its 2 remediation attempts"):
        run("remediate", n=8)
    with pytest.raises(job.RemediationExhaustedError):
        run("remediate", n=8, missing_windows_override=[contract.iso(ws[4])])
    assert [c[0] for c in chain.calls].count("fg_a_builder") == 2
    record = artifacts.read_json(RunPaths(str(root), FSV, "run-1").remediation)
    assert [a["status"] for a in record["attempts"]] == ["failed", "failed"]
    with pytest.raises(job.CoverageError, match="1 window"):
        run("reverify", n=8)


def test_windows_without_raw_data_are_tolerated_and_nothing_to_do_costs_no_attempt(
    root: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = windows(8)
    write_features(root, ws, skip_a=(ws[6],), skip_c=(ws[6],))
    chain = FakeChain(root).install(monkeypatch)
    run("verify", n=8)
    record = run("remediate", n=8)
    assert record["attempts"][0]["outcomes"][contract.iso(ws[6])]["outcome"] == "no_raw_data"
    assert chain.calls == []
    status = run("reverify", n=8)
    assert status["status"] == "passed" and status["unrecoverable_windows"] == [contract.iso(ws[6])]
    assert len(status["usable_windows"]) == 7

    write_features(root, ws)  # a complete range: remediation has nothing to do
    # run-1 stopped before deploy: it holds the project's training lock until released or its lease runs out
    with pytest.raises(registry.TrainingLockHeldError, match="run-1"):
        run("verify", run_key="run-2", n=8)
    assert registry.TrainingLock(registry.ModelStore(str(root), PROJECT, FSV), "run-1").release()
    run("verify", run_key="run-2", n=8)
    record = run("remediate", run_key="run-2", n=8)
    assert record["status"] == "nothing_to_remediate" and record["attempts"] == []


# --- train .. deploy ----------------------------------------------------------------------------------------


def test_the_lifecycle_promotes_the_first_model_and_reruns_change_nothing(root: Path):
    write_features(root, windows(12))
    out = run_all()
    report = out["train"]
    assert report["status"] == "succeeded" and report["features"] == len(FG_A_FEATURES) + len(FG_C_FEATURES)
    paths = RunPaths(str(root), FSV, "run-1")
    metrics = artifacts.read_json(paths.metrics)
    assert metrics["features"] == sorted(FG_A_FEATURES + FG_C_FEATURES)
    assert metrics["split"]["validation_windows"]["count"] == 3  # ceil(0.2 * 12)
    assert metrics["split"]["train_rows"] == 9 * len(HOSTS) and metrics["refit"]["rows"] == 12 * len(HOSTS)
    assert len(metrics["validation"]["scores"]["percentiles"]) == 101
    assert len(metrics["validation"]["forest_scores"]["percentiles"]) == 101  # what the drift checks compare
    # the forest on every column and the spec's families these columns feed (novel_pairs; sessions, fan-out, ...)
    assert metrics["detectors"] == {"all_features": 7, "lateral_movement": 1, "volume": 5}
    alerts = metrics["validation"]["alerts_by_detector"]
    assert set(alerts) == set(metrics["detectors"])
    validation_rows = metrics["split"]["validation_rows"]
    assert sum(alerts.values()) == round(metrics["validation"]["alert_rate"] * validation_rows)
    assert Path(paths.success).exists()
    assert out["publish"]["model_version"] == 1 and out["publish"]["registry"] == "local"
    attributes = out["attributes"]
    assert attributes["features"] == metrics["features"] and attributes["feature_spec_version"] == FSV
    assert attributes["preprocessing"]["kind"] == "signed_log1p+robust_scale"
    assert attributes["windows"]["expected"] == 12 and attributes["model_version"] == 1
    deploy = out["deploy"]
    assert deploy["decision"] == "promoted" and "first model" in deploy["reason"]
    store = registry.ModelStore(str(root), PROJECT, FSV)
    assert store.promoted()["run_key"] == "run-1" and store.index()["versions"][0]["run_key"] == "run-1"

    before = snapshot(root)
    assert any(k.endswith("model.tar.gz") for k in before)
    assert run_all() == out
    assert snapshot(root) == before


def test_training_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = []
    for name in ("a", "b"):
        store = tmp_path / name
        monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
        write_features(store, windows(10))
        for stage in ("verify", "remediate", "reverify", "train"):
            run(stage, n=10)
        models.append({k: v.replace(str(store).encode(), b"<root>") for k, v in snapshot(store).items()})
    assert models[0] == models[1]


def test_the_deploy_gate_refuses_a_drifted_model_and_keeps_the_promoted_one(root: Path):
    write_features(root, windows(12))
    run_all()
    later = T0 + timedelta(days=1)
    write_features(root, windows(12, later), seed=3, mode="bimodal")
    for stage in ("verify", "remediate", "reverify", "train", "publish", "attributes"):
        run(stage, run_key="run-2", start=later)
    with pytest.raises(job.DeployRefusedError, match="score_psi"):
        run("deploy", run_key="run-2", start=later)
    paths = RunPaths(str(root), FSV, "run-2")
    status = artifacts.read_json(paths.deploy)
    assert status["decision"] == "refused" and status["previous_promoted"]["run_key"] == "run-1"
    failed = {c["name"] for c in status["checks"] if not c["passed"]}
    assert "score_psi" in failed
    store = registry.ModelStore(str(root), PROJECT, FSV)
    assert store.promoted()["run_key"] == "run-1"
    assert [v["version"] for v in store.index()["versions"]] == [1, 2]
    before = snapshot(root)
    with pytest.raises(job.DeployRefusedError):  # a refusal stays a refusal, and writes nothing
        run("deploy", run_key="run-2", start=later)
    assert snapshot(root) == before

    # a healthy retrain on the original kind of data passes the drift checks and replaces the promoted model
    third = T0 + timedelta(days=2)
    write_features(root, windows(12, third), seed=5)
    out = run_all(run_key="run-3", start=third)
    assert out["deploy"]["decision"] == "promoted"
    assert {c["name"] for c in out["deploy"]["checks"]} >= {"score_psi", "score_ks", "validation_alert_rate"}
    assert store.promoted()["run_key"] == "run-3" and store.promoted()["previous"]["run_key"] == "run-1"


def test_the_deploy_gate_refuses_a_model_that_fails_its_own_validation(root: Path, monkeypatch: pytest.MonkeyPatch):
    ws = windows(12)
    write_features(root, ws[:9])
    write_features(root, ws[9:], seed=1, mode="bimodal")  # the validation windows look nothing like training
    monkeypatch.setenv("NDR_GATE_MAX_ALERT_RATE_RATIO", "5")
    with pytest.raises(job.DeployRefusedError, match="validation_alert_rate"):
        run_all()
    assert registry.ModelStore(str(root), PROJECT, FSV).promoted() is None


def test_sagemaker_model_registry_through_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Publish registers a model package version (moto supports the Model Registry calls); deploy approves it."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("NDR_LOCAL_S3_ROOT", str(tmp_path / "s3"))
    monkeypatch.setenv("NDR_STORAGE_ROOT", "s3://ndr-data/tenant")
    monkeypatch.setenv("NDR_MODEL_REGISTRY", "sagemaker")
    monkeypatch.setenv("NDR_MODEL_IMAGE_URI", "123456789012.dkr.ecr.us-east-1.amazonaws.com/ndr-inference:1")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    write_features(tmp_path / "s3" / "ndr-data" / "tenant", windows(12))
    with mock_aws():
        out = run_all()
        client = boto3.client("sagemaker")
        arn = out["publish"]["model_package_arn"]
        assert out["publish"]["model_package_group"] == "ndr-prod-v1-isolation-forest"
        package = client.describe_model_package(ModelPackageName=arn)
        container = package["InferenceSpecification"]["Containers"][0]
        assert (
            container["ModelDataUrl"]
            == "s3://ndr-data/tenant/model_registry/ndr-prod/feature_spec_version=v1/versions/1/model.tar.gz"
        )
        assert package["ModelApprovalStatus"] == "Approved"
        assert out["publish"]["model_uri"].startswith("s3://ndr-data/tenant/")


# --- units --------------------------------------------------------------------------------------------------


def test_join_renames_colliding_fg_c_columns_and_fills_missing_rows_with_zero():
    a, c = fg_frames(T0, HOSTS[:3], 0)
    c = c.iloc[:2].assign(sessions_15m=1.0)
    frame, sources = join_features(a, ["sessions_15m"], c, ["novel_pairs", "sessions_15m"])
    assert list(sources) == ["fg_c__sessions_15m", "novel_pairs", "sessions_15m"]
    assert sources["fg_c__sessions_15m"] == "fg_c:sessions_15m"
    assert frame["novel_pairs"].isna().sum() == 1  # the host without an FG-C row: null, 0 in the matrix


def test_preprocessing_and_explanations():
    x = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [100.0, 10.0]])
    pre = Preprocessor.fit(["a", "b"], x)
    assert pre.scales[1] == 1.0  # no spread: scale falls back to 1
    assert Preprocessor.from_json(pre.as_json()) == pre
    z = pre.transform(np.array([[1000.0, 10.0]]))
    top = explain(z, np.array([[1000.0, 10.0]]), ["a", "b"], 2)[0]
    assert [t["feature"] for t in top] == ["a", "b"] and top[0]["value"] == 1000.0 and top[0]["deviation"] > 3


def test_drift_measures():
    same = list(np.linspace(0.3, 0.7, 101))
    assert psi(same, same) == 0.0 and ks(same, same) == 0.0
    shifted = list(np.linspace(0.5, 0.9, 101))
    assert psi(same, shifted) > 0.25 and 0.4 < ks(same, shifted) < 0.6


def test_excluded_features_are_left_out_of_the_model():
    from ndr_jobs.model.forest import ForestParams, model_features

    params = ForestParams(exclude_features=["sessions_24h", "z_segment_*"])
    columns = ["sessions_15m", "sessions_24h", "z_host_sessions_15m", "z_segment_sessions_15m", "z_segment_fan_out_1h"]
    assert model_features(columns, params) == ["sessions_15m", "z_host_sessions_15m"]
    assert ForestParams(**params.as_json()) == params  # as recorded in model.json and loaded back
    frames = [fg_frames(T0 + k * layout.BATCH, HOSTS, 0) for k in range(4)]
    frame, sources = join_features(pd.concat([a for a, _ in frames]), ["sessions_15m", "fan_out_15m"], None, [])
    bundle, metrics = job.train_model(frame, sources, ForestParams(exclude_features=["fan_out_*"]), {})
    assert bundle.features == ("sessions_15m",) and metrics["features"] == ["sessions_15m"]


def test_features_whose_window_is_longer_than_the_training_span_are_left_out_and_recorded():
    from datetime import timedelta

    from ndr_jobs.interface.feature_spec import load_feature_spec
    from ndr_jobs.model.features import column_windows
    from ndr_jobs.model.forest import ForestParams, ModelBundle

    spec_windows = column_windows(load_feature_spec(FSV))
    assert spec_windows["periodic_max_score_24h"] == spec_windows["rare_dst_periodic_score"] == timedelta(hours=24)
    assert spec_windows["rare_dst_beacon_score"] == spec_windows["z_host_sessions_1h"] == timedelta(hours=1)
    assert spec_windows["novel_pairs"] == spec_windows["sessions_15m"] == timedelta(minutes=15)

    def train(n: int) -> tuple[ModelBundle, dict]:
        frames = [fg_frames(T0 + k * layout.BATCH, HOSTS, 0) for k in range(n)]
        a = pd.concat([f.assign(periodic_max_score_24h=f["sessions_15m"] % 3) for f, _ in frames])
        c = pd.concat([f for _, f in frames])
        columns = ["sessions_15m", "sessions_1h", "periodic_max_score_24h"]
        frame, sources = join_features(a, columns, c, ["novel_pairs", "z_host_sessions_15m"])
        return job.train_model(frame, sources, ForestParams(n_estimators=20), {"run_key": "r"}, spec_windows)

    bundle, metrics = train(3)  # 45 minutes: the 1h and 24h columns were never seen whole
    unseen = metrics["excluded_unseen_windows"]
    assert unseen["training_span"] == "45m" and unseen["rule"] == job.UNSEEN_RULE
    assert unseen["features"] == [{"feature": "periodic_max_score_24h", "window": "24h"},
                                  {"feature": "sessions_1h", "window": "1h"}]  # fmt: skip
    assert bundle.features == ("novel_pairs", "sessions_15m", "z_host_sessions_15m")
    assert ModelBundle.from_bytes(bundle.to_bytes()).metadata["excluded_unseen_windows"] == unseen
    bundle, metrics = train(8)  # 2 hours: only the 24h column is left out
    assert [u["feature"] for u in metrics["excluded_unseen_windows"]["features"]] == ["periodic_max_score_24h"]
    assert "sessions_1h" in bundle.features
