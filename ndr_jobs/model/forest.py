"""Isolation Forests: hyper-parameters, the family ensemble, calibrated scores, the bundle and score drift.

:class:`Ensemble` holds an ``all_features`` forest and one per feature family, each calibrated on its own
training scores (:class:`Calibration`); a row's score is the largest ``-log10`` tail probability over the
forests (that forest is its detector) plus a small term for its other evidence (:meth:`Ensemble.score`).
A fitted forest is kept as plain node arrays (:class:`Trees`) that score exactly as scikit-learn does; the
bundle stores them as ``.npy`` members read with ``allow_pickle=False``, so loading a model runs no code from it.
Design: ``docs/design/jobs.md`` (Model).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ndr_jobs.interface.feature_spec import ALL_FEATURES
from ndr_jobs.model import artifacts
from ndr_jobs.model.features import Preprocessor

PERCENTS = tuple(range(101))
#: the model bundle's format (3: node arrays, no pickle; 2 pickled the ensemble; 1 was a single forest)
FORMAT = 3
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
    """Anomaly scores in (0, 1], higher is more anomalous (a :class:`Trees` or a fitted ``IsolationForest``)."""
    if z.shape[0] == 0:
        return np.zeros(0)
    if isinstance(forest, Trees):
        return forest.score(z)
    return -np.asarray(forest.score_samples(z), dtype=np.float64)


class ModelFormatError(artifacts.ArtifactError):
    """A model bundle's arrays are malformed: wrong members, types, shapes or node links."""


class ModelVersionMismatchError(artifacts.ArtifactError):
    """A model bundle was written with library versions this runtime does not score with."""


#: a tree's leaf marker in ``left`` / ``right`` (scikit-learn's ``TREE_LEAF``)
LEAF = -1
#: the node arrays of :class:`Trees` and their exact dtypes (little-endian, as written)
TREE_ARRAYS: dict[str, str] = {
    "roots": "<i8", "left": "<i8", "right": "<i8", "feature": "<i8", "threshold": "<f8", "missing_left": "|u1",
    "path_length": "<f8", "denominator": "<f8",
}  # fmt: skip
#: rows scored at once (bounds the rows x trees node matrix)
SCORE_CHUNK_ROWS = 4096


