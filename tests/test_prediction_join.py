"""Prediction-feature join and publication: the s3 dataset and the staged-Redshift load into DuckDB, both
idempotent per window; the Redshift Data API request shape (botocore Stubber: moto's redshift-data has no
BatchExecuteStatement; the client itself is tested in test_redshift.py); clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import duckdb
import pytest
from botocore.stub import Stubber

from ndr_jobs.datasets import layout
from ndr_jobs.datasets.redshift import RedshiftConfig, RedshiftStatementError, RedshiftTimeoutError, UnsafeValueError
from ndr_jobs.model.features import FeatureDataError
from ndr_jobs.processing.inference_predictions_job import run_inference_predictions_from_runtime_config
from ndr_jobs.processing.prediction_feature_join_job import (
    PREDICTION_PART,
    load_redshift,
    redshift_statements,
    run_prediction_feature_join_from_runtime_config,
)
from ndr_jobs.runtime.config import PublicationRuntime
from tests.conftest import committed_rows
from tests.test_if_training import FSV, HOSTS, T0, run_all, windows, write_features
from tests.test_inference import ODD_HOST, WINDOW, batch, write_odd_window


def publication(target: str, start=WINDOW) -> PublicationRuntime:
    b = batch(start)
    return PublicationRuntime(**{**b.__dict__, "publication_target": target})


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One trained and promoted model and one scored window, shared by the module's tests."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NDR_STORAGE_ROOT", str(root))
        env.delenv("NDR_MODEL_REGISTRY", raising=False)
        write_features(root, windows(12))
        run_all()
        write_odd_window(root)
        run_inference_predictions_from_runtime_config(batch())
        yield root


def read_partition(store: Path, dataset: str, start=WINDOW) -> list[dict]:
    folder = store / dataset / f"feature_spec_version={FSV}" / f"batch_start={layout.stamp(start)}"
    return committed_rows(folder)


def test_s3_target_joins_every_prediction_with_its_features_and_reruns_overwrite(scored: Path):
    summary = run_prediction_feature_join_from_runtime_config(publication("s3"))
    assert summary["rows"] == len(HOSTS)
    rows = read_partition(scored, "publication")
    columns = list(rows[0])
    assert columns[: len(PREDICTION_PART)] == list(PREDICTION_PART)
    assert columns[len(PREDICTION_PART) :] == [
        "bytes_out_log_15m", "fan_out_15m", "sessions_15m", "sessions_1h",  # FG-A, sorted
        "cold_start", "novel_pairs", "z_host_sessions_15m",  # FG-C, sorted
    ]  # fmt: skip
    assert [r["rank"] for r in rows] == list(range(1, len(HOSTS) + 1))
    top = rows[0]
    assert top["host_ip"] == ODD_HOST and top["fan_out_15m"] == 900.0 and top["novel_pairs"] == 800
    reasons = json.loads(top["top_features_json"])
    assert len(reasons) == 5 and set(reasons[0]) == {"feature", "value", "deviation"}

    run_prediction_feature_join_from_runtime_config(publication("s3"))
    assert read_partition(scored, "publication") == rows


def test_redshift_target_loads_duckdb_idempotently_per_window(scored: Path, tmp_path: Path, monkeypatch):
    db = tmp_path / "publication.duckdb"
    monkeypatch.setenv("NDR_PUBLICATION_DUCKDB", str(db))
    summary = run_prediction_feature_join_from_runtime_config(publication("redshift"))
    assert summary["rows_in_table"] == len(HOSTS) and summary["table"] == "ndr_publication"
    with duckdb.connect(str(db)) as con:  # another window's rows, loaded earlier: they must survive
        con.execute(
            "INSERT INTO ndr_publication SELECT * REPLACE ('20261001T0500' AS batch_start) FROM ndr_publication"
        )
    summary = run_prediction_feature_join_from_runtime_config(publication("redshift"))  # replaces its window only
    assert summary["rows_in_table"] == len(HOSTS)
    with duckdb.connect(str(db)) as con:
        counts = con.execute(
            "SELECT batch_start, feature_spec_version, count(*), count(DISTINCT host_ip), min(rank) "
            "FROM ndr_publication GROUP BY ALL ORDER BY 1"
        ).fetchall()
        assert counts == [
            ("20261001T0500", FSV, len(HOSTS), len(HOSTS), 1),
            (layout.stamp(WINDOW), FSV, len(HOSTS), len(HOSTS), 1),
        ]
        host, features = con.execute(
            "SELECT host_ip, top_features_json FROM ndr_publication WHERE rank = 1 AND batch_start = ?",
            [layout.stamp(WINDOW)],
        ).fetchone()
    assert host == ODD_HOST and json.loads(features)[0]["feature"] in {"fan_out_15m", "sessions_15m", "novel_pairs"}
    staged = read_partition(scored, "publication_staged")
    assert len(staged) == len(HOSTS) and staged[0]["batch_start"] == layout.stamp(WINDOW)


def test_errors_are_clear(scored: Path, monkeypatch):
    with pytest.raises(ValueError, match="NDR_PUBLICATION_DUCKDB"):
        run_prediction_feature_join_from_runtime_config(publication("redshift"))
    with pytest.raises(FeatureDataError, match="predictions has no partition .* run inference_predictions first"):
        run_prediction_feature_join_from_runtime_config(publication("s3", T0 + timedelta(days=3)))
    with pytest.raises(ValueError, match="publication target"):
        run_prediction_feature_join_from_runtime_config(publication("kafka"))


# --- Redshift Data API (request shape through botocore's Stubber) -------------------------------------------------


def test_redshift_statements_delete_the_window_then_copy_the_staged_parquet():
    config = RedshiftConfig(database="d", workgroup="ndr-wg", iam_role="arn:aws:iam::123456789012:role/ndr-copy")
    sqls = redshift_statements("ndr.publication", "s3://bucket/root/publication_staged/fsv=v1/b=1", config)
    assert sqls == [
        "DELETE FROM ndr.publication WHERE feature_spec_version = :feature_spec_version AND batch_start = :batch_start",
        "COPY ndr.publication FROM 's3://bucket/root/publication_staged/fsv=v1/b=1/' "
        "IAM_ROLE 'arn:aws:iam::123456789012:role/ndr-copy' FORMAT AS PARQUET",
    ]
    default = RedshiftConfig(database="d", workgroup="ndr-wg")
    copy = redshift_statements("t", "s3a://bucket/p", default)[1]
    assert copy == "COPY t FROM 's3://bucket/p/' IAM_ROLE default FORMAT AS PARQUET"
    with pytest.raises(UnsafeValueError):
        redshift_statements("t", "s3://bucket/v1'; DROP TABLE t; --", default)
    with pytest.raises(UnsafeValueError):
        redshift_statements("t; DROP TABLE u", "s3://bucket/p", default)


def _client(monkeypatch) -> tuple[object, Stubber]:
    monkeypatch.setenv("NDR_REDSHIFT_WORKGROUP", "ndr-wg")
    monkeypatch.setenv("NDR_REDSHIFT_DATABASE", "analytics")
    monkeypatch.setenv("NDR_REDSHIFT_TIMEOUT_SECONDS", "15")
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_redshift_load_runs_one_batch_transaction_with_the_window_as_parameters_and_waits(monkeypatch):
    client, stub = _client(monkeypatch)
    sqls = redshift_statements("t", "s3://bucket/p", RedshiftConfig(database="analytics", workgroup="ndr-wg"))
    window = [{"name": "feature_spec_version", "value": "v1'; --"}, {"name": "batch_start", "value": "20261001T0600"}]
    stub.add_response(
        "batch_execute_statement",
        {"Id": "stmt-1"},
        {"Sqls": sqls, "WorkgroupName": "ndr-wg", "Database": "analytics", "Parameters": window},
    )
    stub.add_response("describe_statement", {"Id": "stmt-1", "Status": "STARTED"}, {"Id": "stmt-1"})
    stub.add_response("describe_statement", {"Id": "stmt-1", "Status": "FINISHED"}, {"Id": "stmt-1"})
    with stub:
        assert load_redshift("t", "s3://bucket/p", "v1'; --", "20261001T0600", client=client, sleep=lambda s: None) == {
            "statement_id": "stmt-1",
            "status": "FINISHED",
        }
    stub.assert_no_pending_responses()


def test_a_failed_or_endless_redshift_load_is_an_error(monkeypatch):
    client, stub = _client(monkeypatch)
    stub.add_response("batch_execute_statement", {"Id": "s"}, None)
    stub.add_response("describe_statement", {"Id": "s", "Status": "FAILED", "Error": "S3 access denied"}, None)
    with stub, pytest.raises(RedshiftStatementError, match="workgroup ndr-wg database analytics: statement s FAILED: "
                             "S3 access denied"):  # fmt: skip
        load_redshift("t", "s3://bucket/p", "v1", "20261001T0600", client=client, sleep=lambda s: None)
    stub.add_response("batch_execute_statement", {"Id": "s"}, None)
    for _ in range(4):  # 15 s at the default 5 s between polls: the first poll and three after waits
        stub.add_response("describe_statement", {"Id": "s", "Status": "STARTED"}, None)
    stub.add_response("cancel_statement", {"Status": True}, {"Id": "s"})
    with stub, pytest.raises(RedshiftTimeoutError, match="still STARTED after 15 s .*; cancel requested"):
        load_redshift("t", "s3://bucket/p", "v1", "20261001T0600", client=client, sleep=lambda s: None)
    stub.assert_no_pending_responses()
