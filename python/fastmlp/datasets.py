"""Reading input data: MNIST (IDX files, Keras' ``mnist.npz``), ``.npy`` arrays and CSV text.

Every size in a file's header is checked against the bytes actually present before any array
is built, so a truncated or foreign file gives a :class:`~fastmlp.errors.DataFormatError`
that says what was expected and what was found. Nothing in a file is executed: ``.npy`` files
are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._common import PathLike
from ._formats import limits, npy, sniff
from .errors import DataFormatError

__all__ = ["KERAS_MNIST_PATH", "load_mnist", "read_csv", "read_idx", "read_npy"]


KERAS_MNIST_PATH = Path("~/.keras/datasets/mnist.npz")
"""Where ``keras.datasets.mnist.load_data()`` caches MNIST; :func:`load_mnist` looks here."""

_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "ubyte",
    0x09: "sbyte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
# NumPy 1.x arrays have at most 32 dimensions (2.x: 64); no IDX file needs more.
_MAX_IDX_NDIM = 32
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


_READ_BLOCK = 1 << 20  # a read(n) may allocate n bytes up front, so blocks stay small


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Reads until end of stream or ``limit`` bytes, in blocks, never allocating ``limit``."""
    parts = []
    remaining = limit
    while remaining > 0:
        block = stream.read(min(remaining, _READ_BLOCK))
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


