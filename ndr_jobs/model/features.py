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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ndr_jobs.datasets import layout, storage
from ndr_jobs.interface.feature_spec import SLICE, FeatureSpecBody, parse_duration

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


#: FG-C features computed over a window the feature spec sets (the others describe the batch itself)
FG_C_WINDOWS: dict[str, str] = {
    "rare_dst_periodic_score": "periodicity_window", "rare_dst_active_fraction": "periodicity_window",
    "rare_dst_beacon_score": "beacon_window", "rare_dst_active_minutes": "beacon_window",
}  # fmt: skip
_SUFFIX = re.compile(r"_([1-9][0-9]*[mhd])$")


def column_windows(spec: FeatureSpecBody) -> dict[str, timedelta]:
    """Every model column of the feature spec -> the span of traffic its value summarises.

    FG-A ``<feature>_<window>`` and FG-C ``z_<baseline>_<feature>_<window>``: the window (a z-score's baseline
    comes from FG-B's month, not from the training range); FG-C's periodicity and beacon features: the
    spec's ``periodicity_window`` / ``beacon_window``; the other FG-C columns: the 15-minute batch.
    """
    out = {}
    novelty = spec.fg_c.novelty
    for column in spec.model_columns():
        name = column.removeprefix(FG_C_PREFIX)
        if name in FG_C_WINDOWS:
            out[column] = parse_duration(getattr(novelty, FG_C_WINDOWS[name]))
        else:
            out[column] = window_of(column, {})
    return out


def window_of(column: str, windows: Mapping[str, timedelta]) -> timedelta:
    """``column``'s window: from ``windows`` (:func:`column_windows`), else its ``_<duration>`` suffix, else
    the 15-minute batch."""
    if column in windows:
        return windows[column]
    found = _SUFFIX.search(column)
    return parse_duration(found.group(1)) if found else SLICE


def unseen_windows(features: Sequence[str], span: timedelta, windows: Mapping[str, timedelta]) -> list[dict[str, str]]:
    """The features whose window is longer than ``span`` (the training rows' span), as
    ``{"feature", "window"}``: training saw them only partly filled, so their values at scoring time are
    larger than any training row's for every host (``docs/design/jobs.md``, Model)."""
    return [
        {"feature": f, "window": duration_text(window_of(f, windows))}
        for f in features
        if window_of(f, windows) > span
    ]


def duration_text(value: timedelta) -> str:
    """``1h``, ``24h``, ``45m``, ``7d``: the feature spec's way of writing a duration."""
    minutes = int(value.total_seconds() // 60)
    if minutes % (24 * 60) == 0 and minutes >= 7 * 24 * 60:
        return f"{minutes // (24 * 60)}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


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
