"""Array functions: validation and dtype rules in Python, the computation in ``fastmlp._core``."""

from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np

from . import _core
from ._common import check_out, check_threads, refuse_masked

__all__ = ["dense", "identity", "log_softmax", "sigmoid", "softmax"]

_AxisError = getattr(np, "exceptions", np).AxisError


def float_dtype_for(dtype: np.dtype, what: str) -> np.dtype:
    """The float dtype an input of ``dtype`` is computed in, or a ``TypeError``.

    float32 and float64 are kept; float16 computes in float32; integers (uint8 pixels among
    them) compute in float64, as NumPy's true division does. Booleans, complex numbers,
    objects and strings are refused rather than guessed at.
    """
    # By kind and size rather than equality, so non-native byte orders ('>f4') are accepted
    # too; the conversion below makes them native.
    if dtype.kind == "f" and dtype.itemsize in (2, 4):
        return np.dtype(np.float32)
    if dtype.kind == "f" and dtype.itemsize == 8:
        return np.dtype(np.float64)
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{what} has dtype {dtype}; expected float32 or float64 "
        "(float16 computes in float32, integers in float64)"
    )


def as_float_array(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32/float64 array, copying only when it must."""
    refuse_masked(x, what)
    array = np.asarray(x)
    dtype = float_dtype_for(array.dtype, what)
    # np.asarray, unlike np.ascontiguousarray, keeps 0-d input 0-d.
    converted = np.asarray(array, dtype=dtype, order="C")
    if not converted.flags.aligned:
        # A view at an odd byte offset (np.frombuffer(data[1:]), packed records): the core
        # reads whole aligned elements, so it gets an aligned copy.
        converted = converted.copy()
    return converted


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def _prepare_unary(x: Any, out: Optional[np.ndarray]) -> "tuple[Optional[np.ndarray], np.ndarray]":
    """Returns ``(source, destination)``; source None means "compute in place"."""
    original = x
    x = as_float_array(x)
    if out is None:
        return x, np.empty_like(x)
    check_out(out, x.shape, x.dtype)
    # Identity first: empty arrays never "share memory", yet passing one array as both source
    # and destination would be refused by the core's borrow check.
    if out is original or _same_buffer(x, out):
        return None, out
    if np.may_share_memory(x, out):
        x = x.copy()
    return x, out


def identity(x: Any, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The regression output function: returns the values unchanged, as a new array.

    Parameters
    ----------
    x : array_like
        float32 or float64 (kept), float16 (to float32) or integers (to float64).
    out : ndarray, optional
        Where to write the result (same shape and computed dtype, C-contiguous).

    Returns
    -------
    ndarray
        A copy of ``x`` in its computed dtype.

    Examples
    --------
    >>> fastmlp.identity(np.array([1.0, -2.0]))
    array([ 1., -2.])
    """
    source, destination = _prepare_unary(x, out)
    if source is not None:
        np.copyto(destination, source)
    return destination


def _elementwise(
    name: str, x: Any, out: Optional[np.ndarray], threads: Optional[int]
) -> np.ndarray:
    source, destination = _prepare_unary(x, out)
    _core.elementwise(name, source, destination, check_threads(threads))
    return destination


def sigmoid(
    x: Any, *, out: Optional[np.ndarray] = None, threads: Optional[int] = None
) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``, computed stably.

    It never overflows and never warns: ``exp(-|x|)`` is evaluated instead of ``exp(-x)``, and
    the result is exactly 0 at ``-inf`` and exactly 1 at ``+inf`` (and for large finite
    inputs, where the true value rounds to 1). NaN gives NaN.

    Parameters
    ----------
    x : array_like
        Any shape. float32 and float64 are kept; float16 computes in float32 and integers
        (such as uint8 pixels) in float64.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself for an in-place update.
    threads : int, optional
        Upper bound on threads (default: ``fastmlp.get_num_threads()``).

    Returns
    -------
    ndarray
        Same shape as ``x``, in its computed dtype.

    Raises
    ------
    TypeError
        For boolean, complex, object or string input, or an ``out`` of the wrong dtype.
    ValueError
        For an ``out`` of the wrong shape, not C-contiguous or read-only.

    Examples
    --------
    >>> fastmlp.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    return _elementwise("sigmoid", x, out, threads)


def _softmax(
    x: Any, axis: int, out: Optional[np.ndarray], log: bool, threads: Optional[int]
) -> np.ndarray:
    source, destination = _prepare_unary(x, out)
    shape = destination.shape
    if len(shape) == 0:
        raise ValueError("softmax needs an array with at least one dimension, got a scalar")
    try:
        if isinstance(axis, (bool, np.bool_)):
            raise TypeError
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {axis!r}") from None
    if not -len(shape) <= axis < len(shape):
        raise _AxisError(axis, len(shape))
    axis %= len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    _core.softmax(source, destination, outer, shape[axis], inner, log, check_threads(threads))
    return destination


def softmax(
    x: Any, axis: int = -1, *, out: Optional[np.ndarray] = None, threads: Optional[int] = None
) -> np.ndarray:
    """Softmax along ``axis``, stable: the maximum along the axis is subtracted first.

    Each slice along ``axis`` is normalised on its own (unlike the tutorial's chapter-3
    softmax, which takes the max and the sum over a whole batch).

    Parameters
    ----------
    x : array_like
        At least one dimension. float32 and float64 are kept; float16 computes in float32;
        integers such as uint8 are promoted to float64 *before* any arithmetic, so ``x - max``
        cannot wrap around.
    axis : int, default -1
        The axis to normalise along.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.
    threads : int, optional
        Upper bound on threads.

    Returns
    -------
    ndarray
        Same shape as ``x``; each slice along ``axis`` sums to 1 within rounding. A slice
        holding NaN, a slice holding ``+inf`` and a slice of all ``-inf`` come out as NaN,
        as the stable NumPy formula gives.

    Examples
    --------
    >>> fastmlp.softmax(np.array([[1010.0, 1000.0, 990.0]]))
    array([[9.99954600e-01, 4.53978686e-05, 2.06106005e-09]])
    """
    return _softmax(x, axis, out, False, threads)


def log_softmax(
    x: Any, axis: int = -1, *, out: Optional[np.ndarray] = None, threads: Optional[int] = None
) -> np.ndarray:
    """Log of the softmax along ``axis``, computed directly as ``z - log(sum(exp(z)))``.

    With ``z = x - max(x)``: unlike ``log(softmax(x))`` it stays finite where a probability
    underflows to 0. NaN/inf rules as for :func:`softmax`.

    Parameters
    ----------
    x : array_like
        At least one dimension; dtype rules as for :func:`softmax`.
    axis : int, default -1
        The axis to normalise along.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.
    threads : int, optional
        Upper bound on threads.

    Returns
    -------
    ndarray
        Same shape as ``x``; ``exp`` of each slice sums to 1 within rounding.

    Examples
    --------
    >>> fastmlp.log_softmax(np.array([0.0, -1000.0]))
    array([    0., -1000.])
    """
    return _softmax(x, axis, out, True, threads)


def dense(
    x: Any,
    W: Any,
    b: Any,
    activation: str = "sigmoid",
    *,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """One fused dense layer: ``activation(x @ W + b)``.

    Bias and activation are applied to each register tile as it is computed, not in further
    passes over a materialised ``x @ W``.

    Parameters
    ----------
    x : array_like, shape (K,) or (N, K)
        uint8, float32 or float64 (uint8 is converted inside the kernel, never copied).
    W : array_like, shape (K, M)
    b : array_like, shape (M,)
    activation : {"sigmoid", "relu", "tanh", "identity", "softmax"}
    out : ndarray, optional
        Where to write the result, shape (M,) or (N, M).
    threads : int, optional
        Upper bound on threads.

    Returns
    -------
    ndarray, shape (M,) or (N, M)
        In ``np.result_type`` of W, b and (unless it is uint8) x.

    Raises
    ------
    ValueError
        If the shapes do not chain or the activation is unknown.
    """
    from ._model import MLP

    for argument, name in ((x, "x"), (W, "W"), (b, "b")):
        refuse_masked(argument, name)
    W = np.asarray(W)
    x_array = np.asarray(x)
    dtype = np.result_type(float_dtype_for(W.dtype, "W"), float_dtype_for(np.asarray(b).dtype, "b"))
    if x_array.dtype != np.uint8:
        dtype = np.result_type(dtype, float_dtype_for(x_array.dtype, "x"))
    layer = MLP([(W, b, activation)], dtype=dtype)
    if x_array.ndim not in (1, 2):
        raise ValueError(f"x must have shape (K,) or (N, K), got shape {x_array.shape}")
    return layer.predict_proba(x_array, threads=threads, out=out)
