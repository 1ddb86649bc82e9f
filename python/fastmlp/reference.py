"""A plain NumPy reference of fastmlp's computations, used as ground truth by tests and benchmarks.

Two families live here:

* the **stable reference** (:func:`sigmoid`, :func:`softmax`, :func:`log_softmax`,
  :func:`dense`, :func:`forward`, ...), written so that no finite input overflows or warns;
* the **tutorial's own code** (``tutorial_*``), kept verbatim to show its two traps: a sigmoid
  that overflows in ``exp`` and a chapter-3 softmax that normalises over the whole batch
  instead of per row.

Dtypes are preserved: float32 in gives float32 out, float64 in gives float64 out. Integer and
boolean inputs are promoted to float64 *before* any arithmetic, as NumPy's true division does;
this matters for uint8 pixels, where ``-x`` would otherwise wrap around modulo 256.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Union

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "dense",
    "forward",
    "identity",
    "log_softmax",
    "predict_proba",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
    "tutorial_accuracy_batched",
    "tutorial_accuracy_per_sample",
    "tutorial_predict",
    "tutorial_sigmoid",
    "tutorial_softmax",
]

Activation = Union[str, Callable[[np.ndarray], np.ndarray]]
Layer = tuple[np.ndarray, np.ndarray, Activation]


def _as_float(x: np.ndarray) -> np.ndarray:
    """Return ``x`` as a floating array, promoting integers and booleans to float64."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        return x
    return x.astype(np.float64)


def identity(x: np.ndarray) -> np.ndarray:
    """Return the input unchanged (as a floating array): the output layer of a regression net.

    Parameters
    ----------
    x : array_like
        Any shape. Integer input is promoted to float64.

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it is already floating, else a float64 copy.

    Examples
    --------
    >>> identity(np.array([1, 2], dtype=np.uint8))
    array([1., 2.])
    """
    return _as_float(x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    ``exp`` is only ever taken of ``-|x| <= 0``, so it cannot overflow; the result for
    negative ``x`` is rebuilt as ``e / (1 + e)``.

    Parameters
    ----------
    x : array_like
        Any shape. float32 stays float32; integer input is promoted to float64 first (so
        uint8 pixels do not wrap around when negated).

    Returns
    -------
    numpy.ndarray
        Same shape and floating dtype as ``x``. No warning for any finite input;
        ``NaN -> NaN``, ``+inf -> 1`` and ``-inf -> 0`` exactly.

    Examples
    --------
    >>> sigmoid(np.array([-1e4, 0.0, 1e4]))
    array([0. , 0.5, 1. ])
    """
    x = _as_float(x)
    # Underflow of exp(-|x|) to 0 is the correct limit; NaN comparisons are expected.
    with np.errstate(under="ignore", invalid="ignore"):
        e = np.exp(-np.abs(x))
        s = 1 / (1 + e)
        return np.where(x >= 0, s, e * s)


def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit ``max(x, 0)``; NaN propagates.

    Parameters
    ----------
    x : array_like
        Any shape; integer input is promoted to float64.

    Returns
    -------
    numpy.ndarray
        Same shape and floating dtype as ``x``.

    Examples
    --------
    >>> relu(np.array([-2.0, 3.0]))
    array([0., 3.])
    """
    return np.maximum(_as_float(x), 0)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent; saturates to ±1 without warnings.

    Parameters
    ----------
    x : array_like
        Any shape; integer input is promoted to float64.

    Returns
    -------
    numpy.ndarray
        Same shape and floating dtype as ``x``.

    Examples
    --------
    >>> tanh(np.array([0.0]))
    array([0.])
    """
    return np.tanh(_as_float(x))


def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum along that axis so ``exp`` cannot overflow.

    Each slice along ``axis`` (each row, by default) sums to 1 on its own, unlike the
    tutorial's :func:`tutorial_softmax`.

    Parameters
    ----------
    a : array_like
        Scores of any shape; integer input is promoted to float64.
    axis : int, optional
        The axis that is normalised. Default: the last one.

    Returns
    -------
    numpy.ndarray
        Same shape and floating dtype as ``a``. Non-finite inputs give whatever the shifted
        formula gives: a slice holding ``+inf`` or ``NaN`` is all NaN (``inf - inf``), a
        slice of all ``-inf`` is all NaN, and a ``-inf`` entry among finite ones gives 0.

    Examples
    --------
    >>> softmax(np.array([[1.0, 1.0], [0.0, 1000.0]]))
    array([[0.5, 0.5],
           [0. , 1. ]])
    """
    a = _as_float(a)
    # initial=-inf lets an empty axis reduce instead of raising.
    shift = np.max(a, axis=axis, keepdims=True, initial=-np.inf)
    # inf - inf = NaN is the documented result for rows holding +inf or only -inf.
    with np.errstate(invalid="ignore", under="ignore"):
        exp_shifted = np.exp(a - shift)
        return exp_shifted / np.sum(exp_shifted, axis=axis, keepdims=True)


def log_softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Logarithm of :func:`softmax`, computed directly as ``z - log(sum(exp(z)))``.

    With ``z = a - max(a)``, the largest entry of each slice contributes ``exp(0) = 1`` to
    the sum, so the logarithm is finite. Taking ``log(softmax(a))`` instead gives ``-inf``
    wherever a probability underflows to 0.

    Parameters
    ----------
    a : array_like
        Scores of any shape; integer input is promoted to float64.
    axis : int, optional
        The axis that is normalised. Default: the last one.

    Returns
    -------
    numpy.ndarray
        Same shape and floating dtype as ``a``; ``exp`` of it sums to 1 along ``axis``.
        Non-finite inputs: a slice holding ``+inf`` or ``NaN`` is all NaN, a slice of all
        ``-inf`` is all NaN, and a ``-inf`` entry among finite ones stays ``-inf``.

    Examples
    --------
    >>> log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    a = _as_float(a)
    shift = np.max(a, axis=axis, keepdims=True, initial=-np.inf)
    # divide: log(0) only for an empty axis, whose result is empty anyway.
    with np.errstate(invalid="ignore", under="ignore", divide="ignore"):
        shifted = a - shift
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": identity,
    "sigmoid": sigmoid,
    "relu": relu,
    "tanh": tanh,
    "softmax": softmax,
    "log_softmax": log_softmax,
}