@dataclass(frozen=True, eq=False)
class Trees:
    """A fitted Isolation Forest as plain arrays, scoring exactly as ``-IsolationForest.score_samples``.

    The trees' nodes are concatenated: tree ``t`` starts at ``roots[t]``; ``left`` / ``right`` are global node
    indices (:data:`LEAF` at a leaf), ``feature`` the column of the input rows a node splits on, ``threshold``
    its split value (``x <= threshold`` goes left; NaN goes left where ``missing_left``), ``path_length`` the
    leaf's depth plus the average path length of its training samples minus one (what scikit-learn adds per
    tree), ``denominator`` (one value) the number of trees times the average path length of ``max_samples``.
    """

    arrays: dict[str, np.ndarray]

    @classmethod
    def from_sklearn(cls, forest: Any) -> Trees:
        """The arrays of a fitted ``sklearn.ensemble.IsolationForest`` (relies on its 1.9 internals; the tests
        compare the scores bit for bit)."""
        from sklearn.ensemble._iforest import _average_path_length

        subsample = forest._max_features != forest.n_features_in_
        roots, left, right, feature, threshold, missing, path = [], [], [], [], [], [], []
        offset = 0
        for t, estimator in enumerate(forest.estimators_):
            tree = estimator.tree_
            n = tree.node_count
            leaf = tree.children_left == LEAF
            columns = np.asarray(tree.feature, dtype=np.int64)
            if subsample:
                columns = np.where(leaf, 0, np.asarray(forest.estimators_features_[t])[np.maximum(columns, 0)])
            roots.append(offset)
            left.append(np.where(leaf, LEAF, tree.children_left + offset))
            right.append(np.where(leaf, LEAF, tree.children_right + offset))
            feature.append(np.where(leaf, 0, columns))
            threshold.append(np.where(leaf, 0.0, tree.threshold))
            missing.append(np.asarray(tree.missing_go_to_left, dtype=np.uint8))
            # scikit-learn adds (depth + average path length) - 1.0 per tree: the same operations, per node
            path.append(forest._decision_path_lengths[t] + forest._average_path_length_per_tree[t] - 1.0)
            offset += n
        denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])
        values = {
            "roots": np.asarray(roots), "left": np.concatenate(left), "right": np.concatenate(right),
            "feature": np.concatenate(feature), "threshold": np.concatenate(threshold),
            "missing_left": np.concatenate(missing), "path_length": np.concatenate(path),
            "denominator": np.asarray(denominator, dtype=np.float64).reshape(1),
        }  # fmt: skip
        return cls.checked({k: np.ascontiguousarray(v, dtype=np.dtype(TREE_ARRAYS[k])) for k, v in values.items()})

    @classmethod
    def checked(cls, arrays: dict[str, np.ndarray], columns: int | None = None) -> Trees:
        """:class:`Trees` from arrays whose types, shapes and links are valid (else :class:`ModelFormatError`):
        every child comes after its parent within its own tree, so scoring always ends at a leaf."""
        if set(arrays) != set(TREE_ARRAYS):
            raise ModelFormatError(f"tree arrays {sorted(arrays)} are not {sorted(TREE_ARRAYS)}")
        for name, dtype in TREE_ARRAYS.items():
            if arrays[name].dtype != np.dtype(dtype) or arrays[name].ndim != 1:
                raise ModelFormatError(
                    f"tree array {name!r} is {arrays[name].dtype} {arrays[name].shape}, not 1-d {dtype}"
                )
        nodes = len(arrays["left"])
        if any(len(arrays[k]) != nodes for k in ("right", "feature", "threshold", "missing_left", "path_length")):
            raise ModelFormatError("tree node arrays differ in length")
        roots, denominator = arrays["roots"], arrays["denominator"]
        if len(denominator) != 1 or not np.isfinite(denominator[0]) or denominator[0] < 0:
            raise ModelFormatError(f"tree denominator {denominator.tolist()} is not one finite value >= 0")
        if not len(roots) or roots[0] != 0 or np.any(np.diff(roots) <= 0) or roots[-1] >= nodes:
            raise ModelFormatError("tree roots must start at 0 and increase within the node arrays")
        index = np.arange(nodes)
        end = np.append(roots, nodes)[np.searchsorted(roots, index, side="right")]  # each node's tree end
        left, right = arrays["left"], arrays["right"]
        leaf = left == LEAF
        internal = ~leaf
        ok_links = np.all(right[leaf] == LEAF) and all(
            np.all((child[internal] > index[internal]) & (child[internal] < end[internal])) for child in (left, right)
        )
        if not ok_links:
            raise ModelFormatError("tree links must point forward within their tree (leaves: both -1)")
        features = arrays["feature"][internal]
        if len(features) and (features.min() < 0 or (columns is not None and features.max() >= columns)):
            raise ModelFormatError(f"tree split columns must be in [0, {columns})")
        if not np.all(np.isfinite(arrays["path_length"])) or np.any(arrays["missing_left"] > 1):
            raise ModelFormatError("tree path lengths must be finite and missing_left 0 or 1")
        return cls({k: np.ascontiguousarray(arrays[k]) for k in TREE_ARRAYS})

    @property
    def columns_used(self) -> int:
        """One more than the largest split column (0 without splits)."""
        internal = self.arrays["left"] != LEAF
        return int(self.arrays["feature"][internal].max()) + 1 if internal.any() else 0

    def score(self, z: np.ndarray) -> np.ndarray:
        """``2 ** -(summed path lengths / denominator)``: ``-IsolationForest.score_samples(z)``, bit for bit."""
        x = np.asarray(z, dtype=np.float32)  # scikit-learn scores float32 rows
        if x.ndim != 2 or x.shape[1] < self.columns_used:
            raise ValueError(f"rows of shape {x.shape} lack the model's {self.columns_used} columns")
        a = self.arrays
        index = np.arange(len(a["left"]))
        leaf = a["left"] == LEAF
        # a leaf steps to itself, so every row walks the same number of levels: the deepest tree's
        step_left, step_right = np.where(leaf, index, a["left"]), np.where(leaf, index, a["right"])
        missing_left = a["missing_left"] == 1
        depths = np.zeros(x.shape[0])
        for lo in range(0, x.shape[0], SCORE_CHUNK_ROWS):
            part = x[lo : lo + SCORE_CHUNK_ROWS]
            node = np.repeat(a["roots"][None, :], part.shape[0], axis=0)  # rows x trees
            rows = np.arange(part.shape[0])[:, None]
            while True:
                value = part[rows, a["feature"][node]]
                # float32 values against float64 thresholds, as in the trees' C code; NaN by missing_left
                go_left = (value <= a["threshold"][node]) | (np.isnan(value) & missing_left[node])
                moved = np.where(go_left, step_left[node], step_right[node])
                if np.array_equal(moved, node):
                    break
                node = moved
            lengths = a["path_length"][node]
            for t in range(node.shape[1]):  # tree by tree, as scikit-learn sums: the same rounding
                depths[lo : lo + part.shape[0]] += lengths[:, t]
        denominator = a["denominator"]
        return 2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))

    @staticmethod
    def member_names(prefix: str) -> list[str]:
        return [f"{prefix}/{name}.npy" for name in TREE_ARRAYS]

    def to_members(self, prefix: str) -> dict[str, bytes]:
        """``{<prefix>/<array>.npy: bytes}`` (deterministic ``.npy`` bytes, no pickle)."""
        out = {}
        for name in TREE_ARRAYS:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, self.arrays[name], allow_pickle=False)
            out[f"{prefix}/{name}.npy"] = buffer.getvalue()
        return out

    @classmethod
    def from_members(cls, files: dict[str, bytes], prefix: str, columns: int) -> Trees:
        arrays = {}
        for name in TREE_ARRAYS:
            member = f"{prefix}/{name}.npy"
            if member not in files:
                raise ModelFormatError(f"the model bundle lacks {member}")
            try:
                arrays[name] = np.lib.format.read_array(io.BytesIO(files[member]), allow_pickle=False)
            except ValueError as exc:  # object arrays (pickles) and malformed headers
                raise ModelFormatError(f"{member} is not a plain array: {exc}") from None
        return cls.checked(arrays, columns)