def _open_maybe_gzipped(path: PathLike) -> "tuple[Any, int, bool]":
    with open(path, "rb") as file:
        compressed = file.read(len(sniff.GZIP)) == sniff.GZIP
        size = os.fstat(file.fileno()).st_size
    # gzip.open, not GzipFile(fileobj=...): only the former closes the file it opened.
    return (gzip.open(path, "rb") if compressed else open(path, "rb")), size, compressed


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
        header declares more than 32 dimensions or is cut short, or the payload is not
        exactly the product of the dimensions.
    ValueError
        If ``ndim`` is not None or an int from 1 to 32.

    Examples
    --------
    >>> labels = read_idx("t10k-labels-idx1-ubyte.gz", ndim=1)  # doctest: +SKIP
    >>> labels.shape, labels.dtype  # doctest: +SKIP
    ((10000,), dtype('uint8'))
    """
    if ndim is not None and (
        isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= _MAX_IDX_NDIM
    ):
        raise ValueError(f"ndim must be an int from 1 to {_MAX_IDX_NDIM} or None, got {ndim!r}")
    name = os.fspath(path)
    stream, file_size, compressed = _open_maybe_gzipped(path)
    try:
        with stream:
            return _read_idx_stream(stream, name, ndim, file_size, compressed)
    except (EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError) or not compressed:
            raise
        raise DataFormatError(
            f"{name!r} is a damaged or truncated gzip file ({exc}); expected a "
            "complete gzip-compressed IDX file"
        ) from exc


def _read_idx_stream(
    stream: Any, name: str, ndim: Optional[int], file_size: int, compressed: bool
) -> np.ndarray:
    content = _read_at_most(stream, 4)
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
    if declared_ndim > _MAX_IDX_NDIM:
        raise DataFormatError(
            f"{name!r} has magic 0x{content[:4].hex()}, declaring {declared_ndim} dimensions; "
            f"expected at most {_MAX_IDX_NDIM} (MNIST uses 1 and 3)"
        )
    header_size = 4 + 4 * declared_ndim
    content += _read_at_most(stream, header_size - 4)
    if len(content) < header_size:
        raise DataFormatError(
            f"{name!r} is truncated inside its header: {len(content)} bytes, expected at least "
            f"{header_size} for {declared_ndim} dimensions"
        )
    shape = tuple(
        int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(declared_ndim)
    )
    expected_payload = math.prod(shape)
    if compressed and expected_payload > limits.MAX_DEFLATE_RATIO * file_size:
        raise DataFormatError(
            f"{name!r} is truncated: header declares shape {shape}, i.e. {expected_payload} "
            f"bytes of data, but the whole gzip file is {file_size} bytes, which cannot "
            f"decompress to more than about {limits.MAX_DEFLATE_RATIO * file_size}"
        )
    # One byte more than declared tells "longer than its header says" from "exact" without
    # ever decompressing more than the header promised.
    payload = _read_at_most(stream, expected_payload + 1)
    found_payload = len(payload)
    if found_payload != expected_payload:
        problem = "truncated" if found_payload < expected_payload else "longer than its header says"
        found = f"{found_payload}" if found_payload < expected_payload else "more"
        raise DataFormatError(
            f"{name!r} is {problem}: header declares shape {shape}, i.e. {expected_payload} "
            f"bytes of data, but {found} bytes follow the header"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy()


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
            # np.load keeps the last of two members under one name: which images or labels
            # were read would depend on member order.
            counts = Counter(
                name[:-4] if name.endswith(".npy") else name for name in archive.zip.namelist()
            )
            twice = sorted(key for key, count in counts.items() if count > 1)
            if twice:
                raise DataFormatError(
                    f"{str(path)!r} holds two members for the array {twice[0]!r}; expected "
                    "each array once"
                )
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
    if not magic.startswith(sniff.ZIP):
        raise DataFormatError(
            f"{str(path)!r} starts with {magic!r}; expected a folder of IDX files or a Keras "
            "mnist.npz (a zip archive, starting b'PK\\x03\\x04')"
        )
    return _load_keras_npz(path, split)


# -- .npy -----------------------------------------------------------------------------------


def _not_npy_message(name: str, start: bytes) -> str:
    if not start:
        found = "is empty"
    elif start.startswith(sniff.ZIP):
        found = "is a zip archive (an .npz of several arrays?)"
    elif start.startswith(sniff.GZIP):
        found = "is gzip-compressed (an IDX file? use read_idx)"
    else:
        found = f"starts with {start!r}"
    return f"{name!r} {found}; expected a NumPy .npy file, which starts with b'\\x93NUMPY'"


def read_npy(path: PathLike, *, mmap: bool = False) -> np.ndarray:
    """Read one array from a NumPy ``.npy`` file, optionally memory-mapped (read-only).

    The header is checked before any data is read: the file must be a ``.npy`` (by content,
    whatever its name), must hold no Python objects (they could only be rebuilt by pickle,
    which is never used) and must be exactly as long as its header says.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    mmap : bool, optional
        Map the file instead of reading it: the result is a read-only ``numpy.memmap`` whose
        pages are read on first use, so files larger than memory can be passed to
        :meth:`fastmlp.MLP.predict_proba` (which then works through them in chunks).

    Returns
    -------
    numpy.ndarray
        As stored, C or Fortran order. A ``numpy.memmap`` (mode ``"r"``) when ``mmap``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If the file is not a ``.npy`` (empty, an ``.npz`` or anything else), has a damaged
        header or an unknown format version, holds an object dtype, or is truncated or longer
        than its header says.

    Notes
    -----
    A memory-mapped file must not shrink while it is in use: reading a page the file no
    longer has kills the process (``SIGBUS``), which no check made beforehand can prevent.

    Examples
    --------
    >>> X = read_npy("pixels.npy", mmap=True)  # doctest: +SKIP
    >>> net.predict_proba(X)  # chunk by chunk, whatever the file's size  # doctest: +SKIP
    """
    name = os.fspath(path)
    with open(path, "rb") as file:
        start = file.read(len(sniff.NPY))
        if start != sniff.NPY:
            raise DataFormatError(_not_npy_message(name, start))
        file.seek(0)
        try:
            shape, dtype = npy.read_header(file)
        except npy.UnsupportedVersionError as exc:
            raise DataFormatError(f"{name!r} is a .npy file of {exc}") from exc
        except ValueError as exc:
            raise DataFormatError(
                f"{name!r} has a damaged .npy header ({exc}); expected a complete header "
                "giving descr, fortran_order and shape"
            ) from exc
        data_offset = file.tell()
        file_size = os.fstat(file.fileno()).st_size
    if dtype.hasobject:
        raise DataFormatError(
            f"{name!r} holds an array of dtype {dtype}, which contains Python objects; "
            "expected numeric data (objects could only be read by unpickling, which fastmlp "
            "never does)"
        )
    expected = math.prod(shape) * dtype.itemsize
    found = file_size - data_offset
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise DataFormatError(
            f"{name!r} is {problem}: its header declares shape {shape} of {dtype}, i.e. "
            f"{expected} bytes of data, but {found} bytes follow the header"
        )
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError) as exc:  # e.g. the file changed since the checks above
        raise DataFormatError(f"{name!r} cannot be read as a .npy array: {exc}") from exc


# -- CSV ------------------------------------------------------------------------------------

# Rows are parsed one at a time and gathered in blocks of this many, so that a CSV needs
# little more memory than the arrays it becomes (not one Python string per cell).
_CSV_BLOCK_ROWS = 4096
_MAX_NAMES_SHOWN = 10


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_row(row: "list[str]", line: int, name: str) -> np.ndarray:
    try:
        return np.array(row, dtype=np.float64)
    except ValueError:
        pass
    values = []
    for column, cell in enumerate(row, start=1):
        try:
            values.append(float(cell))
        except ValueError:
            what = "is empty" if not cell.strip() else f"{cell.strip()!r} is not a number"
            raise DataFormatError(
                f"{name!r}, line {line}, column {column}: the cell {what}; expected a number"
            ) from None
    return np.array(values, dtype=np.float64)


def _label_index(
    label_column: Union[int, str, None],
    names: Optional["list[str]"],
    n_columns: int,
    name: str,
) -> Optional[int]:
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if names is None:
            raise DataFormatError(
                f"label_column={label_column!r} names a column, but {name!r} has no header "
                "line; give the label column's index instead"
            )
        matches = [index for index, header in enumerate(names) if header == label_column]
        if len(matches) != 1:
            shown = ", ".join(repr(header) for header in names[:_MAX_NAMES_SHOWN])
            more = ", ..." if len(names) > _MAX_NAMES_SHOWN else ""
            problem = "no column" if not matches else f"{len(matches)} columns"
            raise DataFormatError(
                f"{name!r} has {problem} named {label_column!r}; expected exactly one "
                f"(the header names {shown}{more})"
            )
        return matches[0]
    if not -n_columns <= label_column < n_columns:
        raise DataFormatError(
            f"label_column={label_column} but the rows of {name!r} have {n_columns} columns; "
            f"expected an index from {-n_columns} to {n_columns - 1}"
        )
    return label_column % n_columns


def _check_csv_options(label_column: Any, delimiter: Any, header: Any, dtype: Any) -> np.dtype:
    if label_column is not None and (
        isinstance(label_column, bool) or not isinstance(label_column, (int, str))
    ):
        raise TypeError(
            f"label_column must be an int index, a header name or None, got {label_column!r}"
        )
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValueError(
            f"delimiter must be a single character other than a quote or a line break, "
            f"got {delimiter!r}"
        )
    if header not in (None, True, False):
        raise TypeError(f"header must be None (detect), True or False, got {header!r}")
    chosen = np.dtype(dtype)
    if chosen.kind != "f":
        raise TypeError(f"dtype must be a floating dtype (float32, float64), got {chosen}")
    return chosen


def read_csv(
    path: PathLike,
    *,
    label_column: Union[int, str, None] = 0,
    delimiter: str = ",",
    header: Optional[bool] = None,
    dtype: Any = np.float32,
) -> "tuple[np.ndarray, Optional[np.ndarray]]":
    """Read a numeric CSV file into features ``X`` and, optionally, labels ``y``.

    Blank lines are skipped, cells may be quoted, spaces after a delimiter are ignored, and a
    UTF-8 byte-order mark is accepted. Only NumPy and the standard library are used.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (UTF-8 text).
    label_column : int, str or None, optional
        The column holding the labels: an index (negative counts from the end, so ``-1`` is
        the last column), a name from the header line, or None when every column is a
        feature. Default 0, the first column (as in the common MNIST CSV files).
    delimiter : str, optional
        The one-character cell separator. Default ``","``.
    header : bool, optional
        Whether the first line names the columns. Default: detected, the first line is a
        header when any of its cells is not a number.
    dtype : float dtype, optional
        The dtype of ``X``. Default float32.

    Returns
    -------
    X : numpy.ndarray, shape (N, K)
        The features, C-contiguous, of ``dtype``.
    y : numpy.ndarray of shape (N,), or None
        The labels: int64 when every label is a whole number, else float64. None when
        ``label_column`` is None.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If the file is empty, is not UTF-8 text, has no data rows, has rows of different
        lengths or a cell that is not a number (the 1-based line and column are named), or
        if ``label_column`` names no column of the file.
    TypeError, ValueError
        If an option has the wrong type or value.

    Examples
    --------
    >>> X, y = read_csv("mnist_test.csv")  # "label,1x1,..." then images  # doctest: +SKIP
    >>> X.shape, X.dtype, y[:3]  # doctest: +SKIP
    ((10000, 784), dtype('float32'), array([7, 2, 1]))
    """
    dtype = _check_csv_options(label_column, delimiter, header, dtype)
    name = os.fspath(path)
    names: Optional[list[str]] = None
    n_columns = 0
    label: Optional[int] = None
    pending: list[np.ndarray] = []
    feature_blocks: list[np.ndarray] = []
    label_blocks: list[np.ndarray] = []
    seen_any_line = False

    def flush() -> None:
        if not pending:
            return
        block = np.stack(pending)
        pending.clear()
        if label is not None:
            label_blocks.append(block[:, label].copy())
            block = np.delete(block, label, axis=1)
        with np.errstate(over="ignore"):
            converted = block.astype(dtype)
        overflowed = np.isinf(converted) & np.isfinite(block)
        if overflowed.any():
            row, column = (int(i) for i in np.argwhere(overflowed)[0])
            raise DataFormatError(
                f"{name!r}: the value {float(block[row, column])!r} (data row "
                f"{len(feature_blocks) * _CSV_BLOCK_ROWS + row + 1}, feature {column + 1}) is "
                f"too large for {dtype}; expected values within its range (or dtype=np.float64)"
            )
        feature_blocks.append(converted)

    line = 0
    reader: Any = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, delimiter=delimiter, skipinitialspace=True, strict=True)
            for row in reader:
                line = reader.line_num
                seen_any_line = True
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                if n_columns == 0:
                    n_columns = len(row)
                    is_header = (
                        header if header is not None else not all(_is_number(cell) for cell in row)
                    )
                    if is_header:
                        names = [cell.strip() for cell in row]
                    label = _label_index(label_column, names, n_columns, name)
                    if label is not None and n_columns == 1:
                        raise DataFormatError(
                            f"{name!r} has a single column, the labels (label_column="
                            f"{label_column!r}); expected feature columns as well"
                        )
                    if is_header:
                        continue
                if len(row) != n_columns:
                    first = "the header" if names is not None else "the first row"
                    raise DataFormatError(
                        f"{name!r}, line {line}: {len(row)} columns, but {first} has "
                        f"{n_columns}; expected every row to have {n_columns}"
                    )
                pending.append(_parse_row(row, line, name))
                if len(pending) >= _CSV_BLOCK_ROWS:
                    flush()
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{name!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected a CSV file"
        ) from exc
    except csv.Error as exc:
        raise DataFormatError(
            f"{name!r}, line {reader.line_num if reader else line}: not valid CSV ({exc}); "
            "expected delimited text"
        ) from exc
    flush()
    if not seen_any_line:
        raise DataFormatError(f"{name!r} is empty; expected CSV rows of numbers")
    if not feature_blocks:
        if names is None:
            what = "only blank lines"
        elif header is None:
            # Detected, not declared: its one line was taken for a header because a cell is
            # not a number, which is more likely a typo in a one-row file.
            bad = next(cell for cell in names if not _is_number(cell))
            what = f"a single line, taken as a header because the cell {bad!r} is not a number"
        else:
            what = "only a header line"
        raise DataFormatError(f"{name!r} has {what}; expected at least one row of numbers")
    X = np.ascontiguousarray(np.concatenate(feature_blocks))
    if label is None:
        return X, None
    y = np.concatenate(label_blocks)
    integral = bool(np.all(np.isfinite(y))) and bool(np.all(np.abs(y) < 2.0**63))
    if integral and bool(np.all(y == np.floor(y))):
        return X, y.astype(np.int64)
    return X, y
