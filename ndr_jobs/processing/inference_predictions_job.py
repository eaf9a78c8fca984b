"""Score the mini-batch window with the promoted model.

Entry: :func:`run_inference_predictions_from_runtime_config`. The window's FG-A and FG-C are read with pyarrow and
scored with numpy on the driver; Spark only writes the partition. Columns: ``docs/datasets.md``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface import contract
from ndr_jobs.model import forest, registry
from ndr_jobs.model.features import FeatureDataError, explain, load_features, matrix
from ndr_jobs.runtime.config import BatchRuntime
from ndr_jobs.runtime.summary import batch_header, emit

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TOP_K = 5
PREDICTION_COLUMNS: tuple[str, ...] = (
    "host_ip", "batch_start_ts", "batch_end_ts", "score", "rank", "alert", "detector", "model_version",
    "model_run_key", "top_features",
)  # fmt: skip


def prediction_schema() -> Any:
    from pyspark.sql import types as T

    top = T.StructType(
        [
            T.StructField("feature", T.StringType(), False),
            T.StructField("value", T.DoubleType(), False),
            T.StructField("deviation", T.DoubleType(), False),
        ]
    )
    return T.StructType(
        [
            T.StructField("host_ip", T.StringType(), False),
            T.StructField("batch_start_ts", T.TimestampType(), False),
            T.StructField("batch_end_ts", T.TimestampType(), False),
            T.StructField("score", T.DoubleType(), False),
            T.StructField("rank", T.IntegerType(), False),
            T.StructField("alert", T.BooleanType(), False),
            T.StructField("detector", T.StringType(), False),
            T.StructField("model_version", T.IntegerType(), False),
            T.StructField("model_run_key", T.StringType(), False),
            T.StructField("top_features", T.ArrayType(top, False), False),
        ]
    )


def score_frame(
    frame: pd.DataFrame, bundle: forest.ModelBundle, pointer: dict[str, Any], top_k: int = TOP_K
) -> list[dict[str, Any]]:
    """Prediction rows (dicts, in rank order) of a joined feature frame; columns in ``docs/datasets.md``."""
    if frame.empty:
        return []
    x = matrix(frame, bundle.features)
    z = bundle.preprocessor.transform(x)
    scores, drivers = bundle.ensemble.score(z)
    detectors = bundle.ensemble.detectors
    reasons = explain(z, x, bundle.features, top_k, [detectors[d].columns for d in drivers])
    hosts = frame["host_ip"].astype(str).to_numpy()
    order = np.lexsort((hosts, -scores))  # score descending, then host
    out = []
    for rank, i in enumerate(order.tolist(), start=1):
        out.append(
            {
                "host_ip": hosts[i],
                "score": float(scores[i]),
                "rank": rank,
                "alert": bool(scores[i] >= bundle.alert_threshold),
                "detector": detectors[drivers[i]].name,
                "model_version": int(pointer["model_version"]),
                "model_run_key": str(pointer["run_key"]),
                "top_features": reasons[i],
            }
        )
    return out


def predictions_frame(spark: SparkSession, rows: list[dict[str, Any]], start: Any, end: Any) -> DataFrame:
    """The Spark DataFrame of prediction rows for the window ``[start, end)``."""
    records = [
        (
            r["host_ip"], start.replace(tzinfo=None), end.replace(tzinfo=None), r["score"], r["rank"], r["alert"],
            r["detector"], r["model_version"], r["model_run_key"],
            [(t["feature"], float(t["value"]), float(t["deviation"])) for t in r["top_features"]],
        )
        for r in rows
    ]  # fmt: skip
    # the session is UTC, so naive datetimes are UTC wall-clock times
    return spark.createDataFrame(records, prediction_schema())


def run_inference_predictions_from_runtime_config(runtime: BatchRuntime) -> dict[str, Any]:
    """Score the window and write its predictions partition; print and return the summary."""
    from ndr_jobs.runtime.spark import spark_session

    began = time.perf_counter()
    start, end = contract.parse_utc(runtime.batch_start_ts), contract.parse_utc(runtime.batch_end_ts)
    if end <= start:
        raise ValueError(f"batch end {runtime.batch_end_ts} is not after batch start {runtime.batch_start_ts}")
    root = layout.storage_root()
    fsv = runtime.feature_spec_version
    store = registry.ModelStore(root, runtime.project_name, fsv)
    pointer, model = store.load_promoted_model()
    bundle = forest.ModelBundle.from_bytes(model)
    for dataset in (layout.FG_A, layout.FG_C):
        if start not in layout.existing_batches(root, dataset, fsv):
            raise FeatureDataError(
                f"{dataset} has no partition for window {contract.iso(start)} "
                f"({layout.dataset_dir(root, dataset, fsv)}/batch_start={layout.stamp(start)}): "
                "run the 15-minute features pipeline for this window first"
            )
    loaded = load_features(root, fsv, [start])
    frame = loaded[0] if loaded else pd.DataFrame()
    rows = score_frame(frame, bundle, pointer)
    spark = spark_session("ndr-inference-predictions")
    out = storage.write_partition(
        predictions_frame(spark, rows, start, end), root, layout.PREDICTIONS,
        layout.batch_partition(fsv, start), ["rank"], 1, len(rows),
    )  # fmt: skip
    summary = {
        **batch_header("inference_predictions", runtime, start, end),
        "model_version": pointer["model_version"],
        "model_run_key": pointer["run_key"],
        "hosts_scored": len(rows),
        "alerts": sum(r["alert"] for r in rows),
        "output": out.path,
        "seconds": round(time.perf_counter() - began, 3),
    }
    emit(summary)
    return summary