def _r(value: float) -> float:
    return float(f"{float(value):.12g}")


#: quantile levels of the calibration grid below the tail (201 points: 0.5 % resolution at most)
GRID_POINTS = 201
#: the smallest tail scale (raw scores live in (0, 1]; training scores without spread have none)
MIN_TAIL_MEAN = 1e-3


@dataclass(frozen=True)
class Calibration:
    """A forest's raw score -> ``-log10`` of the share of training rows scoring at least as high.

    ``grid``: the training scores' quantiles at ``GRID_POINTS`` levels evenly spaced over ``[0, 1 - tail]``;
    up to the last of them (``tail_start``) the share is interpolated on that grid; above it,
    ``tail * exp(-(s - tail_start) / tail_mean)``, ``tail_mean`` being the mean excess of the training scores
    above ``tail_start`` (at least :data:`MIN_TAIL_MEAN`; an exponential tail: the peaks-over-threshold
    estimate, continuous at the joint). The tail's surprise is computed as a logarithm, never as a share: it
    grows linearly with the score without a ceiling (a share would underflow to 0 and every score above it tie).
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
        inside = 0.0 - np.log10(np.clip(below, self.tail, 1.0))  # 0.0 - : no negative zero
        # -log10(tail * exp(-x / tail_mean)) = -log10(tail) + x / tail_mean * log10(e): strictly increasing
        beyond = -np.log10(self.tail) + (scores - grid[-1]) / self.tail_mean * np.log10(np.e)
        return np.where(scores > grid[-1], beyond, inside)

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


#: what each tenfold of a row's other evidence adds to its largest surprise (0.01 = 2 % in tail share)
TIE_WEIGHT = 0.01


@dataclass(frozen=True)
class TrainingRange:
    """Per model column, the smallest and largest preprocessed training value: how far a row lies beyond what
    training saw is evidence a forest cannot give (every row past a forest's extremes reaches the same leaves)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def fit(cls, z: np.ndarray) -> TrainingRange:
        return cls(tuple(_r(v) for v in z.min(axis=0)), tuple(_r(v) for v in z.max(axis=0)))

    def excess(self, z: np.ndarray) -> np.ndarray:
        """Per row, the summed distance (in preprocessed units: robust standard deviations) beyond the range."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        if z.shape[1] != len(low):
            raise ValueError(f"rows of {z.shape[1]} columns against a training range of {len(low)}")
        return np.sum(np.maximum(z - high, 0.0) + np.maximum(low - z, 0.0), axis=1)

    def as_json(self) -> dict[str, Any]:
        return {"low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True)
class Ensemble:
    """Calibrated Isolation Forests over families of the model columns (``docs/design/jobs.md``, Model)."""

    detectors: tuple[Detector, ...]
    #: the training rows' range (None: no tie-break by distance, as in a bundle that lacks it)
    training_range: TrainingRange | None = None

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

    def evidence(self, z: np.ndarray, s: np.ndarray, driver: np.ndarray) -> np.ndarray:
        """Per row, the evidence besides its largest surprise: the other forests' surprises plus its distance
        beyond the training range (0 for a row inside it that no other forest finds odd)."""
        others = s.sum(axis=1) - s[np.arange(len(s)), driver]
        beyond = self.training_range.excess(z) if self.training_range is not None else 0.0
        return np.maximum(others, 0.0) + beyond

    def score(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores and, per row, the index of the detector that gave its largest surprise (first on ties).

        A score is the largest surprise plus ``TIE_WEIGHT * log10(1 + e)``, ``e`` the row's other
        :meth:`evidence`: rows that forests score alike (every row past a forest's training extremes lands in
        the same leaves) are ordered by how much else is odd about them, never by their order. The term is
        small next to the surprise (0.01 per tenfold of evidence: 0.02-0.03 for the top rows of ``make run``).
        """
        if not self.detectors:
            raise ValueError("an ensemble without detectors cannot score")
        s = self.surprises(z)
        driver = np.argmax(s, axis=1)
        e = self.evidence(z, s, driver)
        return s[np.arange(len(s)), driver] + TIE_WEIGHT * np.log10(1.0 + e), driver

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
        trees = Trees.from_sklearn(fit(part, params))
        detectors.append(Detector(name, columns, trees, Calibration.fit(trees.score(part), params.calibration_tail)))
    return Ensemble(tuple(detectors), TrainingRange.fit(z))


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
        """The reproducible ``model.tar.gz``: ``model.json`` and each detector's node arrays as ``.npy``."""
        description = {
            "format": FORMAT,
            "kind": "ndr_jobs.model.forest.Ensemble of Isolation Forests (scikit-learn) as node arrays",
            "score": "max over detectors of -log10 P(training score >= -score_samples(z)), plus at most "
                     f"{TIE_WEIGHT} * log10(1 + the other evidence) (Ensemble.score): higher is more anomalous",
            "features": list(self.features),
            "detectors": self.ensemble.describe(self.features),
            "training_range": self.ensemble.training_range.as_json() if self.ensemble.training_range else None,
            "preprocessing": self.preprocessor.as_json(),
            "params": self.params.as_json(),
            "alert_threshold": self.alert_threshold,
            "metadata": self.metadata,
            "versions": runtime_versions(),
        }
        files = {"model.json": artifacts.dumps(description).encode()}
        for k, detector in enumerate(self.ensemble.detectors):
            if not isinstance(detector.forest, Trees):
                raise TypeError(f"detector {detector.name!r} holds {type(detector.forest).__name__}, not Trees")
            files.update(detector.forest.to_members(_member_prefix(k)))
        return artifacts.tar_gz(files)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelBundle:
        """The bundle of ``model.tar.gz`` bytes: only JSON and plain arrays are read (no code runs); a bundle of
        another format or of other library versions is refused (:class:`ModelVersionMismatchError`)."""
        files = artifacts.untar_gz(data)
        if "model.json" not in files:
            raise artifacts.ArtifactError(f"not a model bundle (members: {sorted(files)})")
        try:
            description = json.loads(files["model.json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"model.json is not valid JSON: {exc}") from None
        if description.get("format") != FORMAT:
            raise artifacts.ArtifactError(
                f"model bundle format {description.get('format')!r} is not {FORMAT}: retrain the model with this "
                "version"
            )
        check_versions(description.get("versions"))
        try:
            return cls._from_description(description, files)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelFormatError(f"model.json is malformed: {exc!r}") from None

    @classmethod
    def _from_description(cls, description: dict[str, Any], files: dict[str, bytes]) -> ModelBundle:
        features = tuple(description["features"])
        detectors = []
        for k, d in enumerate(description["detectors"]):
            columns = tuple(features.index(f) for f in d["features"] if f in features)
            if len(columns) != len(d["features"]):
                raise ModelFormatError(f"detector {d['name']!r} names features the model does not have")
            trees = Trees.from_members(files, _member_prefix(k), len(columns))
            detectors.append(Detector(d["name"], columns, trees, Calibration(**_calibration(d["calibration"]))))
        expected = {"model.json", *(m for k in range(len(detectors)) for m in Trees.member_names(_member_prefix(k)))}
        if set(files) != expected:
            raise ModelFormatError(f"unexpected members in the model bundle: {sorted(set(files) - expected)}")
        preprocessor = Preprocessor.from_json(description["preprocessing"])
        if preprocessor.features != features:
            raise ModelFormatError("model.json's features and preprocessing disagree")
        found = description.get("training_range")
        bounds = TrainingRange(tuple(map(float, found["low"])), tuple(map(float, found["high"]))) if found else None
        if bounds is not None and not len(bounds.low) == len(bounds.high) == len(features):
            raise ModelFormatError(f"the training range has {len(bounds.low)} columns, not {len(features)}")
        return cls(
            ensemble=Ensemble(tuple(detectors), bounds),
            preprocessor=preprocessor,
            params=ForestParams(**description["params"]),
            alert_threshold=float(description["alert_threshold"]),
            metadata=description.get("metadata", {}),
        )


def _member_prefix(k: int) -> str:
    return f"detectors/{k:03d}"


def _calibration(value: dict[str, Any]) -> dict[str, Any]:
    return {"grid": tuple(float(v) for v in value["grid"]), "tail": float(value["tail"]),
            "tail_mean": float(value["tail_mean"])}  # fmt: skip


#: the libraries a bundle records; a runtime scores a bundle only with the same major.minor of each
VERSIONED_LIBRARIES = {"sklearn": "scikit-learn", "numpy": "numpy"}


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(dist) for name, dist in VERSIONED_LIBRARIES.items()}


def check_versions(recorded: Any) -> None:
    """Refuse a bundle whose recorded library versions differ from this runtime's in major.minor."""
    if not isinstance(recorded, dict):
        raise ModelVersionMismatchError("the model bundle records no library versions: retrain it")
    runtime = runtime_versions()

    def release(v: Any) -> tuple[str, ...]:
        return tuple(str(v).split(".")[:2])

    wrong = {k: (recorded.get(k), v) for k, v in runtime.items() if release(recorded.get(k)) != release(v)}
    if wrong:
        listed = ", ".join(f"{k} {was} (runtime {now})" for k, (was, now) in sorted(wrong.items()))
        raise ModelVersionMismatchError(
            f"the model was written with {listed}: retrain it with this runtime, or run the runtime it was trained with"
        )
