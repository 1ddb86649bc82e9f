"""scikit-learn estimators that predict through fastmlp.

- :class:`MLPClassifier` and :class:`MLPRegressor` *are* scikit-learn's estimators (subclasses:
  same parameters, ``fit`` and ``partial_fit`` are scikit-learn's own); once fitted, their
  forward pass runs in fastmlp's kernels. Everything scikit-learn defines on top of it
  (``predict`` returning labels from ``classes_``, ``predict_proba``, ``predict_log_proba``,
  ``score``, input validation and ``feature_names_in_``) is scikit-learn's own code.
- :func:`accelerate` turns an already fitted MLP, or a fitted ``Pipeline`` of affine scalers
  ending in one, into a fitted estimator whose scalers are folded into the first layer.

Importing this module imports scikit-learn (it is not a dependency of fastmlp itself).
"""

from __future__ import annotations

import weakref
from typing import Any, List, Optional, Tuple

import numpy as np

from fastmlp._optional import import_optional

import_optional("sklearn", extra="sklearn", needed_by="fastmlp.sklearn", package="scikit-learn")

from sklearn import get_config  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone  # noqa: E402
from sklearn.neural_network import MLPClassifier as _SklearnMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as _SklearnMLPRegressor  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402
from fastmlp._interop import SKLEARN_HIDDEN  # noqa: E402
from fastmlp._model import MLP  # noqa: E402

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sklearn_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sklearn_validate_data = None

__all__ = [
    "AcceleratedClassifier",
    "AcceleratedRegressor",
    "MLPClassifier",
    "MLPRegressor",
    "accelerate",
]

# scikit-learn's activation names -> fastmlp's, for hidden layers and for the output layer.
_OUTPUT = {"identity": "identity", "logistic": "sigmoid", "softmax": "softmax"}
_FLOAT_INPUTS = (np.dtype(np.float64), np.dtype(np.float32))


def _validate(estimator: Any, X: Any) -> Any:
    """scikit-learn's own prediction-time validation (feature count and names, finiteness)."""
    if _sklearn_validate_data is not None:
        return _sklearn_validate_data(estimator, X, accept_sparse=["csr", "csc"], reset=False)
    return estimator._validate_data(X, accept_sparse=["csr", "csc"], reset=False)


def _is_plain_input(estimator: Any, X: Any) -> bool:
    """True when scikit-learn's validation of ``X`` would pass it through unchanged.

    That is a 2-D float ndarray of at least one row with the fitted feature count, for an
    estimator fitted without feature names, with finite values. Checking this costs well under
    a microsecond on one row; the validation itself costs tens. Anything else goes through
    scikit-learn's validation, which converts it or raises scikit-learn's own error.
    """
    if (
        type(X) is not np.ndarray
        or X.ndim != 2
        or X.dtype not in _FLOAT_INPUTS
        or X.shape[0] == 0
        or X.shape[1] != estimator.n_features_in_
        or hasattr(estimator, "feature_names_in_")
    ):
        return False
    if get_config()["assume_finite"]:
        return True
    # scikit-learn's own shortcut: a finite sum means finite values (an overflowing sum of
    # finite values is checked element by element).
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(X.sum()):
            return True
    return bool(np.isfinite(X).all())


def _mlp_layers(
    estimator: Any, scale: Optional[np.ndarray] = None, shift: Optional[np.ndarray] = None
) -> "List[Tuple[np.ndarray, np.ndarray, str]]":
    """fastmlp layers computing what the estimator's ``_forward_pass_fast`` returns.

    With ``scale`` and ``shift``, the input is first mapped to ``X * scale + shift`` (per
    feature), folded into the first layer in float64.
    """
    kind = type(estimator).__name__
    hidden = SKLEARN_HIDDEN.get(estimator.activation)
    output = _OUTPUT.get(estimator.out_activation_)
    if hidden is None or output is None:
        raise ValueError(
            f"the {kind} uses activation={estimator.activation!r} and out_activation_="
            f"{estimator.out_activation_!r}; fastmlp runs the hidden activations "
            f"{', '.join(map(repr, SKLEARN_HIDDEN))} and the outputs "
            f"{', '.join(map(repr, _OUTPUT))}"
        )
    coefs, intercepts = list(estimator.coefs_), list(estimator.intercepts_)
    if scale is not None and shift is not None:
        W = np.asarray(coefs[0], dtype=np.float64)
        b = np.asarray(intercepts[0], dtype=np.float64)
        # (X * scale + shift) @ W + b == X @ (scale[:, None] * W) + (shift @ W + b)
        coefs[0] = scale[:, None] * W
        intercepts[0] = shift @ W + b
    last = len(coefs) - 1
    return [
        (W, b, output if index == last else hidden)
        for index, (W, b) in enumerate(zip(coefs, intercepts))
    ]


