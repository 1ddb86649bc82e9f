"""PyTorch checkpoints read without torch, hostile checkpoints, and ``from_torch``.

The checkpoint tests run everywhere: they read ``tests/fixtures/tiny_mlp_*`` (written once by
``tests/fixtures/make_torch_checkpoint.py``) with NumPy alone and compare with the outputs
torch computed then. Hostile files are the fixture with one member replaced: ``data.pkl``
re-assembled opcode by opcode (the assembler is checked to rebuild the fixture exactly) or a
storage cut short. ``from_torch`` tests need torch and skip where it is missing (CI).
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Dict, Optional

import fastmlp
import numpy as np
import pytest
from fastmlp._formats import limits
from fastmlp._formats.torch_checkpoint import read_torch_state_dict, state_dict_to_weights
from fastmlp.errors import UnsafePickleError, WeightsFormatError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINT = FIXTURES / "tiny_mlp_state_dict.pt"
CHECKPOINT_F64 = FIXTURES / "tiny_mlp_f64_state_dict.pt"
EXPECTED = FIXTURES / "tiny_mlp_expected.npz"
PREFIX = "tiny_mlp_state_dict/"  # torch names the archive folder after the file
ACTIVATIONS = ["sigmoid", "tanh", "softmax"]  # the fixture's Sigmoid, Tanh, Softmax


@pytest.fixture(scope="module")
def expected() -> Dict[str, np.ndarray]:
    with np.load(EXPECTED) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def torch_state(expected) -> Dict[str, np.ndarray]:
    """The float32 tensors torch saved, by state_dict key, in file order."""
    return {key: value for key, value in expected.items() if "." in key}


# --- a data.pkl assembler (protocol 2, the opcodes torch.save writes) -----------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _call(function: bytes, *args: bytes) -> bytes:
    return function + _tuple(*args) + b"R"


EMPTY_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"


def _storage(key: str, numel: int, storage_type: str = "FloatStorage") -> bytes:
    pid = _tuple(
        _str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)
    )
    return pid + b"Q"  # BINPERSID


def _tensor(storage: bytes, offset: int, size, stride, *, hooks: bytes = EMPTY_ORDERED_DICT):
    return _call(
        _global("torch._utils", "_rebuild_tensor_v2"),
        storage,
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",  # requires_grad=False
        hooks,
    )


def _contiguous(key: str, shape, storage_type: str = "FloatStorage") -> bytes:
    numel = int(np.prod(shape))
    strides = [int(np.prod(shape[axis + 1 :])) for axis in range(len(shape))]
    return _tensor(_storage(key, numel, storage_type), 0, shape, strides)


def _state_dict(items, *, build: Optional[bytes] = None) -> bytes:
    body = b"".join(_str(key) + value for key, value in items)
    tail = b"" if build is None else build + b"b"  # BUILD
    return b"\x80\x02" + EMPTY_ORDERED_DICT + b"(" + body + b"u" + tail + b"."


def _fixture_items(torch_state) -> list:
    """data.pkl's items for the fixture: tensor i lives in storage str(i), contiguous."""
    return [
        (key, _contiguous(str(index), value.shape))
        for index, (key, value) in enumerate(torch_state.items())
    ]


def _edited_fixture(
    tmp_path: Path, replace: Dict[str, Optional[bytes]], source: Path = CHECKPOINT
) -> Path:
    """The fixture with members replaced (bytes), removed (None) or added (new names)."""
    path = tmp_path / "edited.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as edited:
        for name in original.namelist():
            if name not in replace:
                edited.writestr(name, original.read(name))
        for name, content in replace.items():
            if content is not None:
                edited.writestr(name, content)
    return path


def _with_pickle(tmp_path: Path, content: bytes) -> Path:
    return _edited_fixture(tmp_path, {PREFIX + "data.pkl": content})


# --- the fixture, read without torch --------------------------------------------------------


def test_reader_returns_the_tensors_torch_saved(torch_state):
    state = read_torch_state_dict(CHECKPOINT)
    assert list(state) == list(torch_state)  # file order
    for key, array in state.items():
        assert array.dtype == np.float32 and array.flags.c_contiguous
        np.testing.assert_array_equal(array, torch_state[key])


