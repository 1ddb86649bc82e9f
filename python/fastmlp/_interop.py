"""Building an ``MLP`` from a network trained elsewhere: scikit-learn, Keras, ONNX files.

Each importer reads the trained weights and activation names and hands them to :class:`MLP`;
none of them imports its peer library at module import time (scikit-learn and Keras are
recognised by their class and attribute names, ``onnx`` is imported when a file is read).
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from ._common import Layer, PathLike
from ._model import MLP

__all__ = ["from_keras", "from_onnx", "from_sklearn"]


# scikit-learn's hidden activation names -> fastmlp's (fastmlp.sklearn reads them too).
SKLEARN_HIDDEN = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SKLEARN_ESTIMATORS = ("MLPClassifier", "MLPRegressor")

# Keras activation function names -> fastmlp's.
_KERAS_ACTIVATIONS = {
    "linear": "identity",
    "sigmoid": "sigmoid",
    "relu": "relu",
    "tanh": "tanh",
    "softmax": "softmax",
}
# Packages whose activation functions are trusted to be the standard ones of that name (a user
# function called "relu" defined elsewhere might compute anything).
_KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")


def _sklearn_estimator_kind(estimator: Any) -> str:
    """``"MLPClassifier"`` or ``"MLPRegressor"`` (a subclass counts), else a TypeError."""
    for cls in type(estimator).__mro__:
        if cls.__name__ in _SKLEARN_ESTIMATORS and cls.__module__.startswith("sklearn."):
            return cls.__name__
    raise TypeError(
        f"from_sklearn expects a fitted scikit-learn MLPClassifier or MLPRegressor, got "
        f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    )


def _not_fitted(kind: str) -> Exception:
    message = f"this {kind} is not fitted yet: call fit(X, y) before from_sklearn"
    try:
        from sklearn.exceptions import NotFittedError  # a ValueError, as callers may expect
    except ImportError:  # pragma: no cover - the estimator came from scikit-learn
        return ValueError(message)
    return NotFittedError(message)


def from_sklearn(estimator: Any, *, input_scale: Optional[float] = None, dtype: Any = None) -> MLP:
    """Builds an MLP from a fitted scikit-learn ``MLPClassifier`` or ``MLPRegressor``.

    Parameters
    ----------
    estimator : sklearn.neural_network.MLPClassifier or MLPRegressor
        A fitted estimator; it is only read.
    input_scale : float, optional
        As for :class:`MLP` (scikit-learn has none: pass it if the estimator was trained on
        scaled inputs, e.g. ``1/255``, and you will feed raw ones).
    dtype : {float32, float64}, optional
        The compute dtype. Default: the estimator's weights' dtype (float64 unless it was
        fitted on float32 data).

    Returns
    -------
    MLP
        ``predict_proba`` equals the estimator's. For a binary classifier (one logistic
        output unit) the last layer becomes a two-unit softmax, so ``predict_proba`` gives
        scikit-learn's two columns ``[1 - p, p]`` and ``predict`` its threshold ``p > 0.5``.

    Raises
    ------
    TypeError
        If ``estimator`` is not an ``MLPClassifier`` or ``MLPRegressor``.
    sklearn.exceptions.NotFittedError
        (a ``ValueError``) if it has not been fitted.
    ValueError
        If it uses an activation fastmlp does not have.

    Notes
    -----
    ``predict`` returns indices into ``estimator.classes_``, not the labels themselves:
    ``estimator.classes_[model.predict(X)]`` gives what ``estimator.predict(X)`` does. For a
    multilabel classifier (several logistic outputs) compare ``predict_proba(X) > 0.5``
    instead, and for a regressor ``predict`` keeps the ``(N, n_outputs)`` shape even when
    scikit-learn would return ``(N,)``.

    Examples
    --------
    >>> clf = MLPClassifier(hidden_layer_sizes=(50,)).fit(X, y)  # doctest: +SKIP
    >>> model = fastmlp.from_sklearn(clf, dtype=np.float32)  # doctest: +SKIP
    >>> np.abs(model.predict_proba(X) - clf.predict_proba(X)).max() < 1e-5  # doctest: +SKIP
    True
    """
    kind = _sklearn_estimator_kind(estimator)
    coefs = getattr(estimator, "coefs_", None)
    intercepts = getattr(estimator, "intercepts_", None)
    out_activation = getattr(estimator, "out_activation_", None)
    if coefs is None or intercepts is None or out_activation is None:
        raise _not_fitted(kind)
    if len(coefs) != len(intercepts) or not coefs:
        raise ValueError(
            f"the {kind} has {len(coefs)} weight matrices and {len(intercepts)} bias vectors; "
            "expected the same number, at least one"
        )
    hidden_name = estimator.activation
    if hidden_name not in SKLEARN_HIDDEN:
        raise ValueError(
            f"the {kind} uses activation={hidden_name!r}; fastmlp supports "
            f"{', '.join(map(repr, SKLEARN_HIDDEN))}"
        )
    hidden = SKLEARN_HIDDEN[hidden_name]
    layers: List[Layer] = [(W, b, hidden) for W, b in zip(coefs[:-1], intercepts[:-1])]
    W, b = np.asarray(coefs[-1]), np.asarray(intercepts[-1])
    if out_activation == "logistic" and W.shape[1] == 1:
        # softmax([0, z]) = [sigmoid(-z), sigmoid(z)] exactly: scikit-learn's [1 - p, p], and
        # the argmax picks class 1 only when z > 0, as its p > 0.5 threshold does.
        W = np.concatenate([np.zeros_like(W), W], axis=1)
        b = np.concatenate([np.zeros_like(b), b])
        layers.append((W, b, "softmax"))
    elif out_activation == "logistic":
        layers.append((W, b, "sigmoid"))  # multilabel: one independent sigmoid per label
    elif out_activation in ("softmax", "identity"):
        layers.append((W, b, out_activation))
    else:
        raise ValueError(
            f"the {kind} has out_activation_={out_activation!r}; expected 'softmax', "
            "'logistic' or 'identity'"
        )
    return MLP(layers, input_scale=input_scale, dtype=dtype)


def _keras_activation(function: Any, layer: Any) -> str:
    """fastmlp's name for a Keras activation function, or a ValueError naming it."""
    name = getattr(function, "__name__", None)
    package = (getattr(function, "__module__", None) or "").split(".")[0]
    if name in _KERAS_ACTIVATIONS and package in _KERAS_PACKAGES:
        return _KERAS_ACTIVATIONS[name]
    shown = name if name is not None else repr(function)
    raise ValueError(
        f"{type(layer).__name__} layer {layer.name!r} has activation {shown!r}; fastmlp "
        f"supports the Keras activations {', '.join(map(repr, _KERAS_ACTIVATIONS))}"
    )


