"""Isolation Forests: hyper-parameters, the family ensemble, calibrated scores, the bundle and score drift.

:class:`Ensemble` holds an ``all_features`` forest and one per feature family, each calibrated on its own
training scores (:class:`Calibration`); a row's score is the largest ``-log10`` tail probability over the
forests, and that forest is its detector. ``model.pkl`` is a pickle: load it only from a model store you trust.
Design: ``docs/design/jobs.md`` (Model).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ndr_jobs.interface.feature_spec import ALL_FEATURES
from ndr_jobs.model import artifacts
from ndr_jobs.model.features import Preprocessor

PERCENTS = tuple(range(101))
#: the model bundle's format (2: the calibrated family ensemble; 1 was a single forest)
FORMAT = 2
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
    #: ``((family, (pattern, ...)), ...)``; a ``{family: [pattern, ...]}`` mapping is accepted (JSON, the spec)
    families: tuple[tuple[str, tuple[str, ...]], ...] = ()
    calibration_tail: float = 0.05
    source: str = "defaults"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_features", tuple(self.exclude_features))  # a JSON list when loaded
        families = self.families.items() if isinstance(self.families, dict) else self.families
        object.__setattr__(self, "families", tuple((str(n), tuple(p)) for n, p in families))
        if ALL_FEATURES in dict(self.families):
            raise ValueError(f"family name {ALL_FEATURES!r} is reserved for the forest on every column")
        if not 0 < float(self.calibration_tail) <= 0.5:
            raise ValueError(f"calibration_tail must be in (0, 0.5], not {self.calibration_tail!r}")
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
        return {**asdict(self), "families": {name: list(patterns) for name, patterns in self.families}}


def params_for(feature_spec_version: str) -> ForestParams:
    """The hyper-parameters of the feature spec ``feature_spec_version`` (``specs/features/<v>.yaml``)."""
    from ndr_jobs.interface.feature_spec import load_feature_spec

    section = load_feature_spec(feature_spec_version).isolation_forest
    values = section.model_dump()
    keys = ("n_estimators", "max_samples", "contamination", "random_state", "validation_fraction", "exclude_features",
            "families", "calibration_tail")
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


#: quantile levels of the calibration grid below the tail (201 points: 0.5 % resolution at most)
GRID_POINTS = 201
#: the smallest tail scale (raw scores live in (0, 1]; training scores without spread have none) and share
MIN_TAIL_MEAN = 1e-3
MIN_SHARE = 1e-300


@dataclass(frozen=True)
class Calibration:
    """A forest's raw score -> ``-log10`` of the share of training rows scoring at least as high.

    ``grid``: the training scores' quantiles at ``GRID_POINTS`` levels evenly spaced over ``[0, 1 - tail]``;
    up to the last of them (``tail_start``) the share is interpolated on that grid; above it,
    ``tail * exp(-(s - tail_start) / tail_mean)``, ``tail_mean`` being the mean excess of the training scores
    above ``tail_start`` (at least :data:`MIN_TAIL_MEAN`; an exponential tail: the peaks-over-threshold
    estimate, continuous at the joint). Shares are floored at :data:`MIN_SHARE`: surprises stay finite.
    """

    grid: tuple[float, ...]
    tail: float
    tail_mean: float

    @classmethod
    def fit(cls, scores: np.ndarray, tail: float) -> Calibration:
        if len(scores) == 0:
            raise ValueError("cannot calibrate on zero scores")
        grid = np.quantile(scores, np.linspace(0.0, 1.0 - tail, GRID_POINTS))
        above = scores[scores > grid[-1]]
        tail_mean = float(np.mean(above - grid[-1])) if len(above) else 0.0
        return cls(tuple(_r(v) for v in grid), float(tail), _r(max(tail_mean, MIN_TAIL_MEAN)))

    def surprise(self, scores: np.ndarray) -> np.ndarray:
        """``-log10 p(s)`` per score: 0 at or below the training minimum, growing without bound above."""
        grid = np.asarray(self.grid)
        levels = np.linspace(0.0, 1.0 - self.tail, len(grid))
        # the share of training scores below s, interpolated between the grid points around it:
        # grid[i - 1] < s <= grid[i]; a tied score sits at its first level (the share *below* it)
        i = np.searchsorted(grid, scores, side="left")
        lo, hi = np.clip(i - 1, 0, len(grid) - 1), np.clip(i, 0, len(grid) - 1)
        span = grid[hi] - grid[lo]
        frac = np.divide(scores - grid[lo], span, out=np.ones_like(scores, dtype=float), where=span > 0)
        below = 1.0 - np.where(i == 0, 0.0, levels[lo] + frac * (levels[hi] - levels[lo]))
        above = self.tail * np.exp(-(scores - grid[-1]) / self.tail_mean)
        p = np.clip(np.where(scores > grid[-1], above, below), MIN_SHARE, 1.0)
        return 0.0 - np.log10(p)  # 0.0 - : no negative zero

    def as_json(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "tail": self.tail, "tail_mean": self.tail_mean}


@dataclass(frozen=True)
class Detector:
    """One forest of the ensemble: its name, the model columns it sees (indices), the forest, its calibration."""

    name: str
    columns: tuple[int, ...]
    forest: Any
    calibration: Calibration

    def raw(self, z: np.ndarray) -> np.ndarray:
        """The forest's uncalibrated scores of the model rows ``z`` (every model column)."""
        return score(self.forest, z[:, list(self.columns)])