def test_reader_reads_the_float64_fixture(torch_state):
    state = read_torch_state_dict(CHECKPOINT_F64)
    assert list(state) == list(torch_state)
    for key, array in state.items():
        assert array.dtype == np.float64
        np.testing.assert_array_equal(array, torch_state[key].astype(np.float64))


def test_state_dict_to_weights_transposes_linear_weights(torch_state):
    weights = state_dict_to_weights(read_torch_state_dict(CHECKPOINT))
    assert list(weights) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for number, prefix in enumerate(["1", "3", "5"], start=1):
        np.testing.assert_array_equal(weights[f"W{number}"], torch_state[f"{prefix}.weight"].T)
        np.testing.assert_array_equal(weights[f"b{number}"], torch_state[f"{prefix}.bias"])
        assert weights[f"W{number}"].flags.c_contiguous


def test_from_torch_checkpoint_matches_torch_output(expected):
    model = fastmlp.from_torch_checkpoint(CHECKPOINT, activations=ACTIVATIONS)
    assert model.dtype == np.float32 and model.activations == tuple(ACTIVATIONS)
    np.testing.assert_allclose(model.predict_proba(expected["X"]), expected["proba"], atol=1e-5)


def test_from_torch_checkpoint_float64_matches_torch_output(expected):
    model = fastmlp.from_torch_checkpoint(CHECKPOINT_F64, activations=ACTIVATIONS)
    assert model.dtype == np.float64
    X = expected["X"].astype(np.float64)
    np.testing.assert_allclose(model.predict_proba(X), expected["proba_f64"], atol=1e-12)


def test_hidden_and_output_name_the_same_activations_as_a_list():
    by_list = fastmlp.from_torch_checkpoint(CHECKPOINT, activations=["relu", "relu", "softmax"])
    by_name = fastmlp.from_torch_checkpoint(CHECKPOINT, hidden="relu", output="softmax")
    assert by_list == by_name and by_name.activations == ("relu", "relu", "softmax")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "does not record its activations"),
        ({"hidden": "relu"}, "does not record its activations"),
        ({"output": "softmax"}, "does not record its activations"),
        ({"activations": ["relu", "softmax"]}, "has 2 entries but the checkpoint has 3"),
        ({"activations": ACTIVATIONS, "output": "softmax"}, "not both"),
    ],
)
def test_from_torch_checkpoint_needs_the_activations_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastmlp.from_torch_checkpoint(CHECKPOINT, **kwargs)


def test_from_torch_checkpoint_passes_input_scale_and_dtype(expected):
    model = fastmlp.from_torch_checkpoint(
        CHECKPOINT, activations=ACTIVATIONS, input_scale=0.5, dtype=np.float64
    )
    assert model.dtype == np.float64 and model.input_scale == 0.5
    unscaled = fastmlp.from_torch_checkpoint(CHECKPOINT, activations=ACTIVATIONS)
    X = expected["X"]
    np.testing.assert_allclose(model.predict_proba(X), unscaled.predict_proba(X * 0.5), atol=1e-6)


def test_fastmlp_load_reads_torch_checkpoints(expected):
    assert fastmlp._formats.read_weights_file(CHECKPOINT).format == "torch"
    model = fastmlp.load(CHECKPOINT, activations=ACTIVATIONS)
    np.testing.assert_allclose(model.predict_proba(expected["X"]), expected["proba"], atol=1e-5)
    by_name = fastmlp.load(CHECKPOINT, hidden="sigmoid", output="softmax")
    assert by_name == fastmlp.from_torch_checkpoint(CHECKPOINT, hidden="sigmoid", output="softmax")
    with pytest.raises(ValueError, match="activations"):
        fastmlp.load(CHECKPOINT)


# --- state_dict_to_weights on its own --------------------------------------------------------


def _linear(out_features: int, in_features: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(out_features, in_features))


def test_a_linear_without_bias_gets_a_zero_bias():
    weights = state_dict_to_weights(
        {"0.weight": _linear(3, 4), "0.bias": np.ones(3), "2.weight": _linear(2, 3)}
    )
    assert weights["b2"].shape == (2,) and not weights["b2"].any()
    assert weights["W2"].shape == (3, 2)


def test_a_bare_linear_state_dict_has_keys_without_prefix():
    W = _linear(3, 4)
    weights = state_dict_to_weights({"weight": W, "bias": np.zeros(3)})
    np.testing.assert_array_equal(weights["W1"], W.T)