def _resolve_activation(activation: Activation) -> Callable[[np.ndarray], np.ndarray]:
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


def _weights_dtype(*arrays: np.ndarray) -> np.dtype:
    """The floating dtype a layer computes in: that of its weights, integers promoted."""
    dtype = np.result_type(*arrays)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def dense(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, activation: Activation = "sigmoid"
) -> np.ndarray:
    """One dense layer ``activation(x @ W + b)``, computed in the weights' dtype.

    Parameters
    ----------
    x : array_like, shape (in,) or (N, in)
        Inputs; cast to the weights' dtype first (float32 weights compute in float32).
    W : array_like, shape (in, out)
        Weights.
    b : array_like, shape (out,)
        Biases.
    activation : str or callable, optional
        A name from :data:`ACTIVATIONS` or a function of one array. Default ``"sigmoid"``.

    Returns
    -------
    numpy.ndarray, shape (out,) or (N, out)
        The layer's output in the weights' dtype.

    Raises
    ------
    ValueError
        If ``activation`` names no known function or the shapes do not chain.

    Examples
    --------
    >>> dense(np.ones((1, 2)), np.eye(2), np.zeros(2), "identity")
    array([[1., 1.]])
    """
    W = np.asarray(W)
    b = np.asarray(b)
    dtype = _weights_dtype(W, b)
    x = np.asarray(x).astype(dtype, copy=False)
    return _resolve_activation(activation)(x @ W.astype(dtype, copy=False) + b.astype(dtype))


