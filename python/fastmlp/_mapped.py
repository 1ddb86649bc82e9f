"""Memory-mapped input, for ``MLP._forward_in_chunks``: which arrays to chunk, how, and handing
each chunk's pages back.

A ``np.memmap`` (or any array whose memory is an ``mmap``) is read by page faults: every page
the kernel touches stays mapped into the process, and counts in its resident memory, until the
mapping is closed. Running the whole array in one call would therefore pull a file larger than
memory entirely in. Instead the rows go through the core in chunks of about
:data:`CHUNK_BYTES`, and after each chunk the kernel is told that those pages can go
(``madvise(MADV_DONTNEED)``). Each output row depends only on its input row, so the results
are bit-identical to a single call.
"""

from __future__ import annotations

import mmap
from typing import Any, Iterator, Optional

import numpy as np

# About this many bytes of input per chunk: large enough that the per-call overhead and the
# thread start-up vanish against the work (a 784-pixel uint8 row is 784 B, so ~85,000 rows),
# small enough that a chunk's pages plus its output stay a modest part of any machine's memory.
CHUNK_BYTES = 64 * 2**20

_MADV_DONTNEED: Optional[int] = getattr(mmap, "MADV_DONTNEED", None)  # absent on Windows


def find_mapping(array: Any) -> Optional[mmap.mmap]:
    """The ``mmap`` behind ``array``: a ``np.memmap``, or a view whose base chain leads to one.

    Returns None for arrays that own their memory or whose memory is not a memory map.
    """
    owner = array
    while owner is not None:
        if isinstance(owner, mmap.mmap):
            return owner
        mapping = getattr(owner, "_mmap", None) if isinstance(owner, np.memmap) else None
        if isinstance(mapping, mmap.mmap):
            return mapping
        # np.frombuffer(mapping) keeps a memoryview of the mapping as its base.
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    return None


def rows_per_chunk(array: np.ndarray) -> int:
    """How many rows of ``array`` make about :data:`CHUNK_BYTES`."""
    row_bytes = max(array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)), 1)
    return max(CHUNK_BYTES // row_bytes, 1)


def should_chunk(X: Any) -> bool:
    """Whether ``X`` is memory-mapped rows too large for one call (see the module docstring)."""
    return (
        isinstance(X, np.ndarray)
        and X.ndim >= 2
        and X.nbytes > CHUNK_BYTES
        and X.shape[0] > rows_per_chunk(X)
        and find_mapping(X) is not None
    )


def row_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``chunk_rows`` rows covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def _may_drop_pages(array: np.ndarray, mapping: mmap.mmap) -> bool:
    # MADV_DONTNEED on a private (copy-on-write) mapping throws away pages the caller has
    # written to: their next read would show the file again. A shared mapping loses nothing
    # (its dirty pages live on in the page cache), so only shared ones are released:
    # np.memmap modes "r", "r+", "w+", or an mmap opened ACCESS_READ (read-only buffer,
    # always MAP_SHARED in CPython).
    owner: Any = array
    while owner is not None:
        if isinstance(owner, np.memmap) and getattr(owner, "_mmap", None) is mapping:
            return owner.mode in ("r", "r+", "w+")
        owner = getattr(owner, "base", None)
    try:
        with memoryview(mapping) as view:
            return view.readonly
    except (TypeError, ValueError):  # a closed mapping
        return False


def release_pages(array: np.ndarray) -> bool:
    """Tell the kernel that the pages under ``array`` (a view of an ``mmap``) can go.

    The data stays in the file (and, for shared mappings, in the page cache): a later read
    faults it back in. Does nothing, silently, where ``madvise`` is unavailable (Windows,
    Python builds without it), for copy-on-write mappings, or for arrays not backed by an
    ``mmap``.

    Returns
    -------
    bool
        Whether ``madvise`` was called.
    """
    if _MADV_DONTNEED is None or array.size == 0:
        return False
    mapping = find_mapping(array)
    if mapping is None or not hasattr(mapping, "madvise"):
        return False
    if not _may_drop_pages(array, mapping):
        return False
    try:
        # The mapping's first byte, through a short-lived read-only export of its buffer.
        base = np.frombuffer(mapping, dtype=np.uint8, count=1).__array_interface__["data"][0]
    except (TypeError, ValueError, BufferError):
        return False
    low = high = array.__array_interface__["data"][0]
    for length, stride in zip(array.shape, array.strides):
        extent = (length - 1) * stride
        if stride < 0:
            low += extent
        else:
            high += extent
    high += array.itemsize
    start, stop = low - base, min(high - base, len(mapping))
    if start < 0 or stop <= start:
        return False
    start -= start % mmap.PAGESIZE  # madvise wants a page-aligned start
    try:
        mapping.madvise(_MADV_DONTNEED, start, stop - start)
    except (OSError, ValueError):
        return False
    return True
