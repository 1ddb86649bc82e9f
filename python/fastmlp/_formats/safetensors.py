"""The safetensors format, read and written with NumPy alone (the ``safetensors`` package is not
needed at run time).

A file is an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON describing
each tensor (``dtype``, ``shape``, ``data_offsets`` relative to the data buffer) plus an
optional ``__metadata__`` map of strings, then the data buffer. Everything the header declares
is checked against the file's real size, with Python integers (no overflow), before any array
is allocated: a 200-byte file can never make the reader reserve gigabytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import IO, Any, Dict, Optional, Tuple

import numpy as np

from .._common import PathLike
from ..errors import WeightsFormatError
from . import limits, metadata
from .atomic import write_atomically
from .weights import WeightsFile, check_weights, layer_count

__all__ = ["read_safetensors", "write_safetensors"]


_LENGTH_BYTES = 8
_ALIGNMENT = 8  # the header is padded so that the data buffer starts 8-byte aligned
_METADATA_KEY = "__metadata__"
_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))

# On-disk dtypes (always little-endian) we read and write. The order is the reference's dtype
# order: tensors are written largest rank first, which keeps every tensor aligned to its own
# item size once the buffer itself is 8-byte aligned.
_DTYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
_WRITE_RANK = {name: rank for rank, name in enumerate(_DTYPES)}
# Valid safetensors dtypes NumPy has no type for; named in the error so the fix is obvious.
_KNOWN_UNSUPPORTED = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")
_SUPPORTED_NAMES = ", ".join(_DTYPES)


def _dtype_name(dtype: np.dtype) -> Optional[str]:
    """The safetensors name of a NumPy dtype (any byte order), or None if it has none."""
    for name, stored in _DTYPES.items():
        if dtype.kind == stored.kind and dtype.itemsize == stored.itemsize:
            return name
    return None


# -- reading --------------------------------------------------------------------------------


def _refuse_duplicate_keys(pairs: "list[tuple[str, Any]]") -> "dict[str, Any]":
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int: never a size or an offset.
    return isinstance(value, int) and not isinstance(value, bool)


class _Tensor:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: np.dtype, shape: Tuple[int, ...], begin: int, end: int):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


def _parse_entry(name: str, entry: Any, fail: Any) -> _Tensor:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise fail(
            f"tensor {name!r} is described by {found}; expected an object with exactly "
            "'dtype', 'shape' and 'data_offsets'"
        )
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype_name not in _DTYPES:
        if dtype_name in _KNOWN_UNSUPPORTED:
            problem = f"has dtype {dtype_name}, which NumPy (and so fastmlp) cannot represent"
        else:
            problem = f"has an unknown dtype {dtype_name!r:.40}"
        raise fail(
            f"tensor {name!r} {problem}; supported dtypes are {_SUPPORTED_NAMES} (save the "
            "weights as F32 or F64)"
        )
    if not isinstance(shape, list) or not all(_is_int(size) and size >= 0 for size in shape):
        raise fail(
            f"tensor {name!r} has shape {shape!r:.80}; expected a list of non-negative integers"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(offset) for offset in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise fail(
            f"tensor {name!r} has data_offsets {offsets!r:.80}; expected [begin, end] with "
            "0 <= begin <= end"
        )
    dtype = _DTYPES[dtype_name]
    begin, end = offsets
    # Python integers: a product of huge dimensions cannot wrap around to a small size.
    expected = dtype.itemsize * math.prod(shape)
    if end - begin != expected:
        raise fail(
            f"tensor {name!r} ({dtype_name}, shape {tuple(shape)}) needs {expected} bytes but "
            f"its data_offsets [{begin}, {end}] span {end - begin}"
        )
    return _Tensor(name, dtype, tuple(shape), begin, end)


def _parse_header(text: bytes, buffer_size: int, fail: Any) -> "tuple[list[_Tensor], dict]":
    # Counted on the bytes, in C, before decoding: a bound on the objects json.loads makes.
    values = text.count(b",") + text.count(b"{") + text.count(b"[")
    if values > limits.SAFETENSORS_MAX_HEADER_VALUES:
        raise fail(
            f"the header holds about {values:,} JSON values, over the limit of "
            f"{limits.SAFETENSORS_MAX_HEADER_VALUES:,} (some 28,000 tensors); refused before "
            "parsing, as parsing it would take gigabytes of memory"
        )
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"header is not valid UTF-8 ({exc})") from exc
    if not decoded.startswith("{"):
        raise fail(f"header starts with {decoded[:20]!r}; expected a JSON object starting '{{'")
    try:
        header = json.loads(
            decoded, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError) as exc:
        raise fail(f"header is not valid JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict):
        raise fail(f"header is a JSON {type(header).__name__}; expected an object")
    metadata = header.pop(_METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(
        isinstance(value, str) for value in metadata.values()
    ):
        raise fail(f"{_METADATA_KEY} is {metadata!r:.80}; expected an object of strings")
    tensors = [_parse_entry(name, entry, fail) for name, entry in header.items()]
    # The tensors, in offset order, must tile the buffer exactly: no overlap (two names for
    # one piece of memory), no gap, nothing after the last one.
    position = 0
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if tensor.begin != position:
            problem = "overlaps the previous tensor" if tensor.begin < position else "leaves a gap"
            raise fail(
                f"tensor {tensor.name!r} starts at byte {tensor.begin} of the data buffer and "
                f"{problem}; expected it to start at byte {position}"
            )
        if tensor.end > buffer_size:
            raise fail(
                f"tensor {tensor.name!r} ends at byte {tensor.end} of the data buffer, but the "
                f"buffer holds only {buffer_size} bytes: truncated, or the header lies"
            )
        position = tensor.end
    if position != buffer_size:
        raise fail(
            f"the data buffer holds {buffer_size} bytes but the tensors cover only {position}; "
            "expected every byte to belong to a tensor"
        )
    return tensors, metadata


def read_safetensors(path: PathLike) -> "tuple[dict[str, np.ndarray], dict[str, str]]":
    """Every tensor of a ``.safetensors`` file, in the header's order (writable native-byte-order
    arrays owning their memory), and its ``__metadata__`` map (empty when absent).

    The file is checked strictly: a WeightsFormatError if the header length exceeds the file or
    100 MB, the header is not UTF-8 JSON, an entry is malformed, a dtype is unsupported (BF16,
    F8, ...), a tensor's size disagrees with its shape, tensors overlap or leave bytes
    uncovered, or a BOOL byte is not 0 or 1.
    """
    where = repr(os.fspath(path))

    def fail(message: str) -> WeightsFormatError:
        return WeightsFormatError(f"{where} is not a valid safetensors file: {message}")

    with open(path, "rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        prefix = file.read(_LENGTH_BYTES)
        if len(prefix) < _LENGTH_BYTES:
            raise fail(f"it is {len(prefix)} bytes long, shorter than the 8-byte header length")
        header_size = int.from_bytes(prefix, "little")
        available = file_size - _LENGTH_BYTES
        if header_size > available:
            raise fail(
                f"the header length says {header_size} bytes but only {available} bytes follow"
            )
        if header_size > limits.SAFETENSORS_MAX_HEADER_BYTES:
            raise fail(
                f"the header is {header_size} bytes long, over the "
                f"{limits.SAFETENSORS_MAX_HEADER_BYTES} limit"
            )
        text = file.read(header_size)
        if len(text) != header_size:
            raise fail(f"the file ends inside its {header_size}-byte header")
        buffer_size = available - header_size
        tensors, metadata = _parse_header(text, buffer_size, fail)
        # Read each tensor straight into the array that will be returned (sizes were checked
        # above, so each allocation is backed by bytes of the file): no view into a file or a
        # mapping outlives this function, and peak memory is the data size, not twice it.
        data_start = _LENGTH_BYTES + header_size
        arrays: dict[str, np.ndarray] = {}
        for tensor in tensors:
            try:
                array = np.empty(tensor.shape, dtype=tensor.dtype)
            except ValueError as exc:  # more dimensions than NumPy supports
                raise fail(f"tensor {tensor.name!r} has shape {tensor.shape}: {exc}") from exc
            if array.size:
                file.seek(data_start + tensor.begin)
                got = file.readinto(array.data.cast("B"))
                if got != tensor.end - tensor.begin:
                    raise fail(f"the file ended while reading tensor {tensor.name!r}")
            if tensor.dtype.kind == "b" and np.any(array.view(np.uint8) > 1):
                raise fail(f"BOOL tensor {tensor.name!r} holds bytes other than 0 and 1")
            arrays[tensor.name] = array.astype(tensor.dtype.newbyteorder("="), copy=False)
    return arrays, dict(metadata)


# -- writing --------------------------------------------------------------------------------


def _prepare(
    tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]]
) -> "tuple[bytes, list[np.ndarray]]":
    """The padded header (with its length prefix) and the arrays in the order to write them."""
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name == _METADATA_KEY:
            raise ValueError(
                f"tensor name {name!r} is not allowed; expected a str other than {_METADATA_KEY!r}"
            )
        array = np.asarray(value)
        dtype_name = _dtype_name(array.dtype)
        if dtype_name is None:
            raise TypeError(
                f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store here; "
                f"supported: {_SUPPORTED_NAMES}"
            )
        # asarray, not ascontiguousarray: the latter turns a 0-d array into shape (1,).
        stored = np.asarray(array, dtype=_DTYPES[dtype_name], order="C")
        entries.append((dtype_name, name, stored))
    entries.sort(key=lambda entry: (-_WRITE_RANK[entry[0]], entry[1]))
    header: dict[str, Any] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError(f"metadata must map str to str, got {dict(metadata)!r:.120}")
        header[_METADATA_KEY] = dict(metadata)
    offset = 0
    for dtype_name, name, stored in entries:
        header[name] = {
            "dtype": dtype_name,
            "shape": list(stored.shape),
            "data_offsets": [offset, offset + stored.nbytes],
        }
        offset += stored.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _ALIGNMENT)
    return len(text).to_bytes(_LENGTH_BYTES, "little") + text, [entry[2] for entry in entries]


def dump_safetensors(
    file: IO[bytes], tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write a safetensors file to an open binary file (see :func:`write_safetensors`)."""
    header, arrays = _prepare(tensors, metadata)
    file.write(header)
    for array in arrays:
        if array.size:
            file.write(array.reshape(-1).view(np.uint8).data)