def forward(layers: Sequence[Layer], X: np.ndarray, input_scale: float | None = None) -> np.ndarray:
    """Run a whole network: the stable ground truth that fastmlp's kernels are checked against.

    Parameters
    ----------
    layers : sequence of (W, b, activation)
        ``W`` of shape (in, out), ``b`` of shape (out,), ``activation`` as in :func:`dense`.
        The network computes in the weights' common dtype (``np.result_type`` of all of
        them: float32 weights compute in float32; integer weights in float64).
    X : array_like, shape (K,), (N, K) or (N, d1, d2, ...) with d1*d2*... == K
        Inputs (uint8 pixels, float32 or float64). Trailing dimensions are flattened, so
        (N, 28, 28) images feed a network with K = 784 inputs. A 1-D ``X`` is one sample.
    input_scale : float, optional
        Multiplies the inputs first, as ``X * scale`` in the weights' dtype (``1/255`` maps
        pixels to 0..1). Default: no scaling.

    Returns
    -------
    numpy.ndarray, shape (out,) for 1-D ``X``, else (N, out)
        The last layer's output.

    Raises
    ------
    ValueError
        If ``layers`` is empty or ``X`` does not have K features per sample.

    Examples
    --------
    >>> layers = [(np.eye(2, dtype=np.float32), np.zeros(2, np.float32), "softmax")]
    >>> forward(layers, np.zeros((1, 2), np.uint8))
    array([[0.5, 0.5]], dtype=float32)
    """
    if not layers:
        raise ValueError("layers is empty; expected at least one (W, b, activation)")
    dtype = _weights_dtype(*(np.asarray(array) for W, b, _ in layers for array in (W, b)))
    n_features = np.shape(layers[0][0])[0]
    X = np.asarray(X)
    single_sample = X.ndim == 1
    if single_sample:
        X = X[np.newaxis, :]
    if X.ndim < 2 or int(np.prod(X.shape[1:])) != n_features:
        raise ValueError(
            f"X has shape {X.shape}; expected (K,), (N, K) or (N, ...) with K = {n_features} "
            "features per sample"
        )
    activations = X.reshape(X.shape[0], n_features).astype(dtype)
    if input_scale is not None:
        activations *= dtype.type(input_scale)
    for W, b, activation in layers:
        W = np.asarray(W).astype(dtype, copy=False)
        b = np.asarray(b).astype(dtype, copy=False)
        activations = dense(activations, W, b, activation)
    return activations[0] if single_sample else activations


predict_proba = forward


# --- The tutorial's own code ("Deep Learning from Scratch", ch. 3), traps included. ---------


def tutorial_sigmoid(x: np.ndarray) -> np.ndarray:
    """The tutorial's sigmoid ``1 / (1 + np.exp(-x))``: overflows for ``x < -88`` in float32.

    NumPy warns "overflow encountered in exp" there (the result, 0, happens to be right).
    Kept verbatim to show the trap; use :func:`sigmoid` instead.

    Parameters
    ----------
    x : numpy.ndarray
        Any floating array.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> tutorial_sigmoid(np.array([0.0]))
    array([0.5])
    """
    return 1 / (1 + np.exp(-x))


def tutorial_softmax(a: np.ndarray) -> np.ndarray:
    """The tutorial's chapter-3 softmax: max and sum over the WHOLE array, not per row.

    On a batch the rows therefore do not sum to 1 each (the whole batch sums to 1), although
    ``argmax`` per row is unaffected. Kept verbatim to show the trap; use :func:`softmax`.

    Parameters
    ----------
    a : numpy.ndarray
        Scores, one sample (1-D) or a batch (2-D).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``a``; sums to 1 over all its elements.

    Examples
    --------
    >>> tutorial_softmax(np.array([[0.0, 0.0], [0.0, 0.0]]))
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    c = np.max(a)
    exp_a = np.exp(a - c)
    return exp_a / np.sum(exp_a)


def tutorial_predict(network: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The book's ``predict``: sigmoid hidden layers and a softmax output, with its functions.

    For the three-layer network this is exactly ``a1 = np.dot(x, W1) + b1; z1 = sigmoid(a1);
    a2 = np.dot(z1, W2) + b2; z2 = sigmoid(a2); a3 = np.dot(z2, W3) + b3; y = softmax(a3)``
    with :func:`tutorial_sigmoid` and :func:`tutorial_softmax`; deeper or shallower dicts
    (W1..Wn, b1..bn) follow the same pattern.

    Parameters
    ----------
    network : dict of str to numpy.ndarray
        ``{"W1": ..., "b1": ..., "W2": ..., ...}``.
    x : numpy.ndarray, shape (784,) or (N, 784)
        One flattened image or a batch, as the tutorial feeds them (uint8 or float).

    Returns
    -------
    numpy.ndarray
        The tutorial's "probabilities" (for a batch, the whole batch sums to 1).

    Examples
    --------
    >>> net = {"W1": np.eye(2), "b1": np.zeros(2)}
    >>> tutorial_predict(net, np.array([0.0, 0.0]))
    array([0.5, 0.5])
    """
    n_layers = sum(1 for key in network if key.startswith("W"))
    a = x
    for index in range(1, n_layers + 1):
        a = np.dot(a, network[f"W{index}"]) + network[f"b{index}"]
        if index < n_layers:
            a = tutorial_sigmoid(a)
    return tutorial_softmax(a)


