"""Weights files: reading every supported format safely, and writing ``.npz``/``.safetensors``.

Read: ``.npz`` archives, ``.safetensors`` files, NumPy pickles (the book's
``sample_weight.pkl``), PyTorch checkpoints and ONNX models, recognised by their first bytes
(:mod:`.sniff`). Written: ``.npz`` and ``.safetensors``, with the activations and
``input_scale`` in a small JSON record (:mod:`.metadata`), so that ``fastmlp.load(path) ==
model`` after ``model.save(path)``; every writer goes through :mod:`.atomic`.

Nothing in a file is ever executed, and every size a file declares (a pickle's byte strings,
an ``.npy`` header's shape, a safetensors header's offsets) is checked against the bytes
actually present, and against :mod:`.limits`, before memory is allocated for it.

One module per format: :mod:`.npz` (and :mod:`.npy`, its members' header), :mod:`.numpy_pickle`
(and :mod:`.pickle_limits`), :mod:`.safetensors`, :mod:`.torch_checkpoint`, :mod:`.onnx`.
"""

from __future__ import annotations

import os
import pathlib
from typing import IO, TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .._common import PathLike, resolve_activations
from . import metadata, safetensors
from .atomic import write_atomically
from .npz import save_npz
from .sniff import read_weights, read_weights_file
from .weights import WeightsFile, layer_count

if TYPE_CHECKING:
    from .._model import MLP

__all__ = [
    "SAVE_FORMATS",
    "WeightsFile",
    "load",
    "read_weights",
    "read_weights_file",
    "save",
    "save_npz",
]

#: The formats ``save`` writes, by file suffix (``fastmlp convert`` decides by it too).
SAVE_FORMATS = {".npz": "npz", ".safetensors": "safetensors"}


def load(
    path: PathLike,
    *,
    hidden: Optional[str] = None,
    output: Optional[str] = None,
    activations: Optional[Sequence[str]] = None,
    input_scale: Optional[float] = None,
    dtype: Any = None,
) -> MLP:
    """Load a network from a weights file of any supported format into an :class:`MLP`.

    The first bytes decide the format, whatever the file is called: a zip is a PyTorch
    checkpoint when a member is named ``.../data.pkl``, else an ``.npz``; an 8-byte length
    followed by ``{`` is safetensors; ``\\x80`` is a pickle (protocol 2+); ``\\x08`` is an ONNX
    model. Nothing in the file is executed. Activations and input scale come from the file
    when it records them (files written by :func:`save`, ONNX models); arguments given here
    override the file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz``, ``.safetensors``, NumPy pickle, PyTorch checkpoint or ONNX file.
    hidden : str, optional
        Activation of every hidden layer, overriding the file's. For files that record no
        activations the default is ``"sigmoid"``, as in the book.
    output : str, optional
        Activation of the output layer, overriding the file's. Default for files that record
        none: ``"softmax"``.
    activations : sequence of str, optional
        One activation per layer; exclusive with ``hidden`` and ``output``.
    input_scale : float, optional
        Factor applied to the inputs inside the kernel, e.g. ``1/255`` for raw pixels.
        Default: the file's, else none.
    dtype : numpy dtype, optional
        Compute dtype; default: float32 if every weight is float32, else float64.

    Returns
    -------
    MLP
        The network, ready for ``predict_proba`` / ``predict``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If a pickle names a global outside the allowlist, or a file holds something other
        than numeric arrays (a list, an ``object`` array, a Python object).
    WeightsFormatError
        If the file is empty, truncated, of an unknown format, declares sizes its bytes do
        not back, has keys other than W1, b1, ..., Wn, bn, or carries invalid fastmlp
        metadata (unknown activations, one count per layer violated, non-finite input_scale).
    ImportError
        For an ONNX model when the ``onnx`` package is missing.
    ValueError
        If ``activations`` does not have one name per layer or is combined with
        ``hidden``/``output``, if a PyTorch checkpoint is loaded without naming its
        activations, or if the weights do not form a network (shapes that do not chain, an
        unknown activation name).

    Examples
    --------
    >>> import fastmlp
    >>> net = fastmlp.load("sample_weight.pkl", input_scale=1 / 255)  # doctest: +SKIP
    >>> net.predict(images[:3])  # doctest: +SKIP
    array([7, 2, 1])
    >>> net.save("net.safetensors")  # doctest: +SKIP
    >>> fastmlp.load("net.safetensors") == net  # doctest: +SKIP
    True
    """
    # Imported here so that reading weights works even where the compiled core is missing.
    from .._model import MLP

    file = read_weights_file(path)
    names = resolve_activations(
        layer_count(file.weights),
        activations,
        hidden,
        output,
        recorded=file.activations,
        required=file.format == "torch",
        where=repr(os.fspath(path)),
    )
    layers = [
        (file.weights[f"W{number}"], file.weights[f"b{number}"], name)
        for number, name in enumerate(names, start=1)
    ]
    scale = file.input_scale if input_scale is None else input_scale
    return MLP(layers, input_scale=scale, dtype=dtype)


def save(model: MLP, path: PathLike, *, format: Optional[str] = None) -> pathlib.Path:
    """Save a network, its activations and input scale to ``.npz`` or ``.safetensors``.

    ``fastmlp.load(path) == model`` afterwards: the arrays keep the model's dtype (float32 or
    float64) bit for bit. The activations and input scale are stored as JSON text
    ``{"fastmlp": 1, "activations": [...], "input_scale": ...}``: in an ``.npz`` as the
    0-d string array ``__fastmlp__`` (the archive still opens with
    ``np.load(allow_pickle=False)``), in a ``.safetensors`` file as
    ``__metadata__["fastmlp"]``. Neither format can carry code.

    The file is written to a temporary name in the same folder and renamed into place, so a
    failed save never leaves a partial file. Saving over a file keeps its permission bits and,
    where the system allows, its owner and group; other hard links to it keep the old content.

    Parameters
    ----------
    model : MLP
        The network.
    path : str or os.PathLike
        Destination, used exactly as given (no suffix is added).
    format : {"npz", "safetensors"}, optional
        Default: from the suffix of ``path`` (``.npz`` or ``.safetensors``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`MLP`.
    ValueError
        If ``format`` is unknown, or is None and the suffix is neither ``.npz`` nor
        ``.safetensors``.

    Examples
    --------
    >>> fastmlp.save(net, "net.safetensors")  # doctest: +SKIP
    PosixPath('net.safetensors')
    """
    from .._model import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
    destination = pathlib.Path(path)
    if format is None:
        chosen = SAVE_FORMATS.get(destination.suffix.lower())
        if chosen is None:
            raise ValueError(
                f"cannot tell the format from the name {os.fspath(path)!r}; use the suffix "
                '.npz or .safetensors, or pass format="npz" or format="safetensors"'
            )
    elif format in SAVE_FORMATS.values():
        chosen = format
    else:
        raise ValueError(f'format is {format!r}; expected "npz" or "safetensors"')
    arrays: dict[str, np.ndarray] = {}
    for number, (W, b) in enumerate(zip(model.coefs_, model.intercepts_), start=1):
        arrays[f"W{number}"], arrays[f"b{number}"] = W, b
    record = metadata.metadata_json(model)
    if chosen == "npz":
        arrays[metadata.NPZ_MEMBER] = np.array(record)

        def write(file: IO[bytes]) -> None:
            np.savez(file, **arrays)

    else:

        def write(file: IO[bytes]) -> None:
            safetensors.dump_safetensors(file, arrays, {metadata.KEY: record})

    write_atomically(destination, write)
    return destination