def test_state_dict_to_weights_leaves_its_input_alone():
    state = {"0.weight": _linear(3, 4), "0.bias": np.arange(3.0)}
    originals = {key: value.copy() for key, value in state.items()}
    weights = state_dict_to_weights(state)
    weights["W1"][...] = 0
    weights["b1"][...] = 0
    for key, value in state.items():
        np.testing.assert_array_equal(value, originals[key])


@pytest.mark.parametrize(
    "state, message",
    [
        ({}, "empty"),
        (
            {"0.weight": _linear(3, 4), "1.running_mean": np.zeros(3)},
            "'1.running_mean' is not a Linear layer's weight or bias; only Linear layers",
        ),
        ({"0.weight": np.ones(4), "0.bias": np.ones(4)}, "'0.weight' has shape \\(4,\\)"),
        ({"0.weight": _linear(3, 4), "0.bias": np.ones(4)}, "expected a bias of shape \\(3,\\)"),
        ({"0.bias": np.ones(3)}, "no matching '0.weight'"),
        ({"0.weight": _linear(3, 4), "1.weight": _linear(2, 5)}, "do not chain"),
        ({"0.weight": np.ones((3, 4), dtype=np.int64)}, "floating-point"),
    ],
)
def test_state_dict_to_weights_refuses_what_is_not_linear_layers(state, message):
    with pytest.raises(WeightsFormatError, match=message):
        state_dict_to_weights(state)


def test_checkpoint_with_batchnorm_is_refused_naming_the_key(tmp_path, torch_state):
    items = _fixture_items(torch_state)
    items.insert(2, ("2.running_mean", _contiguous("1", (7,))))
    path = _with_pickle(tmp_path, _state_dict(items))
    with pytest.raises(WeightsFormatError, match="'2.running_mean'.*only Linear layers"):
        fastmlp.from_torch_checkpoint(path, activations=ACTIVATIONS)


# --- files the assembler builds: valid variants ----------------------------------------------


def test_assembled_pickle_rebuilds_the_fixture(tmp_path, torch_state):
    # The hostile files below differ from this one in one thing each.
    path = _with_pickle(tmp_path, _state_dict(_fixture_items(torch_state)))
    state = read_torch_state_dict(path)
    assert list(state) == list(torch_state)
    for key, value in torch_state.items():
        np.testing.assert_array_equal(state[key], value)


def test_metadata_attribute_set_by_build_is_ignored(tmp_path, torch_state):
    metadata = b"}" + _str("_metadata") + EMPTY_ORDERED_DICT + b"s"  # {"_metadata": OD()}
    path = _with_pickle(tmp_path, _state_dict(_fixture_items(torch_state), build=metadata))
    assert list(read_torch_state_dict(path)) == list(torch_state)


def test_views_sharing_one_storage_are_sliced_by_offset_and_stride(tmp_path, torch_state):
    # Storage "0" holds 1.weight's 84 floats: read a transposed view and a strided slice.
    flat = torch_state["1.weight"].ravel()
    items = [
        ("transposed", _tensor(_storage("0", 84), 0, (12, 7), (1, 12))),
        ("every_third", _tensor(_storage("0", 84), 5, (4,), (3,))),
        ("scalar", _tensor(_storage("0", 84), 83, (), ())),
        ("empty", _tensor(_storage("0", 84), 84, (0, 3), (3, 1))),
    ]
    state = read_torch_state_dict(_with_pickle(tmp_path, _state_dict(items)))
    np.testing.assert_array_equal(state["transposed"], flat.reshape(7, 12).T)
    np.testing.assert_array_equal(state["every_third"], flat[5:15:3])
    assert state["scalar"].shape == () and state["scalar"] == flat[83]
    assert state["empty"].shape == (0, 3)
    assert all(array.flags.c_contiguous and array.flags.owndata for array in state.values())


def test_parameters_saved_with_keep_vars_are_read(tmp_path, torch_state):
    items = [
        (
            key,
            _call(
                _global("torch._utils", "_rebuild_parameter"), tensor, b"\x88", EMPTY_ORDERED_DICT
            ),
        )
        for key, tensor in _fixture_items(torch_state)
    ]
    state = read_torch_state_dict(_with_pickle(tmp_path, _state_dict(items)))
    np.testing.assert_array_equal(state["5.bias"], torch_state["5.bias"])


