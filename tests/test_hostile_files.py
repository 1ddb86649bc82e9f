"""A corpus of hostile and broken weight and data files: each must be refused with a clear error.

Every case is built here, in ``tmp_path``. Files that would run code under plain ``pickle``
(or ``np.load(allow_pickle=True)``) try to create a marker file; the tests check that the
marker never appears when fastmlp reads them, and, separately, that it does appear when the
same bytes go through plain ``pickle.loads``, so the payloads are real. Files that declare
more data than they hold must fail before memory for the declared size is allocated: the peak
of traced allocations while reading stays small.
"""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fastmlp
import numpy as np
import pytest
from fastmlp._formats import read_weights
from fastmlp._formats.safetensors import read_safetensors
from fastmlp.datasets import load_mnist, read_idx
from fastmlp.errors import DataFormatError, UnsafePickleError, WeightsFormatError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct

MARKER = "pwned"
# Every file here is at most a few kB (one sparse file aside, which is never read): reading
# one must not allocate anywhere near what a lying header declares (gigabytes and more).
PEAK_ALLOCATION_LIMIT = 16 * 2**20


class _Payload:
    """Pickles to a call of ``function(*args)``: what a hostile weights file contains."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> Any:
        return self.function, self.args


class _ArrayWithState:
    """Pickles like a numpy array (``_reconstruct`` then ``__setstate__``) with a chosen state."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self) -> Any:
        return _reconstruct, (np.ndarray, (0,), b"b"), self.state


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "W1": rng.normal(size=(4, 3)).astype(np.float32),
        "b1": np.zeros(3, np.float32),
        "W2": rng.normal(size=(3, 2)).astype(np.float32),
        "b2": np.zeros(2, np.float32),
    }


def _touch_code(folder: Path) -> str:
    """Python source that creates the marker file."""
    return f"open({str(folder / MARKER)!r}, 'w').close()"


def _touch_command(folder: Path) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(_touch_code(folder))}"


# --- builders: each takes the test's folder and returns the hostile file ----------------------


def _pickled(name: str, make: Callable[[Path], Any], protocol: int = 3):
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(pickle.dumps(make(folder), protocol=protocol))
        return path

    return build


def _raw(name: str, make: Callable[[Path], bytes]):
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(make(folder))
        return path

    return build


def _getattr_chain(folder: Path) -> bytes:
    # builtins.getattr(builtins.__import__("os"), "system")(command), written opcode by opcode
    # as an attacker would (pickle.dumps cannot produce it from live objects).
    command = _touch_command(folder).encode()
    return (
        b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
        + command
        + b"\ntR."
    )


def _numpy_load_with_pickle(folder: Path) -> Any:
    inner = folder / "inner.pkl"
    inner.write_bytes(pickle.dumps(_Payload(builtins.exec, _touch_code(folder))))
    return _Payload(np.load, str(inner), None, True)  # np.load(file, mmap_mode, allow_pickle)


def _npy_bytes(header: str, data: bytes) -> bytes:
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def _zip_bytes(name: str, member: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, member)
    return buffer.getvalue()


def _npz_with_member(name: str, member: bytes):
    def build(folder: Path) -> Path:
        path = folder / name
        weights = _weights()
        with zipfile.ZipFile(path, "w") as archive:
            for key in ("b1", "W2", "b2"):
                buffer = io.BytesIO()
                np.save(buffer, weights[key])
                archive.writestr(f"{key}.npy", buffer.getvalue())
            archive.writestr("W1.npy", member)
        return path

    return build


def _npz_lying_zip_directory(folder: Path) -> Path:
    # The zip's own size fields (local header and central directory) claim 4 GB for W1.npy.
    path = folder / "lying_zip.npz"
    np.savez(path, **_weights())
    content = bytearray(path.read_bytes())
    huge = (0xFFFFFFF0).to_bytes(4, "little")
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        position = content.find(signature)
        content[position + offset : position + offset + 4] = huge
    path.write_bytes(bytes(content))
    return path


def _npz_encrypted_member(folder: Path) -> Path:
    # The "encrypted" flag set on W1.npy: zipfile would ask for a password.
    path = folder / "encrypted.npz"
    np.savez(path, **_weights())
    content = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        content[content.find(signature) + offset] |= 1
    path.write_bytes(bytes(content))
    return path


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **_weights())
    return buffer.getvalue()