@dataclass(frozen=True)
class Ensemble:
    """Calibrated Isolation Forests over families of the model columns (``docs/design/jobs.md``, Model)."""

    detectors: tuple[Detector, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.detectors)

    def raw(self, z: np.ndarray) -> np.ndarray:
        """The ``all_features`` forest's uncalibrated scores (what the deployment gate's drift checks compare)."""
        return self.detectors[self.names.index(ALL_FEATURES)].raw(z)

    def surprises(self, z: np.ndarray) -> np.ndarray:
        """Rows x detectors: each forest's calibrated surprise."""
        out = np.zeros((z.shape[0], len(self.detectors)))
        if z.shape[0]:
            for k, d in enumerate(self.detectors):
                out[:, k] = d.calibration.surprise(d.raw(z))
        return out

    def score(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores (largest surprise) and, per row, the index of the detector that gave it (first on ties)."""
        if not self.detectors:
            raise ValueError("an ensemble without detectors cannot score")
        s = self.surprises(z)
        driver = np.argmax(s, axis=1)
        return s[np.arange(len(s)), driver], driver

    def describe(self, features: tuple[str, ...]) -> list[dict[str, Any]]:
        return [
            {"name": d.name, "features": [features[i] for i in d.columns], "calibration": d.calibration.as_json()}
            for d in self.detectors
        ]


def family_columns(features: list[str] | tuple[str, ...], params: ForestParams) -> list[tuple[str, tuple[int, ...]]]:
    """``all_features`` then each family with the indices of the model features its patterns match.

    A family that matches none of ``features`` (the data lacks its columns) is left out.
    """
    from fnmatch import fnmatchcase

    out = [(ALL_FEATURES, tuple(range(len(features))))]
    for name, patterns in params.families:
        columns = tuple(i for i, f in enumerate(features) if any(fnmatchcase(f, p) for p in patterns))
        if columns:
            out.append((name, columns))
    return out


def fit_ensemble(z: np.ndarray, features: list[str] | tuple[str, ...], params: ForestParams) -> Ensemble:
    """A forest per family (and on every column), each calibrated on its scores of the rows ``z``."""
    detectors = []
    for name, columns in family_columns(features, params):
        part = z[:, list(columns)]
        model = fit(part, params)
        detectors.append(Detector(name, columns, model, Calibration.fit(score(model, part), params.calibration_tail)))
    return Ensemble(tuple(detectors))


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

    ensemble: Ensemble
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
            "format": FORMAT,
            "kind": "ndr_jobs.model.forest.Ensemble of sklearn.ensemble.IsolationForest",
            "score": "max over detectors of -log10 P(training score >= -score_samples(z)): higher is more anomalous",
            "features": list(self.features),
            "detectors": self.ensemble.describe(self.features),
            "preprocessing": self.preprocessor.as_json(),
            "params": self.params.as_json(),
            "alert_threshold": self.alert_threshold,
            "metadata": self.metadata,
            "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__},
        }
        return artifacts.tar_gz(
            {"model.json": artifacts.dumps(description).encode(), "model.pkl": pickle.dumps(self.ensemble, protocol=5)}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelBundle:
        files = artifacts.untar_gz(data)
        if "model.json" not in files or "model.pkl" not in files:
            raise artifacts.ArtifactError(f"not a model bundle (members: {sorted(files)})")
        description = json.loads(files["model.json"])
        if description.get("format") != FORMAT:
            raise artifacts.ArtifactError(
                f"model bundle format {description.get('format')!r} is not {FORMAT}: retrain the model with this "
                "version"
            )
        params = ForestParams(**description["params"])
        return cls(
            ensemble=pickle.loads(files["model.pkl"]),  # noqa: S301 - our own model store
            preprocessor=Preprocessor.from_json(description["preprocessing"]),
            params=params,
            alert_threshold=float(description["alert_threshold"]),
            metadata=description.get("metadata", {}),
        )
