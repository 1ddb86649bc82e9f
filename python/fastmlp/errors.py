"""Exceptions raised by fastmlp when a weights or data file cannot be trusted or parsed.

Each exception derives from a built-in (``ValueError``) so that callers who already catch
``ValueError`` keep working; catch the specific class to tell the failure modes apart.
"""

from __future__ import annotations

__all__ = ["DataFormatError", "UnsafePickleError", "WeightsFormatError"]


class WeightsFormatError(ValueError):
    """A weights file is malformed, truncated, empty or of an unknown format.

    Raised by :func:`fastmlp.load`, :func:`fastmlp.from_torch_checkpoint` and
    :func:`fastmlp.from_onnx`. The message says which file was read, what was found and what
    was expected.
    """


class UnsafePickleError(WeightsFormatError):
    """A pickled weights file asks for something a plain dict of arrays never needs.

    Raised when the pickle names a global outside the allowlist (anything but the handful of
    NumPy constructors needed to rebuild an ``ndarray``), or when what it builds is not a
    ``dict`` of ``str`` to numeric arrays (for example an ``object`` array). The refused
    ``module.name`` is named in the message; nothing it names is ever imported or called.
    """


class DataFormatError(ValueError):
    """A data file (IDX, ``.npz``, ``.npy`` or CSV) is malformed: bad magic, truncated, sizes
    that disagree, or a cell that is not a number.

    Raised by :func:`fastmlp.datasets.read_idx`, :func:`~fastmlp.datasets.load_mnist`,
    :func:`~fastmlp.datasets.read_npy` and :func:`~fastmlp.datasets.read_csv`. The message
    names the file and gives the expected and the found values.
    """