def _keras_input_rank(model: Any) -> int:
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shape = None
    if not getattr(model, "built", True) or shape is None:
        raise ValueError(
            f"the Keras model {getattr(model, 'name', '')!r} is not built, so its weights do "
            "not exist yet: give it a keras.Input(shape=...) or call it once on data"
        )
    return len(shape)


def _keras_dense_layer(layer: Any, rank: int) -> "list[Any]":
    """``[W, b, activation]`` of a Dense layer, checked."""
    if rank != 2:
        raise ValueError(
            f"Dense layer {layer.name!r} receives rank-{rank} input; fastmlp's layers take "
            "(N, K) rows: put a Flatten before it"
        )
    weights = layer.get_weights()
    use_bias = bool(getattr(layer, "use_bias", True))
    if len(weights) != (2 if use_bias else 1):
        raise ValueError(
            f"Dense layer {layer.name!r} holds {len(weights)} weight arrays; expected a kernel"
            f"{' and a bias' if use_bias else ''} (LoRA and quantized Dense layers are not "
            "supported)"
        )
    kernel = np.asarray(weights[0])
    if kernel.ndim != 2 or kernel.dtype.kind != "f":
        raise ValueError(
            f"Dense layer {layer.name!r} has a kernel of shape {kernel.shape} and dtype "
            f"{kernel.dtype}; expected a 2-D float matrix"
        )
    bias = np.asarray(weights[1]) if use_bias else np.zeros(kernel.shape[1], kernel.dtype)
    return [kernel, bias, _keras_activation(layer.activation, layer)]


