"""The ``MLP`` model: validation and conversions in Python, the forward pass in the Rust core."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from . import _core, _mapped
from ._common import (
    ACTIVATIONS,
    MAX_THREADS,
    Layer,
    check_count,
    check_input_dtype,
    check_out,
    check_threads,
    refuse_masked,
)

__all__ = ["MLP"]

# What MLP._forward computes: each row's outputs, their log (a log-softmax output), its label.
_VALUES, _LOG_VALUES, _LABELS = 0, 1, 2

_INPUT_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.float32, np.float64))


def _model_dtype(layers: Sequence[Any], dtype: Any) -> np.dtype:
    if dtype is not None:
        chosen = np.dtype(dtype)
        if chosen not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {chosen}")
        return chosen

    # float32 weights compute in float32; anything else (float64, integers) in float64.
    def is_float32(array: Any) -> bool:
        dtype = np.asarray(array).dtype
        return dtype.kind == "f" and dtype.itemsize == 4  # any byte order

    all_float32 = all(is_float32(W) and is_float32(b) for W, b, _ in layers)
    return np.dtype(np.float32 if all_float32 else np.float64)


def _frozen_copy(array: Any, dtype: np.dtype, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} has dtype {array.dtype}; expected a real numeric array")
    copy = np.array(array, dtype=dtype, order="C", copy=True)
    copy.setflags(write=False)
    return copy


class MLP:
    """A multilayer perceptron for inference, with weights packed once for this CPU.

    Parameters
    ----------
    layers : sequence of (W, b, activation)
        ``W`` has shape ``(in, out)``, ``b`` shape ``(out,)``; each layer's ``in`` equals the
        previous layer's ``out``. ``activation`` is one of ``"sigmoid"``, ``"relu"``,
        ``"tanh"``, ``"identity"``, ``"softmax"``.
    input_scale : float, optional
        A factor applied to every input value inside the kernel, before the first layer (for
        example ``1/255`` for raw pixels), so uint8 images never need a float copy.
    dtype : {float32, float64}, optional
        The compute dtype. Default: float32 when every weight is float32, else float64.

    Raises
    ------
    ValueError
        If shapes do not chain (the message names the layer index and both shapes) or an
        activation is unknown.
    TypeError
        If a weight array is not real-numeric.

    Notes
    -----
    An ``MLP`` is immutable: it keeps read-only copies of the weights it was given, so
    changing the caller's arrays afterwards changes nothing. It is safe to share between
    threads; calls release the GIL while they compute on large batches.

    Each output row depends only on its input row and the model: results are bit-identical
    whatever the batch size, the ``batch_size`` split and the thread count.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> model = fastmlp.MLP([(rng.normal(size=(4, 3)), np.zeros(3), "softmax")])
    >>> model.predict_proba(np.ones((2, 4))).shape
    (2, 3)
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        input_scale: Optional[float] = None,
        dtype: Any = None,
    ) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("an MLP needs at least one layer, got an empty list")
        for index, layer in enumerate(layers):
            if not isinstance(layer, (tuple, list)) or len(layer) != 3:
                raise TypeError(
                    f"layer {index} must be a (W, b, activation) tuple, got {layer!r:.80}"
                )
        self._dtype = _model_dtype(layers, dtype)
        coefs, intercepts, activations = [], [], []
        previous_out = None
        for index, (W, b, activation) in enumerate(layers):
            W = _frozen_copy(W, self._dtype, f"layer {index}: W")
            b = _frozen_copy(b, self._dtype, f"layer {index}: b")
            if W.ndim != 2:
                raise ValueError(f"layer {index}: W must be 2-D (in, out), got shape {W.shape}")
            if b.ndim != 1 or b.shape[0] != W.shape[1]:
                raise ValueError(
                    f"layer {index}: b has shape {b.shape} but W has shape {W.shape}; "
                    f"expected b of shape ({W.shape[1]},)"
                )
            if W.shape[0] == 0 or W.shape[1] == 0:
                raise ValueError(f"layer {index}: W has an empty dimension, shape {W.shape}")
            if previous_out is not None and W.shape[0] != previous_out:
                raise ValueError(
                    f"layer {index}: W has shape {W.shape} but layer {index - 1} outputs "
                    f"{previous_out} values (W {coefs[-1].shape}); expected W of shape "
                    f"({previous_out}, {W.shape[1]})"
                )
            if not isinstance(activation, str) or activation not in ACTIVATIONS:
                raise ValueError(
                    f"layer {index}: unknown activation {activation!r}; expected one of "
                    f"{', '.join(ACTIVATIONS)}"
                )
            previous_out = W.shape[1]
            coefs.append(W)
            intercepts.append(b)
            activations.append(activation)
        if input_scale is not None:
            input_scale = float(input_scale)
            if not math.isfinite(input_scale):
                raise ValueError(f"input_scale must be finite, got {input_scale}")
            # The kernel multiplies in the model's dtype: 1e300 is finite as a float but
            # infinite in float32, which would make every output NaN; a scale below the
            # smallest normal number would be read as zero (the kernels read no subnormal).
            finfo = np.finfo(self._dtype)
            with np.errstate(over="ignore", under="ignore"):
                in_dtype = self._dtype.type(input_scale)
            if not np.isfinite(in_dtype) or (input_scale != 0 and abs(in_dtype) < finfo.tiny):
                raise ValueError(
                    f"input_scale {input_scale!r} becomes {float(in_dtype)!r} in this "
                    f"{self._dtype} model; expected 0 or a value {self._dtype} holds as a "
                    f"normal number (magnitude from {float(finfo.tiny):g} to "
                    f"{float(finfo.max):g})"
                )
        self._n_features = int(coefs[0].shape[0])
        self._n_outputs = int(coefs[-1].shape[1])
        self._coefs = tuple(coefs)
        self._intercepts = tuple(intercepts)
        self._activations = tuple(activations)
        self._input_scale = input_scale
        # predict's labels are each row's argmax output, but for an identity output (the
        # values themselves) and a single sigmoid output (output > 0.5).
        last = activations[-1]
        self._labels_are_argmax = not (
            last == "identity" or (self._n_outputs == 1 and last == "sigmoid")
        )
        self._packed = _core.PackedMLP(
            list(coefs),
            list(intercepts),
            list(activations),
            1.0 if input_scale is None else input_scale,
        )
        # The core's direct path for each route mode, bound once: looking it up on each call
        # is a visible share of a one-row call (and functools.partial's keyword merge more).
        run_direct = self._packed.run_direct

        def run_direct_log(X: Any, threads: Optional[int], max_bytes: int) -> Any:
            return run_direct(X, threads, max_bytes, True)

        self._direct = (run_direct, run_direct_log, self._packed.predict_direct)

    @classmethod
    def from_dict(
        cls,
        weights: Mapping[str, Any],
        hidden: str = "sigmoid",
        output: str = "softmax",
        *,
        input_scale: Optional[float] = None,
        dtype: Any = None,
    ) -> "MLP":
        """Builds an MLP from the tutorial's dict ``{"W1", "b1", "W2", "b2", ...}``.

        Parameters
        ----------
        weights : mapping
            ``W1..Wn`` and ``b1..bn``, numbered from 1 without gaps.
        hidden, output : str
            The activation of every hidden layer, and of the last layer.
        input_scale, dtype
            As for :class:`MLP`.

        Raises
        ------
        ValueError
            If a key is missing, unexpected, or the shapes do not chain.
        """
        if not isinstance(weights, Mapping):
            raise TypeError(
                f"weights must be a mapping of W1, b1, ..., got {type(weights).__name__}"
            )
        count = 0
        while f"W{count + 1}" in weights:
            count += 1
        if count == 0:
            raise ValueError(f"weights has no 'W1'; keys are {sorted(map(str, weights))}")
        expected = {f"{kind}{i}" for i in range(1, count + 1) for kind in "Wb"}
        missing = sorted(expected - set(weights))
        unexpected = sorted(set(map(str, weights)) - expected)
        if missing or unexpected:
            raise ValueError(
                f"weights must hold W1..W{count} and b1..b{count}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        layers = [
            (weights[f"W{i}"], weights[f"b{i}"], output if i == count else hidden)
            for i in range(1, count + 1)
        ]
        return cls(layers, input_scale=input_scale, dtype=dtype)

    # -- attributes (scikit-learn names where they fit) -----------------------------------

    @property
    def coefs_(self) -> "list[np.ndarray]":
        """Weight matrices, ``(in, out)`` each, read-only."""
        return list(self._coefs)

    @property
    def intercepts_(self) -> "list[np.ndarray]":
        """Bias vectors, read-only."""
        return list(self._intercepts)

    @property
    def activations(self) -> "tuple[str, ...]":
        """Each layer's activation name."""
        return self._activations

    @property
    def out_activation_(self) -> str:
        """The last layer's activation."""
        return self._activations[-1]

    @property
    def n_features_in_(self) -> int:
        """Number of input features (the first layer's ``in``)."""
        return self._n_features

    @property
    def n_outputs_(self) -> int:
        """Number of outputs (the last layer's ``out``)."""
        return self._n_outputs

    @property
    def dtype(self) -> np.dtype:
        """The compute dtype, float32 or float64."""
        return self._dtype

    @property
    def input_scale(self) -> Optional[float]:
        """The factor applied to inputs inside the kernel, or None."""
        return self._input_scale

    @property
    def cpu_level(self) -> str:
        """The instruction set the weights were packed for.

        "avx512", "avx2" (x86-64), "neon" (aarch64) or "portable".
        """
        return self._packed.level

    def __repr__(self) -> str:
        sizes = "-".join(str(n) for n in [self.n_features_in_] + [W.shape[1] for W in self._coefs])
        scale = "" if self._input_scale is None else f", input_scale={self._input_scale!r}"
        return f"MLP({sizes}, activations={self._activations!r}, dtype={self._dtype.name}{scale})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MLP):
            return NotImplemented
        return (
            self._dtype == other._dtype
            and self._activations == other._activations
            and self._input_scale == other._input_scale
            and all(np.array_equal(a, b) for a, b in zip(self._coefs, other._coefs))
            and all(np.array_equal(a, b) for a, b in zip(self._intercepts, other._intercepts))
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        # Pickle travels as arrays and names only; the packed weights are rebuilt on load.
        layers = list(zip(self._coefs, self._intercepts, self._activations))
        return (_rebuild, (layers, self._input_scale, self._dtype.name))

    def save(self, path: Any, *, format: Optional[str] = None) -> Any:
        """Saves the network, its activations and input scale to ``.npz`` or ``.safetensors``.

        ``fastmlp.load(path) == self`` afterwards. See :func:`fastmlp.save`.

        Parameters
        ----------
        path : str or os.PathLike
            Destination, used exactly as given.
        format : {"npz", "safetensors"}, optional
            Default: from the suffix of ``path``.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        ValueError
            If ``format`` is unknown, or is None and the suffix is neither ``.npz`` nor
            ``.safetensors``.
        """
        from ._formats import save

        return save(self, path, format=format)

    # -- inference -----------------------------------------------------------------------

    def _rows(self, X: Any) -> "tuple[np.ndarray, bool]":
        """``X`` as C-contiguous ``(N, K)`` rows (a view where possible), and if it was one sample.

        Written for the batch-of-one latency: the common cases take no NumPy reductions.
        """
        if type(X) is not np.ndarray:
            refuse_masked(X, "X")
            X = np.asarray(X)
        if X.dtype not in _INPUT_DTYPES:
            check_input_dtype(X.dtype, "X")
            X = X.astype(self._dtype)
        K = self._n_features
        ndim = X.ndim
        if ndim == 2 and X.shape[1] == K:
            rows, single = X, False
        elif ndim == 1:
            if X.shape[0] != K:
                raise ValueError(f"X has shape {X.shape}; the model expects ({K},) or (N, {K})")
            rows, single = X.reshape(1, K), True
        elif ndim == 0:
            raise ValueError(f"X must have shape (K,), (N, K) or (N, ...) with K={K}, got a scalar")
        else:
            trailing = math.prod(X.shape[1:])
            if trailing != K:
                raise ValueError(
                    f"X has shape {X.shape}: {trailing} values per row, but the model expects {K} "
                    f"(shape (N, {K}), or trailing dimensions whose product is {K})"
                )
            rows, single = X.reshape(X.shape[0], K), False
        if not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows)
        elif not rows.flags.aligned:
            rows = rows.copy()  # the core reads whole aligned elements
        return rows, single

    def _forward(
        self,
        X: Any,
        batch_size: Optional[int],
        threads: Optional[int],
        out: Optional[np.ndarray],
        mode: int,
    ) -> Any:
        """The one route from ``X`` to the core: each row's outputs (``_VALUES``), their log
        (``_LOG_VALUES``: a log-softmax output), or its label (``_LABELS``).

        First the core's low-latency path, for a call with nothing but ``X`` (and ``threads``):
        the core checks X's type, size, dtype, shape and layout itself and allocates the
        result. It passes over (None) what is not exactly an ndarray, is larger than a chunk or
        would make a result it leaves to NumPy to allocate, and refuses (``TypeError`` /
        ``ValueError``) what it cannot take as it is: the validated path converts what it can,
        explains what it cannot, and runs memory-mapped input in chunks.
        """
        if (
            batch_size is None
            and out is None
            and (threads is None or (type(threads) is int and 0 < threads <= MAX_THREADS))
        ):
            try:
                result = self._direct[mode](X, threads, _mapped.CHUNK_BYTES)
            except (TypeError, ValueError):
                result = None
            if result is not None:
                return result
        refuse_masked(X, "X")
        if isinstance(X, np.ndarray) and X.nbytes > _mapped.CHUNK_BYTES and _mapped.should_chunk(X):
            result = self._forward_in_chunks(X, batch_size, threads, out, mode)
            if result is not None:
                return result
        return self._forward_validated(X, batch_size, threads, out, mode)

    def _forward_in_chunks(
        self,
        X: np.ndarray,
        batch_size: Optional[int],
        threads: Optional[int],
        out: Optional[np.ndarray],
        mode: int,
    ) -> Optional[np.ndarray]:
        """Memory-mapped ``X`` larger than a chunk, run a chunk of rows at a time, each chunk's
        pages handed back to the kernel after it (see :mod:`fastmlp._mapped`), so a file larger
        than memory is never read in whole. None where chunking cannot help: a shape that does
        not fit the model (the validated path raises the usual error) or an ``out`` that
        overlaps ``X``.
        """
        n_features = int(np.prod(X.shape[1:], dtype=np.int64))
        if n_features != self._n_features or X.dtype.kind not in "fiu":
            return None
        if mode == _LABELS:
            result = np.empty(X.shape[0], dtype=np.int64)
        else:
            shape = (X.shape[0], self._n_outputs)
            if out is None:
                result = np.empty(shape, dtype=self._dtype)
            else:
                result = check_out(out, shape, self._dtype)
                if np.may_share_memory(result, X):
                    return None
        for rows in _mapped.row_chunks(X.shape[0], _mapped.rows_per_chunk(X)):
            self._forward_validated(X[rows], batch_size, threads, result[rows], mode)
            _mapped.release_pages(X[rows])
        return result

    def _forward_validated(
        self,
        X: Any,
        batch_size: Optional[int],
        threads: Optional[int],
        out: Optional[np.ndarray],
        mode: int,
    ) -> Any:
        """The forward pass after Python-side conversion and checks of every argument.

        For ``_LABELS``, ``out`` is an int64 buffer of this module's own (chunks), never the
        caller's: ``predict`` takes none.
        """
        rows, single = self._rows(X)
        n_rows = rows.shape[0]
        labels, log = mode == _LABELS, mode == _LOG_VALUES
        size = check_count(batch_size, "batch_size")
        threads = check_threads(threads)
        if labels:
            result = np.empty(n_rows, dtype=np.int64) if out is None else out
            matrix = result
        else:
            outputs = self._n_outputs
            shape = (outputs,) if single else (n_rows, outputs)
            if out is None:
                result = np.empty(shape, dtype=self._dtype)
            else:
                result = check_out(out, shape, self._dtype)
                if np.may_share_memory(result, rows):
                    rows = rows.copy()
            matrix = result.reshape(n_rows, outputs) if single else result
        if size is None or size >= n_rows:
            batches = [slice(None)]
        else:
            batches = [slice(start, start + size) for start in range(0, n_rows, size)]
        for batch in batches:
            if labels:
                self._packed.predict(rows[batch], matrix[batch], threads)
            else:
                self._packed.forward(rows[batch], matrix[batch], threads, log)
        return result[0] if labels and single else result

    def predict_proba(
        self,
        X: Any,
        batch_size: Optional[int] = None,
        *,
        threads: Optional[int] = None,
        out: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """The network's outputs (class probabilities for a softmax output).

        Parameters
        ----------
        X : array_like, shape (K,), (N, K) or (N, ...) with trailing dims multiplying to K
            uint8, float32 or float64, converted inside the kernel (uint8 images are never
            copied to float). Other real dtypes are first converted to the model's dtype.
        batch_size : int, optional
            Run the rows in slices of this many (as the tutorial's loop does). Results are
            bit-identical to a single call.
        threads : int, optional
            Upper bound on threads (default ``fastmlp.get_num_threads()``).
        out : ndarray, optional
            A C-contiguous buffer of the model's dtype and shape (N, out) (or (out,)) to
            reuse; it is checked before anything is written.

        Returns
        -------
        ndarray, shape (N, out), or (out,) for one sample, in the model's dtype.

        Raises
        ------
        ValueError
            If X's shape does not fit the model (the message shows both).
        TypeError
            If X is boolean, complex, object or string data.
        """
        return self._forward(X, batch_size, threads, out, _VALUES)

    def predict_log_proba(
        self,
        X: Any,
        batch_size: Optional[int] = None,
        *,
        threads: Optional[int] = None,
        out: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Log-probabilities: the output softmax is computed as a log-softmax, directly.

        Unlike ``np.log(predict_proba(X))`` it stays finite where a probability underflows.
        Same parameters as :meth:`predict_proba`.

        Raises
        ------
        ValueError
            If the output layer is not softmax.
        """
        if self.out_activation_ != "softmax":
            raise ValueError(
                "predict_log_proba needs a softmax output layer; "
                f"this model's is {self.out_activation_!r}"
            )
        return self._forward(X, batch_size, threads, out, _LOG_VALUES)

    def predict(
        self, X: Any, batch_size: Optional[int] = None, *, threads: Optional[int] = None
    ) -> np.ndarray:
        """Predicted labels: each row's argmax output, as int64 (a scalar for one sample).

        For a single sigmoid output the label is ``output > 0.5`` (a binary classifier, as
        scikit-learn's), and for an identity output layer (a regressor) the outputs themselves
        are returned. The argmax runs inside the kernel; probabilities are never materialised.
        NaN outputs follow ``np.argmax``: the first NaN wins.
        """
        if self._labels_are_argmax:
            return self._forward(X, batch_size, threads, None, _LABELS)
        values = self.predict_proba(X, batch_size, threads=threads)
        if self.out_activation_ == "identity":
            return values
        return (values[..., 0] > 0.5).astype(np.int64)  # a single sigmoid output

    def score(
        self, X: Any, y: Any, batch_size: Optional[int] = None, *, threads: Optional[int] = None
    ) -> float:
        """Accuracy of :meth:`predict` against labels ``y`` (R² for an identity output).

        Raises
        ------
        ValueError
            If ``y`` does not have one label per row of ``X``.
        """
        refuse_masked(y, "y")
        predicted = np.asarray(self.predict(X, batch_size, threads=threads))
        y = np.asarray(y)
        regressor = self.out_activation_ == "identity"
        if regressor and predicted.ndim == 2 and predicted.shape[1] == 1 and y.ndim == 1:
            predicted = predicted[:, 0]  # one target given as (N,), as scikit-learn takes it
        if y.shape != predicted.shape:
            raise ValueError(
                f"y has shape {y.shape}; expected {predicted.shape}, one label per row of X"
            )
        if regressor:
            return _r2_score(y, predicted)
        if y.size == 0:
            raise ValueError("score needs at least one row")
        return float(np.mean(predicted == y))

    def to_onnx(self, path: Any) -> Any:
        """Writes the model as an ONNX file that onnxruntime runs (needs ``fastmlp[onnx]``).

        One ``Gemm`` (``W`` as ``(in, out)``, ``transB=0``) + activation node (none for
        identity) per layer, after a ``Mul`` applying ``input_scale``; opset 13, input ``"X"``
        of shape ``("N", K)`` and output ``"Y"`` of shape ``("N", out)`` in the model's dtype.
        An existing file is replaced atomically. ``fastmlp.from_onnx`` reads it back equal.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        ImportError
            If the ``onnx`` package is not installed.
        """
        from ._formats.onnx import write_onnx

        return write_onnx(self, path)


def _r2_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """R² as scikit-learn's ``r2_score`` defines it: the mean over outputs of each one's R²;
    a constant target scores 1.0 when predicted exactly, else 0.0; NaN under two rows."""
    y = y.reshape(y.shape[0], -1).astype(np.float64)
    predicted = predicted.reshape(y.shape).astype(np.float64)
    if y.shape[0] < 2:
        return float("nan")
    residual = np.sum((y - predicted) ** 2, axis=0)
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    constant = total == 0
    scores = np.where(constant, (residual == 0).astype(np.float64), 0.0)
    scores[~constant] = 1.0 - residual[~constant] / total[~constant]
    return float(scores.mean())


def _rebuild(layers: "list[Layer]", input_scale: Optional[float], dtype: str) -> MLP:
    return MLP(layers, input_scale=input_scale, dtype=dtype)
