"""Reading PyTorch ``state_dict`` checkpoints (``torch.save``) with NumPy alone, without torch.

A checkpoint written by ``torch.save(model.state_dict(), path)`` is a zip archive::

    <archive>/data.pkl      a pickle of the dict; each tensor is a call of
                            torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
    <archive>/data/<key>    the raw bytes of each storage, named by a persistent id
    <archive>/byteorder     b"little" or b"big" (absent in old files: little)
    <archive>/version, ...

``torch.load`` unpickles ``data.pkl``, which may name any callable. Here the pickle is read by
:class:`_StateDictUnpickler`: the few globals a state_dict needs resolve to this module's own
NumPy stand-ins, every other global is refused before anything is imported, and storages are
read from the zip with their sizes checked, so a hostile file can neither run code nor make
NumPy read outside a buffer.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np

from .._common import PathLike

from ..errors import UnsafePickleError, WeightsFormatError
from . import limits
from .pickle_limits import load_within_limits
from .weights import WeightsFile, check_weights

__all__ = ["read_torch_state_dict", "state_dict_to_weights"]


_DATA_PKL = "data.pkl"
_STORAGE_KEY = re.compile(r"^[0-9A-Za-z_]+$")

# torch.<Name>Storage -> the NumPy dtype of its elements (little-endian in the file unless
# <archive>/byteorder says "big").
_STORAGE_DTYPES: Dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Storage types torch writes that NumPy cannot hold: refused with advice rather than as unsafe.
_UNSUPPORTED_STORAGES = {
    "BFloat16Storage": "bfloat16 (NumPy has no bfloat16; call model.float() before torch.save)",
    "ComplexFloatStorage": "complex64 (an MLP's weights are real)",
    "ComplexDoubleStorage": "complex128 (an MLP's weights are real)",
    "QInt8Storage": "quantized qint8 (save the float model instead)",
    "QUInt8Storage": "quantized quint8 (save the float model instead)",
    "QInt32Storage": "quantized qint32 (save the float model instead)",
    "QUInt4x2Storage": "quantized quint4x2 (save the float model instead)",
    "QUInt2x4Storage": "quantized quint2x4 (save the float model instead)",
}

_ALLOWED_NAMES = (
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    *(f"torch.{name}" for name in _STORAGE_DTYPES),
)


# -- the stand-ins the pickle's globals resolve to -------------------------------------------
#
# Every object the pickle can reach is an instance of a class below, created for one file.
# They use __slots__ and define __setstate__, so the pickle's BUILD opcode can neither set
# attributes on them (e.g. a function's __defaults__) nor leak state into a later load.


def _refuse_build(self: Any, state: Any) -> None:
    raise UnsafePickleError(
        f"refused to set state on {type(self).__name__.lstrip('_')}: a state_dict pickle never "
        "does that; this file may try to tamper with the loader, so nothing from it was used"
    )


class _StateDict(dict):
    """What ``collections.OrderedDict`` builds: a plain dict (insertion-ordered anyway)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        # Module.state_dict() attaches a `_metadata` attribute (module versions): not needed.
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            keys = sorted(map(repr, state)) if isinstance(state, dict) else type(state).__name__
            raise UnsafePickleError(
                f"refused to set attributes {keys} on an OrderedDict: a state_dict only "
                "carries '_metadata'"
            )


class _NewStateDict:
    """Stands in for ``collections.OrderedDict``: called with no arguments, as pickle does."""

    __slots__ = ()
    __setstate__ = _refuse_build

    def __call__(self, *args: Any) -> _StateDict:
        if args:
            raise UnsafePickleError(
                f"refused OrderedDict called with {len(args)} arguments: torch pickles an "
                "OrderedDict empty and fills it item by item"
            )
        return _StateDict()


class _StorageType:
    """Stands in for ``torch.<Name>Storage``; it is only ever named in a persistent id."""

    __slots__ = ("name", "dtype")
    __setstate__ = _refuse_build

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _Storage:
    """One storage read from ``<archive>/data/<key>``: a flat, read-only NumPy array."""

    __slots__ = ("key", "type_name", "array")
    __setstate__ = _refuse_build

    def __init__(self, key: str, type_name: str, array: np.ndarray) -> None:
        self.key = key
        self.type_name = type_name
        self.array = array


class _Tensor:
    """A rebuilt tensor: a read-only view into its storage, copied once the pickle is read."""

    __slots__ = ("array",)
    __setstate__ = _refuse_build

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _check_int(value: Any, what: str) -> int:
    # bool is an int subclass, but a size or offset of True is a malformed file.
    if type(value) is not int or value < 0:
        raise WeightsFormatError(f"{what} is {value!r}; expected a non-negative int")
    return value