def _safetensors_bytes(header: Any, data: bytes = b"", declared_length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(text) if declared_length is None else declared_length
    return length.to_bytes(8, "little") + text + data


def _f32_entry(shape: list, begin: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def _safetensors(name: str, header: Any, data: bytes = b"", declared_length: int | None = None):
    return _raw(name, lambda folder: _safetensors_bytes(header, data, declared_length))


def _sparse_safetensors_with_huge_header(folder: Path) -> Path:
    # 200 MB, nearly all a hole: enough for a 150 MB header to "fit", which must still be
    # refused unread (the format's limit is 100 MB).
    path = folder / "huge_header.safetensors"
    with open(path, "wb") as file:
        file.write(_safetensors_bytes(b'{"W1": ', declared_length=150_000_000))
        file.truncate(200_000_000)
    return path


def _truncated_safetensors(folder: Path) -> bytes:
    from fastmlp._formats.safetensors import write_safetensors

    write_safetensors(folder / "whole.safetensors", _weights())
    content = (folder / "whole.safetensors").read_bytes()
    (folder / "whole.safetensors").unlink()
    return content[: len(content) - 20]


def _idx(magic: bytes, dims: "tuple[int, ...]", payload: bytes) -> bytes:
    return magic + b"".join(size.to_bytes(4, "big") for size in dims) + payload


# --- deep nesting, memory amplification, duplicates ------------------------------------------


def _nested_tuple_key_pickle(depth: int) -> bytes:
    # {((...((),)...),): 1}: TUPLE1 applied `depth` times; no global is named at all.
    return b"\x80\x04}" + b")" + b"\x85" * depth + b"K\x01s."


def _shared_bytes_pickle(folder: Path) -> bytes:
    # One 1 MiB byte string, memoised, given as the data of 40 chained 512x512 float32 layers:
    # 1 MiB of file that, rebuilt as arrays and a model, would take 40 MiB.
    size, layers = 512, 40
    dtype = (
        b"cnumpy\ndtype\n(Vf4\nI00\nI01\ntR"  # dtype("f4", False, True), then its state:
        b"(K\x03V<\nNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    reconstruct = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(K\x00tC\x01btR"

    def array(shape: bytes, data: bytes) -> bytes:
        return reconstruct + b"(K\x01" + shape + dtype + b"\x89" + data + b"tb"

    body = b""
    for number in range(1, layers + 1):
        weights = (
            b"B" + (size * size * 4).to_bytes(4, "little") + bytes(size * size * 4) + b"q\x01"
            if number == 1
            else b"h\x01"
        )
        body += b"VW%d\n" % number + array(b"(M\x00\x02M\x00\x02t", weights)
        biases = b"B" + (size * 4).to_bytes(4, "little") + bytes(size * 4)
        body += b"Vb%d\n" % number + array(b"(M\x00\x02t", biases)
    return b"\x80\x03}(" + body + b"u."


def _torch_checkpoint(name: str, data_pkl: bytes, storages: "dict[str, bytes]"):
    def build(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data_pkl)
            archive.writestr("archive/byteorder", b"little")
            for key, content in storages.items():
                archive.writestr(f"archive/data/{key}", content)
            archive.writestr("archive/version", b"3\n")
        return path

    return build


_TORCH_EMPTY_HOOKS = b"ccollections\nOrderedDict\n)R"


def _torch_shared_storage_pickle(count: int, numel: int) -> bytes:
    # `count` state_dict entries, each a tensor rebuilt from one memoised 1 MiB storage.
    storage = (
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ"
        + numel.to_bytes(4, "little")
        + b"tQq\x01"
    )
    items = b""
    for index in range(count):
        items += b"X" + len(f"k{index}").to_bytes(4, "little") + f"k{index}".encode()
        items += b"ctorch._utils\n_rebuild_tensor_v2\n("
        items += (storage if index == 0 else b"h\x01") + b"J\x00\x00\x00\x00"
        items += b"(J" + numel.to_bytes(4, "little") + b"t(J\x01\x00\x00\x00t\x89"
        items += _TORCH_EMPTY_HOOKS + b"tR"
    return b"\x80\x02" + _TORCH_EMPTY_HOOKS + b"(" + items + b"u."


def _npz_duplicate_member(folder: Path) -> Path:
    path = folder / "duplicate.npz"
    np.savez(path, **_weights())
    impostor = io.BytesIO()
    np.save(impostor, np.full((4, 3), 1e30, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("W1.npy", impostor.getvalue())
    return path


def _mnist_npz_duplicate_member(folder: Path) -> Path:
    path = folder / "mnist.npz"
    images = np.zeros((2, 28, 28), np.uint8)
    np.savez(path, x_test=images, y_test=np.zeros(2, np.int64))
    impostor = io.BytesIO()
    np.save(impostor, np.full_like(images, 255))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("x_test.npy", impostor.getvalue())
    return path


def _safetensors_header_of_tiny_values(folder: Path) -> Path:
    # 12 MB of "0," inside one list: json.loads would build a 6-million-item list (48 MB of
    # pointers alone) before the entry could be refused.
    path = folder / "tiny_values.safetensors"
    header = b'{"W1": [' + b"0," * 6_000_000 + b"0]}"
    path.write_bytes(_safetensors_bytes(header))
    return path


def _onnx_gemm_with_string_alpha(folder: Path) -> Path:
    onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    weights = [
        numpy_helper.from_array(np.ones((3, 2), np.float32), "W"),
        numpy_helper.from_array(np.zeros(2, np.float32), "c"),
    ]
    node = helper.make_node("Gemm", ["X", "W", "c"], ["Y"], alpha="abc")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, ["N", 2])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "alpha.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    build: Callable[[Path], Path]
    error: type
    match: str
    read: Callable[[Path], Any] = fastmlp.load
    runs_code: bool = False  # plain pickle.loads would run the payload
    crashes: bool = False  # could kill the process: read in a subprocess, as `fastmlp convert`


CORPUS = {
    # pickles that run commands or code
    "pickle-os-system": Hostile(
        _pickled("system.pkl", lambda f: _Payload(os.system, _touch_command(f))),
        UnsafePickleError,
        r"refused to load (posix|nt)\.system",
        runs_code=True,
    ),
    "pickle-subprocess-popen": Hostile(
        _pickled(
            "popen.pkl",
            lambda f: _Payload(subprocess.Popen, [sys.executable, "-c", _touch_code(f)]),
        ),
        UnsafePickleError,
        r"refused to load subprocess\.Popen",
        runs_code=True,
    ),
    "pickle-subprocess-check-output": Hostile(
        _pickled(
            "check_output.pkl",
            lambda f: _Payload(subprocess.check_output, [sys.executable, "-c", _touch_code(f)]),
        ),
        UnsafePickleError,
        r"refused to load subprocess\.check_output",
        runs_code=True,
    ),
    "pickle-builtins-eval": Hostile(
        _pickled("eval.pkl", lambda f: _Payload(builtins.eval, _touch_code(f))),
        UnsafePickleError,
        r"refused to load builtins\.eval",
        runs_code=True,
    ),
    "pickle-builtins-exec": Hostile(
        _pickled("exec.pkl", lambda f: _Payload(builtins.exec, _touch_code(f)), protocol=4),
        UnsafePickleError,
        r"refused to load builtins\.exec",
        runs_code=True,
    ),
    "pickle-getattr-import-chain": Hostile(
        _raw("getattr.pkl", _getattr_chain),
        UnsafePickleError,
        r"refused to load builtins\.getattr",
        runs_code=True,
    ),
    "pickle-numpy-load-allow-pickle": Hostile(
        _pickled("npload.pkl", _numpy_load_with_pickle),
        UnsafePickleError,
        r"refused to load numpy\.load",
        runs_code=True,
    ),
    "pickle-payload-nested-in-weights": Hostile(
        _pickled(
            "nested.pkl", lambda f: dict(_weights(), b2=_Payload(builtins.eval, _touch_code(f)))
        ),
        UnsafePickleError,
        r"refused to load builtins\.eval",
        runs_code=True,
    ),
    "pickle-payload-as-dtype-argument": Hostile(
        _pickled(
            "dtype_arg.pkl",
            lambda f: {"W1": _Payload(np.dtype, _Payload(builtins.eval, _touch_code(f)))},
        ),
        UnsafePickleError,
        r"refused to load builtins\.eval",
        runs_code=True,
    ),
    "pickle-protocol-0-text": Hostile(
        _raw("text.pkl", lambda f: b"cos\nsystem\n(V" + _touch_command(f).encode() + b"\ntR."),
        WeightsFormatError,
        r"unknown format",
        runs_code=True,
    ),
    # pickles that build the wrong things
    "pickle-object-dtype-array": Hostile(
        _pickled("object.pkl", lambda f: dict(_weights(), b1=np.array([1, "x", None], object))),
        UnsafePickleError,
        r"'b1' is an array of dtype object",
    ),
    "pickle-list-not-dict": Hostile(
        _pickled("list.pkl", lambda f: list(_weights().values())),
        UnsafePickleError,
        r"holds a list; expected a dict",
    ),
    "pickle-bare-array": Hostile(
        _pickled("array.pkl", lambda f: np.zeros((3, 3))),
        UnsafePickleError,
        r"holds a ndarray; expected a dict",
    ),
    "pickle-string": Hostile(
        _pickled("string.pkl", lambda f: "W1"),
        UnsafePickleError,
        r"holds a str; expected a dict",
    ),
    "pickle-truncated": Hostile(
        _raw("cut.pkl", lambda f: pickle.dumps(_weights(), protocol=3)[:300]),
        WeightsFormatError,
        r"damaged or truncated pickle",
    ),
    "pickle-declares-a-terabyte-string": Hostile(
        _raw("bytes8.pkl", lambda f: b"\x80\x04\x8e" + (10**12).to_bytes(8, "little") + b"x"),
        WeightsFormatError,
        r"damaged or truncated pickle.*expected 1000000000000 bytes",
    ),
    "pickle-reconstruct-a-terabyte-array": Hostile(
        _pickled(
            "alloc.pkl", lambda f: {"W1": _Payload(_reconstruct, np.ndarray, (10**12,), b"b")}
        ),
        UnsafePickleError,
        r"refused _reconstruct\(numpy\.ndarray, \(1000000000000,\)",
    ),
    "pickle-calls-ndarray-for-uninitialised-memory": Hostile(
        # 69 bytes that would allocate 2 GB of uninitialised memory if ndarray were callable.
        _pickled("ndarray_call.pkl", lambda f: {"W1": _Payload(np.ndarray, (16000, 16000))}),
        UnsafePickleError,
        r"refused a call of numpy\.ndarray",
    ),
    "pickle-newobj-ndarray": Hostile(
        # NEWOBJ: ndarray.__new__(ndarray, 16000, 16000), written opcode by opcode.
        _raw("ndarray_new.pkl", lambda f: b"\x80\x02cnumpy\nndarray\nM\x80>M\x80>\x86\x81."),
        WeightsFormatError,
        r"ndarray_new\.pkl",
    ),
    "pickle-array-state-lies-about-shape": Hostile(
        _pickled(
            "state.pkl",
            lambda f: {"W1": _ArrayWithState((1, (10**6, 10**6), np.dtype("f4"), False, b"abcd"))},
        ),
        WeightsFormatError,
        r"damaged or truncated pickle.*buffer size does not match",
    ),
    "empty-file": Hostile(_raw("empty.pkl", lambda f: b""), WeightsFormatError, r"is empty"),
    # .npz archives
    "npz-member-header-unclosed-bracket": Hostile(
        _npz_with_member(
            "unclosed.npz",
            _npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2 }", bytes(48)),
        ),
        WeightsFormatError,
        r"member 'W1\.npy' is not a readable \.npy array",
    ),
    "npz-zip-magic-then-garbage": Hostile(
        _raw("garbage.npz", lambda f: b"PK\x03\x04" + bytes(range(200))),
        WeightsFormatError,
        r"starts like a zip \(\.npz\) archive but cannot be read",
    ),
    "npz-truncated": Hostile(
        _raw("cut.npz", lambda f: _npz_bytes()[:-40]),
        WeightsFormatError,
        r"cannot be read as one",
    ),
    "npz-member-not-npy": Hostile(
        _npz_with_member("not_npy.npz", b"just some text, no .npy magic"),
        WeightsFormatError,
        r"member 'W1\.npy' is not a readable \.npy array",
    ),
    "npz-npy-header-with-code": Hostile(
        _raw(
            "code.npz",
            lambda f: _zip_bytes(
                "W1.npy",
                _npy_bytes(
                    "{'descr': __import__('os').system(%r), 'fortran_order': False, "
                    "'shape': (2,), }" % _touch_command(f),
                    bytes(16),
                ),
            ),
        ),
        WeightsFormatError,
        r"member 'W1\.npy' is not a readable \.npy array",
    ),
    "npz-object-array": Hostile(
        _npz_with_member(
            "object.npz",
            _npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b""),
        ),
        UnsafePickleError,
        r"holds an object array \('W1\.npy'\)",
    ),
    "npz-declares-a-terabyte-array": Hostile(
        _npz_with_member(
            "huge.npz",
            _npy_bytes(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", bytes(16)
            ),
        ),
        WeightsFormatError,
        r"declares shape \(1000000, 1000000\) of float32, i\.e\. 4000000000000 bytes",
    ),
    "npz-shape-disagrees-with-data": Hostile(
        _npz_with_member(
            "shape.npz",
            _npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", bytes(72)),
        ),
        WeightsFormatError,
        r"declares shape \(3, 4\) of float64, i\.e\. 96 bytes of data, but holds 72",
    ),
    "npz-zip-directory-lies-about-size": Hostile(
        _npz_lying_zip_directory,
        WeightsFormatError,
        r"claims 4294967280 bytes",
    ),
    "npz-encrypted-member": Hostile(
        _npz_encrypted_member,
        WeightsFormatError,
        r"cannot be read as one \(.*password required",
    ),
    # .safetensors files
    "safetensors-not-json-object": Hostile(
        _safetensors("list.safetensors", b'["W1", "b1"]'),
        WeightsFormatError,
        r"unknown format",
    ),
    "safetensors-header-longer-than-file": Hostile(
        _safetensors("long.safetensors", {"W1": _f32_entry([1], 0, 4)}, bytes(4), 10**6),
        WeightsFormatError,
        r"header length says 1000000 bytes but only \d+ bytes follow",
    ),
    "safetensors-header-over-100MB": Hostile(
        _sparse_safetensors_with_huge_header,
        WeightsFormatError,
        r"header is 150000000 bytes long, over the 100000000 limit",
    ),
    "safetensors-declares-a-terabyte-tensor": Hostile(
        _safetensors(
            "huge.safetensors", {"W1": _f32_entry([10**6, 10**6], 0, 4 * 10**12)}, bytes(16)
        ),
        WeightsFormatError,
        r"ends at byte 4000000000000 of the data buffer, but the buffer holds only 16 bytes",
    ),
    "safetensors-shape-disagrees-with-offsets": Hostile(
        _safetensors("shape.safetensors", {"W1": _f32_entry([2, 2], 0, 8)}, bytes(8)),
        WeightsFormatError,
        r"needs 16 bytes but its data_offsets \[0, 8\] span 8",
    ),
    "safetensors-overlapping-tensors": Hostile(
        _safetensors(
            "overlap.safetensors",
            {"W1": _f32_entry([2, 2], 0, 16), "b1": _f32_entry([2], 8, 16)},
            bytes(16),
        ),
        WeightsFormatError,
        r"overlaps the previous tensor",
    ),
    "safetensors-uncovered-bytes": Hostile(
        _safetensors("gap.safetensors", {"W1": _f32_entry([1, 1], 0, 4)}, bytes(4 + 1000)),
        WeightsFormatError,
        r"holds 1004 bytes but the tensors cover only 4",
    ),
    "safetensors-negative-dimension": Hostile(
        _safetensors("negative.safetensors", {"W1": _f32_entry([-1, 4], 0, 0)}),
        WeightsFormatError,
        r"shape \[-1, 4\]; expected a list of non-negative integers",
    ),
    "safetensors-boolean-dimension": Hostile(
        _safetensors("bool_dim.safetensors", {"W1": _f32_entry([True, 1], 0, 4)}, bytes(4)),
        WeightsFormatError,
        r"expected a list of non-negative integers",
    ),
    "safetensors-too-many-dimensions": Hostile(
        _safetensors("ndim.safetensors", {"W1": _f32_entry([1] * 70, 0, 4)}, bytes(4)),
        WeightsFormatError,
        r"maximum supported dimension",
    ),
    "safetensors-bf16": Hostile(
        _safetensors(
            "bf16.safetensors",
            {"W1": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
            bytes(4),
        ),
        WeightsFormatError,
        r"dtype BF16, which NumPy \(and so fastmlp\) cannot represent",
    ),
    "safetensors-entry-missing-keys": Hostile(
        _safetensors("entry.safetensors", {"W1": {"dtype": "F32", "shape": [1]}}, bytes(4)),
        WeightsFormatError,
        r"exactly 'dtype', 'shape' and 'data_offsets'",
    ),
    "safetensors-duplicate-names": Hostile(
        _safetensors(
            "duplicate.safetensors",
            b'{"W1": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            b'"W1": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            bytes(8),
        ),
        WeightsFormatError,
        r"the key 'W1' appears twice",
    ),
    "safetensors-header-not-utf8": Hostile(
        _safetensors("latin1.safetensors", b'{"W\xe91": 1}'),
        WeightsFormatError,
        r"header is not valid UTF-8",
    ),
    "safetensors-header-not-json": Hostile(
        _safetensors("broken.safetensors", b'{"W1": {"dtype": '),
        WeightsFormatError,
        r"header is not valid JSON",
    ),
    "safetensors-deeply-nested-json": Hostile(
        _safetensors("nested.safetensors", b'{"W1": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        WeightsFormatError,
        r"header is not valid JSON \(RecursionError",
    ),
    "safetensors-metadata-not-strings": Hostile(
        _safetensors("meta.safetensors", {"__metadata__": {"fastmlp": {"activations": []}}}),
        WeightsFormatError,
        r"__metadata__ is .*; expected an object of strings",
    ),
    "safetensors-bool-bytes-not-0-or-1": Hostile(
        _safetensors(
            "bool.safetensors",
            {"W1": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
            b"\x01\x07",
        ),
        WeightsFormatError,
        r"BOOL tensor 'W1' holds bytes other than 0 and 1",
    ),
    "safetensors-truncated": Hostile(
        _raw("cut.safetensors", _truncated_safetensors),
        WeightsFormatError,
        r"is not a valid safetensors file",
    ),
    "safetensors-read-directly-wrong-start": Hostile(
        _safetensors("start.safetensors", b"[1, 2]"),
        WeightsFormatError,
        r"header starts with '\[1, 2\]'; expected a JSON object",
        read=read_safetensors,
    ),
    "pickle-tuple-key-nested-200000-deep": Hostile(
        # 200 kB without a single global: hashing the key recursed in C until SIGSEGV.
        _raw("deep_key.pkl", lambda f: _nested_tuple_key_pickle(200_000)),
        WeightsFormatError,
        r"nests values more than 100 levels deep",
        crashes=True,
    ),
    "pickle-tuple-key-nested-10000-deep": Hostile(
        # Shallower: a bare RecursionError escaped (from the key's repr in the error message).
        _raw("deeper_key.pkl", lambda f: _nested_tuple_key_pickle(10_000)),
        WeightsFormatError,
        r"nests values more than 100 levels deep",
    ),
    "pickle-self-referencing-list": Hostile(
        # L = []; L.append(L), as pickle writes a cyclic list.
        _raw("cycle.pkl", lambda f: b"\x80\x04]\x94h\x00a."),
        WeightsFormatError,
        r"changes a container after placing it inside another",
    ),
    "pickle-one-byte-string-as-data-of-many-arrays": Hostile(
        _raw("shared_bytes.pkl", _shared_bytes_pickle),
        WeightsFormatError,
        r"arrays would hold more than the file's own \d+ bytes",
    ),
    "torch-data-pkl-tuple-key-nested-200000-deep": Hostile(
        _torch_checkpoint("deep_key.pt", _nested_tuple_key_pickle(200_000), {}),
        WeightsFormatError,
        r"data\.pkl is refused: it nests values more than 100 levels deep",
        crashes=True,
    ),
    "torch-one-storage-rebuilt-as-many-tensors": Hostile(
        # 1 MiB of storage, 40 tensor stand-ins on it: each was a 1 MiB copy.
        _torch_checkpoint(
            "shared_storage.pt", _torch_shared_storage_pickle(40, 2**18), {"0": bytes(2**20)}
        ),
        WeightsFormatError,
        r"the tensors built so far need \d+ bytes, more than the checkpoint's",
    ),
    "npz-two-members-of-one-name": Hostile(
        _npz_duplicate_member,
        WeightsFormatError,
        r"two members for the array 'W1'",
    ),
    "npz-mnist-two-members-of-one-name": Hostile(
        _mnist_npz_duplicate_member,
        DataFormatError,
        r"two members for the array 'x_test'",
        read=load_mnist,
    ),
    "safetensors-header-of-millions-of-tiny-values": Hostile(
        _safetensors_header_of_tiny_values,
        WeightsFormatError,
        r"about 6,000,00\d JSON values, over the limit",
    ),
    "onnx-gemm-alpha-is-a-string": Hostile(
        _onnx_gemm_with_string_alpha,
        WeightsFormatError,
        r"alpha\.onnx.*Gemm.*alpha=b'abc'; expected a finite float",
    ),
    # IDX data files
    "idx-wrong-magic": Hostile(
        _raw("images-idx3-ubyte", lambda f: _idx(b"\x01\x02\x08\x03", (1, 2, 2), bytes(4))),
        DataFormatError,
        r"starts with magic 0x01020803.*not an IDX file",
        read=read_idx,
    ),
    "idx-declares-a-billion-images": Hostile(
        _raw(
            "billion-idx3-ubyte", lambda f: _idx(b"\x00\x00\x08\x03", (10**9, 28, 28), bytes(784))
        ),
        DataFormatError,
        r"truncated: header declares shape \(1000000000, 28, 28\)",
        read=read_idx,
    ),
    "idx-gzip-declares-a-billion-images": Hostile(
        _raw(
            "billion-idx3-ubyte.gz",
            lambda f: gzip.compress(_idx(b"\x00\x00\x08\x03", (10**9, 28, 28), bytes(784))),
        ),
        DataFormatError,
        r"truncated: header declares shape \(1000000000, 28, 28\)",
        read=read_idx,
    ),
    "idx-longer-than-header-says": Hostile(
        _raw("labels-idx1-ubyte", lambda f: _idx(b"\x00\x00\x08\x01", (2,), bytes(5))),
        DataFormatError,
        r"longer than its header says",
        read=read_idx,
    ),
    "idx-header-cut-short": Hostile(
        _raw("short-idx3-ubyte", lambda f: b"\x00\x00\x08\x03\x00\x00\x00"),
        DataFormatError,
        r"truncated inside its header",
        read=read_idx,
    ),
    "idx-float-elements": Hostile(
        _raw("float-idx1-ubyte", lambda f: _idx(b"\x00\x00\x0d\x01", (1,), bytes(4))),
        DataFormatError,
        r"elements of type 0x0d \(float32\); expected 0x08",
        read=read_idx,
    ),
    "idx-gzip-truncated": Hostile(
        _raw(
            "cut-idx1-ubyte.gz",
            lambda f: gzip.compress(_idx(b"\x00\x00\x08\x01", (9,), bytes(9)))[:-6],
        ),
        DataFormatError,
        r"damaged or truncated gzip",
        read=read_idx,
    ),
}


def _cases(selected=lambda case: True):
    return [pytest.param(case, id=name) for name, case in CORPUS.items() if selected(case)]


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 12
    kinds = {name.split("-")[0] for name in CORPUS}
    assert kinds >= {"pickle", "npz", "safetensors", "idx"}


_READ_IN_A_SUBPROCESS = """
import sys, fastmlp
try:
    fastmlp.load(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc, sep="\\n")
"""


@pytest.mark.parametrize("case", _cases(lambda case: case.crashes))
def test_hostile_file_that_could_crash_is_refused_in_a_subprocess(tmp_path, case):
    # Run apart, so that a crash (SIGSEGV) fails this test instead of killing pytest.
    path = case.build(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_SUBPROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the reader died (exit {done.returncode}): {done.stderr[-500:]}"
    kind, _, message = done.stdout.partition("\n")
    assert issubclass(getattr(fastmlp.errors, kind, type(None)), case.error), done.stdout[-500:]
    assert re.search(case.match, message), message
    assert path.name in message, "the message should name the file"


@pytest.mark.parametrize("case", _cases(lambda case: not case.crashes))
def test_hostile_file_is_refused_cleanly(tmp_path, case):
    path = case.build(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(case.error, match=case.match) as raised:
            case.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_ALLOCATION_LIMIT, f"reading allocated {peak} bytes at its peak"
    assert path.name in str(raised.value), "the message should name the file"
    assert not (tmp_path / MARKER).exists(), "the file's payload ran"


@pytest.mark.parametrize(
    "case", _cases(lambda case: case.read is fastmlp.load and not case.crashes)
)
def test_hostile_weights_are_refused_by_read_weights_too(tmp_path, case):
    path = case.build(tmp_path)
    with pytest.raises(case.error, match=case.match):
        read_weights(path)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("case", _cases(lambda case: case.runs_code))
def test_payloads_are_real(tmp_path, case):
    # Proof that the refusals above matter: plain pickle does run these payloads.
    path = case.build(tmp_path)
    result = pickle.loads(path.read_bytes())
    if isinstance(result, subprocess.Popen):
        result.wait(timeout=60)
    assert (tmp_path / MARKER).exists()