def from_keras(model: Any, *, input_scale: Optional[float] = None, dtype: Any = None) -> MLP:
    """Builds an MLP from a Keras ``Sequential`` model of ``Dense`` layers.

    Parameters
    ----------
    model : keras.Sequential
        A built model: optionally ``InputLayer`` and ``Flatten`` first, then ``Dense`` layers,
        each optionally followed by an ``Activation``, ``ReLU`` or ``Softmax`` layer (when the
        Dense's own activation is linear). ``Dropout`` layers are skipped: they do nothing at
        inference. Activations by name: ``linear``, ``sigmoid``, ``relu``, ``tanh``,
        ``softmax``. The model is only read.
    input_scale : float, optional
        As for :class:`MLP` (for example ``1/255`` if the model was trained on scaled
        pixels and you will feed raw uint8 ones).
    dtype : {float32, float64}, optional
        The compute dtype. Default: the weights' dtype (float32 for Keras' default policy).

    Returns
    -------
    MLP
        ``predict_proba`` equals ``model.predict``; ``predict`` gives the argmax class index.

    Raises
    ------
    TypeError
        If ``model`` is not a Keras ``Sequential``.
    ValueError
        If the model is not built, or has a layer or activation fastmlp does not have (the
        message names it), or a Dense layer sees input of more than two dimensions.

    Examples
    --------
    >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, "softmax")])
    ... # doctest: +SKIP
    >>> fastmlp.from_keras(net, input_scale=1 / 255).activations  # doctest: +SKIP
    ('softmax',)
    """
    if type(model).__name__ != "Sequential" or not hasattr(model, "layers"):
        raise TypeError(
            f"from_keras expects a keras.Sequential model, got "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    rank = _keras_input_rank(model)
    layers: List[Layer] = []
    pending: Optional[list] = None  # the Dense layer being read: [W, b, activation]
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Flatten"):
            if pending is not None:
                raise ValueError(
                    f"{kind} layer {layer.name!r} comes after a Dense layer; fastmlp reads it "
                    "only before the first one"
                )
            if kind == "Flatten":
                # channels_first makes Keras move the channel axis last before flattening: a
                # different feature order than fastmlp's row-major (N, ...) -> (N, K).
                data_format = getattr(layer, "data_format", "channels_last")
                if data_format == "channels_first" and rank > 2:
                    raise ValueError(
                        f"Flatten layer {layer.name!r} uses data_format='channels_first'; "
                        "fastmlp flattens row-major (channels_last)"
                    )
                rank = 2
        elif kind == "Dense":
            if pending is not None:
                layers.append(tuple(pending))  # type: ignore[arg-type]
            pending = _keras_dense_layer(layer, rank)
        elif kind in ("Activation", "ReLU", "Softmax"):
            if kind == "Activation":
                activation = _keras_activation(layer.activation, layer)
            else:
                activation = _keras_activation_layer(layer, kind)
            if pending is None:
                raise ValueError(
                    f"{kind} layer {layer.name!r} comes before any Dense layer; expected "
                    "activations only after a Dense"
                )
            if activation != "identity":
                if pending[2] != "identity":
                    raise ValueError(
                        f"{kind} layer {layer.name!r} follows a Dense layer that already "
                        f"applies {pending[2]}; fastmlp layers have one activation each"
                    )
                pending[2] = activation
        elif kind == "Dropout":
            continue
        else:
            raise ValueError(
                f"unsupported Keras layer {kind} ({layer.name!r}); fastmlp reads InputLayer, "
                "Flatten, Dense, Activation, ReLU, Softmax and Dropout"
            )
    if pending is None:
        raise ValueError("the Keras model has no Dense layer: there is no network to read")
    layers.append(tuple(pending))  # type: ignore[arg-type]
    return MLP(layers, input_scale=input_scale, dtype=dtype)


def _keras_activation_layer(layer: Any, kind: str) -> str:
    """fastmlp's name for a plain ``ReLU`` or a last-axis ``Softmax`` layer."""
    config = layer.get_config()
    if kind == "ReLU":
        plain = (
            config.get("max_value") is None
            and not config.get("negative_slope")
            and not config.get("threshold")
        )
        if not plain:
            raise ValueError(
                f"ReLU layer {layer.name!r} has max_value={config.get('max_value')}, "
                f"negative_slope={config.get('negative_slope')}, "
                f"threshold={config.get('threshold')}; fastmlp's relu is max(x, 0)"
            )
        return "relu"
    axis = config.get("axis", -1)
    if axis not in (-1, 1, [-1], [1]):
        raise ValueError(
            f"Softmax layer {layer.name!r} has axis={axis}; expected -1 (the features)"
        )
    return "softmax"


def from_onnx(path: PathLike, *, input_scale: Optional[float] = None, dtype: Any = None) -> MLP:
    """Builds an MLP from an ONNX file holding a chain of dense layers.

    Parameters
    ----------
    path : str or os.PathLike
        A self-contained ONNX model: one input, one output, and in between ``Gemm``
        (``transA=0``) or ``MatMul`` + ``Add`` layers, each optionally followed by ``Sigmoid``,
        ``Relu``, ``Tanh`` or ``Softmax`` (last axis); ``Identity`` anywhere; ``Flatten`` or
        ``Reshape`` to ``(N, K)`` and a ``Mul`` by a scalar before the first layer.
    input_scale : float, optional
        Overrides the scale of a leading ``Mul`` (as written by :meth:`MLP.to_onnx`).
    dtype : {float32, float64}, optional
        The compute dtype. Default: the file's weight dtype.

    Returns
    -------
    MLP
        ``from_onnx(model.to_onnx(path)) == model`` for every fastmlp model.

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed (``pip install "fastmlp[onnx]"``).
    fastmlp.errors.WeightsFormatError
        (a ``ValueError``) if the file is not ONNX, stores external data, is not a single
        chain, or uses any other operator (the message names it and its node).

    Examples
    --------
    >>> torch.onnx.export(seq, torch.zeros(1, 784), "mlp.onnx")  # doctest: +SKIP
    >>> fastmlp.from_onnx("mlp.onnx").activations  # doctest: +SKIP
    ('relu', 'softmax')
    """
    from ._formats.onnx import read_onnx

    layers, file_scale = read_onnx(path)
    return MLP(layers, input_scale=file_scale if input_scale is None else input_scale, dtype=dtype)
