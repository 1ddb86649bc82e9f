"""Reading and writing network weights safely, in the formats recognised by their content.

Read: ``.npz`` archives, ``.safetensors`` files, NumPy pickles (the book's
``sample_weight.pkl``), PyTorch checkpoints and ONNX models. Written: ``.npz`` and
``.safetensors``, with the activations and ``input_scale`` in a small JSON metadata record, so
that ``fastmlp.load(path) == model`` after ``model.save(path)``.

Nothing in a file is ever executed. ``pickle.load`` runs whatever callable a file names, so
pickles are read by :class:`_ArraysOnlyUnpickler`, which resolves only the few NumPy names
needed to rebuild an ``ndarray`` and refuses every other global before importing or calling
anything. Every size a file declares (a pickle's byte strings, an ``.npy`` header's shape, a
safetensors header's offsets) is checked against the bytes actually present before memory is
allocated for it.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import pathlib
import pickle
import re
import secrets
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import numpy as np

from . import _npy, _safetensors
from ._common import ACTIVATIONS, PathLike, resolve_activations
from ._pickle_limits import PickleRefused, check_pickle_limits
from .errors import UnsafePickleError, WeightsFormatError

if TYPE_CHECKING:
    from ._model import MLP

try:
    # numpy >= 1.26 (numpy 2 renamed numpy.core to numpy._core, and importing the old name
    # emits a DeprecationWarning there).
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct

__all__ = ["WeightsFile", "load", "read_weights", "read_weights_file", "save", "save_npz"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTO_OPCODE = 0x80  # protocol 2+ pickles start with PROTO <version>
_ONNX_FIRST_BYTE = 0x08  # a ModelProto starts with field 1 (ir_version) as a varint
_SAFETENSORS_LENGTH_BYTES = 8


class _NdarrayName:
    """What the name ``numpy.ndarray`` means inside a weights pickle: an argument, not a class.

    A pickled array names ``ndarray`` only as the first argument of ``_reconstruct``. Handing
    the pickle the real class would let it call ``ndarray(shape)`` (or ``ndarray.__new__``)
    itself, and so allocate an uninitialised array of any size from a few bytes of file.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "refused a call of numpy.ndarray: a pickled numpy array is rebuilt by _reconstruct "
            "and __setstate__, never by calling ndarray, which would allocate memory the file "
            "does not hold"
        )

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY_NAME = _NdarrayName()


def _reconstruct_empty_array(
    subtype: Any, shape: Any, dtype: Any, budget: "Optional[_ArrayBudget]" = None
) -> Any:
    """numpy's ``_reconstruct``, limited to what ``ndarray.__reduce__`` writes.

    Every NumPy version pickles an array as ``_reconstruct(ndarray, (0,), b"b")`` followed by
    ``__setstate__`` with the data (which NumPy checks against the shape). Any other call could
    only serve to allocate an arbitrarily large uninitialised array, so it is refused.
    """
    if subtype is not _NDARRAY_NAME or not isinstance(shape, tuple) or shape != (0,):
        raise UnsafePickleError(
            f"refused _reconstruct({subtype!r:.60}, {shape!r:.60}, "
            "...): a pickled numpy array is always rebuilt from ndarray and shape (0,)"
        )
    array = _reconstruct(_PickledArray, shape, dtype)
    array._budget = budget
    return array


# Everything a pickled dict of ndarrays needs, whichever numpy wrote it. numpy.core.* names
# (written by numpy 1.x, like the book's file) resolve to the installed numpy's module, so
# that the deprecated numpy.core package is never imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_empty_array,
    ("numpy", "ndarray"): _NDARRAY_NAME,
    ("numpy", "dtype"): np.dtype,
}

