"""What every part of fastmlp agrees on: activation names, argument checks, type aliases.

A leaf: it imports nothing of fastmlp's (not even the compiled core), so that the file readers,
the command line and the model can all import it without cycles or the core being built.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

#: The activations a layer can have; the core's list is the same (tests/test_formats.py).
ACTIVATIONS = ("identity", "sigmoid", "relu", "tanh", "softmax")
#: The book's activations, for files that record none (its pickle, a plain np.savez archive).
DEFAULT_HIDDEN = "sigmoid"
DEFAULT_OUTPUT = "softmax"

#: Thread counts above this are treated as this (far above any core count).
MAX_THREADS = 1 << 16

PathLike = Union[str, "os.PathLike[str]"]
#: One dense layer as MLP takes it: W (in, out), b (out,), activation name.
Layer = Tuple[np.ndarray, np.ndarray, str]


def available_cores() -> int:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def refuse_masked(x: Any, what: str) -> None:
    """A ``TypeError`` for a masked array: ``np.asarray`` would drop its mask silently."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{what} is a numpy masked array; fastmlp would ignore its mask. Expected a plain "
            f"array: pass {what}.filled(value) to choose what masked entries become, or "
            f"{what}.data to use the values underneath"
        )


def check_count(value: Optional[int], name: str) -> Optional[int]:
    """A call's ``threads=`` or ``batch_size=`` argument validated: None, or an int >= 1."""
    if value is None:
        return None
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int or None, got {value!r}") from None
    if count < 1:
        raise ValueError(f"{name} must be at least 1, got {count}")
    return count


def check_threads(threads: Optional[int]) -> Optional[int]:
    """A call's ``threads=`` argument validated, and capped: the core caps the count at the
    available cores anyway; capping here keeps huge values from overflowing its integer type."""
    count = check_count(threads, "threads")
    return None if count is None else min(count, MAX_THREADS)


def check_input_dtype(dtype: np.dtype, what: str) -> None:
    """A ``TypeError`` unless ``what`` (model input) holds real numbers."""
    if dtype.kind not in "fiu":
        raise TypeError(
            f"{what} has dtype {dtype}; expected uint8, float32 or float64 "
            "(other integer and float dtypes are converted to the model's dtype)"
        )


def check_out(out: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Checks a caller's ``out=`` buffer before anything is written to it, and returns it."""
    refuse_masked(out, "out")
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; expected {dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}; expected {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError(
            f"out is not aligned to its {out.dtype} elements (a view at an odd byte offset?); "
            "expected an array such as np.empty gives"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


class ActivationChoiceError(ValueError):
    """The caller's activation arguments do not fit the file: theirs to fix, not the file's.

    The command line reports it as a usage error (exit code 2).
    """


# The wording for a weights file (load, the command line) and for a checkpoint read by
# from_torch_checkpoint; the rules are the same.
_WORDING = {
    "file": {
        "both": "pass either activations= (one name per layer) or hidden=/output=, not both",
        "str": "activations must be a sequence of names, one per layer, got the str {given!r}",
        "count": "activations has {count} names but {where} holds {layers} layers; expected "
        "one name per layer",
        "missing": "{where} holds a PyTorch state_dict, which records no activations; name "
        "them with activations=[...] ({layers} names) or hidden= and output= (missing: "
        "{missing})",
    },
    "checkpoint": {
        "both": "pass either activations= or hidden=/output=, not both",
        "str": "activations must be a list with one name per layer, got the str {given!r}",
        "count": "activations has {count} entries but the checkpoint has {layers} Linear "
        "layers; expected one activation per layer",
        "missing": "a torch checkpoint does not record its activations; name them for its "
        "{layers} Linear layers: activations=[...] (one per layer) or hidden= and output= "
        "(e.g. hidden='relu', output='softmax')",
    },
}


def resolve_activations(
    n_layers: int,
    activations: Optional[Sequence[str]],
    hidden: Optional[str],
    output: Optional[str],
    *,
    recorded: Optional[Sequence[str]] = None,
    required: bool = False,
    where: str = "",
    wording: str = "file",
) -> "list[str]":
    """One name per layer, from the caller's arguments over what the file records.

    ``activations`` (one per layer) excludes ``hidden``/``output``, which override the
    ``recorded`` names, else the book's defaults (sigmoid hidden, softmax output). A file that
    records none and has no defaults (``required``: a PyTorch state_dict) needs the caller to
    name them. The names themselves are checked by :class:`~fastmlp.MLP`.

    Raises
    ------
    ActivationChoiceError
        For the combinations above that do not fit ``n_layers``.
    TypeError
        If ``activations`` is a str.
    """
    words = _WORDING[wording]
    if activations is not None:
        if hidden is not None or output is not None:
            raise ActivationChoiceError(words["both"])
        if isinstance(activations, str):
            raise TypeError(words["str"].format(given=activations))
        names = list(activations)
        if len(names) != n_layers:
            raise ActivationChoiceError(
                words["count"].format(count=len(names), where=where, layers=n_layers)
            )
        return names
    if recorded is None and required:
        needed = {"output": output} if n_layers == 1 else {"hidden": hidden, "output": output}
        missing = [name for name, value in needed.items() if value is None]
        if missing:
            raise ActivationChoiceError(
                words["missing"].format(where=where, layers=n_layers, missing=", ".join(missing))
            )
    if recorded is not None:
        chosen = list(recorded)
    else:
        chosen = [DEFAULT_HIDDEN] * (n_layers - 1) + [DEFAULT_OUTPUT]
    if hidden is not None:
        chosen[:-1] = [hidden] * (n_layers - 1)
    if output is not None:
        chosen[-1] = output
    return chosen
