"""NumPy pickles (the book's ``sample_weight.pkl``) read without running code.

``pickle.load`` runs whatever callable a file names, so pickles are read by
:class:`_ArraysOnlyUnpickler`, which resolves only the few NumPy names needed to rebuild an
``ndarray`` and refuses every other global before importing or calling anything. The opcodes
are walked first (:mod:`.pickle_limits`), and every array's data is charged against the file's
own size.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from typing import Any, Optional

import numpy as np

from .._common import PathLike
from ..errors import UnsafePickleError, WeightsFormatError
from .pickle_limits import load_within_limits
from .weights import WeightsFile, check_weights

try:
    # numpy >= 1.26 (numpy 2 renamed numpy.core to numpy._core, and importing the old name
    # emits a DeprecationWarning there).
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct


class _NdarrayName:
    """What the name ``numpy.ndarray`` means inside a weights pickle: an argument, not a class.

    A pickled array names ``ndarray`` only as the first argument of ``_reconstruct``. Handing
    the pickle the real class would let it call ``ndarray(shape)`` (or ``ndarray.__new__``)
    itself, and so allocate an uninitialised array of any size from a few bytes of file.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "refused a call of numpy.ndarray: a pickled numpy array is rebuilt by _reconstruct "
            "and __setstate__, never by calling ndarray, which would allocate memory the file "
            "does not hold"
        )

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY_NAME = _NdarrayName()


def _reconstruct_empty_array(
    subtype: Any, shape: Any, dtype: Any, budget: "Optional[_ArrayBudget]" = None
) -> Any:
    """numpy's ``_reconstruct``, limited to what ``ndarray.__reduce__`` writes.

    Every NumPy version pickles an array as ``_reconstruct(ndarray, (0,), b"b")`` followed by
    ``__setstate__`` with the data (which NumPy checks against the shape). Any other call could
    only serve to allocate an arbitrarily large uninitialised array, so it is refused.
    """
    if subtype is not _NDARRAY_NAME or not isinstance(shape, tuple) or shape != (0,):
        raise UnsafePickleError(
            f"refused _reconstruct({subtype!r:.60}, {shape!r:.60}, "
            "...): a pickled numpy array is always rebuilt from ndarray and shape (0,)"
        )
    array = _reconstruct(_PickledArray, shape, dtype)
    array._budget = budget
    return array


# Everything a pickled dict of ndarrays needs, whichever numpy wrote it. numpy.core.* names
# (written by numpy 1.x, like the book's file) resolve to the installed numpy's module, so
# that the deprecated numpy.core package is never imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_empty_array,
    ("numpy", "ndarray"): _NDARRAY_NAME,
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
_RESAVE_ADVICE = "re-save it with pickle protocol 3 or 4, or as .npz (numpy.savez)"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    budget: "Optional[_ArrayBudget]" = None

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            pass
        else:
            if found is _reconstruct_empty_array:
                return functools.partial(_reconstruct_empty_array, budget=self.budget)
            return found
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


class _ArrayBudget:
    """Bytes of array data a pickle may still materialise: at most the file's own size.

    A memoised byte string can be handed to many arrays (``BUILD`` with a ``GET``), and each
    array then holds or copies it: from a few kilobytes of opcodes, gigabytes. Charging every
    array's data against the file's size keeps what a file can make fastmlp allocate within
    what it holds, as the README promises.
    """

    __slots__ = ("remaining", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.remaining = size

    def charge(self, nbytes: int) -> None:
        self.remaining -= nbytes
        if self.remaining < 0:
            raise WeightsFormatError(
                f"its arrays would hold more than the file's own {self.size} bytes; a weights "
                "file stores each array's bytes once (a hostile file can make one stored byte "
                "string the data of many arrays to exhaust memory)"
            )


class _PickledArray(np.ndarray):
    """The array ``_reconstruct`` gives a pickle: its ``__setstate__`` charges the budget.

    Turned back into a plain ``ndarray`` (a view, no copy) once the pickle is read.
    """

    _budget: Optional[_ArrayBudget] = None

    def __setstate__(self, state: Any) -> None:
        data = state[-1] if isinstance(state, tuple) and state else None
        if isinstance(data, (bytes, bytearray, str)) and self._budget is not None:
            self._budget.charge(len(data))
        super().__setstate__(state)


def _read_pickle(path: PathLike) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        content = file.read()
    where = repr(os.fspath(path))
    budget = _ArrayBudget(len(content))
    # latin1 lets numpy arrays pickled by Python 2 (the book's era) decode their byte strings.
    unpickler = _ArraysOnlyUnpickler(io.BytesIO(content), encoding="latin1")
    unpickler.budget = budget
    expected = "expected a pickled dict of numpy arrays"
    weights = load_within_limits(
        content,
        unpickler,
        where,
        refused="{where} is refused as a pickle: {exc}; " + expected,
        damaged="{where} is a damaged or truncated pickle ({kind}: {exc}); " + expected,
    )
    if isinstance(weights, _PickledArray):
        weights = weights.view(np.ndarray)  # refused just below, under its usual name
    if isinstance(weights, dict):
        weights = {
            key: value.view(np.ndarray) if isinstance(value, _PickledArray) else value
            for key, value in weights.items()
        }
        # One array object under many keys is as costly as many copies once a model is built.
        total = sum(value.nbytes for value in weights.values() if isinstance(value, np.ndarray))
        if total > budget.size:
            raise WeightsFormatError(
                f"{where} holds {total} bytes of arrays in a {budget.size}-byte file: its keys "
                "share arrays; expected each key's array stored once"
            )
    return check_weights(weights, path, from_pickle=True)


def read_pickle_file(path: PathLike) -> WeightsFile:
    return WeightsFile(_read_pickle(path), None, None, "pickle")
