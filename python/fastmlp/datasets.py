"""Loading MNIST from LeCun's IDX files (gzip or raw) or from Keras' ``mnist.npz``.

Every size in a file's header is checked against the bytes actually present before any array
is built, so a truncated or foreign file gives a :class:`~fastmlp.errors.DataFormatError`
that says what was expected and what was found.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from .errors import DataFormatError

__all__ = ["KERAS_MNIST_PATH", "load_mnist", "read_idx"]

PathLike = Union[str, "os.PathLike[str]"]

KERAS_MNIST_PATH = Path("~/.keras/datasets/mnist.npz")
"""Where ``keras.datasets.mnist.load_data()`` caches MNIST; :func:`load_mnist` looks here."""

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "ubyte",
    0x09: "sbyte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_IMAGES_NDIM = 3  # magic 0x00000803
_LABELS_NDIM = 1  # magic 0x00000801

# LeCun's names, and the ones that some mirrors and unpackers produce.
_SPLIT_PREFIXES = {"test": "t10k", "train": "train"}
_IDX_SPELLINGS = (
    "{prefix}-{kind}-idx{ndim}-ubyte.gz",
    "{prefix}-{kind}-idx{ndim}-ubyte",
    "{prefix}-{kind}.idx{ndim}-ubyte.gz",
    "{prefix}-{kind}.idx{ndim}-ubyte",
)


def _read_maybe_gzipped(path: PathLike) -> bytes:
    with open(path, "rb") as file:
        content = file.read()
    if not content.startswith(_GZIP_MAGIC):
        return content
    try:
        return gzip.decompress(content)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(
            f"{os.fspath(path)!r} is a damaged or truncated gzip file ({exc}); expected a "
            "complete gzip-compressed IDX file"
        ) from exc


def read_idx(path: PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), gzip-compressed or raw.

    Gzip is recognised by its magic bytes ``1f 8b``, whatever the file is called.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file, e.g. ``t10k-images-idx3-ubyte.gz``.
    ndim : int, optional
        The number of dimensions the header must declare: 3 for images (magic 0x00000803),
        1 for labels (magic 0x00000801). Default: any.

    Returns
    -------
    numpy.ndarray of uint8
        Shaped as the header says, e.g. (10000, 28, 28) for the MNIST test images. A
        writable array that owns its memory.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If the magic number is wrong, the element type is not unsigned byte (0x08), the
        header is cut short, or the payload is not exactly the product of the dimensions.

    Examples
    --------
    >>> labels = read_idx("t10k-labels-idx1-ubyte.gz", ndim=1)  # doctest: +SKIP
    >>> labels.shape, labels.dtype  # doctest: +SKIP
    ((10000,), dtype('uint8'))
    """
    name = os.fspath(path)
    content = _read_maybe_gzipped(path)
    if len(content) < 4:
        raise DataFormatError(
            f"{name!r} is {len(content)} bytes long; an IDX file starts with a 4-byte magic number"
        )
    zero_bytes, type_code, declared_ndim = content[0:2], content[2], content[3]
    if ndim is None:
        wanted_magic = "0x00000803 (images) or 0x00000801 (labels)"
    else:
        wanted_magic = f"0x{_IDX_UBYTE << 8 | ndim:08x}"  # e.g. 0x00000803 for 3 dimensions
    if zero_bytes != b"\x00\x00" or declared_ndim == 0:
        raise DataFormatError(
            f"{name!r} starts with magic 0x{content[:4].hex()}; expected an IDX magic number "
            f"{wanted_magic}: not an IDX file"
        )
    if type_code != _IDX_UBYTE:
        type_name = _IDX_TYPE_NAMES.get(type_code, "unknown")
        raise DataFormatError(
            f"{name!r} holds elements of type 0x{type_code:02x} ({type_name}); expected 0x08 "
            "(unsigned byte), as MNIST uses"
        )
    if ndim is not None and declared_ndim != ndim:
        raise DataFormatError(
            f"{name!r} has magic 0x{content[:4].hex()} ({declared_ndim} dimensions); expected "
            f"{wanted_magic} ({ndim} dimensions)"
        )
    header_size = 4 + 4 * declared_ndim
    if len(content) < header_size:
        raise DataFormatError(
            f"{name!r} is truncated inside its header: {len(content)} bytes, expected at least "
            f"{header_size} for {declared_ndim} dimensions"
        )
    shape = tuple(
        int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(declared_ndim)
    )
    expected_payload = 1
    for size in shape:
        expected_payload *= size
    found_payload = len(content) - header_size
    if found_payload != expected_payload:
        problem = "truncated" if found_payload < expected_payload else "longer than its header says"
        raise DataFormatError(
            f"{name!r} is {problem}: header declares shape {shape}, i.e. {expected_payload} "
            f"bytes of data, but {found_payload} bytes follow the header"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _find_idx_file(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    candidates = [
        folder / spelling.format(prefix=prefix, kind=kind, ndim=ndim) for spelling in _IDX_SPELLINGS
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no MNIST {kind} file in {str(folder)!r}: looked for "
        + ", ".join(candidate.name for candidate in candidates)
    )


def _check_pair(
    images: np.ndarray, labels: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3:
        raise DataFormatError(
            f"{source}: images have shape {images.shape}; expected (N, rows, columns)"
        )
    if labels.ndim != 1:
        raise DataFormatError(f"{source}: labels have shape {labels.shape}; expected (N,)")
    if len(images) != len(labels):
        raise DataFormatError(
            f"{source}: {len(images)} images but {len(labels)} labels; expected as many of each"
        )
    return images, labels.astype(np.int64)


def _load_keras_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_key, labels_key = f"x_{split}", f"y_{split}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {images_key, labels_key} - set(archive.files)
            if missing:
                raise DataFormatError(
                    f"{str(path)!r} has arrays {sorted(archive.files)}; expected Keras' MNIST "
                    f"keys {images_key!r} and {labels_key!r}"
                )
            images, labels = archive[images_key], archive[labels_key]
    except DataFormatError:
        raise
    except Exception as exc:
        # Bad zip members, object arrays (refused without pickle) and cut-off files all land
        # here; to the caller they mean the same thing.
        raise DataFormatError(
            f"{str(path)!r} is not a readable .npz of arrays ({type(exc).__name__}: {exc})"
        ) from exc
    if images.dtype != np.uint8:
        raise DataFormatError(
            f"{str(path)!r}: {images_key!r} has dtype {images.dtype}; expected uint8 pixels"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{str(path)!r}: {labels_key!r} has dtype {labels.dtype}; expected integer labels"
        )
    return _check_pair(images, labels, repr(str(path)))


def load_mnist(
    path: PathLike | None = None, *, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images and labels from IDX files or from Keras' ``mnist.npz``.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder holding ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``
        (the un-gzipped names and the ``t10k-images.idx3-ubyte`` spelling work too), or a
        Keras-style ``mnist.npz`` (keys ``x_test``, ``y_test``, ...). Default:
        ``~/.keras/datasets/mnist.npz``.
    split : {"test", "train"}, optional
        Which part to load. Default ``"test"``: the 10,000 images the tutorial scores.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (N, 28, 28)
        Raw pixels 0..255.
    labels : numpy.ndarray of int64, shape (N,)
        Digits 0..9.

    Raises
    ------
    FileNotFoundError
        If ``path`` (or, without it, Keras' cache) does not exist, or a folder lacks the files.
    DataFormatError
        If a file is malformed or the image and label counts disagree.
    ValueError
        If ``split`` is neither ``"test"`` nor ``"train"``.

    Examples
    --------
    >>> images, labels = load_mnist("../shared/data/mnist")  # doctest: +SKIP
    >>> images.shape, labels[:3]  # doctest: +SKIP
    ((10000, 28, 28), array([7, 2, 1]))
    """
    if split not in _SPLIT_PREFIXES:
        raise ValueError(f"split is {split!r}; expected one of {sorted(_SPLIT_PREFIXES)}")
    if path is None:
        keras_path = KERAS_MNIST_PATH.expanduser()
        if not keras_path.is_file():
            raise FileNotFoundError(
                f"no MNIST data at {str(keras_path)!r} (where Keras caches it); pass a folder "
                "holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or a "
                "Keras mnist.npz"
            )
        path = keras_path
    path = Path(path)
    if path.is_dir():
        prefix = _SPLIT_PREFIXES[split]
        images_path = _find_idx_file(path, prefix, "images", _IMAGES_NDIM)
        labels_path = _find_idx_file(path, prefix, "labels", _LABELS_NDIM)
        images = read_idx(images_path, ndim=_IMAGES_NDIM)
        labels = read_idx(labels_path, ndim=_LABELS_NDIM)
        return _check_pair(images, labels, f"{str(images_path)!r} and {str(labels_path)!r}")
    if not path.exists():
        raise FileNotFoundError(f"no MNIST data at {str(path)!r}: no such file or folder")
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != _ZIP_MAGIC:
        raise DataFormatError(
            f"{str(path)!r} starts with {magic!r}; expected a folder of IDX files or a Keras "
            "mnist.npz (a zip archive, starting b'PK\\x03\\x04')"
        )
    return _load_keras_npz(path, split)
