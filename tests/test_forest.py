"""The model itself: calibrated scores, the family ensemble, explanations and the bundle's bytes."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from ndr_jobs.model import artifacts, forest
from ndr_jobs.model.features import Preprocessor, explain
from ndr_jobs.model.forest import Calibration, ForestParams


def test_calibration_is_the_training_tail_share_and_keeps_order_beyond_the_training_maximum():
    scores = np.linspace(0.0, 1.0, 10_001)
    cal = Calibration.fit(scores, tail=0.05)
    assert cal.surprise(np.array([-1.0, 0.0]))[0] == 0.0  # below anything seen: p = 1
    assert cal.surprise(np.array([0.5]))[0] == pytest.approx(-np.log10(0.5), abs=0.01)
    assert cal.surprise(np.array([0.9]))[0] == pytest.approx(1.0, abs=0.01)  # 10 % scored higher
    assert cal.surprise(np.array([0.99]))[0] == pytest.approx(2.0, abs=0.1)  # in the exponential tail
    grid = np.linspace(-0.5, 3.0, 5001)
    s = cal.surprise(grid)
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) >= 0)
    assert s[-1] > cal.surprise(np.array([1.0]))[0] + 10  # far above training: far more surprising
    joint = cal.grid[-1]
    below, above = cal.surprise(np.array([joint - 1e-9, joint + 1e-9]))
    assert abs(above - below) < 1e-6  # continuous where the tail takes over


def test_calibration_never_saturates_and_keeps_every_difference_in_raw_scores():
    rng = np.random.default_rng(5)
    cal = Calibration.fit(rng.beta(2, 8, size=2000) * 0.6 + 0.3, tail=0.05)  # raw scores in (0.3, 0.9)
    raw = np.sort(rng.uniform(cal.grid[0] + 1e-6, 1.0, size=5000))
    raw = raw[np.r_[True, np.diff(raw) > 0]]
    s = cal.surprise(raw)
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) > 0)  # different raw scores: different, same order
    # far past the training maximum (where a share would underflow to 0): still increasing, no ceiling
    tail = Calibration(cal.grid, cal.tail, forest.MIN_TAIL_MEAN)
    far = tail.surprise(np.array([0.95, 0.99, 0.999, 1.0]))
    assert np.all(np.diff(far) > 0) and far[-1] > 100


def test_rows_a_forest_scores_alike_are_ordered_by_their_other_evidence():
    """Rows past the training extremes reach the same leaves of every tree (the same raw score); the score
    orders them by their distance beyond the training range and the other forests' surprises, not by row."""
    rng = np.random.default_rng(1)
    features = ["a", "b", "c", "d"]
    train = rng.normal(size=(800, 4))
    params = ForestParams(n_estimators=60, families={"ab": ["a", "b"]})
    ensemble = forest.fit_ensemble(train, features, params)
    far = np.array([[8.0, 8.0, 0.0, 0.0], [9.0, 8.0, 0.0, 0.0], [8.0, 8.0, 0.5, 0.0], [12.0, 12.0, 0.0, 0.0]])
    surprises = ensemble.surprises(far)
    assert np.all(surprises[:, 1] == surprises[0, 1])  # the family forest cannot tell them apart
    scores, _ = ensemble.score(far)
    assert len(set(scores.tolist())) == 4 and int(np.argmax(scores)) == 3
    assert scores[1] > scores[0]  # farther out in one column
    again, _ = ensemble.score(far[::-1].copy())
    assert np.array_equal(again, scores[::-1])  # by the rows themselves, not their order
    same, _ = ensemble.score(np.repeat(far[:1], 2, axis=0))
    assert same[0] == same[1]  # identical rows, identical scores


