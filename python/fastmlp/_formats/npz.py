"""``.npz`` archives: every member's declared size checked before NumPy allocates it, and the
fastmlp metadata record read from the ``__fastmlp__`` member."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from typing import Optional

import numpy as np

from .._common import PathLike
from ..errors import UnsafePickleError, WeightsFormatError
from . import limits, metadata, npy
from .weights import WeightsFile, check_weights, layer_count


# How zipfile fails on a damaged archive: a bad directory, a "version needed" it does not know
# (NotImplementedError), an encrypted member or unknown compression (RuntimeError), a name
# flagged UTF-8 that is not (UnicodeDecodeError, a ValueError), a short read.
_DAMAGED_ZIP = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def _check_npz_members(path: PathLike) -> None:
    """Check every member's declared size against the archive before NumPy allocates it.

    ``np.load`` allocates the shape an ``.npy`` header declares before reading the data, so a
    tiny archive could otherwise ask for terabytes. Here each header is read (NumPy parses it
    with ``ast.literal_eval``: never executed) and must agree exactly with the member's size,
    which in turn must be plausible for the archive's size.
    """
    where = repr(os.fspath(path))
    archive_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        keys: dict[str, str] = {}
        for info in archive.infolist():
            name = info.filename
            # np.load keys members by name without ".npy" and keeps the last of a repeated
            # one: two members under one key would make the weights depend on member order.
            key = name[: -len(".npy")] if name.endswith(".npy") else name
            if key in keys:
                raise WeightsFormatError(
                    f"{where} holds two members for the array {key!r} ({keys[key]!r} and "
                    f"{name!r}); expected each array once"
                )
            keys[key] = name
            if info.compress_type == zipfile.ZIP_STORED:
                largest_plausible = info.compress_size
            else:
                largest_plausible = max(info.compress_size, 1) * limits.MAX_DEFLATE_RATIO
            if info.compress_size > archive_size or info.file_size > largest_plausible:
                raise WeightsFormatError(
                    f"{where}: member {name!r} claims {info.file_size} bytes "
                    f"({info.compress_size} compressed) in a {archive_size}-byte archive; the "
                    "zip directory lies or the file is truncated"
                )
            with archive.open(info) as member:
                try:
                    shape, dtype = npy.read_header(member)
                except ValueError as exc:
                    raise WeightsFormatError(
                        f"{where}: member {name!r} is not a readable .npy array ({exc})"
                    ) from exc
                header_size = member.tell()
            if dtype.hasobject:
                raise UnsafePickleError(
                    f"{where} holds an object array ({name!r}), which only pickle can rebuild; "
                    "expected numeric arrays (a weights .npz is read with allow_pickle=False)"
                )
            data_size = dtype.itemsize * math.prod(shape)  # Python ints: no overflow
            if header_size + data_size != info.file_size:
                raise WeightsFormatError(
                    f"{where}: member {name!r} declares shape {shape} of {dtype}, i.e. "
                    f"{data_size} bytes of data, but holds {info.file_size - header_size}"
                )


def _read_npz(path: PathLike) -> "tuple[dict[str, np.ndarray], Optional[str]]":
    """The arrays of an .npz archive, and its fastmlp metadata text if it has some."""
    try:
        _check_npz_members(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except WeightsFormatError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafePickleError(
                f"{os.fspath(path)!r} holds an object array, which only pickle can rebuild; "
                "expected numeric arrays (a weights .npz is read with allow_pickle=False)"
            ) from exc
        raise WeightsFormatError(
            f"{os.fspath(path)!r} is not a readable .npz archive of arrays: {exc}"
        ) from exc
    except FileNotFoundError:
        raise
    except _DAMAGED_ZIP as exc:
        raise WeightsFormatError(
            f"{os.fspath(path)!r} starts like a zip (.npz) archive but cannot be read as "
            f"one ({exc}); is it truncated?"
        ) from exc
    record = arrays.pop(metadata.NPZ_MEMBER, None)
    if record is None:
        return check_weights(arrays, path, from_pickle=False), None
    if record.shape != () or record.dtype.kind != "U":
        raise WeightsFormatError(
            f"{os.fspath(path)!r}: {metadata.NPZ_MEMBER!r} has dtype {record.dtype} and shape "
            f"{record.shape}; expected a 0-d unicode array holding JSON"
        )
    return check_weights(arrays, path, from_pickle=False), str(record[()])


def zip_member_names(path: PathLike) -> "list[str]":
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except FileNotFoundError:
        raise
    except _DAMAGED_ZIP:
        return []  # _read_npz reports the damage


def read_npz_file(path: PathLike) -> WeightsFile:
    weights, record = _read_npz(path)
    if record is None:
        return WeightsFile(weights, None, None, "npz")
    activations, input_scale = metadata.parse_metadata(record, path, layer_count(weights))
    return WeightsFile(weights, activations, input_scale, "npz")


def save_npz(path: PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """Save ``weights`` (``W1, b1, ..., Wn, bn``, e.g. :func:`read_weights`'s) as an uncompressed
    ``.npz``, a format that loads without pickle; as :func:`numpy.savez` does, ``.npz`` is added
    to a str ``path`` that lacks it. A WeightsFormatError for other keys or non-numeric arrays.
    """
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    check_weights(arrays, path, from_pickle=False)
    np.savez(path, **arrays)
