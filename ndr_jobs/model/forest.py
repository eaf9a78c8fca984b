"""Isolation Forest: hyper-parameters, fitting, scoring, the model bundle and score-distribution drift.

* Hyper-parameters come from the feature spec's ``isolation_forest`` section
  (``load_feature_spec(version).isolation_forest``: ``n_estimators, max_samples, contamination,
  random_state, validation_fraction``, and ``exclude_features``, the columns the forest does not see:
  :func:`model_features`); :func:`params_for` records where they came from.
* Score: ``-IsolationForest.score_samples(z)``, the anomaly score ``s(x, n) = 2^(-E[h(x)] / c(n))`` of Liu
  et al., in (0, 1]; higher is more anomalous. Scores of forests with the same ``max_samples`` are on one
  scale, which is what lets the deployment gate compare a new model's validation scores with the promoted
  model's.
* Alert threshold: the ``1 - contamination`` quantile of the training scores (``contamination="auto"``
  counts as 0.01); a row at or above it is an alert.
* The bundle (``model.tar.gz``, reproducible bytes): ``model.pkl`` (the pickled sklearn ``IsolationForest``;
  load it only from the model store you trust) and ``model.json`` (features, preprocessing, parameters,
  alert threshold, library versions).
* A score distribution is summarised by its 101 percentiles (0 %, 1 %, ..., 100 %); :func:`psi` and
  :func:`ks` compare two such summaries (the percentiles standing in for the samples: 1 % resolution).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ndr_jobs.model import artifacts
from ndr_jobs.model.features import Preprocessor

PERCENTS = tuple(range(101))
NOMINAL_CONTAMINATION = 0.01


@dataclass(frozen=True)
class ForestParams:
    """The Isolation Forest's hyper-parameters and the validation split."""

    n_estimators: int = 200
    max_samples: int | float | str = 256
    contamination: float | str = 0.01
    random_state: int = 7
    validation_fraction: float = 0.2
    exclude_features: tuple[str, ...] = ()
    source: str = "defaults"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_features", tuple(self.exclude_features))  # a JSON list when loaded
        if not isinstance(self.n_estimators, int) or self.n_estimators < 1:
            raise ValueError(f"n_estimators must be a positive integer, not {self.n_estimators!r}")
        if not 0 < float(self.validation_fraction) < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), not {self.validation_fraction!r}")
        c = self.contamination
        if not (c == "auto" or (isinstance(c, int | float) and 0 < float(c) <= 0.5)):
            raise ValueError(f"contamination must be 'auto' or in (0, 0.5], not {c!r}")
        m = self.max_samples
        if not (m == "auto" or (isinstance(m, int) and m >= 2) or (isinstance(m, float) and 0 < m <= 1)):
            raise ValueError(f"max_samples must be 'auto', an integer >= 2 or a fraction in (0, 1], not {m!r}")

    @property
    def nominal_contamination(self) -> float:
        return NOMINAL_CONTAMINATION if self.contamination == "auto" else float(self.contamination)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def params_for(feature_spec_version: str) -> ForestParams:
    """The hyper-parameters of the feature spec ``feature_spec_version`` (``specs/features/<v>.yaml``)."""
    from ndr_jobs.feature_spec import load_feature_spec

    section = load_feature_spec(feature_spec_version).isolation_forest
    values = section.model_dump()
    keys = ("n_estimators", "max_samples", "contamination", "random_state", "validation_fraction", "exclude_features")
    return ForestParams(**{k: values[k] for k in keys}, source=f"feature spec {feature_spec_version}")


def model_features(columns: list[str], params: ForestParams) -> list[str]:
    """``columns`` without those ``params.exclude_features`` matches (the feature spec's lint checks that each
    pattern names a column the spec writes; data without that column simply has nothing to exclude)."""
    from fnmatch import fnmatchcase

    return [c for c in columns if not any(fnmatchcase(c, p) for p in params.exclude_features)]