def write_safetensors(
    path: PathLike, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write ``tensors`` (names to arrays of bool, int8..64, uint8..64 or float16/32/64) and
    ``metadata`` (str to str, stored as ``__metadata__``) to ``path`` as the reference
    implementation lays a ``.safetensors`` file out: ordered by dtype (widest first) then name,
    little-endian, C-contiguous, the JSON header padded with spaces to a multiple of 8 bytes.
    ``path`` is used as given and replaced atomically, as by ``save``. A TypeError for a dtype
    it cannot store or metadata that is not str to str; a ValueError for a name that is not a
    str or is ``"__metadata__"``.
    """
    write_atomically(path, lambda file: dump_safetensors(file, tensors, metadata))


def _name_runs(name: str) -> "tuple[tuple[int, Any], ...]":
    # "fc2" -> ("fc", 2): digit runs compare as numbers, so "2" comes before "10".
    return tuple(
        (0, int(run)) if run.isdigit() else (1, run) for run in re.split(r"(\d+)", name) if run
    )


def _is_torch_state_dict(tensors: Mapping[str, np.ndarray]) -> bool:
    # Module paths such as "0.weight" or "fc1.bias", as opposed to fastmlp's W1, b1, ...
    return any("." in key or key in ("weight", "bias") for key in tensors)


def _forward_order(tensors: Mapping[str, np.ndarray], path: PathLike) -> "list[str]":
    """The keys of a state_dict read from safetensors, layer by layer in forward order.

    safetensors keeps no order, so the order comes from the names, and only where names are
    numbered: nn.Sequential's "0", "2", "10" or "fc1", "fc2". Names that differ in words
    ("hidden", "output") give no order, and guessing one would silently give wrong outputs.
    """
    prefixes = sorted({key.rpartition(".")[0] for key in tensors}, key=_name_runs)
    for before, after in zip(prefixes, prefixes[1:]):
        first_difference = next(
            (pair for pair in zip(_name_runs(before), _name_runs(after)) if pair[0] != pair[1]),
            None,
        )
        if first_difference is None or first_difference[0][0] != 0 or first_difference[1][0] != 0:
            raise WeightsFormatError(
                f"{os.fspath(path)!r} holds a PyTorch state_dict whose layers {before!r} and "
                f"{after!r} are not numbered, and safetensors records no order; expected "
                "numbered layers (nn.Sequential's 0.weight, 2.weight, ... or fc1, fc2, ...). "
                "Load the model with torch and use fastmlp.from_torch, or save it with "
                "torch.save(model.state_dict(), path)"
            )
    rank = {prefix: index for index, prefix in enumerate(prefixes)}
    return sorted(tensors, key=lambda key: (rank[key.rpartition(".")[0]], key))


def read_safetensors_file(path: PathLike) -> WeightsFile:
    tensors, recorded = read_safetensors(path)
    if _is_torch_state_dict(tensors):
        # safetensors.torch.save_file(model.state_dict()): Linear weights (out, in) by module
        # name; the same conversion as a torch.save checkpoint, activations named by the caller.
        from .torch_checkpoint import state_dict_to_weights

        ordered = {key: tensors[key] for key in _forward_order(tensors, path)}
        try:
            converted = dict(state_dict_to_weights(ordered))
        except WeightsFormatError as exc:
            raise WeightsFormatError(f"{os.fspath(path)!r}: {exc}") from None
        return WeightsFile(check_weights(converted, path, from_pickle=False), None, None, "torch")
    weights = check_weights(tensors, path, from_pickle=False)
    record = recorded.get(metadata.KEY)
    if record is None:
        return WeightsFile(weights, None, None, "safetensors")
    activations, input_scale = metadata.parse_metadata(record, path, layer_count(weights))
    return WeightsFile(weights, activations, input_scale, "safetensors")
