"""The model's input: FG-A and FG-C joined per (host, window), its feature list and fitted preprocessing.

Contract
    * Rows: one per FG-A row, i.e. per ``(host_ip, batch_start_ts)`` of a host active in the window. FG-C is
      joined on those keys (left join: FG-A decides which hosts are scored); a host without an FG-C row,
      and any null feature value, counts as ``0.0`` (a z-score at its baseline, a count of nothing, a flag
      not set). Infinite values are clipped to +-1e12. Duplicate keys in either dataset are an error.
    * Features: every numeric (integer, floating, decimal) or boolean column of FG-A and FG-C except the
      keys and bookkeeping columns (:data:`NON_FEATURES`), sorted by name; an FG-C column whose name FG-A
      also has is taken as ``fg_c__<name>``. The list is recorded with the model (attributes, preprocessing)
      and scoring data must have every listed feature (extra columns are ignored).
    * Preprocessing (:class:`Preprocessor`), fitted on the training rows only: ``t = sign(x) * log1p(|x|)``
      (heavy-tailed counts and bytes become comparable; signed for z-scores), then robust scaling
      ``z = (t - median) / scale`` with ``scale = IQR / 1.349`` (the standard deviation of a normal
      distribution with that IQR), falling back to the standard deviation, then to 1, for a feature with
      no spread in training. ``z`` is what the forest sees and what explanations report: ``|z|`` is the
      feature's distance from its training median in robust standard deviations.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ndr_jobs.datasets import layout, storage

KEYS: tuple[str, ...] = ("host_ip", "batch_start_ts")
#: columns that are never features even when numeric
NON_FEATURES = frozenset(
    {"host_ip", "batch_start_ts", "batch_end_ts", "feature_spec_version", "batch_start", "mini_batch_id"}
)
FG_C_PREFIX = "fg_c__"
#: finite stand-in for +-inf
CLIP = 1e12
#: IQR of a standard normal distribution
IQR_NORMAL = 1.349


class FeatureDataError(ValueError):
    """The feature data cannot be used as model input (missing partitions, columns or duplicate keys)."""


def _is_feature_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
    )


def read_partitions(root: str, dataset: str, feature_spec_version: str, starts: Sequence[datetime]) -> pa.Table | None:
    """The Parquet files of the ``batch_start`` partitions of ``starts`` that exist, as one Arrow table.

    Read through :mod:`ndr_jobs.datasets.storage` (local directories and S3 alike) without Spark: the training and
    inference inputs are small (hosts x windows rows). ``batch_start_ts`` is set from the partition value,
    as :func:`ndr_jobs.datasets.layout.read_batches` does. None when no partition exists.
    """
    import pyarrow.parquet as pq

    wanted = {layout.stamp(s) for s in starts}
    present = [s for s in layout.existing_batches(root, dataset, feature_spec_version) if layout.stamp(s) in wanted]
    if not present:
        return None
    tables = []
    for start in present:
        for path in layout.batch_files(root, dataset, feature_spec_version, start) or []:
            table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
            moment = pa.array([start.replace(tzinfo=None)] * table.num_rows, type=pa.timestamp("us"))
            if "batch_start_ts" in table.column_names:
                table = table.drop_columns(["batch_start_ts"])
            tables.append(table.append_column("batch_start_ts", moment))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _to_pandas(table: pa.Table, features: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "host_ip": pd.Series(table.column("host_ip").cast(pa.string()).to_pylist(), dtype=object),
            "batch_start_ts": pd.Series(table.column("batch_start_ts").to_numpy(zero_copy_only=False)).astype(
                "datetime64[us]"
            ),
        }
    )
    for c in features:
        frame[c] = pd.Series(table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype="float64")
    return frame


def read_dataset(
    root: str, dataset: str, feature_spec_version: str, starts: Sequence[datetime]
) -> tuple[pd.DataFrame, list[str]] | None:
    """One dataset's rows of ``starts`` as pandas (keys + its feature columns, sorted) or None if none exist."""
    table = read_partitions(root, dataset, feature_spec_version, starts)
    if table is None:
        return None
    names = set(table.column_names)
    missing = [k for k in KEYS if k not in names]
    if missing:
        raise FeatureDataError(f"{dataset} has no {missing} column(s); columns: {sorted(names)}")
    features = sorted(f.name for f in table.schema if _is_feature_type(f.type) and f.name not in NON_FEATURES)
    return _to_pandas(table, features), features


