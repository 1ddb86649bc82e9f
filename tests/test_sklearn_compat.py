"""fastmlp.sklearn: scikit-learn's MLP estimators predicting through fastmlp, and accelerate()."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network, preprocessing  # noqa: E402
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402

import fastmlp  # noqa: E402
from fastmlp import sklearn as fast_sklearn  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261203)


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    # Small max_iter keeps the tests fast; the fits need not converge.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(rng, n=120, k=6, classes=3):
    X = rng.normal(size=(n, k)) * rng.uniform(0.5, 20, size=k) + rng.uniform(-50, 50, size=k)
    y = rng.integers(0, classes, size=n)
    return X, y


def _pair(cls_name, **params):
    """The same estimator from scikit-learn and from fastmlp.sklearn."""
    params.setdefault("random_state", 0)
    params.setdefault("max_iter", 60)
    params.setdefault("hidden_layer_sizes", (9, 7))
    return (
        getattr(neural_network, cls_name)(**params),
        getattr(fast_sklearn, cls_name)(**params),
    )


# --- the estimators are scikit-learn's --------------------------------------------------------


def test_estimators_are_sklearn_subclasses_with_the_same_parameters():
    assert issubclass(fast_sklearn.MLPClassifier, neural_network.MLPClassifier)
    assert issubclass(fast_sklearn.MLPRegressor, neural_network.MLPRegressor)
    ours, theirs = fast_sklearn.MLPClassifier(), neural_network.MLPClassifier()
    assert ours.get_params() == theirs.get_params()
    assert is_classifier(ours) and is_regressor(fast_sklearn.MLPRegressor())


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 1, 2]),
        np.array(["cat", "dog", "emu"]),
        np.array([-3, 7]),  # binary: one logistic output unit
    ],
    ids=["int", "str", "binary"],
)
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_classifier_predicts_what_sklearn_predicts(rng, labels, activation):
    X, index = _data(rng, classes=len(labels))
    y = labels[index]
    theirs, ours = _pair("MLPClassifier", activation=activation)
    theirs.fit(X, y)
    ours.fit(X, y)
    for a, b in zip(theirs.coefs_, ours.coefs_):
        np.testing.assert_array_equal(a, b)  # training is scikit-learn's own
    X_new = rng.normal(size=(50, X.shape[1])) * 10
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.predict(X_new), theirs.predict(X_new))
    assert ours.predict(X_new).dtype == theirs.predict(X_new).dtype
    np.testing.assert_allclose(ours.predict_proba(X_new), theirs.predict_proba(X_new), atol=1e-12)
    np.testing.assert_allclose(
        ours.predict_log_proba(X_new), theirs.predict_log_proba(X_new), rtol=1e-9, atol=1e-12
    )
    assert ours.score(X_new, y[:50]) == theirs.score(X_new, y[:50])
    # One row and float32 rows take the same path as scikit-learn's validation would give.
    np.testing.assert_array_equal(ours.predict(X_new[:1]), theirs.predict(X_new[:1]))
    X32 = X_new.astype(np.float32)
    np.testing.assert_allclose(ours.predict_proba(X32), theirs.predict_proba(X32), atol=1e-12)


def test_multilabel_classifier_returns_the_indicator_matrix(rng):
    X, _ = _data(rng)
    Y = (rng.random(size=(len(X), 3)) > 0.5).astype(int)
    theirs, ours = _pair("MLPClassifier")
    theirs.fit(X, Y)
    ours.fit(X, Y)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize("targets", [1, 3])
def test_regressor_predicts_what_sklearn_predicts(rng, targets):
    X, _ = _data(rng)
    y = X @ rng.normal(size=(X.shape[1], targets)) + rng.normal(size=(len(X), targets))
    y = y[:, 0] if targets == 1 else y
    theirs, ours = _pair("MLPRegressor", activation="tanh")
    theirs.fit(X, y)
    ours.fit(X, y)
    assert ours.predict(X).shape == theirs.predict(X).shape == y.shape
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-12, atol=1e-9)
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=1e-12)


def test_poisson_regressor_keeps_sklearns_forward_pass(rng):
    # fastmlp has no exp output activation: the estimator still works, through scikit-learn.
    X, _ = _data(rng)
    y = rng.poisson(3.0, size=len(X)).astype(float)
    theirs, ours = _pair("MLPRegressor", loss="poisson")
    np.testing.assert_allclose(ours.fit(X, y).predict(X), theirs.fit(X, y).predict(X))


def test_float32_fit_predicts_in_float32(rng):
    X, y = _data(rng)
    X = X.astype(np.float32)
    theirs, ours = _pair("MLPClassifier")
    theirs.fit(X, y)
    ours.fit(X, y)
    assert ours.coefs_[0].dtype == np.float32
    proba = ours.predict_proba(X)
    assert proba.dtype == theirs.predict_proba(X).dtype == np.float32
    np.testing.assert_allclose(proba, theirs.predict_proba(X), atol=1e-5)


def test_input_validation_is_sklearns(rng):
    X, y = _data(rng)
    ours = fast_sklearn.MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        ours.predict(X[:, :-1])
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ours.predict_proba(bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        ours.predict(bad)
    with pytest.raises(ValueError, match="2D array"):
        ours.predict(X[0])
    with pytest.raises(NotFittedError):
        fast_sklearn.MLPClassifier().predict(X)
    # Lists and integer arrays are converted, as scikit-learn does.
    np.testing.assert_allclose(ours.predict_proba(X[:2].tolist()), ours.predict_proba(X[:2]))
    # Sparse input runs scikit-learn's sparse products.
    scipy_sparse = pytest.importorskip("scipy.sparse")
    np.testing.assert_allclose(
        ours.predict_proba(scipy_sparse.csr_matrix(X[:5])), ours.predict_proba(X[:5]), atol=1e-12
    )


def test_feature_names_are_checked_as_sklearn_does(rng):
    pd = pytest.importorskip("pandas")
    X, y = _data(rng)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    theirs, ours = _pair("MLPClassifier")
    theirs.fit(frame, y)
    ours.fit(frame, y)
    np.testing.assert_array_equal(ours.feature_names_in_, frame.columns)
    np.testing.assert_array_equal(ours.predict(frame), theirs.predict(frame))
    with pytest.raises(ValueError, match="feature names"):
        ours.predict(frame[frame.columns[::-1]])
    with pytest.warns(UserWarning, match="feature names"):
        ours.predict(X)


# --- the cached fastmlp model follows the weights ---------------------------------------------


def _sklearn_forward(estimator, X):
    """scikit-learn's own forward pass on the estimator's current weights."""
    return neural_network.MLPClassifier._forward_pass_fast(estimator, X)


def test_partial_fit_and_refit_invalidate_the_cached_model(rng):
    X, y = _data(rng)
    ours = fast_sklearn.MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    ours.partial_fit(X, y, classes=[0, 1, 2])
    first = ours.predict_proba(X)
    np.testing.assert_allclose(first, _sklearn_forward(ours, X), atol=1e-12)
    ours.partial_fit(X, y)  # the optimizer updates the weights in place
    second = ours.predict_proba(X)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, _sklearn_forward(ours, X), atol=1e-12)
    ours.set_params(max_iter=5).fit(X[::-1], y)  # refit
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)
    ours.set_params(warm_start=True, max_iter=3).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)


def test_changed_weights_invalidate_the_cached_model(rng):
    X, y = _data(rng)
    ours = fast_sklearn.MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    ours.predict_proba(X)
    with pytest.raises(ValueError, match="read-only"):
        ours.coefs_[0][0, 0] = 1.0  # cached weights are read-only, never silently stale
    ours.coefs_[0] = ours.coefs_[0] * 2  # a new array
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)
    ours.intercepts_ = [b + 1 for b in ours.intercepts_]  # a new list
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)
    ours.coefs_[1].flags.writeable = True  # changed in place after opting in
    ours.coefs_[1][:] *= -1
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)
    ours.set_params(activation="tanh")
    np.testing.assert_allclose(ours.predict_proba(X), _sklearn_forward(ours, X), atol=1e-12)


def test_early_stopping_trains_exactly_as_sklearn(rng):
    # Validation scores during fit go through the forward pass while the weights change.
    X, y = _data(rng, n=200)
    theirs, ours = _pair("MLPClassifier", early_stopping=True, max_iter=30)
    theirs.fit(X, y)
    ours.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.validation_scores_ == theirs.validation_scores_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-12)


def test_pickle_clone_and_deepcopy(rng):
    X, y = _data(rng)
    ours = fast_sklearn.MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    expected = ours.predict_proba(X)
    restored = pickle.loads(pickle.dumps(ours))
    assert type(restored) is fast_sklearn.MLPClassifier
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    np.testing.assert_array_equal(copy.deepcopy(ours).predict_proba(X), expected)
    fresh = clone(ours)
    assert type(fresh) is fast_sklearn.MLPClassifier
    assert fresh.get_params() == ours.get_params()
    assert not hasattr(fresh, "coefs_")
    np.testing.assert_array_equal(fresh.fit(X, y).predict_proba(X), expected)


def test_usable_in_pipelines_and_cross_validation(rng):
    X, y = _data(rng)
    pipe = make_pipeline(
        preprocessing.StandardScaler(), fast_sklearn.MLPClassifier(max_iter=30, random_state=0)
    )
    reference = make_pipeline(
        preprocessing.StandardScaler(), neural_network.MLPClassifier(max_iter=30, random_state=0)
    )
    np.testing.assert_array_equal(pipe.fit(X, y).predict(X), reference.fit(X, y).predict(X))
    np.testing.assert_array_equal(
        cross_val_score(pipe, X, y, cv=3), cross_val_score(reference, X, y, cv=3)
    )


# --- scikit-learn's estimator checks -----------------------------------------------------------


def _check_statuses(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None, on_skip=None)
    return [(str(r["check_name"]), r["status"]) for r in results]


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_estimator_checks_pass_as_for_sklearns_own(name):
    # The checks fit dozens of small models: a small max_iter keeps this to seconds. Both
    # estimators get the same parameters, so the comparison is like for like.
    theirs, ours = _pair(name, max_iter=100, hidden_layer_sizes=(20,))
    expected = _check_statuses(theirs)
    got = _check_statuses(ours)
    assert [c for c, _ in got] == [c for c, _ in expected]
    differing = [(c, e, g) for (c, e), (_, g) in zip(expected, got) if e != g]
    assert differing == []
    assert sum(status == "passed" for _, status in got) > 30


# --- accelerate ------------------------------------------------------------------------------

_SCALERS = {
    "standard": lambda: preprocessing.StandardScaler(),
    "standard-no-mean": lambda: preprocessing.StandardScaler(with_mean=False),
    "minmax": lambda: preprocessing.MinMaxScaler(feature_range=(-1, 2)),
    "maxabs": lambda: preprocessing.MaxAbsScaler(),
    "robust": lambda: preprocessing.RobustScaler(quantile_range=(10, 90)),
    "robust-no-scaling": lambda: preprocessing.RobustScaler(with_scaling=False),
}


@pytest.mark.parametrize(
    "steps",
    [
        [],
        ["standard"],
        ["minmax"],
        ["maxabs"],
        ["robust"],
        ["standard-no-mean", "robust-no-scaling"],
        ["minmax", "standard", "maxabs"],
    ],
    ids=lambda s: "+".join(s) or "bare",
)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_accelerate_matches_the_pipeline(rng, steps, n_classes):
    X, y = _data(rng, classes=n_classes)
    mlp = neural_network.MLPClassifier(hidden_layer_sizes=(12,), max_iter=80, random_state=0)
    fitted = make_pipeline(*[_SCALERS[s]() for s in steps], mlp) if steps else mlp
    fitted.fit(X, y)
    fast = fast_sklearn.accelerate(fitted)
    assert isinstance(fast, fast_sklearn.AcceleratedClassifier)
    X_new = rng.normal(size=(300, X.shape[1])) * 15 + 5
    np.testing.assert_array_equal(fast.predict(X_new), fitted.predict(X_new))
    np.testing.assert_allclose(fast.predict_proba(X_new), fitted.predict_proba(X_new), atol=1e-6)
    np.testing.assert_allclose(
        fast.predict_proba(X_new[:1]), fitted.predict_proba(X_new[:1]), atol=1e-6
    )
    np.testing.assert_array_equal(fast.classes_, fitted.classes_)
    assert fast.score(X, y) == fitted.score(X, y)


def test_accelerate_folds_scalers_tightly_in_float64(rng):
    X, y = _data(rng)
    pipe = make_pipeline(
        preprocessing.StandardScaler(), neural_network.MLPClassifier(max_iter=80, random_state=0)
    ).fit(X, y)
    error = np.abs(fast_sklearn.accelerate(pipe).predict_proba(X) - pipe.predict_proba(X)).max()
    assert error < 1e-12  # well inside the 1e-6 promised


def test_accelerate_regressor_pipeline(rng):
    X, _ = _data(rng)
    y = X @ rng.normal(size=X.shape[1])
    pipe = make_pipeline(
        preprocessing.RobustScaler(),
        preprocessing.StandardScaler(),
        neural_network.MLPRegressor(hidden_layer_sizes=(10,), max_iter=50, random_state=0),
    ).fit(X, y)
    fast = fast_sklearn.accelerate(pipe)
    assert isinstance(fast, fast_sklearn.AcceleratedRegressor) and is_regressor(fast)
    assert fast.predict(X).shape == (len(X),)
    np.testing.assert_allclose(fast.predict(X), pipe.predict(X), rtol=1e-9, atol=1e-9)
    assert fast.score(X, y) == pytest.approx(pipe.score(X, y), abs=1e-12)


def test_accelerated_is_a_pipeline_step_clonable_and_picklable(rng):
    X, y = _data(rng)
    pipe = make_pipeline(
        preprocessing.MinMaxScaler(), neural_network.MLPClassifier(max_iter=40, random_state=0)
    ).fit(X, y)
    fast = fast_sklearn.accelerate(pipe)
    outer = Pipeline([("model", fast)])
    np.testing.assert_array_equal(outer.predict(X), pipe.predict(X))
    assert fast.get_params()["estimator"] is pipe
    assert "estimator__mlpclassifier__max_iter" in fast.get_params(deep=True)
    restored = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(restored.predict_proba(X), fast.predict_proba(X))
    fresh = clone(fast)
    assert not hasattr(fresh, "model_")
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    # A clone fits its estimator anew and folds it: the same as refitting the pipeline.
    np.testing.assert_allclose(
        fresh.fit(X, y).predict_proba(X), clone(pipe).fit(X, y).predict_proba(X), atol=1e-6
    )
    np.testing.assert_array_equal(
        cross_val_score(fresh, X, y, cv=3), cross_val_score(pipe, X, y, cv=3)
    )


def test_accelerated_checks_feature_names(rng):
    pd = pytest.importorskip("pandas")
    X, y = _data(rng)
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(X.shape[1])])
    pipe = make_pipeline(
        preprocessing.StandardScaler(), neural_network.MLPClassifier(max_iter=40, random_state=0)
    ).fit(frame, y)
    fast = fast_sklearn.accelerate(pipe)
    np.testing.assert_array_equal(fast.feature_names_in_, frame.columns)
    np.testing.assert_array_equal(fast.predict(frame), pipe.predict(frame))
    with pytest.raises(ValueError, match="feature names"):
        fast.predict(frame[frame.columns[::-1]])


def test_accelerate_refuses_what_it_cannot_fold(rng):
    X, y = _data(rng)
    mlp = neural_network.MLPClassifier(max_iter=20, random_state=0)
    with pytest.raises(TypeError, match=r"step 'pca' is a sklearn\.decomposition.*PCA"):
        fast_sklearn.accelerate(Pipeline([("pca", PCA(3)), ("mlp", mlp)]).fit(X, y))
    with pytest.raises(ValueError, match=r"'scale'.*clip=True"):
        fast_sklearn.accelerate(
            Pipeline([("scale", preprocessing.MinMaxScaler(clip=True)), ("mlp", mlp)]).fit(X, y)
        )
    with pytest.raises(TypeError, match="last step 'scale'"):
        fast_sklearn.accelerate(Pipeline([("scale", preprocessing.StandardScaler())]).fit(X))
    with pytest.raises(TypeError, match="LogisticRegression"):
        from sklearn.linear_model import LogisticRegression

        fast_sklearn.accelerate(LogisticRegression())
    with pytest.raises(NotFittedError):
        fast_sklearn.accelerate(neural_network.MLPClassifier())


# --- fastmlp.MLP.score for a one-target regressor -----------------------------------------------


def test_mlp_score_takes_one_target_as_a_vector(rng):
    X, _ = _data(rng)
    y = X @ rng.normal(size=X.shape[1])
    reg = neural_network.MLPRegressor(hidden_layer_sizes=(10,), max_iter=50, random_state=0)
    reg.fit(X, y)
    model = fastmlp.from_sklearn(reg)
    assert model.score(X, y) == pytest.approx(reg.score(X, y), abs=1e-12)
    assert model.score(X, y[:, None]) == pytest.approx(reg.score(X, y), abs=1e-12)
    with pytest.raises(ValueError, match="y has shape"):
        model.score(X, y[:-1])


def test_mlp_score_averages_r2_over_targets_as_sklearn(rng):
    from sklearn.metrics import r2_score

    X, _ = _data(rng)
    Y = np.column_stack([X @ rng.normal(size=X.shape[1]), X[:, 0] * 0.1 + rng.normal(size=len(X))])
    reg = neural_network.MLPRegressor(hidden_layer_sizes=(10,), max_iter=50, random_state=0)
    reg.fit(X, Y)
    model = fastmlp.from_sklearn(reg)
    assert model.score(X, Y) == pytest.approx(r2_score(Y, reg.predict(X)), rel=1e-9, abs=1e-12)
    constant = np.column_stack([Y[:, 0], np.full(len(X), 3.0)])
    assert model.score(X, constant) == pytest.approx(r2_score(constant, reg.predict(X)), abs=1e-12)