def fit(z: np.ndarray, params: ForestParams) -> Any:
    """A fitted ``IsolationForest`` on the preprocessed rows ``z`` (deterministic: ``random_state``)."""
    from sklearn.ensemble import IsolationForest

    if z.shape[0] < 2:
        raise ValueError(f"cannot train an Isolation Forest on {z.shape[0]} row(s)")
    max_samples = params.max_samples
    if isinstance(max_samples, int):
        max_samples = min(max_samples, z.shape[0])
    forest = IsolationForest(
        n_estimators=params.n_estimators,
        max_samples=max_samples,
        contamination=params.contamination,
        random_state=params.random_state,
        n_jobs=1,
    )
    return forest.fit(z)


def score(forest: Any, z: np.ndarray) -> np.ndarray:
    """Anomaly scores in (0, 1], higher is more anomalous."""
    if z.shape[0] == 0:
        return np.zeros(0)
    return -np.asarray(forest.score_samples(z), dtype=np.float64)


def _r(value: float) -> float:
    return float(f"{float(value):.12g}")


def summary(scores: np.ndarray) -> dict[str, Any]:
    """Count, mean, std, min, max and the 101 percentiles of a score sample."""
    if len(scores) == 0:
        return {"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "percentiles": []}
    return {
        "count": int(len(scores)),
        "mean": _r(np.mean(scores)),
        "std": _r(np.std(scores)),
        "min": _r(np.min(scores)),
        "max": _r(np.max(scores)),
        "percentiles": [_r(v) for v in np.percentile(scores, PERCENTS)],
    }


def threshold(train_scores: np.ndarray, params: ForestParams) -> float:
    """The alert threshold: the ``1 - contamination`` quantile of the training scores."""
    return _r(np.quantile(train_scores, 1.0 - params.nominal_contamination))


def psi(reference: list[float], current: list[float], bins: int = 10, floor: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` (both 101-percentile summaries).

    Bins are the reference's deciles (open-ended outer bins); a bin's share is floored at ``floor``.
    """
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("psi needs two non-empty score summaries")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])

    def shares(values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return np.maximum(counts / counts.sum(), floor)

    p, q = shares(ref), shares(cur)
    return _r(float(np.sum((q - p) * np.log(q / p))))


def ks(reference: list[float], current: list[float]) -> float:
    """Kolmogorov-Smirnov distance between two 101-percentile summaries (their empirical CDFs)."""
    ref, cur = np.sort(np.asarray(reference, dtype=float)), np.sort(np.asarray(current, dtype=float))
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("ks needs two non-empty score summaries")
    grid = np.union1d(ref, cur)
    f_ref = np.searchsorted(ref, grid, side="right") / len(ref)
    f_cur = np.searchsorted(cur, grid, side="right") / len(cur)
    return _r(float(np.max(np.abs(f_ref - f_cur))))


@dataclass
class ModelBundle:
    """A trained model ready to score: the forest, its preprocessing and what it was trained with."""

    forest: Any
    preprocessor: Preprocessor
    params: ForestParams
    alert_threshold: float
    metadata: dict[str, Any]

    @property
    def features(self) -> tuple[str, ...]:
        return self.preprocessor.features

    def to_bytes(self) -> bytes:
        """The reproducible ``model.tar.gz``."""
        import sklearn

        description = {
            "format": 1,
            "kind": "sklearn.ensemble.IsolationForest",
            "score": "-score_samples(z): higher is more anomalous",
            "features": list(self.features),
            "preprocessing": self.preprocessor.as_json(),
            "params": self.params.as_json(),
            "alert_threshold": self.alert_threshold,
            "metadata": self.metadata,
            "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__},
        }
        return artifacts.tar_gz(
            {"model.json": artifacts.dumps(description).encode(), "model.pkl": pickle.dumps(self.forest, protocol=5)}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelBundle:
        files = artifacts.untar_gz(data)
        if "model.json" not in files or "model.pkl" not in files:
            raise artifacts.ArtifactError(f"not a model bundle (members: {sorted(files)})")
        description = json.loads(files["model.json"])
        if description.get("format") != 1:
            raise artifacts.ArtifactError(f"unknown model bundle format {description.get('format')!r}")
        params = ForestParams(**description["params"])
        return cls(
            forest=pickle.loads(files["model.pkl"]),  # noqa: S301 - our own model store
            preprocessor=Preprocessor.from_json(description["preprocessing"]),
            params=params,
            alert_threshold=float(description["alert_threshold"]),
            metadata=description.get("metadata", {}),
        )
