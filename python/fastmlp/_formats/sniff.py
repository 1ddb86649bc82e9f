"""Telling a file's format from its first bytes, never its name: one table for every reader.

:func:`kind_of` names the format of a file's first bytes; :func:`read_weights_file` (behind
``fastmlp.load``), :mod:`fastmlp.datasets` and ``fastmlp predict`` all decide through it.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .._common import PathLike
from ..errors import WeightsFormatError
from . import npz, numpy_pickle, onnx, safetensors, torch_checkpoint
from .weights import WeightsFile

ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
NPY = b"\x93NUMPY"
GZIP = b"\x1f\x8b"
PICKLE = b"\x80"  # protocol 2+ pickles start with PROTO <version>
ONNX = b"\x08"  # a ModelProto starts with field 1 (ir_version) as a varint
IDX = b"\x00\x00"  # an IDX magic number is 0x0000 followed by the type and the rank
_SAFETENSORS_LENGTH_BYTES = 8
HEAD_BYTES = 16

FORMATS_KNOWN = (
    "a .npz archive (starting b'PK\\x03\\x04'), a .safetensors file, a pickle of protocol 2+ "
    "(starting b'\\x80'), a PyTorch checkpoint (a zip holding data.pkl) or an ONNX model"
)


def _looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) <= _SAFETENSORS_LENGTH_BYTES or head[8:9] != b"{":
        return False
    # A pickle (b"\x80...") could by chance have "{" as its 9th byte; as a length, its first
    # 8 bytes are then huge, so a plausible length settles it.
    declared = int.from_bytes(head[:_SAFETENSORS_LENGTH_BYTES], "little")
    return not head.startswith(PICKLE) or declared <= file_size - _SAFETENSORS_LENGTH_BYTES


# Tried in order. The magics are disjoint, but safetensors starts with a length (which may
# begin with zero bytes), so it is tried before the one- and two-byte magics.
SIGNATURES: Tuple[Tuple[str, Callable[[bytes, int], bool]], ...] = (
    ("zip", lambda head, size: head.startswith(ZIP)),
    ("npy", lambda head, size: head.startswith(NPY)),
    ("gzip", lambda head, size: head.startswith(GZIP)),
    ("safetensors", _looks_like_safetensors),
    ("pickle", lambda head, size: head.startswith(PICKLE)),
    ("onnx", lambda head, size: head.startswith(ONNX)),
    ("idx", lambda head, size: head.startswith(IDX)),
)


def kind_of(head: bytes, file_size: int) -> Optional[str]:
    """The format whose signature ``head`` (a file's first bytes) carries, or None."""
    return next((kind for kind, matches in SIGNATURES if matches(head, file_size)), None)


def read_head(path: PathLike) -> "tuple[bytes, int]":
    """A file's first :data:`HEAD_BYTES` bytes, and its size."""
    with open(path, "rb") as file:
        return file.read(HEAD_BYTES), os.fstat(file.fileno()).st_size


def _read_zip(path: PathLike) -> WeightsFile:
    # torch.save writes <archive>/data.pkl; an npz member such as "mydata.pkl" is not one.
    if any(name.split("/")[-1] == "data.pkl" for name in npz.zip_member_names(path)):
        return torch_checkpoint.read_checkpoint_file(path)
    return npz.read_npz_file(path)


def _refuse_single_npy(path: PathLike) -> WeightsFile:
    raise WeightsFormatError(
        f"{os.fspath(path)!r} is a single .npy array; expected a .npz archive (np.savez) "
        "or a pickle holding W1, b1, W2, ..."
    )


_WEIGHTS_READERS: Dict[Optional[str], Callable[[PathLike], WeightsFile]] = {
    "zip": _read_zip,
    "npy": _refuse_single_npy,
    "safetensors": safetensors.read_safetensors_file,
    "pickle": numpy_pickle.read_pickle_file,
    "onnx": onnx.read_onnx_file,
}


def read_weights_file(path: PathLike) -> WeightsFile:
    """The arrays of a weights file of any supported format, and what it records about them:
    :func:`fastmlp.load`'s reading, format recognition and exceptions, without building a model.
    """
    head, file_size = read_head(path)
    where = repr(os.fspath(path))
    if not head:
        raise WeightsFormatError(f"{where} is empty; expected {FORMATS_KNOWN}")
    reader = _WEIGHTS_READERS.get(kind_of(head, file_size))
    if reader is None:
        raise WeightsFormatError(
            f"{where} is of an unknown format (starts with {head[:8]!r}); expected {FORMATS_KNOWN}"
        )
    return reader(path)


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
    """The arrays ``{"W1": (in, h1), "b1": (h1,), ...}`` of any supported weights file, as
    stored: :func:`read_weights_file`'s ``weights``, with its checks and exceptions.

    Examples
    --------
    >>> weights = read_weights("sample_weight.pkl")  # doctest: +SKIP
    >>> {key: array.shape for key, array in weights.items()}  # doctest: +SKIP
    {'W1': (784, 50), 'b1': (50,), 'W2': (50, 100), 'b2': (100,), 'W3': (100, 10), 'b3': (10,)}
    """
    return read_weights_file(path).weights