def _weights_dtype(estimator: Any) -> np.dtype:
    """float32 when scikit-learn fitted on float32 data (its weights are float32), else float64."""
    return np.dtype(np.float32 if estimator.coefs_[0].dtype == np.float32 else np.float64)


# The fastmlp model of each fitted estimator, kept outside the estimator: scikit-learn's checks
# require that predicting leaves ``__dict__`` unchanged, and clone/pickle/deepcopy should not
# carry it. An entry is ((coefs_ list, intercepts_ list, their arrays), (activation,
# out_activation_), model); it is used only while all of these are still the estimator's own
# and the arrays are still read-only (see _FastForward).
_MODELS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_TRAINING = "training"  # the entry while scikit-learn fits: predictions use its own code


def _set_writeable(arrays: "List[Any]", writeable: bool) -> bool:
    """Sets the flag on every array; False if one is not an ndarray or refuses."""
    done = True
    for array in arrays:
        try:
            array.flags.writeable = writeable
        except (AttributeError, ValueError):
            done = False
    return done


class _FastForward:
    """Replaces scikit-learn's forward pass by fastmlp's once the estimator is fitted.

    The converted model is cached. It is dropped when ``fit`` or ``partial_fit`` runs (both
    go through ``_fit``), when ``coefs_``/``intercepts_`` or one of their arrays is replaced,
    and when ``activation`` changes. To catch changes made *inside* the arrays, the fitted
    weights are made read-only while a model built from them is cached: writing into them
    raises, and an array made writeable again is taken as changed.
    """

    def _fit(self, X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        _MODELS[self] = _TRAINING
        # scikit-learn's optimizers update the weights in place (warm_start, partial_fit).
        _set_writeable(
            list(getattr(self, "coefs_", [])) + list(getattr(self, "intercepts_", [])), True
        )
        try:
            return super()._fit(X, y, *args, **kwargs)  # type: ignore[misc]
        finally:
            _MODELS.pop(self, None)

    def _fastmlp_model(self) -> Optional[MLP]:
        """The cached fastmlp model, rebuilt if the weights changed.

        None while scikit-learn fits, and for activations fastmlp does not have.
        """
        entry = _MODELS.get(self)
        if entry is _TRAINING:
            return None
        if (
            self.activation not in SKLEARN_HIDDEN  # type: ignore[attr-defined]
            or self.out_activation_ not in _OUTPUT  # type: ignore[attr-defined]
        ):
            return None  # e.g. loss="poisson"'s exp output: scikit-learn's own forward pass
        coefs = self.coefs_  # type: ignore[attr-defined]
        intercepts = self.intercepts_  # type: ignore[attr-defined]
        weights = (coefs, intercepts, *coefs, None, *intercepts)
        names = (self.activation, self.out_activation_)  # type: ignore[attr-defined]
        if (
            entry is not None
            and len(entry[0]) == len(weights)
            and all(a is b for a, b in zip(entry[0], weights))
            and entry[1] == names
            and not any(a.flags.writeable for a in (*coefs, *intercepts))
        ):
            return entry[2]
        model = MLP(_mlp_layers(self), dtype=_weights_dtype(self))
        if _set_writeable(list(coefs) + list(intercepts), False):
            _MODELS[self] = (weights, names, model)
        return model

    def _forward_pass_fast(self, X: Any, check_input: bool = True) -> Any:
        model = self._fastmlp_model() if hasattr(self, "coefs_") else None
        if model is None:
            return super()._forward_pass_fast(X, check_input)  # type: ignore[misc]
        if check_input and not _is_plain_input(self, X):
            X = _validate(self, X)
        if not isinstance(X, np.ndarray):  # a sparse matrix: scikit-learn's sparse products
            return super()._forward_pass_fast(X, check_input=False)  # type: ignore[misc]
        return model.predict_proba(X)


class MLPClassifier(_FastForward, _SklearnMLPClassifier):
    """scikit-learn's ``MLPClassifier``, predicting through fastmlp once fitted.

    Same parameters, attributes and training as
    :class:`sklearn.neural_network.MLPClassifier` (it is a subclass); ``predict``,
    ``predict_proba``, ``predict_log_proba`` and ``score`` are scikit-learn's own methods on
    fastmlp's forward pass: labels from ``classes_``, probabilities equal to scikit-learn's to
    rounding (float64: within 1e-12 in the tests).

    While a fitted model is cached, ``coefs_`` and ``intercepts_`` are read-only: assign new
    arrays (or refit) to change them.

    Examples
    --------
    >>> from fastmlp.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=300).fit(X, y)  # doctest: +SKIP
    >>> clf.predict(X[:3])  # labels, as scikit-learn's  # doctest: +SKIP
    """


class MLPRegressor(_FastForward, _SklearnMLPRegressor):
    """scikit-learn's ``MLPRegressor``, predicting through fastmlp once fitted.

    Same parameters, attributes and training as :class:`sklearn.neural_network.MLPRegressor`;
    ``predict`` (shape ``(N,)`` for one target) and ``score`` (R²) are scikit-learn's own on
    fastmlp's forward pass. See :class:`MLPClassifier` for the cached model.
    """


# -- accelerate: scalers folded into the first layer ------------------------------------------

_AFFINE_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")


def _scaler_affine(name: str, scaler: Any, n_features: int) -> "Tuple[np.ndarray, np.ndarray]":
    """``(scale, shift)`` in float64 with ``scaler.transform(X) == X * scale + shift``."""
    from sklearn import preprocessing

    kind = type(scaler).__name__
    if kind not in _AFFINE_SCALERS or type(scaler) is not getattr(preprocessing, kind):
        raise TypeError(
            f"Pipeline step {name!r} is a {type(scaler).__module__}.{type(scaler).__qualname__}; "
            f"accelerate folds only the affine scalers {', '.join(_AFFINE_SCALERS)} (exact "
            "classes) before a final MLPClassifier or MLPRegressor"
        )
    check_is_fitted(scaler)
    if getattr(scaler, "clip", False):
        raise ValueError(
            f"Pipeline step {name!r} ({kind}) has clip=True, which is not an affine map; "
            "accelerate folds only affine scalers"
        )
    ones, zeros = np.ones(n_features), np.zeros(n_features)

    def vector(value: Any) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (n_features,))

    if kind == "MinMaxScaler":  # X * scale_ + min_
        return vector(scaler.scale_).copy(), vector(scaler.min_).copy()
    if kind == "MaxAbsScaler":  # X / scale_
        return 1.0 / vector(scaler.scale_), zeros
    # StandardScaler: (X - mean_) / scale_; RobustScaler: (X - center_) / scale_; either part
    # absent (None) when switched off.
    center = scaler.mean_ if kind == "StandardScaler" else scaler.center_
    centering = scaler.with_mean if kind == "StandardScaler" else scaler.with_centering
    scaling = scaler.with_std if kind == "StandardScaler" else scaler.with_scaling
    divisor = vector(scaler.scale_) if scaling and scaler.scale_ is not None else ones
    offset = vector(center) if centering and center is not None else zeros
    return 1.0 / divisor, -offset / divisor