def test_big_endian_checkpoints_are_read(tmp_path, torch_state):
    replace: Dict[str, Optional[bytes]] = {PREFIX + "byteorder": b"big"}
    for index, value in enumerate(torch_state.values()):
        replace[f"{PREFIX}data/{index}"] = value.astype(">f4").tobytes()
    state = read_torch_state_dict(_edited_fixture(tmp_path, replace))
    for key, value in torch_state.items():
        assert state[key].dtype.isnative
        np.testing.assert_array_equal(state[key], value)


@pytest.mark.parametrize(
    "storage_type, dtype",
    [
        ("DoubleStorage", "<f8"),
        ("HalfStorage", "<f2"),
        ("LongStorage", "<i8"),
        ("ByteStorage", "u1"),
    ],
)
def test_storage_types_map_to_numpy_dtypes(tmp_path, storage_type, dtype):
    values = np.arange(6).astype(dtype)
    items = [("x", _contiguous("9", (2, 3), storage_type))]
    path = _edited_fixture(
        tmp_path, {PREFIX + "data.pkl": _state_dict(items), PREFIX + "data/9": values.tobytes()}
    )
    array = read_torch_state_dict(path)["x"]
    assert array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(array, values.reshape(2, 3))


# --- hostile and broken checkpoints ---------------------------------------------------------


def _os_system(command: str) -> bytes:
    return _call(_global("os", "system"), _str(command))


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"\x80\x02" + _os_system(f"touch {marker}") + b"."
    path = _with_pickle(tmp_path, payload)
    with pytest.raises(UnsafePickleError, match="refused to load os.system"):
        read_torch_state_dict(path)
    with pytest.raises(UnsafePickleError, match="os.system"):
        fastmlp.from_torch_checkpoint(path, activations=ACTIVATIONS)
    if hasattr(fastmlp._formats, "read_weights_file"):
        with pytest.raises(UnsafePickleError, match="os.system"):
            fastmlp.load(path, activations=ACTIVATIONS)
    assert not marker.exists()
    # The payload is live: plain pickle runs it (in a child, as torch.load(weights_only=False)).
    code = f"import pickle; pickle.loads({payload!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert marker.exists()


def test_payload_hidden_after_valid_tensors_is_refused(tmp_path, torch_state):
    marker = tmp_path / "pwned"
    items = _fixture_items(torch_state) + [("6.weight", _os_system(f"touch {marker}"))]
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_torch_state_dict(_with_pickle(tmp_path, _state_dict(items)))
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("fastmlp_test_module_that_does_not_exist", "anything"),
    ],
)
def test_every_other_global_is_refused_before_import(tmp_path, module, name):
    path = _with_pickle(tmp_path, b"\x80\x02" + _call(_global(module, name)) + b".")
    with pytest.raises(UnsafePickleError, match=f"refused to load {module}.{name}"):
        read_torch_state_dict(path)
    assert "fastmlp_test_module_that_does_not_exist" not in sys.modules


def test_bfloat16_is_refused_clearly(tmp_path):
    items = [("0.weight", _contiguous("0", (2, 2), "BFloat16Storage"))]
    with pytest.raises(WeightsFormatError, match="bfloat16.*model.float\\(\\)"):
        read_torch_state_dict(_with_pickle(tmp_path, _state_dict(items)))


@pytest.mark.parametrize(
    "pid",
    [
        _tuple(_str("module"), _global("torch", "FloatStorage"), _str("0"), _str("cpu"), _int(84)),
        _tuple(_str("storage"), _str("FloatStorage"), _str("0"), _str("cpu"), _int(84)),
        _tuple(_str("storage"), _global("torch", "FloatStorage"), _str("0"), _str("cpu")),
        _str("storage"),
    ],
    ids=["not-storage", "type-not-a-global", "four-fields", "a-str"],
)
def test_malformed_persistent_ids_are_refused(tmp_path, pid):
    tensor = _tensor(pid + b"Q", 0, (7, 12), (12, 1))
    with pytest.raises(UnsafePickleError, match="refused persistent id"):
        read_torch_state_dict(_with_pickle(tmp_path, _state_dict([("1.weight", tensor)])))


def test_missing_storage_member_is_refused(tmp_path):
    path = _edited_fixture(tmp_path, {PREFIX + "data/2": None})
    with pytest.raises(WeightsFormatError, match="lacks the member 'tiny_mlp_state_dict/data/2'"):
        read_torch_state_dict(path)