def test_calibration_copes_with_tied_scores():
    scores = np.r_[np.zeros(900), np.full(80, 0.5), np.linspace(0.6, 0.9, 20)]
    cal = Calibration.fit(scores, tail=0.05)
    s = cal.surprise(np.array([0.0, 0.5, 0.7, 0.9, 2.0]))
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) > 0)
    assert s[0] == pytest.approx(0.0, abs=0.01)  # the score nearly every row has is no surprise
    one = Calibration.fit(np.full(50, 0.4), tail=0.05)  # no spread at all
    assert np.all(np.isfinite(one.surprise(np.array([0.3, 0.4, 0.41]))))


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Training rows of 40 noise columns and a 2-column family; test rows like them plus one planted row (the
    first) that is ordinary in every noise column and far out in both family columns."""
    rng = np.random.default_rng(seed)
    features = [f"noise_{i:02d}" for i in range(40)] + ["beacon_score", "beacon_minutes"]
    train = rng.normal(size=(1500, len(features)))
    test = rng.normal(size=(100, len(features)))
    test[0, :] = 0.0
    test[0, -2:] = 6.0
    return train, test, features


def test_a_family_forest_finds_the_row_its_few_columns_make_odd():
    train, test, features = planted()
    params = ForestParams(n_estimators=100, families={"c2": ["beacon_*"]})
    ensemble = forest.fit_ensemble(train, features, params)
    assert ensemble.names == ("all_features", "c2")
    assert ensemble.detectors[1].columns == (40, 41)
    scores, drivers = ensemble.score(test)
    top = ensemble.surprises(test).max(axis=1)
    assert np.all(scores >= top) and np.all(scores < top + 3 * forest.TIE_WEIGHT)  # the other evidence breaks ties
    assert int(np.argmax(scores)) == 0 and ensemble.names[drivers[0]] == "c2"
    assert scores[0] > 3.0 > np.sort(scores)[-2] + 1  # rarer than the top 0.1 % of training rows, and clearly first
    # the forest on every column alone ranks it in the bottom half: 40 ordinary columns drown 2 odd ones
    alone, _ = forest.fit_ensemble(train, features, ForestParams(n_estimators=100)).score(test)
    assert int((alone > alone[0]).sum()) >= 50


def test_families_matching_nothing_in_the_data_are_left_out():
    params = ForestParams(families={"c2": ["beacon_*"], "lateral": ["admin_*"]})
    assert forest.family_columns(["beacon_score", "x"], params) == [("all_features", (0, 1)), ("c2", (0,))]
    with pytest.raises(ValueError, match="reserved"):
        ForestParams(families={"all_features": ["x"]})
    assert ForestParams(**json.loads(json.dumps(params.as_json()))) == params  # as model.json records it


def test_explanations_put_the_detectors_features_first():
    z = np.array([[5.0, -0.5, 2.0, 0.1], [5.0, -0.5, 2.0, 0.1]])
    names = ["a", "b", "c", "d"]
    plain, preferred = explain(z, z, names, 3, [(0, 1, 2, 3), (1, 3)])
    assert [t["feature"] for t in plain] == ["a", "c", "b"]
    assert [t["feature"] for t in preferred] == ["b", "d", "a"]
    assert preferred[0]["deviation"] == -0.5


def test_the_bundle_round_trips_its_bytes_and_refuses_the_old_format():
    train, test, features = planted(1)
    params = ForestParams(n_estimators=20, families={"c2": ["beacon_*"]})
    pre = Preprocessor.fit(features, train)
    ensemble = forest.fit_ensemble(pre.transform(train), features, params)
    bundle = forest.ModelBundle(ensemble, pre, params, 2.0, {"run_key": "r"})
    data = bundle.to_bytes()
    again = forest.fit_ensemble(pre.transform(train), features, params)  # fitting is seeded: the same bytes
    assert data == forest.ModelBundle(again, pre, params, 2.0, {"run_key": "r"}).to_bytes()
    back = forest.ModelBundle.from_bytes(data)
    assert np.array_equal(back.ensemble.score(pre.transform(test))[0], ensemble.score(pre.transform(test))[0])
    description = json.loads(artifacts.untar_gz(data)["model.json"])
    assert [d["name"] for d in description["detectors"]] == ["all_features", "c2"]
    assert description["detectors"][1]["features"] == ["beacon_score", "beacon_minutes"]
    old = artifacts.tar_gz({"model.json": json.dumps({**description, "format": 1}).encode(), "model.pkl": b""})
    with pytest.raises(artifacts.ArtifactError, match="format 1 is not 3: retrain"):
        forest.ModelBundle.from_bytes(old)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert "model.json" in tar.getnames() and not any(n.endswith(".pkl") for n in tar.getnames())


# --- the safe bundle: node arrays, no pickle -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_samples", "max_features", "rows"), [(256, 1.0, 2000), (0.5, 1.0, 500), ("auto", 0.6, 3000), (64, 3, 300)]
)
def test_trees_score_bit_for_bit_as_scikit_learn(max_samples: int | float | str, max_features: float, rows: int):
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 7))
    x[::17, 2] = np.nan  # missing values take the side the trees learnt
    fitted = IsolationForest(n_estimators=60, max_samples=max_samples, max_features=max_features, random_state=3).fit(x)
    test = rng.normal(size=(5000, 7)) * 3  # beyond the training range too
    test[::13, 1] = np.nan
    assert np.array_equal(forest.Trees.from_sklearn(fitted).score(test), -fitted.score_samples(test))


def test_the_ensemble_scores_exactly_as_the_pickled_scikit_learn_ensemble_did():
    """Format 2 held the scikit-learn forests themselves; the node arrays must give the same scores and drivers."""
    train, test, features = planted(2)
    params = ForestParams(n_estimators=50, families={"c2": ["beacon_*"], "noise": ["noise_0*"]})
    old = forest.Ensemble(tuple(
        forest.Detector(name, cols, fitted, Calibration.fit(forest.score(fitted, train[:, list(cols)]), 0.05))
        for name, cols in forest.family_columns(features, params)
        for fitted in [forest.fit(train[:, list(cols)], params)]
    ), forest.TrainingRange.fit(train))  # fmt: skip
    pre = Preprocessor.fit(features, train)
    bundle = forest.ModelBundle(forest.fit_ensemble(train, features, params), pre, params, 2.0, {})
    back = forest.ModelBundle.from_bytes(bundle.to_bytes()).ensemble
    for new in (bundle.ensemble, back):
        (s_old, d_old), (s_new, d_new) = old.score(test), new.score(test)
        assert np.array_equal(s_old, s_new) and np.array_equal(d_old, d_new)
        assert np.array_equal(old.raw(test), new.raw(test))


def small_bundle() -> bytes:
    train, _, features = planted(3)
    params = ForestParams(n_estimators=5, families={"c2": ["beacon_*"]})
    pre = Preprocessor.fit(features, train)
    return forest.ModelBundle(
        forest.fit_ensemble(pre.transform(train), features, params), pre, params, 2.0, {}
    ).to_bytes()


def rebundle(data: bytes, **changes: bytes | None) -> bytes:
    files = artifacts.untar_gz(data)
    for name, value in changes.items():
        name = name.replace("__", "/").replace("_npy", ".npy").replace("_json", ".json").replace("_pkl", ".pkl")
        if value is None:
            files.pop(name)
        else:
            files[name] = value
    return artifacts.tar_gz(files)


def test_a_pickle_in_a_bundle_is_never_loaded(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):  # unpickling this would create the file
            return (open, (str(tmp_path / "pwned"), "w"))

    data = small_bundle()
    description = json.loads(artifacts.untar_gz(data)["model.json"])
    legacy = artifacts.tar_gz({"model.json": json.dumps({**description, "format": 2}).encode(),
                               "model.pkl": pickle.dumps(Boom())})  # fmt: skip
    with pytest.raises(artifacts.ArtifactError, match="format 2 is not 3: retrain"):
        forest.ModelBundle.from_bytes(legacy)
    with pytest.raises(forest.ModelFormatError, match="unexpected members.*model.pkl"):
        forest.ModelBundle.from_bytes(rebundle(data, model_pkl=pickle.dumps(Boom())))
    objects = io.BytesIO()
    np.save(objects, np.array([Boom()], dtype=object), allow_pickle=True)  # an object array is a pickle
    with pytest.raises(forest.ModelFormatError, match="not a plain array"):
        forest.ModelBundle.from_bytes(rebundle(data, detectors__000__threshold_npy=objects.getvalue()))
    assert not (tmp_path / "pwned").exists()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_malformed_tree_arrays_are_refused_by_name():
    data = small_bundle()
    files = artifacts.untar_gz(data)
    left = np.lib.format.read_array(io.BytesIO(files["detectors/000/left.npy"]))
    looped = left.copy()
    looped[int(np.flatnonzero(left != -1)[-1])] = 0  # a child pointing back to the root: a cycle
    with pytest.raises(forest.ModelFormatError, match="point forward"):
        forest.ModelBundle.from_bytes(rebundle(data, detectors__000__left_npy=npy(looped)))
    with pytest.raises(forest.ModelFormatError, match="'left' is int32"):
        forest.ModelBundle.from_bytes(rebundle(data, detectors__000__left_npy=npy(left.astype(np.int32))))
    feature = np.lib.format.read_array(io.BytesIO(files["detectors/001/feature.npy"]))
    with pytest.raises(forest.ModelFormatError, match=r"split columns must be in \[0, 2\)"):
        forest.ModelBundle.from_bytes(rebundle(data, detectors__001__feature_npy=npy(feature + 5)))
    with pytest.raises(forest.ModelFormatError, match="lacks detectors/001/roots.npy"):
        forest.ModelBundle.from_bytes(rebundle(data, detectors__001__roots_npy=None))
    with pytest.raises(forest.ModelFormatError, match="model.json is malformed"):
        description = json.loads(files["model.json"])
        del description["detectors"][0]["calibration"]
        forest.ModelBundle.from_bytes(rebundle(data, model_json=json.dumps(description).encode()))


def test_a_bundle_of_other_library_versions_is_refused():
    data = small_bundle()
    description = json.loads(artifacts.untar_gz(data)["model.json"])
    assert description["versions"] == forest.runtime_versions()
    patch = forest.runtime_versions()["sklearn"].rsplit(".", 1)[0] + ".999"  # same major.minor: accepted
    same = {**description, "versions": {**description["versions"], "sklearn": patch}}
    forest.ModelBundle.from_bytes(rebundle(data, model_json=json.dumps(same).encode()))
    older = {**description, "versions": {**description["versions"], "sklearn": "1.4.2"}}
    with pytest.raises(forest.ModelVersionMismatchError, match=r"sklearn 1\.4\.2 \(runtime 1\.9\.\d+\)"):
        forest.ModelBundle.from_bytes(rebundle(data, model_json=json.dumps(older).encode()))
    unversioned = {k: v for k, v in description.items() if k != "versions"}
    with pytest.raises(forest.ModelVersionMismatchError, match="records no library versions"):
        forest.ModelBundle.from_bytes(rebundle(data, model_json=json.dumps(unversioned).encode()))


def test_the_top_of_a_realistic_scoring_has_no_ties_but_identical_rows():
    """Heavy-tailed host counts, a family forest, and a batch with a dozen rows past the training range in a
    few columns each (what attacks look like): the top twenty scores are all different, except rows that are
    the same row twice."""
    rng = np.random.default_rng(11)
    features = [f"count_{i}" for i in range(8)] + ["ratio_a", "ratio_b"]
    train = np.c_[rng.lognormal(2, 1, size=(600, 8)), rng.beta(2, 5, size=(600, 2))]
    batch = np.c_[rng.lognormal(2, 1, size=(200, 8)), rng.beta(2, 5, size=(200, 2))]
    for k in range(12):  # past the training maximum in 1-3 columns, by different amounts
        cols = np.array([8, 9]) if k < 6 else rng.choice(8, size=1 + k % 3, replace=False)
        batch[k, cols] = train[:, cols].max(axis=0) * (1.5 + k)
    batch[12] = batch[0]  # the same row twice
    pre = Preprocessor.fit(features, train)
    params = ForestParams(n_estimators=80, families={"ratios": ["ratio_*"], "counts": ["count_*"]})
    ensemble = forest.fit_ensemble(pre.transform(train), features, params)
    scores, _ = ensemble.score(pre.transform(batch))
    top = np.argsort(-scores, kind="stable")[:20]
    assert 0 in top and 12 in top and scores[0] == scores[12]
    values = [scores[i] for i in top if i != 12]
    assert len(set(values)) == len(values)
    raw = ensemble.surprises(pre.transform(batch)).max(axis=1)
    assert len(set(raw[top].tolist())) < len(top) - 1  # without the tie-break the forests alone do tie