def _unpack_fitted(fitted: Any) -> "Tuple[Any, Optional[np.ndarray], Optional[np.ndarray], Any]":
    """The final MLP, the folded ``(scale, shift)`` (None without scalers), the first step."""
    from sklearn.pipeline import Pipeline

    mlp_classes = (_SklearnMLPClassifier, _SklearnMLPRegressor)
    if isinstance(fitted, mlp_classes):
        check_is_fitted(fitted)
        return fitted, None, None, fitted
    if not isinstance(fitted, Pipeline):
        raise TypeError(
            "accelerate expects a fitted MLPClassifier or MLPRegressor, or a fitted Pipeline of "
            f"{', '.join(_AFFINE_SCALERS)} ending in one; got "
            f"{type(fitted).__module__}.{type(fitted).__qualname__}"
        )
    steps = list(fitted.steps)
    if not steps:
        raise ValueError("accelerate got a Pipeline without steps")
    final_name, final = steps[-1]
    if not isinstance(final, mlp_classes):
        raise TypeError(
            f"the Pipeline's last step {final_name!r} is a {type(final).__module__}."
            f"{type(final).__qualname__}; accelerate expects an MLPClassifier or MLPRegressor"
        )
    check_is_fitted(final)
    n_features = int(final.n_features_in_)
    scale, shift = np.ones(n_features), np.zeros(n_features)
    first = None
    for name, step in steps[:-1]:
        if step is None or step == "passthrough":
            continue
        first = step if first is None else first
        step_scale, step_shift = _scaler_affine(name, step, n_features)
        if int(step.n_features_in_) != n_features:
            raise ValueError(
                f"Pipeline step {name!r} takes {step.n_features_in_} features but the MLP "
                f"{final_name!r} takes {n_features}"
            )
        # (X * scale + shift) * step_scale + step_shift
        scale, shift = scale * step_scale, shift * step_scale + step_shift
    return final, scale, shift, (first if first is not None else final)