def _flatten_images(x: np.ndarray) -> np.ndarray:
    # The book loads MNIST with flatten=True; accept (N, 28, 28) too for convenience.
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def tutorial_accuracy_per_sample(
    network: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, *, return_proba: bool = False
):
    """The tutorial's first loop: predict one image at a time and count correct argmaxes.

    Parameters
    ----------
    network : dict of str to numpy.ndarray
        As for :func:`tutorial_predict`.
    x : numpy.ndarray, shape (N, 784) or (N, 28, 28)
        Images, fed as given (raw uint8 pixels, or pixels scaled by the caller).
    t : numpy.ndarray, shape (N,)
        Integer labels.
    return_proba : bool, optional
        Also return the (N, classes) outputs of :func:`tutorial_predict`. Default False.

    Returns
    -------
    accuracy : float
        Fraction of images whose argmax equals the label.
    predictions : numpy.ndarray of int64, shape (N,)
        The argmax per image.
    proba : numpy.ndarray, shape (N, classes)
        Only with ``return_proba=True``.

    Examples
    --------
    >>> net = {"W1": np.eye(2), "b1": np.array([0.0, 1.0])}
    >>> tutorial_accuracy_per_sample(net, np.zeros((2, 2)), np.array([1, 0]))[0]
    0.5
    """
    x = _flatten_images(x)
    predictions = np.empty(len(x), dtype=np.int64)
    rows = []
    accuracy_cnt = 0
    for i in range(len(x)):
        y = tutorial_predict(network, x[i])
        p = np.argmax(y)
        if p == t[i]:
            accuracy_cnt += 1
        predictions[i] = p
        if return_proba:
            rows.append(y)
    accuracy = accuracy_cnt / len(x)
    if return_proba:
        return accuracy, predictions, np.stack(rows)
    return accuracy, predictions


def tutorial_accuracy_batched(
    network: dict[str, np.ndarray],
    x: np.ndarray,
    t: np.ndarray,
    batch_size: int = 100,
    *,
    return_proba: bool = False,
):
    """The tutorial's batched loop: ``for i in range(0, len(x), batch_size)`` with row argmax.

    The predictions equal the per-sample loop's; the outputs do not, because
    :func:`tutorial_softmax` normalises over the whole batch.

    Parameters
    ----------
    network : dict of str to numpy.ndarray
        As for :func:`tutorial_predict`.
    x : numpy.ndarray, shape (N, 784) or (N, 28, 28)
        Images, fed as given.
    t : numpy.ndarray, shape (N,)
        Integer labels.
    batch_size : int, optional
        Images per call of :func:`tutorial_predict`. Default 100, as in the book.
    return_proba : bool, optional
        Also return the stacked (N, classes) batch outputs. Default False.

    Returns
    -------
    accuracy : float
        Fraction of images whose argmax equals the label.
    predictions : numpy.ndarray of int64, shape (N,)
        The argmax per image.
    proba : numpy.ndarray, shape (N, classes)
        Only with ``return_proba=True``; each batch (not each row) sums to 1.

    Examples
    --------
    >>> net = {"W1": np.eye(2), "b1": np.array([0.0, 1.0])}
    >>> tutorial_accuracy_batched(net, np.zeros((2, 2)), np.array([1, 0]))[0]
    0.5
    """
    x = _flatten_images(x)
    predictions = np.empty(len(x), dtype=np.int64)
    batches = []
    accuracy_cnt = 0
    for i in range(0, len(x), batch_size):
        x_batch = x[i : i + batch_size]
        y_batch = tutorial_predict(network, x_batch)
        p = np.argmax(y_batch, axis=1)
        accuracy_cnt += np.sum(p == t[i : i + batch_size])
        predictions[i : i + batch_size] = p
        if return_proba:
            batches.append(y_batch)
    accuracy = float(accuracy_cnt) / len(x)
    if return_proba:
        return accuracy, predictions, np.concatenate(batches)
    return accuracy, predictions