def test_storage_shorter_than_numel_is_refused(tmp_path, torch_state):
    short = torch_state["1.weight"].tobytes()[:-4]
    path = _edited_fixture(tmp_path, {PREFIX + "data/0": short})
    with pytest.raises(WeightsFormatError, match="holds 332 bytes but data.pkl declares 84"):
        read_torch_state_dict(path)


@pytest.mark.parametrize(
    "offset, size, stride, message",
    [
        (1, (7, 12), (12, 1), "reaches element 84, outside the storage"),
        (0, (7, 12), (13, 1), "reaches element 89, outside the storage"),
        (0, (85,), (1,), "reaches element 84, outside the storage"),
        (85, (0,), (1,), "offset lies outside the storage"),
        (0, (100, 100), (0, 0), "more than its storage holds"),
        (0, (7, 12), (12, -1), "non-negative int"),
        (-1, (7, 12), (12, 1), "non-negative int"),
        (0, (7, 12), (12,), "one stride per dimension"),
        (0, (2**40, 2**40), (1, 1), "outside the storage"),
    ],
)
def test_tensor_reaching_outside_its_storage_is_refused(tmp_path, offset, size, stride, message):
    tensor = _tensor(_storage("0", 84), offset, size, stride)
    path = _with_pickle(tmp_path, _state_dict([("1.weight", tensor)]))
    with pytest.raises(WeightsFormatError, match=message) as caught:
        read_torch_state_dict(path)
    assert str(path) in str(caught.value)


def test_huge_declared_numel_is_refused_without_allocating(tmp_path):
    tensor = _tensor(_storage("0", 2**61), 0, (2**30, 2**31), (2**31, 1))
    path = _with_pickle(tmp_path, _state_dict([("1.weight", tensor)]))
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFormatError, match="holds 336 bytes but data.pkl declares"):
            read_torch_state_dict(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


@pytest.mark.parametrize(
    "content, found",
    [
        (b"\x80\x02]" + _contiguous("0", (7, 12)) + b"a.", "list"),  # [tensor]
        (b"\x80\x02J\x05\x00\x00\x00.", "int"),
        (b"\x80\x02" + _contiguous("0", (7, 12)) + b".", "Tensor"),
    ],
)
def test_non_dict_pickles_are_refused(tmp_path, content, found):
    with pytest.raises(UnsafePickleError, match=f"holds a {found}; expected a state_dict"):
        read_torch_state_dict(_with_pickle(tmp_path, content))


@pytest.mark.parametrize(
    "value, found",
    [(_str("text"), "str"), (_int(3), "int"), (_storage("0", 84), "Storage")],
)
def test_non_tensor_values_are_refused(tmp_path, value, found):
    path = _with_pickle(tmp_path, _state_dict([("1.weight", value)]))
    with pytest.raises(UnsafePickleError, match=f"'1.weight' is a {found}, not a tensor"):
        read_torch_state_dict(path)


def test_tampering_with_build_is_refused(tmp_path, torch_state):
    # BUILD on the dict with anything but _metadata, and BUILD on a rebuilt tensor.
    attributes = b"}" + _str("__class__") + _int(1) + b"s"
    path = _with_pickle(tmp_path, _state_dict(_fixture_items(torch_state), build=attributes))
    with pytest.raises(UnsafePickleError, match="refused to set attributes"):
        read_torch_state_dict(path)
    tensor = _contiguous("0", (7, 12)) + b"}" + _str("array") + _int(1) + b"sb"
    path = _with_pickle(tmp_path, _state_dict([("1.weight", tensor)]))
    with pytest.raises(UnsafePickleError, match="refused to set state"):
        read_torch_state_dict(path)


def test_hooks_on_a_tensor_are_refused(tmp_path):
    hooks = b"}" + _str("hook") + _int(1) + b"s"
    tensor = _tensor(_storage("0", 84), 0, (7, 12), (12, 1), hooks=hooks)
    with pytest.raises(UnsafePickleError, match="backward hooks"):
        read_torch_state_dict(_with_pickle(tmp_path, _state_dict([("1.weight", tensor)])))


@pytest.mark.parametrize(
    "content",
    [
        b"\x80\x02" + _call(_global("torch", "FloatStorage")) + b".",  # calls a storage type
        _state_dict([("1.weight", _contiguous("0", (7, 12)))])[:-20],  # truncated
        b"",
        b"not a pickle at all",
    ],
    ids=["storage-type-called", "truncated", "empty", "garbage"],
)
def test_damaged_pickles_raise_weights_format_error(tmp_path, content):
    with pytest.raises(WeightsFormatError, match="data.pkl is damaged"):
        read_torch_state_dict(_with_pickle(tmp_path, content))


def test_two_data_pkl_members_are_refused(tmp_path):
    path = _edited_fixture(tmp_path, {"other/data.pkl": CHECKPOINT.read_bytes()[:10]})
    with pytest.raises(WeightsFormatError, match="2 members"):
        read_torch_state_dict(path)


def test_bad_byteorder_is_refused(tmp_path):
    path = _edited_fixture(tmp_path, {PREFIX + "byteorder": b"middle"})
    with pytest.raises(WeightsFormatError, match="expected b'little' or b'big'"):
        read_torch_state_dict(path)


def test_declared_sizes_beyond_the_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "CHECKPOINT_MAX_BYTES", 500)
    with pytest.raises(WeightsFormatError, match="possible zip bomb"):
        read_torch_state_dict(CHECKPOINT)


