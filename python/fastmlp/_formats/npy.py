"""The ``.npy`` header, read and checked without reading or allocating the data it describes.

Shared by the weights reader (``.npz`` members) and the data readers (``.npy`` files), so that
both accept the same format versions and turn every kind of header damage into a ValueError.
"""

from __future__ import annotations

import tokenize
from typing import IO, Tuple

import numpy as np

from . import limits


class UnsupportedVersionError(ValueError):
    """The header is intact but of a format version NumPy's readers here do not know."""


def read_header(stream: IO[bytes]) -> Tuple[Tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the ``.npy`` header at the stream's position, which it consumes.

    Raises
    ------
    UnsupportedVersionError
        For a format version other than 1.0, 2.0 or 3.0.
    ValueError
        For any damage: a bad magic, a cut-short or unparsable header, missing keys.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(
                stream, limits.NPY_MAX_HEADER_BYTES
            )
        elif version in ((2, 0), (3, 0)):
            # 3.0 differs from 2.0 only in allowing UTF-8 in field names.
            shape, _, dtype = np.lib.format.read_array_header_2_0(
                stream, limits.NPY_MAX_HEADER_BYTES
            )
        else:
            raise UnsupportedVersionError(
                f"format version {version[0]}.{version[1]}; expected version 1.0, 2.0 or 3.0"
            )
    # NumPy parses the header as a Python literal: a damaged one can also fail in the
    # tokenizer or the parser, or give a value of the wrong type.
    except (EOFError, SyntaxError, TypeError, tokenize.TokenError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    return shape, dtype