# Harmless names that NumPy arrays pickled with protocol 5 (out-of-band buffers) or by Python 3
# with protocol 2 (bytes as latin-1 text) need. They stay refused to keep the allowlist minimal,
# but the error says how to re-save such a file.
_RESAVE_HINTS = {
    ("numpy.core.numeric", "_frombuffer"): "pickle protocol 5",
    ("numpy._core.numeric", "_frombuffer"): "pickle protocol 5",
    ("_codecs", "encode"): "pickle protocol 2 under Python 3",
}
_RESAVE_ADVICE = "re-save it with pickle protocol 3 or 4, or as .npz (numpy.savez)"

_LAYER_KEY = re.compile(r"^([Wb])([1-9][0-9]*)$")

# The metadata record fastmlp writes beside the arrays (see save).
_METADATA_KEY = "__fastmlp__"  # the .npz member; in .safetensors, __metadata__["fastmlp"]
_SAFETENSORS_METADATA_KEY = "fastmlp"
_METADATA_VERSION = 1

# Deflate never compresses better than about 1032:1, so an .npz member claiming to expand more
# than this lies about its size.
_MAX_DEFLATE_RATIO = 1100

_FORMATS_KNOWN = (
    "a .npz archive (starting b'PK\\x03\\x04'), a .safetensors file, a pickle of protocol 2+ "
    "(starting b'\\x80'), a PyTorch checkpoint (a zip holding data.pkl) or an ONNX model"
)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    budget: "Optional[_ArrayBudget]" = None

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            pass
        else:
            if found is _reconstruct_empty_array:
                return functools.partial(_reconstruct_empty_array, budget=self.budget)
            return found
        allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
        message = f"refused to load {module}.{name}: a weights pickle may only reference {allowed}"
        hint = _RESAVE_HINTS.get((module, name))
        if hint is None:
            message += "; this file may try to run code, so nothing from it was executed"
        else:
            message += f"; this file looks written with {hint}: {_RESAVE_ADVICE}"
        raise UnsafePickleError(message)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refused persistent id {pid!r}: a weights pickle holds only arrays in a dict"
        )


def _describe(value: Any) -> str:
    return type(value).__name__