def test_highly_compressed_member_is_refused_as_a_zip_bomb(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(CHECKPOINT) as original, zipfile.ZipFile(path, "w") as bomb:
        for name in original.namelist():
            bomb.writestr(name, original.read(name))
        bomb.writestr(PREFIX + "data/9", bytes(2**22), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(WeightsFormatError, match="possible zip bomb"):
        read_torch_state_dict(path)


def test_files_that_are_not_torch_checkpoints_are_refused(tmp_path):
    not_zip = tmp_path / "model.pt"
    not_zip.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsFormatError, match="not a zip archive"):
        read_torch_state_dict(not_zip)
    npz = tmp_path / "weights.npz"
    np.savez(npz, W1=np.ones((2, 2)))
    with pytest.raises(WeightsFormatError, match="no member named '<archive>/data.pkl'"):
        read_torch_state_dict(npz)
    with pytest.raises(FileNotFoundError):
        read_torch_state_dict(tmp_path / "missing.pt")


def test_importing_fastmlp_and_rejecting_non_modules_never_imports_torch():
    code = (
        "import sys, fastmlp\n"
        "try:\n"
        "    fastmlp.from_torch([[1.0]])\n"
        "except TypeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no TypeError')\n"
        "fastmlp.from_torch_checkpoint(sys.argv[1], hidden='relu', output='softmax')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(CHECKPOINT)], check=True)


# --- from_torch: needs torch (skips in CI) --------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="from_torch needs PyTorch, not installed in CI")


def _torch_output(torch, model, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def test_from_torch_matches_torch_on_the_fixture_architecture(torch, expected):
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 7), nn.Sigmoid(), nn.Linear(7, 5), nn.Tanh(),
        nn.Linear(5, 3), nn.Softmax(dim=-1),
    )  # fmt: skip
    converted = fastmlp.from_torch(model)
    assert converted.activations == ("sigmoid", "tanh", "softmax")
    assert converted.dtype == np.float32
    X = expected["X"]
    np.testing.assert_allclose(
        converted.predict_proba(X), _torch_output(torch, model, X), atol=1e-5
    )


def test_from_torch_flattens_nested_sequentials_and_skips_identity(torch):
    nn = torch.nn
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(6, 8), nn.ReLU()),
        nn.Identity(),
        nn.Sequential(nn.Sequential(nn.Linear(8, 4, bias=False)), nn.Identity()),
        nn.Linear(4, 2),
        nn.Softmax(dim=1),
    ).double()
    converted = fastmlp.from_torch(model)
    assert converted.activations == ("relu", "identity", "softmax")
    assert converted.dtype == np.float64
    assert not converted.intercepts_[1].any()
    X = np.random.default_rng(0).normal(size=(9, 6))
    np.testing.assert_allclose(
        converted.predict_proba(X), _torch_output(torch, model, X), atol=1e-12
    )


def test_from_torch_accepts_a_lone_linear_and_leaves_the_module_alone(torch):
    torch.manual_seed(3)
    linear = torch.nn.Linear(3, 2)
    before = {key: value.clone() for key, value in linear.state_dict().items()}
    converted = fastmlp.from_torch(linear)
    assert converted.activations == ("identity",)
    for key, value in linear.state_dict().items():
        assert torch.equal(value, before[key])
    X = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        converted.predict_proba(X), _torch_output(torch, linear, X), atol=1e-6
    )


