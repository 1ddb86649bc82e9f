"""What every weights reader returns: the arrays ``W1, b1, ..., Wn, bn``, checked, and what
the file records about them (:class:`WeightsFile`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._common import PathLike
from ..errors import UnsafePickleError, WeightsFormatError

_LAYER_KEY = re.compile(r"^([Wb])([1-9][0-9]*)$")


def check_weights(weights: Any, path: PathLike, *, from_pickle: bool) -> dict[str, np.ndarray]:
    """Check that a loaded object is a dict W1, b1, ..., Wn, bn of numeric arrays."""
    if not isinstance(weights, dict):
        raise UnsafePickleError(
            f"{os.fspath(path)!r} holds a {type(weights).__name__}; expected a dict of str to "
            "numpy arrays (W1, b1, W2, ...)"
        )
    layer_numbers: dict[str, set[int]] = {"W": set(), "b": set()}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise WeightsFormatError(
                f"{os.fspath(path)!r} has a key {key!r} of type {type(key).__name__}; expected str "
                "keys W1, b1, W2, ..."
            )
        if not isinstance(value, np.ndarray):
            error = UnsafePickleError if from_pickle else WeightsFormatError
            raise error(
                f"{os.fspath(path)!r}: {key!r} is a {type(value).__name__}; expected a numpy array"
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


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds, as read by :func:`read_weights_file`: the numeric ``weights``
    ``W1, b1, ..., Wn, bn`` as stored (``W`` shaped ``(in, out)``), one activation name per
    layer and the input scale when the file records them (files written by :func:`save`, ONNX
    models; else None), and the ``format``: ``"npz"``, ``"safetensors"``, ``"pickle"``,
    ``"torch"`` or ``"onnx"``.
    """

    weights: Dict[str, np.ndarray]
    activations: Optional[Tuple[str, ...]]
    input_scale: Optional[float]
    format: str


def layer_count(weights: Mapping[str, np.ndarray]) -> int:
    return len(weights) // 2  # check_weights guarantees W1..Wn and b1..bn