def _check_weights(weights: Any, path: PathLike, *, from_pickle: bool) -> dict[str, np.ndarray]:
    """Check that a loaded object is a dict W1, b1, ..., Wn, bn of numeric arrays."""
    if not isinstance(weights, dict):
        raise UnsafePickleError(
            f"{os.fspath(path)!r} holds a {_describe(weights)}; expected a dict of str to "
            "numpy arrays (W1, b1, W2, ...)"
        )
    layer_numbers: dict[str, set[int]] = {"W": set(), "b": set()}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise WeightsFormatError(
                f"{os.fspath(path)!r} has a key {key!r} of type {_describe(key)}; expected str "
                "keys W1, b1, W2, ..."
            )
        if not isinstance(value, np.ndarray):
            error = UnsafePickleError if from_pickle else WeightsFormatError
            raise error(
                f"{os.fspath(path)!r}: {key!r} is a {_describe(value)}; expected a numpy array"
            )
        if value.dtype.hasobject:
            raise UnsafePickleError(
                f"{os.fspath(path)!r}: {key!r} is an array of dtype {value.dtype} holding "
                "Python objects; expected a numeric (float or int) array"
            )
        if value.dtype.kind not in "biuf":
            raise WeightsFormatError(
                f"{os.fspath(path)!r}: {key!r} has dtype {value.dtype}; expected a numeric "
                "(float or int) array"
            )
        match = _LAYER_KEY.match(key)
        if match is None:
            raise WeightsFormatError(
                f"{os.fspath(path)!r} has an unexpected key {key!r}; expected only W1, b1, "
                f"W2, b2, ... (found {sorted(weights)})"
            )
        layer_numbers[match.group(1)].add(int(match.group(2)))
    n_layers = len(layer_numbers["W"])
    expected = set(range(1, n_layers + 1))
    if n_layers == 0 or layer_numbers["W"] != expected or layer_numbers["b"] != expected:
        raise WeightsFormatError(
            f"{os.fspath(path)!r} has keys {sorted(weights)}; expected W1..Wn and b1..bn for "
            "consecutive layers 1..n with n >= 1"
        )
    return weights


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds, as read by :func:`read_weights_file`.

    Attributes
    ----------
    weights : dict of str to numpy.ndarray
        ``W1, b1, ..., Wn, bn`` with ``W`` shaped ``(in, out)``, numeric, as stored.
    activations : tuple of str or None
        One activation name per layer, when the file records them (files written by
        :func:`save`, ONNX models); None otherwise.
    input_scale : float or None
        The recorded input scale, when the file records one.
    format : str
        ``"npz"``, ``"safetensors"``, ``"pickle"``, ``"torch"`` or ``"onnx"``.
    """

    weights: Dict[str, np.ndarray]
    activations: Optional[Tuple[str, ...]]
    input_scale: Optional[float]
    format: str


# -- metadata -------------------------------------------------------------------------------


def _metadata_json(model: MLP) -> str:
    record = {
        "fastmlp": _METADATA_VERSION,
        "activations": list(model.activations),
        "input_scale": model.input_scale,
    }
    return json.dumps(record)


def _parse_metadata(
    text: str, path: PathLike, n_layers: int
) -> "tuple[tuple[str, ...], Optional[float]]":
    """The activations and input scale of a fastmlp metadata record, checked."""
    where = repr(os.fspath(path))
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WeightsFormatError(
            f"{where} has fastmlp metadata that is not valid JSON ({exc}): {text[:80]!r}"
        ) from exc
    if not isinstance(record, dict):
        raise WeightsFormatError(
            f"{where} has fastmlp metadata {text[:80]!r}; expected a JSON object "
            '{"fastmlp": 1, "activations": [...], "input_scale": ...}'
        )
    version = record.get("fastmlp")
    if type(version) is not int or version != _METADATA_VERSION:
        raise WeightsFormatError(
            f"{where} has fastmlp metadata of version {version!r}; this fastmlp reads version "
            f"{_METADATA_VERSION} (was the file written by a newer fastmlp?)"
        )
    activations = record.get("activations")
    if not isinstance(activations, list) or not all(isinstance(a, str) for a in activations):
        raise WeightsFormatError(
            f"{where} records activations {activations!r:.120}; expected a list of names"
        )
    unknown = [name for name in activations if name not in ACTIVATIONS]
    if unknown:
        raise WeightsFormatError(
            f"{where} records unknown activations {unknown!r:.120}; expected names among "
            f"{', '.join(ACTIVATIONS)}"
        )
    if len(activations) != n_layers:
        raise WeightsFormatError(
            f"{where} records {len(activations)} activations for {n_layers} layers; expected "
            "one per layer"
        )
    input_scale = record.get("input_scale")
    if input_scale is not None:
        if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)):
            raise WeightsFormatError(
                f"{where} records input_scale {input_scale!r:.80}; expected a number or null"
            )
        input_scale = float(input_scale)
        if not math.isfinite(input_scale):
            raise WeightsFormatError(
                f"{where} records input_scale {input_scale}; expected a finite number or null"
            )
    return tuple(activations), input_scale


def _layer_count(weights: Mapping[str, np.ndarray]) -> int:
    return len(weights) // 2  # _check_weights guarantees W1..Wn and b1..bn


# -- npz ------------------------------------------------------------------------------------


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
                largest_plausible = max(info.compress_size, 1) * _MAX_DEFLATE_RATIO
            if info.compress_size > archive_size or info.file_size > largest_plausible:
                raise WeightsFormatError(
                    f"{where}: member {name!r} claims {info.file_size} bytes "
                    f"({info.compress_size} compressed) in a {archive_size}-byte archive; the "
                    "zip directory lies or the file is truncated"
                )
            with archive.open(info) as member:
                try:
                    shape, dtype = _npy.read_header(member)
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
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        # zipfile's answers to encrypted members and unknown compression methods
        RuntimeError,
        NotImplementedError,
    ) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise WeightsFormatError(
            f"{os.fspath(path)!r} starts like a zip (.npz) archive but cannot be read as "
            f"one ({exc}); is it truncated?"
        ) from exc
    metadata = arrays.pop(_METADATA_KEY, None)
    if metadata is None:
        return _check_weights(arrays, path, from_pickle=False), None
    if metadata.shape != () or metadata.dtype.kind != "U":
        raise WeightsFormatError(
            f"{os.fspath(path)!r}: {_METADATA_KEY!r} has dtype {metadata.dtype} and shape "
            f"{metadata.shape}; expected a 0-d unicode array holding JSON"
        )
    return _check_weights(arrays, path, from_pickle=False), str(metadata[()])


def _zip_member_names(path: PathLike) -> "list[str]":
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except FileNotFoundError:
        raise
    # A damaged directory fails in many ways: a bad zip, a "version needed" zipfile does not
    # know (NotImplementedError), a name flagged UTF-8 that is not (UnicodeDecodeError).
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ):
        return []  # _read_npz reports the damage


# -- pickle ---------------------------------------------------------------------------------


class _ArrayBudget:
    """Bytes of array data a pickle may still materialise: at most the file's own size.

    A memoised byte string can be handed to many arrays (``BUILD`` with a ``GET``), and each
    array then holds or copies it: from a few kilobytes of opcodes, gigabytes. Charging every
    array's data against the file's size keeps what a file can make fastmlp allocate within
    what it holds, as the README promises.
    """

    __slots__ = ("remaining", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.remaining = size

    def charge(self, nbytes: int) -> None:
        self.remaining -= nbytes
        if self.remaining < 0:
            raise WeightsFormatError(
                f"its arrays would hold more than the file's own {self.size} bytes; a weights "
                "file stores each array's bytes once (a hostile file can make one stored byte "
                "string the data of many arrays to exhaust memory)"
            )


class _PickledArray(np.ndarray):
    """The array ``_reconstruct`` gives a pickle: its ``__setstate__`` charges the budget.

    Turned back into a plain ``ndarray`` (a view, no copy) once the pickle is read.
    """

    _budget: Optional[_ArrayBudget] = None

    def __setstate__(self, state: Any) -> None:
        data = state[-1] if isinstance(state, tuple) and state else None
        if isinstance(data, (bytes, bytearray, str)) and self._budget is not None:
            self._budget.charge(len(data))
        super().__setstate__(state)


def _read_pickle(path: PathLike) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        content = file.read()
    where = repr(os.fspath(path))
    try:
        # Walk the opcodes first, without building anything: every length the pickle declares
        # (a 10**12-byte string in a 100-byte file) is checked against the bytes present, and
        # the nesting depth and the opcode count are bounded, so the unpickler below neither
        # allocates for a size the file cannot back nor builds values that crash Python.
        check_pickle_limits(content)
    except PickleRefused as exc:
        raise WeightsFormatError(
            f"{where} is refused as a pickle: {exc}; expected a pickled dict of numpy arrays"
        ) from None
    except Exception as exc:
        raise WeightsFormatError(
            f"{where} is a damaged or truncated pickle ({type(exc).__name__}: "
            f"{exc}); expected a pickled dict of numpy arrays"
        ) from exc
    budget = _ArrayBudget(len(content))
    # latin1 lets numpy arrays pickled by Python 2 (the book's era) decode their byte strings.
    unpickler = _ArraysOnlyUnpickler(io.BytesIO(content), encoding="latin1")
    unpickler.budget = budget
    try:
        weights = unpickler.load()
    except WeightsFormatError as exc:
        # Raised by find_class and friends, which do not know the file: name it here.
        raise type(exc)(f"{where}: {exc}") from None
    except Exception as exc:
        # A corrupted pickle can fail in many ways (UnpicklingError, and errors raised by
        # numpy while rebuilding an array): all mean "unreadable".
        raise WeightsFormatError(
            f"{where} is a damaged or truncated pickle ({type(exc).__name__}: "
            f"{exc}); expected a pickled dict of numpy arrays"
        ) from exc
    if isinstance(weights, _PickledArray):
        weights = weights.view(np.ndarray)  # refused just below, under its usual name
    if isinstance(weights, dict):
        weights = {
            key: value.view(np.ndarray) if isinstance(value, _PickledArray) else value
            for key, value in weights.items()
        }
        # One array object under many keys is as costly as many copies once a model is built.
        total = sum(value.nbytes for value in weights.values() if isinstance(value, np.ndarray))
        if total > budget.size:
            raise WeightsFormatError(
                f"{where} holds {total} bytes of arrays in a {budget.size}-byte file: its keys "
                "share arrays; expected each key's array stored once"
            )
    return _check_weights(weights, path, from_pickle=True)


# -- other formats --------------------------------------------------------------------------


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


def _read_safetensors_file(path: PathLike) -> WeightsFile:
    tensors, metadata = _safetensors.read_safetensors(path)
    if _is_torch_state_dict(tensors):
        # safetensors.torch.save_file(model.state_dict()): Linear weights (out, in) by module
        # name; the same conversion as a torch.save checkpoint, activations named by the caller.
        from ._torch_checkpoint import state_dict_to_weights

        ordered = {key: tensors[key] for key in _forward_order(tensors, path)}
        try:
            converted = dict(state_dict_to_weights(ordered))
        except WeightsFormatError as exc:
            raise WeightsFormatError(f"{os.fspath(path)!r}: {exc}") from None
        return WeightsFile(_check_weights(converted, path, from_pickle=False), None, None, "torch")
    weights = _check_weights(tensors, path, from_pickle=False)
    record = metadata.get(_SAFETENSORS_METADATA_KEY)
    if record is None:
        return WeightsFile(weights, None, None, "safetensors")
    activations, input_scale = _parse_metadata(record, path, _layer_count(weights))
    return WeightsFile(weights, activations, input_scale, "safetensors")


def _read_torch_checkpoint(path: PathLike) -> WeightsFile:
    # Imported here: the torch engineer's reader, which needs no torch.
    from ._torch_checkpoint import read_torch_state_dict, state_dict_to_weights

    weights = state_dict_to_weights(read_torch_state_dict(path))
    return WeightsFile(_check_weights(dict(weights), path, from_pickle=False), None, None, "torch")


def _read_onnx_file(path: PathLike) -> WeightsFile:
    from ._onnx import read_onnx  # needs the onnx package, imported only for ONNX files

    layers, input_scale = read_onnx(path)
    weights: dict[str, np.ndarray] = {}
    for number, (W, b, _) in enumerate(layers, start=1):
        weights[f"W{number}"], weights[f"b{number}"] = np.asarray(W), np.asarray(b)
    activations = tuple(activation for _, _, activation in layers)
    return WeightsFile(
        _check_weights(weights, path, from_pickle=False), activations, input_scale, "onnx"
    )


def _looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) <= _SAFETENSORS_LENGTH_BYTES or head[8:9] != b"{":
        return False
    # A pickle (b"\x80...") could by chance have "{" as its 9th byte; as a length, its first
    # 8 bytes are then huge, so a plausible length settles it.
    declared = int.from_bytes(head[:_SAFETENSORS_LENGTH_BYTES], "little")
    return head[0] != _PICKLE_PROTO_OPCODE or declared <= file_size - _SAFETENSORS_LENGTH_BYTES


def read_weights_file(path: PathLike) -> WeightsFile:
    """Read a weights file of any supported format, recognised by its content, never run.

    The first bytes decide, whatever the file is called: a zip is a PyTorch checkpoint when a
    member is named ``.../data.pkl``, else an ``.npz``; an 8-byte length followed by ``{`` is
    safetensors; ``\\x80`` is a pickle (protocol 2+); ``\\x08`` is an ONNX model.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    WeightsFile
        The arrays ``W1, b1, ..., Wn, bn``, plus the activations and input scale when the
        file records them (files written by :func:`save`, ONNX models).

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

    Examples
    --------
    >>> read_weights_file("model.safetensors").activations  # doctest: +SKIP
    ('relu', 'softmax')
    """
    with open(path, "rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        head = file.read(16)
    where = repr(os.fspath(path))
    if not head:
        raise WeightsFormatError(f"{where} is empty; expected {_FORMATS_KNOWN}")
    if head.startswith(_ZIP_MAGICS):
        # torch.save writes <archive>/data.pkl; an npz member such as "mydata.pkl" is not one.
        if any(name.split("/")[-1] == "data.pkl" for name in _zip_member_names(path)):
            return _read_torch_checkpoint(path)
        weights, record = _read_npz(path)
        if record is None:
            return WeightsFile(weights, None, None, "npz")
        activations, input_scale = _parse_metadata(record, path, _layer_count(weights))
        return WeightsFile(weights, activations, input_scale, "npz")
    if _looks_like_safetensors(head, file_size):
        return _read_safetensors_file(path)
    if head[0] == _PICKLE_PROTO_OPCODE:
        return WeightsFile(_read_pickle(path), None, None, "pickle")
    if head.startswith(_NPY_MAGIC):
        raise WeightsFormatError(
            f"{where} is a single .npy array; expected a .npz archive (np.savez) "
            "or a pickle holding W1, b1, W2, ..."
        )
    if head[0] == _ONNX_FIRST_BYTE:
        return _read_onnx_file(path)
    raise WeightsFormatError(
        f"{where} is of an unknown format (starts with {head[:8]!r}); expected {_FORMATS_KNOWN}"
    )


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
    """Read a network's weights from any supported file, without running code.

    The format is recognised by the file's content, not its name (see
    :func:`read_weights_file`, which also returns recorded activations and input scale).
    Pickles may reference only ``numpy.ndarray``, ``numpy.dtype`` and
    ``numpy[._]core.multiarray._reconstruct``; any other global is refused before it is
    imported.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file, e.g. the book's ``sample_weight.pkl``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"W1": (in, h1), "b1": (h1,), "W2": ..., ...}`` with numeric dtypes, as stored.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If a pickle names a global outside the allowlist, or holds something other than a
        dict of arrays (a list, an ``object`` array, a Python object).
    WeightsFormatError
        If the file is empty, truncated, of an unknown format, or its keys are not
        W1, b1, ..., Wn, bn.

    Examples
    --------
    >>> weights = read_weights("sample_weight.pkl")  # doctest: +SKIP
    >>> {key: array.shape for key, array in weights.items()}  # doctest: +SKIP
    {'W1': (784, 50), 'b1': (50,), 'W2': (50, 100), 'b2': (100,), 'W3': (100, 10), 'b3': (10,)}
    """
    return read_weights_file(path).weights


def save_npz(path: PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """Save weights as an uncompressed ``.npz``, a format that loads without pickle.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. As with :func:`numpy.savez`, ``.npz`` is appended to a str path that
        lacks it.
    weights : mapping of str to array_like
        ``{"W1": ..., "b1": ..., ...}``, e.g. the output of :func:`read_weights`.

    Raises
    ------
    WeightsFormatError
        If the keys are not W1, b1, ..., Wn, bn or an array is not numeric.

    Examples
    --------
    >>> save_npz("sample_weight.npz", read_weights("sample_weight.pkl"))  # doctest: +SKIP
    """
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    _check_weights(arrays, path, from_pickle=False)
    np.savez(path, **arrays)


# -- load and save --------------------------------------------------------------------------


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

    The format is recognised by content (see :func:`read_weights_file`); nothing in the file
    is executed. Activations and input scale come from the file when it records them (files
    written by :func:`save`, ONNX models); arguments given here override the file.

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
    UnsafePickleError, WeightsFormatError
        As :func:`read_weights_file`.
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
    from ._model import MLP

    file = read_weights_file(path)
    names = resolve_activations(
        _layer_count(file.weights),
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


_SAVE_FORMATS = {".npz": "npz", ".safetensors": "safetensors"}


def _write_atomically(path: pathlib.Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    A failure (a full disk, an exception while writing) leaves ``path`` as it was: never a
    half-written file that would later load as a truncated one. A symbolic link is written
    through, as ``open(path, "wb")`` would, rather than replaced by a file. A file replaced
    keeps its permission bits (and, where allowed, its owner and group). Errors name
    ``path``, never the temporary file the caller did not ask for.
    """
    target, temporary = temporary_beside(path)
    try:
        descriptor = create_beside(target, temporary)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise _naming(exc, path) from None
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def create_beside(target: pathlib.Path, temporary: pathlib.Path) -> int:
    """Create ``temporary`` (exclusively) to be renamed over ``target``; its descriptor.

    When ``target`` exists, the new file takes its permission bits, and its owner and group
    where the operating system allows (root; or a group the user belongs to), so that
    replacing a 0600 file does not leave a 0644 one. Otherwise the umask decides, as for a
    file ``open`` creates. Hard links to ``target`` keep the old content: the rename gives
    ``target`` a new inode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        existing: Optional[os.stat_result] = os.stat(target)
    except OSError:
        existing = None
    # Created owner-only when replacing a file, so that no one else can open it before its
    # final permissions are set; mode 0o666 otherwise lets the umask decide.
    descriptor = os.open(temporary, flags, 0o600 if existing is not None else 0o666)
    if existing is None:
        return descriptor
    try:
        if hasattr(os, "fchown"):
            try:
                os.fchown(descriptor, existing.st_uid, existing.st_gid)
            except OSError:
                try:
                    os.fchown(descriptor, -1, existing.st_gid)
                except OSError:
                    pass  # not ours to give away: the file becomes the writer's
        # After fchown, which may clear set-user-ID and set-group-ID bits.
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, stat.S_IMODE(existing.st_mode))
        else:  # pragma: no cover - Windows
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    return descriptor


def temporary_beside(path: PathLike) -> "tuple[pathlib.Path, pathlib.Path]":
    """``(target, temporary)``: the file ``path`` names (through symbolic links, which are
    written through as ``open`` would) and a fresh hidden name in its folder to write first.

    Renaming the temporary file over the target is atomic only within one folder.
    """
    target = pathlib.Path(os.path.realpath(path))
    return target, target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")


def _naming(error: OSError, path: PathLike) -> OSError:
    """The same kind of error, about ``path`` (e.g. IsADirectoryError for a folder)."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, os.fspath(path))


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
    from ._model import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
    destination = pathlib.Path(path)
    if format is None:
        chosen = _SAVE_FORMATS.get(destination.suffix.lower())
        if chosen is None:
            raise ValueError(
                f"cannot tell the format from the name {os.fspath(path)!r}; use the suffix "
                '.npz or .safetensors, or pass format="npz" or format="safetensors"'
            )
    elif format in _SAVE_FORMATS.values():
        chosen = format
    else:
        raise ValueError(f'format is {format!r}; expected "npz" or "safetensors"')
    arrays: dict[str, np.ndarray] = {}
    for number, (W, b) in enumerate(zip(model.coefs_, model.intercepts_), start=1):
        arrays[f"W{number}"], arrays[f"b{number}"] = W, b
    record = _metadata_json(model)
    if chosen == "npz":
        arrays[_METADATA_KEY] = np.array(record)

        def write(file: IO[bytes]) -> None:
            np.savez(file, **arrays)

    else:

        def write(file: IO[bytes]) -> None:
            _safetensors.dump_safetensors(file, arrays, {_SAFETENSORS_METADATA_KEY: record})

    _write_atomically(destination, write)
    return destination