def test_from_torch_equals_from_torch_checkpoint_of_its_state_dict(torch, tmp_path):
    nn = torch.nn
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3, bias=False), nn.Tanh())
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    from_file = fastmlp.from_torch_checkpoint(path, hidden="relu", output="tanh")
    assert from_file == fastmlp.from_torch(model)
    torch.save(model.state_dict(keep_vars=True), tmp_path / "vars.pt")
    assert (
        fastmlp.from_torch_checkpoint(tmp_path / "vars.pt", hidden="relu", output="tanh")
        == from_file
    )


def test_real_torch_checkpoint_variants_are_read(torch, tmp_path):
    nn = torch.nn
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3))
    torch.save(model.half().state_dict(), tmp_path / "half.pt")
    state = read_torch_state_dict(tmp_path / "half.pt")
    assert state["0.weight"].dtype == np.float16
    np.testing.assert_array_equal(state["0.weight"], model.state_dict()["0.weight"].numpy())
    torch.save(model.bfloat16().state_dict(), tmp_path / "bf16.pt")
    with pytest.raises(WeightsFormatError, match="bfloat16"):
        read_torch_state_dict(tmp_path / "bf16.pt")
    # A plain dict of tensors, some of them views into a shared storage, as torch.save keeps.
    base = torch.arange(24, dtype=torch.float32)
    torch.save({"a": base.view(4, 6).t(), "b": base[3:9:2]}, tmp_path / "views.pt")
    views = read_torch_state_dict(tmp_path / "views.pt")
    np.testing.assert_array_equal(views["a"], base.view(4, 6).t().numpy())
    np.testing.assert_array_equal(views["b"], base[3:9:2].numpy())
    # BatchNorm: refused by name.
    with_bn = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    torch.save(with_bn.state_dict(), tmp_path / "bn.pt")
    with pytest.raises(WeightsFormatError, match="'1.running_mean'.*only Linear layers"):
        fastmlp.from_torch_checkpoint(tmp_path / "bn.pt", hidden="relu", output="identity")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda nn: [nn.Linear(4, 3), nn.Dropout(0.1)], "unsupported module Dropout at index 1"),
        (lambda nn: [nn.Linear(4, 3), nn.GELU()], "unsupported module GELU at index 1"),
        (
            lambda nn: [nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))],
            "unsupported module BatchNorm1d at index 0.1",
        ),
        (lambda nn: [nn.Linear(4, 3), nn.Softmax(dim=0)], "Softmax\\(dim=0\\) is not supported"),
        (
            lambda nn: [nn.Linear(4, 3), nn.Softmax(dim=-1), nn.Linear(3, 2)],
            "Softmax is supported only as the last module",
        ),
        (lambda nn: [nn.ReLU(), nn.Linear(4, 3)], "activation before any Linear"),
        (lambda nn: [nn.Linear(4, 3), nn.ReLU(), nn.Tanh()], "follows another activation"),
        (lambda nn: [nn.Linear(4, 3), nn.Flatten()], "Flatten is supported only before"),
        (lambda nn: [nn.Flatten(start_dim=2), nn.Linear(4, 3)], "Flatten\\(start_dim=2"),
        (lambda nn: [nn.Flatten()], "has no Linear layer"),
    ],
)
def test_from_torch_refuses_unsupported_modules_by_name_and_index(torch, build, message):
    with pytest.raises(ValueError, match=message):
        fastmlp.from_torch(torch.nn.Sequential(*build(torch.nn)))


def test_from_torch_refuses_custom_forwards_and_non_modules(torch):
    nn = torch.nn

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match="unsupported module Doubled at index 0"):
        fastmlp.from_torch(nn.Sequential(Doubled(3, 2)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)

        def forward(self, x):
            return self.layer(x)

    with pytest.raises(TypeError, match="got a Net"):
        fastmlp.from_torch(Net())
    with pytest.raises(TypeError, match="expects a torch.nn.Sequential"):
        fastmlp.from_torch(np.ones((3, 2)))


def test_from_torch_refuses_bfloat16_weights(torch):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).bfloat16()
    with pytest.raises(TypeError, match="bfloat16.*model.float\\(\\)"):
        fastmlp.from_torch(model)
