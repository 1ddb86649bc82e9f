"""Every size and ratio a file may declare before fastmlp refuses it, in one place.

Each limit stops a small hostile file from making fastmlp allocate, decompress or walk far more
than the file holds; real files are orders of magnitude inside them. Readers read these as
``limits.NAME`` when they run, so a test can lower one.
"""

from __future__ import annotations

#: Deflate never expands data more than about 1032:1, so a zip member (.npz, PyTorch
#: checkpoint) or a gzip stream (IDX) declaring more per compressed byte lies about its size.
MAX_DEFLATE_RATIO = 1100

#: An .npy header NumPy parses without being told the file is trusted (NumPy's own limit).
NPY_MAX_HEADER_BYTES = 10_000

#: A safetensors header longer than this is refused unread (the reference implementation's).
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
#: JSON values (counted from the commas and opening brackets) a safetensors header may hold:
#: about 7 per tensor, so room for some 28,000 tensors. Counted before json.loads, which would
#: otherwise spend about 15 bytes of memory and a microsecond per byte of a 100 MB header of
#: tiny values (1.5 GB and 38 s) before the header could be refused.
SAFETENSORS_MAX_HEADER_VALUES = 200_000

#: Deepest nesting of containers and calls a pickle may build (a weights pickle needs about 6).
PICKLE_MAX_NESTING = 100
#: Most opcodes a pickle may hold: about 30 per array or tensor in practice, so room for some
#: 30,000.
PICKLE_MAX_OPCODES = 1_000_000

#: A dense MLP's PyTorch checkpoint is megabytes: the total uncompressed size its zip may
#: declare, and the size of its data.pkl (about 100 bytes per tensor in practice).
CHECKPOINT_MAX_BYTES = 2 * 2**30
CHECKPOINT_MAX_PICKLE_BYTES = 64 * 2**20
#: torch stores members uncompressed and deflate of real weights gives about 1-3x, so a
#: checkpoint member is held to a far tighter ratio than MAX_DEFLATE_RATIO.
CHECKPOINT_MAX_DEFLATE_RATIO = 200
#: Most dimensions a tensor may declare (NumPy's own limit).
MAX_NDIM = 64