def _check_int_tuple(value: Any, what: str) -> "tuple[int, ...]":
    if type(value) is not tuple or len(value) > limits.MAX_NDIM:
        raise WeightsFormatError(
            f"{what} is {value!r:.80}; expected a tuple of at most {limits.MAX_NDIM} ints"
        )
    return tuple(_check_int(item, f"{what} entry") for item in value)


def _is_empty_mapping(value: Any) -> bool:
    return isinstance(value, dict) and not value


class _DataBudget:
    """Bytes of tensor data a checkpoint may make: at most the file's size (or, for deflated
    members, the storage bytes read from it, whichever is larger).

    A memoised storage can back any number of tensor stand-ins; copying each would turn a few
    kilobytes of data.pkl into gigabytes. Tensors are therefore views until the state_dict has
    been checked, and each rebuild is charged against this budget. Views that overlap (torch
    saves a view's whole storage) fit easily: the file holds the storage plus its zip framing.
    """

    __slots__ = ("file_size", "stored", "used")

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.stored = 0  # bytes of every storage member read so far
        self.used = 0

    @property
    def limit(self) -> int:
        return max(self.file_size, self.stored)

    def charge(self, nbytes: int, where: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise WeightsFormatError(
                f"{where}: the tensors built so far need {self.used} bytes, more than the "
                f"checkpoint's {self.limit}; expected each stored element in about one tensor "
                "(a hostile file can rebuild one storage many times to exhaust memory)"
            )


class _RebuildTensor:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: a bounds-checked strided view."""

    __slots__ = ("budget",)
    __setstate__ = _refuse_build

    def __init__(self, budget: _DataBudget) -> None:
        self.budget = budget

    def __call__(
        self,
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any,
        backward_hooks: Any,
        metadata: Any = None,
    ) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise UnsafePickleError(
                f"refused a tensor built on a {type(storage).__name__}; expected a storage "
                "named by a persistent id"
            )
        offset = _check_int(storage_offset, "a tensor's storage offset")
        shape = _check_int_tuple(size, "a tensor's size")
        strides = _check_int_tuple(stride, "a tensor's stride")
        if len(shape) != len(strides):
            raise WeightsFormatError(
                f"a tensor has size {shape} but stride {strides}; expected one stride per dimension"
            )
        if type(requires_grad) is not bool:
            raise WeightsFormatError(
                f"a tensor's requires_grad is {requires_grad!r:.40}; expected a bool"
            )
        # Hooks and tensor metadata cannot be represented: refuse them rather than drop them.
        if not _is_empty_mapping(backward_hooks) or not (
            metadata is None or _is_empty_mapping(metadata)
        ):
            raise UnsafePickleError(
                "refused a tensor carrying backward hooks or metadata; a state_dict's tensors "
                "carry neither"
            )
        flat = storage.array
        available = flat.shape[0]
        count = math.prod(shape)
        where = (
            f"a tensor of size {shape}, stride {strides} and offset {offset} in storage "
            f"{storage.key!r} of {available} elements"
        )
        if count == 0:
            if offset > available:
                raise WeightsFormatError(f"{where}: the offset lies outside the storage")
            return _Tensor(np.zeros(shape, dtype=flat.dtype))  # no data: nothing to charge
        last = offset + sum((extent - 1) * step for extent, step in zip(shape, strides))
        if last >= available:
            raise WeightsFormatError(
                f"{where}: it reaches element {last}, outside the storage; the file is "
                "corrupted or hostile"
            )
        # Distinct elements of a tensor occupy distinct storage slots unless strides overlap
        # (expanded tensors, never in a state_dict); refusing those bounds the copy below by
        # the bytes actually in the file.
        if count > available:
            raise WeightsFormatError(
                f"{where}: it has {count} elements, more than its storage holds; expected a "
                "tensor whose elements are each stored once"
            )
        self.budget.charge(count * flat.itemsize, where)
        view = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=shape,
            strides=tuple(step * flat.itemsize for step in strides),
            writeable=False,
        )
        return _Tensor(view)


class _RebuildParameter:
    """Stands in for ``torch._utils._rebuild_parameter`` (``state_dict(keep_vars=True)``)."""

    __slots__ = ()
    __setstate__ = _refuse_build

    def __call__(self, data: Any, requires_grad: Any, backward_hooks: Any) -> _Tensor:
        if not isinstance(data, _Tensor):
            raise UnsafePickleError(
                f"refused a Parameter wrapping a {type(data).__name__}; expected a tensor"
            )
        if type(requires_grad) is not bool or not _is_empty_mapping(backward_hooks):
            raise UnsafePickleError(
                "refused a Parameter with hooks or a non-bool requires_grad; a state_dict's "
                "parameters carry neither"
            )
        return data


# -- the archive and the unpickler -----------------------------------------------------------


class _Archive:
    """The checkpoint's zip, with every member's declared size checked before any read."""

    def __init__(self, zip_file: zipfile.ZipFile, path: PathLike) -> None:
        self.zip = zip_file
        self.path = os.fspath(path)
        infos = zip_file.infolist()
        self.members: Dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            if info.filename in self.members:
                raise WeightsFormatError(
                    f"{self.path!r} holds the member {info.filename!r} twice; a checkpoint "
                    "names each member once"
                )
            self.members[info.filename] = info
            total += info.file_size
            if total > limits.CHECKPOINT_MAX_BYTES:
                raise WeightsFormatError(
                    f"{self.path!r} declares more than {limits.CHECKPOINT_MAX_BYTES} bytes of "
                    "uncompressed content; refused as a possible zip bomb (an MLP checkpoint "
                    "is far smaller)"
                )
            compressed = info.compress_type != zipfile.ZIP_STORED
            if compressed and info.file_size > limits.CHECKPOINT_MAX_DEFLATE_RATIO * max(
                info.compress_size, 1
            ):
                raise WeightsFormatError(
                    f"{self.path!r}: member {info.filename!r} declares {info.file_size} bytes "
                    f"from {info.compress_size} compressed; refused as a possible zip bomb"
                )
        pickles = [name for name in self.members if name.split("/")[-1] == _DATA_PKL]
        if len(pickles) != 1:
            found = "no member" if not pickles else f"{len(pickles)} members ({pickles})"
            raise WeightsFormatError(
                f"{self.path!r} has {found} named '<archive>/data.pkl'; expected exactly one, "
                "as torch.save writes"
            )
        self.pickle_name = pickles[0]
        self.prefix = self.pickle_name[: -len(_DATA_PKL)]

    def read(self, name: str, *, limit: Optional[int] = None) -> bytes:
        info = self.members.get(name)
        if info is None:
            raise WeightsFormatError(
                f"{self.path!r} lacks the member {name!r} that its data.pkl refers to; is the "
                "checkpoint truncated?"
            )
        if limit is None:
            limit = limits.CHECKPOINT_MAX_BYTES
        if info.file_size > limit:
            raise WeightsFormatError(
                f"{self.path!r}: member {name!r} declares {info.file_size} bytes; expected at "
                f"most {limit}"
            )
        try:
            content = self.zip.read(info)
        except Exception as exc:
            # Bad CRC, short data, encryption, an unknown compression, zlib.error: all mean
            # the member is damaged, and none is worth a traceback from inside zipfile.
            raise WeightsFormatError(
                f"{self.path!r}: member {name!r} cannot be read ({type(exc).__name__}: {exc})"
            ) from exc
        if len(content) != info.file_size:
            raise WeightsFormatError(
                f"{self.path!r}: member {name!r} holds {len(content)} bytes, not the "
                f"{info.file_size} its header declares"
            )
        return content

    def byte_order(self) -> str:
        name = self.prefix + "byteorder"
        if name not in self.members:
            return "<"  # files from before torch 1.13 lack it; they are little-endian
        mark = self.read(name, limit=16).strip()
        if mark == b"little":
            return "<"
        if mark == b"big":
            return ">"
        raise WeightsFormatError(
            f"{self.path!r}: {name!r} says {mark!r:.40}; expected b'little' or b'big'"
        )


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a ``data.pkl`` into dicts of :class:`_Tensor`, never importing anything."""

    def __init__(self, archive: _Archive, content: bytes) -> None:
        super().__init__(io.BytesIO(content), encoding="utf-8")
        self._archive = archive
        self._byte_order = archive.byte_order()
        self._storages: Dict[str, _Storage] = {}
        self.budget = _DataBudget(os.path.getsize(archive.path))
        self._globals: Dict["tuple[str, str]", Any] = {
            ("collections", "OrderedDict"): _NewStateDict(),
            ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(self.budget),
            ("torch._utils", "_rebuild_parameter"): _RebuildParameter(),
        }
        for name, dtype in _STORAGE_DTYPES.items():
            self._globals[("torch", name)] = _StorageType(name, dtype)

    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is not None:
            return found
        qualified = f"{module}.{name}"
        if module == "torch" and name in _UNSUPPORTED_STORAGES:
            raise WeightsFormatError(
                f"{self._archive.path!r} stores {_UNSUPPORTED_STORAGES[name]} tensors, which "
                "fastmlp cannot read; expected float16, float32 or float64"
            )
        raise UnsafePickleError(
            f"refused to load {qualified} from {self._archive.path!r}: a state_dict checkpoint "
            f"may only reference {', '.join(_ALLOWED_NAMES)}; this file may try to run code, so "
            "nothing from it was executed"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            type(pid) is tuple
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and type(pid[2]) is str
            and type(pid[3]) is str
        ):
            raise UnsafePickleError(
                f"refused persistent id {pid!r:.120}: expected ('storage', <torch storage "
                "type>, key, location, numel)"
            )
        _, storage_type, key, _location, numel = pid
        numel = _check_int(numel, f"storage {key!r}'s numel")
        if not _STORAGE_KEY.match(key):
            raise WeightsFormatError(f"storage key {key!r:.40} is malformed; expected e.g. '0'")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.type_name != storage_type.name or cached.array.shape[0] != numel:
                raise WeightsFormatError(
                    f"storage {key!r} is referred to as both {cached.type_name} of "
                    f"{cached.array.shape[0]} and {storage_type.name} of {numel} elements"
                )
            return cached
        dtype = storage_type.dtype.newbyteorder(self._byte_order)
        name = f"{self._archive.prefix}data/{key}"
        info = self._archive.members.get(name)
        expected_bytes = numel * dtype.itemsize
        # Compared before reading: a huge numel must not become a huge allocation.
        if info is not None and info.file_size != expected_bytes:
            raise WeightsFormatError(
                f"{self._archive.path!r}: storage {name!r} holds {info.file_size} bytes but "
                f"data.pkl declares {numel} {storage_type.name} elements ({expected_bytes} "
                "bytes); the checkpoint is truncated or corrupted"
            )
        content = self._archive.read(name)
        self.budget.stored += len(content)
        array = np.frombuffer(content, dtype=dtype)
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        array.setflags(write=False)
        storage = _Storage(key, storage_type.name, array)
        self._storages[key] = storage
        return storage


def read_torch_state_dict(path: PathLike) -> Dict[str, np.ndarray]:
    """The tensors of a ``torch.save(model.state_dict(), path)`` checkpoint, read without torch:
    every tensor in file order under its state_dict key (``"0.weight"``, ...), with torch's
    shape (a ``Linear`` weight is ``(out, in)``) and dtype, as new C-contiguous arrays.

    Raises as :func:`fastmlp.from_torch_checkpoint` documents.
    """
    display = os.fspath(path)
    try:
        zip_file = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise WeightsFormatError(
            f"{display!r} is not a zip archive ({exc}); expected a checkpoint written by "
            "torch.save (torch >= 1.6; re-save older, pickle-only files with a current torch)"
        ) from exc
    except (zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        # A damaged zip directory: a "version needed" zipfile does not know, a name flagged
        # UTF-8 that is not (UnicodeDecodeError is a ValueError), a short read.
        raise WeightsFormatError(
            f"{display!r} has a damaged zip directory ({type(exc).__name__}: {exc}); expected "
            "a checkpoint written by torch.save"
        ) from exc
    with zip_file:
        archive = _Archive(zip_file, path)
        content = archive.read(archive.pickle_name, limit=limits.CHECKPOINT_MAX_PICKLE_BYTES)
        unpickler = _StateDictUnpickler(archive, content)
        state = load_within_limits(
            content,
            unpickler,
            repr(display),
            refused="{where}: data.pkl is refused: {exc}; expected a state_dict",
            damaged="{where}: data.pkl is damaged or not a state_dict ({kind}: {exc})",
        )
    if not isinstance(state, dict):
        raise UnsafePickleError(
            f"{display!r} holds a {type(state).__name__.lstrip('_')}; expected a state_dict (a "
            "dict of tensors), as written by torch.save(model.state_dict(), path)"
        )
    arrays: Dict[str, np.ndarray] = {}
    copies: Dict[int, np.ndarray] = {}  # one copy per tensor, however many keys name it
    total = 0
    for key, value in state.items():
        if type(key) is not str:
            raise WeightsFormatError(
                f"{display!r} has a key {key!r:.60} of type {type(key).__name__}; expected str"
            )
        if not isinstance(value, _Tensor):
            raise UnsafePickleError(
                f"{display!r}: {key!r} is a {type(value).__name__.lstrip('_')}, not a tensor; "
                "expected a state_dict holding tensors only (save model.state_dict(), not a "
                "dict with other objects)"
            )
        total += value.array.nbytes
        if total > unpickler.budget.limit:
            # A tensor under many keys costs as much as many tensors once a model is built.
            raise WeightsFormatError(
                f"{display!r}: its keys name {total} bytes of tensors or more, but the file "
                f"holds {unpickler.budget.limit}; expected each key's tensor stored once "
                "(clone tied weights before saving)"
            )
        copy = copies.get(id(value))
        if copy is None:
            copy = copies[id(value)] = np.array(value.array, order="C", copy=True)
        arrays[key] = copy
    return arrays


def _layer_prefix(key: str, suffix: str) -> str:
    return key[: -len(suffix)].rstrip(".") if key != suffix else ""


def state_dict_to_weights(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """fastmlp's ``W1, b1, ..., Wn, bn`` from a state_dict of ``Linear`` layers in forward order
    (as :func:`read_torch_state_dict` returns them and ``nn.Sequential`` orders them):
    ``"<prefix>.weight"`` ``(out, in)`` becomes ``W<i>`` ``(in, out)`` (a C-contiguous
    transposed copy), ``"<prefix>.bias"`` ``b<i>``, zeros of the weight's dtype when absent.

    A WeightsFormatError if the state is empty, a key is not ``*.weight`` / ``*.bias`` (only
    Linear layers: no BatchNorm's ``running_mean``), a weight is not 2-D floating point, a
    bias does not match its weight, or consecutive layers do not chain.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of str to arrays, got {type(state).__name__}")
    if not state:
        raise WeightsFormatError("the state_dict is empty; expected Linear layers' weights")
    layers: Dict[str, Dict[str, Any]] = {}  # prefix -> {"weight": ..., "bias": ...}, in order
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsFormatError(f"state_dict key {key!r:.60} is not a str")
        kind: Optional[str] = None
        for suffix in ("weight", "bias"):
            if key == suffix or key.endswith("." + suffix):
                kind = suffix
        if kind is None:
            raise WeightsFormatError(
                f"state_dict key {key!r} is not a Linear layer's weight or bias; only Linear "
                "layers are supported (no BatchNorm, LayerNorm, convolution or embedding), "
                f"keys found: {list(state)}"
            )
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise WeightsFormatError(
                f"{key!r} has dtype {array.dtype}; expected floating-point weights"
            )
        layers.setdefault(_layer_prefix(key, kind), {})[kind] = (key, array)
    weights: Dict[str, np.ndarray] = {}
    previous: Optional["tuple[str, int]"] = None  # (weight key, its out features)
    for number, (prefix, parts) in enumerate(layers.items(), start=1):
        if "weight" not in parts:
            raise WeightsFormatError(
                f"{parts['bias'][0]!r} has no matching {prefix + '.weight'!r}; expected each "
                "Linear layer's weight"
            )
        weight_key, weight = parts["weight"]
        if weight.ndim != 2:
            raise WeightsFormatError(
                f"{weight_key!r} has shape {weight.shape}; expected a Linear weight of shape "
                "(out, in) (only Linear layers are supported: 1-D weights belong to "
                "normalization layers)"
            )
        out_features, in_features = weight.shape
        if "bias" in parts:
            bias_key, bias = parts["bias"]
            if bias.shape != (out_features,):
                raise WeightsFormatError(
                    f"{bias_key!r} has shape {bias.shape} but {weight_key!r} has shape "
                    f"{weight.shape}; expected a bias of shape ({out_features},)"
                )
            bias = np.array(bias, copy=True)
        else:
            bias = np.zeros(out_features, dtype=weight.dtype)
        if previous is not None and previous[1] != in_features:
            raise WeightsFormatError(
                f"{weight_key!r} has shape {weight.shape} (in = {in_features}) but "
                f"{previous[0]!r} outputs {previous[1]} features; the layers do not chain"
            )
        previous = (weight_key, out_features)
        weights[f"W{number}"] = np.array(weight.T, order="C", copy=True)
        weights[f"b{number}"] = bias
    return weights


def read_checkpoint_file(path: PathLike) -> WeightsFile:
    weights = state_dict_to_weights(read_torch_state_dict(path))
    return WeightsFile(check_weights(dict(weights), path, from_pickle=False), None, None, "torch")
