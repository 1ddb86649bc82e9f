"""Reading network weights safely: ``.npz`` archives and NumPy pickles, told apart by content.

The book's ``sample_weight.pkl`` is a pickle, and ``pickle.load`` runs whatever callable the
file names. Pickles are therefore read by :class:`_ArraysOnlyUnpickler`, which resolves only
the few NumPy names needed to rebuild an ``ndarray`` and refuses every other global before
importing or calling anything.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .errors import UnsafePickleError, WeightsFormatError

if TYPE_CHECKING:
    from ._model import MLP

try:
    # numpy >= 1.26 (numpy 2 renamed numpy.core to numpy._core, and importing the old name
    # emits a DeprecationWarning there).
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct

__all__ = ["load", "read_weights", "save_npz"]

PathLike = Union[str, "os.PathLike[str]"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTO_OPCODE = 0x80  # protocol 2+ pickles start with PROTO <version>

# Everything a pickled dict of ndarrays needs, whichever numpy wrote it. numpy.core.* names
# (written by numpy 1.x, like the book's file) resolve to the installed numpy's module, so
# that the deprecated numpy.core package is never imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# Harmless names that NumPy arrays pickled with protocol 5 (out-of-band buffers) or by Python 3
# with protocol 2 (bytes as latin-1 text) need. They stay refused to keep the allowlist minimal,
# but the error says how to re-save such a file.
_RESAVE_HINTS = {
    ("numpy.core.numeric", "_frombuffer"): "pickle protocol 5",
    ("numpy._core.numeric", "_frombuffer"): "pickle protocol 5",
    ("_codecs", "encode"): "pickle protocol 2 under Python 3",
}
_RESAVE_ADVICE = "re-save it with pickle protocol 3 or 4, or as .npz (fastmlp._io.save_npz)"

_LAYER_KEY = re.compile(r"^([Wb])([1-9][0-9]*)$")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            pass
        allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
        message = f"refused to load {module}.{name}: a weights pickle may only reference {allowed}"
        hint = _RESAVE_HINTS.get((module, name))
        if hint is None:
            message += "; this file may try to run code, so nothing from it was executed"
        else:
            message += f"; this file looks written with {hint}: {_RESAVE_ADVICE}"
        raise UnsafePickleError(message)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refused persistent id {pid!r}: a weights pickle holds only arrays in a dict"
        )


def _describe(value: Any) -> str:
    return type(value).__name__


def _check_weights(weights: Any, path: PathLike, *, from_pickle: bool) -> dict[str, np.ndarray]:
    """Check that a loaded object is a dict W1, b1, ..., Wn, bn of numeric arrays."""
    if not isinstance(weights, dict):
        raise UnsafePickleError(
            f"{os.fspath(path)!r} holds a {_describe(weights)}; expected a dict of str to "
            "numpy arrays (W1, b1, W2, ...)"
        )
    layer_numbers: dict[str, set[int]] = {"W": set(), "b": set()}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise WeightsFormatError(
                f"{os.fspath(path)!r} has a key {key!r} of type {_describe(key)}; expected str "
                "keys W1, b1, W2, ..."
            )
        if not isinstance(value, np.ndarray):
            error = UnsafePickleError if from_pickle else WeightsFormatError
            raise error(
                f"{os.fspath(path)!r}: {key!r} is a {_describe(value)}; expected a numpy array"
            )
        if value.dtype.hasobject:
            raise UnsafePickleError(
                f"{os.fspath(path)!r}: {key!r} is an array of dtype {value.dtype} holding "
                "Python objects; expected a numeric (float or int) array"
            )
        if value.dtype.kind not in "biuf":
            raise WeightsFormatError(
                f"{os.fspath(path)!r}: {key!r} has dtype {value.dtype}; expected a numeric "
                "(float or int) array"
            )
        match = _LAYER_KEY.match(key)
        if match is None:
            raise WeightsFormatError(
                f"{os.fspath(path)!r} has an unexpected key {key!r}; expected only W1, b1, "
                f"W2, b2, ... (found {sorted(weights)})"
            )
        layer_numbers[match.group(1)].add(int(match.group(2)))
    n_layers = len(layer_numbers["W"])
    expected = set(range(1, n_layers + 1))
    if n_layers == 0 or layer_numbers["W"] != expected or layer_numbers["b"] != expected:
        raise WeightsFormatError(
            f"{os.fspath(path)!r} has keys {sorted(weights)}; expected W1..Wn and b1..bn for "
            "consecutive layers 1..n with n >= 1"
        )
    return weights


def _read_npz(path: PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafePickleError(
                f"{os.fspath(path)!r} holds an object array, which only pickle can rebuild; "
                "expected numeric arrays (a weights .npz is read with allow_pickle=False)"
            ) from exc
        raise WeightsFormatError(
            f"{os.fspath(path)!r} is not a readable .npz archive of arrays: {exc}"
        ) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WeightsFormatError(
            f"{os.fspath(path)!r} starts like a zip (.npz) archive but cannot be read as "
            f"one ({exc}); is it truncated?"
        ) from exc
    return _check_weights(weights, path, from_pickle=False)


def _read_pickle(path: PathLike, content: bytes) -> dict[str, np.ndarray]:
    # latin1 lets numpy arrays pickled by Python 2 (the book's era) decode their byte strings.
    unpickler = _ArraysOnlyUnpickler(io.BytesIO(content), encoding="latin1")
    try:
        weights = unpickler.load()
    except WeightsFormatError:
        raise
    except Exception as exc:
        # A truncated or corrupted pickle can fail in many ways (EOFError, UnpicklingError,
        # and errors raised by numpy while rebuilding an array): all mean "unreadable".
        raise WeightsFormatError(
            f"{os.fspath(path)!r} is a damaged or truncated pickle ({type(exc).__name__}: "
            f"{exc}); expected a pickled dict of numpy arrays"
        ) from exc
    return _check_weights(weights, path, from_pickle=True)


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
    """Read a network's weights from a ``.npz`` archive or a NumPy pickle, without running code.

    The format is recognised by the file's first bytes, not its name: ``PK\\x03\\x04`` is a
    zip (``.npz``, read with ``allow_pickle=False``), ``\\x80`` is a pickle of protocol 2 or
    later. Pickles may reference only ``numpy.ndarray``, ``numpy.dtype`` and
    ``numpy[._]core.multiarray._reconstruct``; any other global is refused before it is
    imported.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file, e.g. the book's ``sample_weight.pkl``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"W1": (in, h1), "b1": (h1,), "W2": ..., ...}`` with numeric dtypes, as stored.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If a pickle names a global outside the allowlist, or holds something other than a
        dict of arrays (a list, an ``object`` array, a Python object).
    WeightsFormatError
        If the file is empty, truncated, of an unknown format, or its keys are not
        W1, b1, ..., Wn, bn.

    Examples
    --------
    >>> weights = read_weights("sample_weight.pkl")  # doctest: +SKIP
    >>> {key: array.shape for key, array in weights.items()}  # doctest: +SKIP
    {'W1': (784, 50), 'b1': (50,), 'W2': (50, 100), 'b2': (100,), 'W3': (100, 10), 'b3': (10,)}
    """
    with open(path, "rb") as file:
        content = file.read()
    if not content:
        raise WeightsFormatError(
            f"{os.fspath(path)!r} is empty; expected a .npz archive or a pickle of weights"
        )
    if content.startswith(_ZIP_MAGICS):
        return _read_npz(path)
    if content[0] == _PICKLE_PROTO_OPCODE:
        return _read_pickle(path, content)
    if content.startswith(_NPY_MAGIC):
        raise WeightsFormatError(
            f"{os.fspath(path)!r} is a single .npy array; expected a .npz archive (np.savez) "
            "or a pickle holding W1, b1, W2, ..."
        )
    raise WeightsFormatError(
        f"{os.fspath(path)!r} is of an unknown format (starts with {content[:8]!r}); expected "
        "a .npz archive (starting b'PK\\x03\\x04') or a pickle of protocol 2+ (starting "
        "b'\\x80')"
    )


def save_npz(path: PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """Save weights as an uncompressed ``.npz``, a format that loads without pickle.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. As with :func:`numpy.savez`, ``.npz`` is appended to a str path that
        lacks it.
    weights : mapping of str to array_like
        ``{"W1": ..., "b1": ..., ...}``, e.g. the output of :func:`read_weights`.

    Raises
    ------
    WeightsFormatError
        If the keys are not W1, b1, ..., Wn, bn or an array is not numeric.

    Examples
    --------
    >>> save_npz("sample_weight.npz", read_weights("sample_weight.pkl"))  # doctest: +SKIP
    """
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    _check_weights(arrays, path, from_pickle=False)
    np.savez(path, **arrays)


def load(
    path: PathLike,
    *,
    hidden: str = "sigmoid",
    output: str = "softmax",
    input_scale: float | None = None,
    dtype: Any = None,
) -> MLP:
    """Load a network from a weights file (see :func:`read_weights`) into an :class:`MLP`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` archive or a NumPy pickle holding W1, b1, ..., Wn, bn.
    hidden : str, optional
        Activation of the hidden layers. Default ``"sigmoid"``, as in the book.
    output : str, optional
        Activation of the output layer. Default ``"softmax"``.
    input_scale : float, optional
        Factor applied to the inputs inside the kernel, e.g. ``1/255`` for raw pixels.
    dtype : numpy dtype, optional
        Compute dtype; default: the weights' own.

    Returns
    -------
    MLP
        The network, ready for ``predict_proba`` / ``predict``.

    Raises
    ------
    UnsafePickleError, WeightsFormatError
        As :func:`read_weights`.

    Examples
    --------
    >>> import fastmlp
    >>> net = fastmlp.load("sample_weight.pkl", input_scale=1 / 255)  # doctest: +SKIP
    >>> net.predict(images[:3])  # doctest: +SKIP
    array([7, 2, 1])
    """
    # Imported here so that reading weights works even where the compiled core is missing.
    from ._model import MLP

    return MLP.from_dict(
        read_weights(path), hidden=hidden, output=output, input_scale=input_scale, dtype=dtype
    )