def join_features(
    fg_a: pd.DataFrame, fg_a_features: Sequence[str], fg_c: pd.DataFrame | None, fg_c_features: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """FG-A left-joined with FG-C on the keys (see the module doc).

    Returns the frame (keys + every feature column, rows sorted by window then host) and ``{feature: source}``
    where source is ``fg_a:<column>`` or ``fg_c:<column>``.
    """
    for name, frame in (("fg_a", fg_a), ("fg_c", fg_c)):
        if frame is not None and frame.duplicated(list(KEYS)).any():
            dup = frame[frame.duplicated(list(KEYS), keep=False)].iloc[0]
            raise FeatureDataError(f"{name} has duplicate rows for host {dup['host_ip']} at {dup['batch_start_ts']}")
    sources = {c: f"fg_a:{c}" for c in fg_a_features}
    out = fg_a[[*KEYS, *fg_a_features]].copy()
    if fg_c is not None and fg_c_features:
        renames = {c: (FG_C_PREFIX + c if c in sources else c) for c in fg_c_features}
        sources.update({renames[c]: f"fg_c:{c}" for c in fg_c_features})
        right = fg_c[[*KEYS, *fg_c_features]].rename(columns=renames)
        out = out.merge(right, on=list(KEYS), how="left", validate="one_to_one")
    ordered = sorted(sources)
    out = out[[*KEYS, *ordered]].sort_values(list(KEYS), kind="mergesort").reset_index(drop=True)
    return out, {k: sources[k] for k in ordered}


def load_features(
    root: str, feature_spec_version: str, starts: Sequence[datetime]
) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """FG-A + FG-C of ``starts`` joined (see :func:`join_features`); None when FG-A has none of the windows."""
    a = read_dataset(root, layout.FG_A, feature_spec_version, starts)
    if a is None:
        return None
    c = read_dataset(root, layout.FG_C, feature_spec_version, starts)
    return join_features(a[0], a[1], c[0] if c else None, c[1] if c else [])


def matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The raw feature matrix (float64, nulls as 0, infinities clipped); every feature must be a column."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise FeatureDataError(f"the data lacks {len(missing)} model feature(s): {missing[:10]}")
    values = frame[list(features)].to_numpy(dtype="float64", na_value=np.nan)
    values = np.nan_to_num(values, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.asarray(values, dtype=np.float64)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class Preprocessor:
    """Signed log1p then robust scaling, per feature (see the module doc)."""

    features: tuple[str, ...]
    medians: tuple[float, ...]
    scales: tuple[float, ...]

    KIND = "signed_log1p+robust_scale"

    @classmethod
    def fit(cls, features: Sequence[str], x: np.ndarray) -> Preprocessor:
        if x.shape[0] == 0:
            raise FeatureDataError("cannot fit the preprocessing on zero rows")
        t = signed_log1p(x)
        q25, median, q75 = np.percentile(t, [25, 50, 75], axis=0)
        scale = (q75 - q25) / IQR_NORMAL
        std = t.std(axis=0)
        scale = np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))
        return cls(tuple(features), tuple(_r(v) for v in median), tuple(_r(v) for v in scale))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (signed_log1p(x) - np.asarray(self.medians)) / np.asarray(self.scales)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "transform": "t = sign(x) * log1p(|x|); z = (t - median) / scale",
            "null_value": 0.0,
            "features": [
                {"name": f, "median": m, "scale": s}
                for f, m, s in zip(self.features, self.medians, self.scales, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Preprocessor:
        if payload.get("kind") != cls.KIND:
            raise FeatureDataError(f"unknown preprocessing kind {payload.get('kind')!r}")
        items = payload["features"]
        return cls(
            tuple(i["name"] for i in items), tuple(float(i["median"]) for i in items),
            tuple(float(i["scale"]) for i in items),
        )  # fmt: skip


def _r(value: float) -> float:
    """Round to 12 significant digits: stable JSON across platforms' last-bit differences."""
    return float(f"{float(value):.12g}")


def explain(
    z: np.ndarray, x: np.ndarray, features: Sequence[str], k: int, first: Sequence[Sequence[int]] | None = None
) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` features farthest from their training median: name, raw value, signed deviation.

    ``deviation`` is the scaled value ``z`` (robust standard deviations above (+) or below (-) the training
    median); rows are ranked by ``|z|``, ties by feature name. With ``first`` (per row, column indices: the
    features of the forest that scored the row), those come first, then the others.
    """
    k = min(k, z.shape[1])
    names = np.asarray(features)
    order_by_name = np.argsort(names, kind="stable")
    out: list[list[dict[str, Any]]] = []
    for i in range(z.shape[0]):
        # stable sort on (not preferred, -|z|) over name-ordered columns: ties fall back to the feature name
        row = np.abs(z[i, order_by_name])
        preferred = np.zeros(z.shape[1], dtype=bool)
        if first is not None:
            preferred[list(first[i])] = True
        top = order_by_name[np.lexsort((-row, ~preferred[order_by_name]))[:k]]
        out.append([{"feature": str(names[j]), "value": float(x[i, j]), "deviation": _r(float(z[i, j]))} for j in top])
    return out