class _Accelerated(BaseEstimator):
    """A fitted MLP (or Pipeline of affine scalers and an MLP) running as one fastmlp model.

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor or Pipeline
        What ``fit`` fits (a clone of it) and folds. :func:`accelerate` passes the fitted one,
        whose fitted state is read once: refitting it later does not change this estimator.
    """

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any, **fit_params: Any) -> Any:
        """Fits a clone of ``estimator`` and folds it; returns ``self``."""
        if self.estimator is None:
            raise ValueError("estimator is None; expected an MLP or a Pipeline ending in one")
        self._fold(clone(self.estimator).fit(X, y, **fit_params))
        return self

    def _fold(self, fitted: Any) -> Any:
        """Reads the fitted state; returns the final MLP."""
        mlp, scale, shift, first = _unpack_fitted(fitted)
        self.model_ = MLP(_mlp_layers(mlp, scale, shift), dtype=_weights_dtype(mlp))
        self.n_features_in_ = int(mlp.n_features_in_)
        names = getattr(first, "feature_names_in_", None)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif "feature_names_in_" in self.__dict__:
            del self.feature_names_in_
        self.n_outputs_ = int(mlp.n_outputs_)
        self.out_activation_ = mlp.out_activation_
        return mlp

    def _raw(self, X: Any) -> np.ndarray:
        """The output layer's values, shape (N, n_outputs), as scikit-learn's forward pass."""
        check_is_fitted(self, "model_")
        if not _is_plain_input(self, X):
            X = _validate(self, X)
            if not isinstance(X, np.ndarray):
                X = X.toarray()
        return self.model_.predict_proba(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class AcceleratedClassifier(ClassifierMixin, _Accelerated):
    """A fitted MLPClassifier, with its Pipeline's scalers folded in, predicting via fastmlp.

    Made by :func:`accelerate`; ``predict`` gives the labels of ``classes_``,
    ``predict_proba`` and ``predict_log_proba`` scikit-learn's values (to rounding).
    """

    def _fold(self, fitted: Any) -> Any:
        mlp = super()._fold(fitted)
        self.classes_ = mlp.classes_
        self._label_binarizer = mlp._label_binarizer  # for multilabel indicator outputs
        return mlp

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (N, n_classes), as ``MLPClassifier.predict_proba``."""
        y_pred = self._raw(X)
        if self.n_outputs_ == 1:
            p = y_pred.ravel()
            return np.vstack([1 - p, p]).T
        return y_pred

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))``, as scikit-learn defines it."""
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_`` (an indicator matrix for a multilabel classifier)."""
        y_pred = self._raw(X)
        if self.n_outputs_ == 1:
            return self.classes_[(y_pred.ravel() > 0.5).astype(np.intp)]
        if self.out_activation_ == "softmax":
            return self.classes_[np.argmax(y_pred, axis=1)]
        return self._label_binarizer.inverse_transform(y_pred)


class AcceleratedRegressor(RegressorMixin, _Accelerated):
    """A fitted MLPRegressor, with its Pipeline's scalers folded in, predicting via fastmlp."""

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (N,) for one target, else (N, n_outputs), as scikit-learn's."""
        y_pred = self._raw(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred


def accelerate(fitted: Any) -> "_Accelerated":
    """A fitted estimator predicting what ``fitted`` predicts, through one fastmlp model.

    Parameters
    ----------
    fitted : MLPClassifier, MLPRegressor or Pipeline
        A fitted scikit-learn MLP, or a fitted ``Pipeline`` whose steps before a final MLP are
        ``StandardScaler``, ``MinMaxScaler`` (``clip=False``), ``MaxAbsScaler`` or
        ``RobustScaler`` (or ``"passthrough"``). It is only read.

    Returns
    -------
    AcceleratedClassifier or AcceleratedRegressor
        Fitted: ``predict`` gives the same labels (values for a regressor),
        ``predict_proba`` the same probabilities within 1e-6 (float64). The scalers are
        folded into the first layer in float64 (``X * s + t`` then ``@ W + b`` is
        ``X @ (s W) + (t W + b)``), so one fastmlp call does the whole pipeline. It works as
        a Pipeline step, supports ``clone``/``get_params`` (its one parameter is
        ``estimator``: a clone is unfitted and ``fit`` fits and folds it anew) and pickles.

    Raises
    ------
    TypeError
        If ``fitted`` is neither, or a Pipeline step is something else (named with its class).
    ValueError
        If a scaler is not affine (``clip=True``) or the MLP uses an activation fastmlp lacks.
    sklearn.exceptions.NotFittedError
        If ``fitted`` is not fitted.

    Examples
    --------
    >>> pipe = make_pipeline(StandardScaler(), MLPClassifier()).fit(X, y)  # doctest: +SKIP
    >>> fast = accelerate(pipe)  # doctest: +SKIP
    >>> (fast.predict(X) == pipe.predict(X)).all()  # doctest: +SKIP
    True
    """
    mlp, _, _, _ = _unpack_fitted(fitted)
    accelerated: _Accelerated
    if isinstance(mlp, _SklearnMLPClassifier):
        accelerated = AcceleratedClassifier(fitted)
    else:
        accelerated = AcceleratedRegressor(fitted)
    accelerated._fold(fitted)
    return accelerated
