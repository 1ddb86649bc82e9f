"""Saving and loading networks: .npz and .safetensors round trips, metadata, content sniffing,
interoperability with the ``safetensors`` package, and ``load``'s override rules."""

from __future__ import annotations

import json
import os
import zipfile

import fastmlp
import numpy as np
import pytest
from fastmlp._formats import (
    WeightsFile,
    read_weights,
    read_weights_file,
    safetensors,
    torch_checkpoint,
)
from fastmlp._formats.safetensors import read_safetensors, write_safetensors
from fastmlp.errors import WeightsFormatError

FORMATS = ("npz", "safetensors")

# Every dtype the safetensors format and NumPy share, with its on-disk name.
SAFETENSORS_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "I16": np.int16,
    "U16": np.uint16,
    "F16": np.float16,
    "I32": np.int32,
    "U32": np.uint32,
    "F32": np.float32,
    "F64": np.float64,
    "I64": np.int64,
    "U64": np.uint64,
}


def _model(dtype=np.float32, input_scale=None, activations=("relu", "tanh", "softmax")):
    rng = np.random.default_rng(11)
    sizes = [7, 5, 4, 3]
    layers = [
        (
            rng.normal(size=(n_in, n_out)).astype(dtype),
            rng.normal(size=n_out).astype(dtype),
            activation,
        )
        for n_in, n_out, activation in zip(sizes, sizes[1:], activations)
    ]
    return fastmlp.MLP(layers, input_scale=input_scale)


def _weights(model: fastmlp.MLP) -> dict[str, np.ndarray]:
    weights = {}
    for number, (W, b) in enumerate(zip(model.coefs_, model.intercepts_), start=1):
        weights[f"W{number}"], weights[f"b{number}"] = np.array(W), np.array(b)
    return weights


def _tensors_of_every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    tensors = {}
    for name, dtype in SAFETENSORS_DTYPES.items():
        if dtype is np.bool_:
            values = rng.integers(0, 2, size=(2, 3)).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, size=(2, 3), dtype=dtype, endpoint=True)
        else:
            values = rng.normal(size=(2, 3)).astype(dtype)
        tensors[f"t_{name}"] = values
    tensors["scalar"] = np.array(2.5, dtype=np.float64)
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
    tensors["vector"] = np.arange(5, dtype=np.int64)
    return tensors


def _write_safetensors_raw(path, header: dict, data: bytes = b"") -> None:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("input_scale", [None, 1 / 255], ids=["no-scale", "scale"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("format", FORMATS)
def test_save_then_load_gives_the_same_model(tmp_path, format, dtype, input_scale):
    model = _model(dtype, input_scale)
    path = fastmlp.save(model, tmp_path / f"net.{format}")
    loaded = fastmlp.load(path)
    assert loaded == model
    assert loaded.dtype == model.dtype
    assert loaded.activations == model.activations
    assert loaded.input_scale == model.input_scale
    X = np.random.default_rng(2).integers(0, 256, size=(9, 7)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("format", FORMATS)
def test_mlp_save_method_delegates_and_returns_the_path(tmp_path, format):
    model = _model(activations=("sigmoid", "identity", "sigmoid"))
    target = tmp_path / f"net.{format}"
    returned = model.save(str(target))
    assert returned == target
    assert read_weights_file(target).format == format
    assert fastmlp.load(target) == model


@pytest.mark.parametrize("format", FORMATS)
def test_format_argument_wins_over_the_suffix_and_the_name_is_kept(tmp_path, format):
    target = tmp_path / "weights.data"
    fastmlp.save(_model(), str(target), format=format)
    assert [entry.name for entry in tmp_path.iterdir()] == ["weights.data"]  # no suffix added
    assert read_weights_file(target).format == format


def test_format_argument_overrides_a_misleading_suffix(tmp_path):
    target = fastmlp.save(_model(), tmp_path / "net.npz", format="safetensors")
    assert read_weights_file(target).format == "safetensors"


@pytest.mark.parametrize(
    "name, format, message",
    [
        ("net.bin", None, r"\.npz or \.safetensors"),
        ("net", None, r"format=\"npz\" or format=\"safetensors\""),
        ("net.npz", "pickle", r"format is 'pickle'; expected \"npz\" or \"safetensors\""),
    ],
    ids=["unknown-suffix", "no-suffix", "unknown-format"],
)
def test_save_refuses_an_unknown_format(tmp_path, name, format, message):
    with pytest.raises(ValueError, match=message):
        fastmlp.save(_model(), tmp_path / name, format=format)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_something_other_than_an_mlp(tmp_path):
    with pytest.raises(TypeError, match="fastmlp.MLP, got dict"):
        fastmlp.save(_weights(_model()), tmp_path / "net.npz")


def test_saving_over_an_existing_file_replaces_it(tmp_path):
    target = tmp_path / "net.safetensors"
    fastmlp.save(_model(np.float64), target)
    replacement = _model(np.float32, 0.5)
    fastmlp.save(replacement, target)
    assert fastmlp.load(target) == replacement
    assert [entry.name for entry in tmp_path.iterdir()] == ["net.safetensors"]


def test_save_errors_name_the_path_not_a_temporary_file(tmp_path):
    missing = tmp_path / "no_such_folder" / "net.npz"
    with pytest.raises(FileNotFoundError) as raised:
        fastmlp.save(_model(), missing)
    assert raised.value.filename == str(missing)
    folder = tmp_path / "net.npz"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        fastmlp.save(_model(), folder)
    assert raised.value.filename == str(folder)
    assert [entry.name for entry in tmp_path.iterdir()] == ["net.npz"]  # nothing left behind


def test_save_writes_through_a_symbolic_link(tmp_path):
    real = tmp_path / "real.npz"
    fastmlp.save(_model(np.float64), real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    replacement = _model(np.float32, 0.5)
    fastmlp.save(replacement, link)
    assert link.is_symlink() and fastmlp.load(real) == replacement


def test_book_network_survives_safetensors(tmp_path, sample_weights_path):
    book = fastmlp.load(sample_weights_path, input_scale=1 / 255)
    assert fastmlp.load(book.save(tmp_path / "book.safetensors")) == book


# --- what the files hold -----------------------------------------------------------------


def test_npz_metadata_opens_with_plain_numpy_and_no_pickle(tmp_path):
    model = _model(input_scale=0.25)
    path = model.save(tmp_path / "net.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["W1", "W2", "W3", "__fastmlp__", "b1", "b2", "b3"]
        record = archive["__fastmlp__"]
        np.testing.assert_array_equal(archive["W2"], model.coefs_[1])
    assert record.shape == () and record.dtype.kind == "U"
    assert json.loads(str(record)) == {
        "fastmlp": 1,
        "activations": ["relu", "tanh", "softmax"],
        "input_scale": 0.25,
    }


def test_safetensors_metadata_is_a_string_map_the_package_reads(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    model = _model(np.float64)
    path = model.save(tmp_path / "net.safetensors")
    with safetensors.safe_open(str(path), framework="numpy") as file:
        metadata = file.metadata()
        assert sorted(file.keys()) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert set(metadata) == {"fastmlp"}
    assert json.loads(metadata["fastmlp"]) == {
        "fastmlp": 1,
        "activations": ["relu", "tanh", "softmax"],
        "input_scale": None,
    }


def test_read_weights_returns_only_the_arrays(tmp_path):
    model = _model()
    for format in FORMATS:
        weights = read_weights(model.save(tmp_path / f"net.{format}"))
        assert sorted(weights) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        np.testing.assert_array_equal(weights["W3"], model.coefs_[2])


def test_read_weights_file_reports_what_the_file_records(tmp_path):
    model = _model(input_scale=2.0)
    for format in FORMATS:
        file = read_weights_file(model.save(tmp_path / f"net.{format}"))
        assert isinstance(file, WeightsFile)
        assert (file.format, file.activations, file.input_scale) == (
            format,
            ("relu", "tanh", "softmax"),
            2.0,
        )
    np.savez(tmp_path / "plain.npz", **_weights(model))
    plain = read_weights_file(tmp_path / "plain.npz")
    assert (plain.format, plain.activations, plain.input_scale) == ("npz", None, None)


def test_activation_names_are_the_cores():
    from fastmlp import _core
    from fastmlp._common import ACTIVATIONS

    # The core lists the names it knows when it refuses one: the same names, in the same order.
    with pytest.raises(ValueError, match="unknown activation") as refused:
        _core.PackedMLP([np.ones((2, 2))], [np.ones(2)], ["no such activation"], 1.0)
    listed = str(refused.value).split("expected one of ")[1]
    assert tuple(listed.split(", ")) == ACTIVATIONS


# --- content, not names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "saved_as, renamed_to",
    [
        ("net.safetensors", "net.bin"),
        ("net.safetensors", "net"),
        ("net.npz", "net.safetensors"),
        ("net.safetensors", "net.npz"),
        ("net.npz", "net.pkl"),
    ],
)
def test_files_are_recognised_by_content_whatever_their_name(tmp_path, saved_as, renamed_to):
    model = _model(input_scale=0.5)
    saved = model.save(tmp_path / saved_as)
    renamed = saved.rename(tmp_path / renamed_to)
    assert fastmlp.load(renamed) == model
    assert read_weights_file(renamed).format == saved_as.split(".")[-1]


def test_pickle_named_safetensors_is_read_as_a_pickle(tmp_path):
    import pickle

    weights = _weights(_model())
    path = tmp_path / "net.safetensors"
    path.write_bytes(pickle.dumps(weights, protocol=4))
    file = read_weights_file(path)
    assert file.format == "pickle"
    np.testing.assert_array_equal(file.weights["W1"], weights["W1"])


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    # A 128-byte header: the file's first byte is then 0x80, the pickle PROTO opcode.
    header = {
        "W1": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
        "b1": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    }
    text = json.dumps(header).encode().ljust(128)
    path = tmp_path / "net.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + np.ones(2, "<f4").tobytes())
    assert path.read_bytes()[0] == 0x80
    assert read_weights_file(path).format == "safetensors"


def test_unknown_content_names_the_file_and_the_known_formats(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights")
    with pytest.raises(WeightsFormatError) as raised:
        fastmlp.load(path)
    message = str(raised.value)
    assert "notes.txt" in message and "unknown format" in message
    for known in (".npz", ".safetensors", "pickle", "PyTorch", "ONNX"):
        assert known in message


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "nowhere.safetensors")


# --- interoperability with the safetensors package --------------------------------------


def test_our_writer_produces_the_reference_bytes(tmp_path):
    numpy_safetensors = pytest.importorskip("safetensors.numpy")
    tensors = _tensors_of_every_dtype()
    # One metadata key: the reference keeps metadata in a hash map, so the order of several
    # keys changes from run to run.
    metadata = {"note": "ünïcödé"}
    numpy_safetensors.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    write_safetensors(tmp_path / "ours.safetensors", tensors, metadata)
    theirs = (tmp_path / "theirs.safetensors").read_bytes()
    assert (tmp_path / "ours.safetensors").read_bytes() == theirs
    header_size = int.from_bytes(theirs[:8], "little")
    assert header_size % 8 == 0


def test_the_package_reads_what_we_write(tmp_path):
    numpy_safetensors = pytest.importorskip("safetensors.numpy")
    tensors = _tensors_of_every_dtype()
    tensors["big_endian"] = np.arange(6, dtype=">f8").reshape(2, 3)
    tensors["fortran"] = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    write_safetensors(tmp_path / "ours.safetensors", tensors, {"k": "v"})
    loaded = numpy_safetensors.load_file(str(tmp_path / "ours.safetensors"))
    assert loaded.keys() == tensors.keys()
    for name, expected in tensors.items():
        assert loaded[name].shape == expected.shape, name
        assert loaded[name].dtype == expected.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)


def test_we_read_what_the_package_writes(tmp_path):
    numpy_safetensors = pytest.importorskip("safetensors.numpy")
    tensors = _tensors_of_every_dtype()
    numpy_safetensors.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"a": "b"})
    loaded, metadata = read_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"a": "b"}
    assert loaded.keys() == tensors.keys()
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
        assert loaded[name].flags.writeable and loaded[name].flags.owndata


def test_network_saved_by_the_package_loads_with_the_books_defaults(tmp_path):
    numpy_safetensors = pytest.importorskip("safetensors.numpy")
    model = _model(activations=("sigmoid", "sigmoid", "softmax"))
    numpy_safetensors.save_file(_weights(model), str(tmp_path / "net.safetensors"))
    file = read_weights_file(tmp_path / "net.safetensors")
    assert (file.activations, file.input_scale) == (None, None)
    assert fastmlp.load(tmp_path / "net.safetensors") == model


def test_package_written_file_with_our_metadata_keeps_the_activations(tmp_path):
    numpy_safetensors = pytest.importorskip("safetensors.numpy")
    model = _model(np.float64, 0.125)
    record = json.dumps(
        {"fastmlp": 1, "activations": list(model.activations), "input_scale": 0.125}
    )
    numpy_safetensors.save_file(
        _weights(model), str(tmp_path / "net.safetensors"), metadata={"fastmlp": record}
    )
    assert fastmlp.load(tmp_path / "net.safetensors") == model


def test_read_safetensors_round_trips_every_dtype(tmp_path):
    tensors = _tensors_of_every_dtype()
    write_safetensors(tmp_path / "all.safetensors", tensors)
    loaded, metadata = read_safetensors(tmp_path / "all.safetensors")
    assert metadata == {}
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name], expected)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros(2, np.complex64), "dtype complex64"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.array([{}, 1], dtype=object), "dtype object"),
    ],
    ids=["complex", "unicode", "object"],
)
def test_write_safetensors_refuses_dtypes_it_cannot_store(tmp_path, value, message):
    with pytest.raises(TypeError, match=message):
        write_safetensors(tmp_path / "bad.safetensors", {"x": value})
    assert not (tmp_path / "bad.safetensors").exists()


def test_write_safetensors_refuses_bad_names_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="'__metadata__' is not allowed"):
        write_safetensors(tmp_path / "a.safetensors", {"__metadata__": np.zeros(1)})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        write_safetensors(tmp_path / "b.safetensors", {"x": np.zeros(1)}, {"n": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "C64", "Q4"])
def test_read_safetensors_names_a_dtype_it_cannot_read(tmp_path, dtype):
    path = tmp_path / "half.safetensors"
    _write_safetensors_raw(
        path, {"W1": {"dtype": dtype, "shape": [2], "data_offsets": [0, 4]}}, bytes(4)
    )
    with pytest.raises(WeightsFormatError, match=f"half.safetensors.*{dtype}.*supported dtypes"):
        read_safetensors(path)


# --- load's override rules ---------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_explicit_activations_override_the_files(tmp_path, format):
    path = _model().save(tmp_path / f"net.{format}")
    assert fastmlp.load(path, activations=["tanh", "relu", "identity"]).activations == (
        "tanh",
        "relu",
        "identity",
    )
    assert fastmlp.load(path, hidden="sigmoid").activations == ("sigmoid", "sigmoid", "softmax")
    assert fastmlp.load(path, output="identity").activations == ("relu", "tanh", "identity")


@pytest.mark.parametrize("format", FORMATS)
def test_explicit_input_scale_and_dtype_override_the_files(tmp_path, format):
    path = _model(np.float32, 0.5).save(tmp_path / f"net.{format}")
    loaded = fastmlp.load(path, input_scale=0.25, dtype=np.float64)
    assert loaded.input_scale == 0.25
    assert loaded.dtype == np.float64
    assert fastmlp.load(path).input_scale == 0.5


def test_files_without_activations_keep_the_books_defaults(tmp_path):
    weights = _weights(_model())
    np.savez(tmp_path / "plain.npz", **weights)
    write_safetensors(tmp_path / "plain.safetensors", weights)
    for name in ("plain.npz", "plain.safetensors"):
        model = fastmlp.load(tmp_path / name)
        assert model.activations == ("sigmoid", "sigmoid", "softmax")
        assert model.input_scale is None
        assert fastmlp.load(tmp_path / name, output="identity").out_activation_ == "identity"


def test_activations_of_the_wrong_length_are_refused(tmp_path):
    path = _model().save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="activations has 2 names but .*net.npz.* 3 layers"):
        fastmlp.load(path, activations=["relu", "softmax"])


def test_activations_cannot_be_combined_with_hidden_or_output(tmp_path):
    path = _model().save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="either activations= .* or hidden=/output=, not both"):
        fastmlp.load(path, activations=["relu", "relu", "softmax"], output="softmax")


def test_activations_given_as_one_string_are_refused(tmp_path):
    path = _model().save(tmp_path / "net.npz")
    with pytest.raises(TypeError, match="sequence of names"):
        fastmlp.load(path, activations="relu")


def test_unknown_activation_argument_is_refused(tmp_path):
    path = _model().save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fastmlp.load(path, hidden="swish")


def _fake_torch_checkpoint(tmp_path, monkeypatch, n_layers: int):
    """A zip with a data.pkl member, read by a stand-in for the torch engineer's reader."""
    weights = _weights(_model())
    kept = {k: v for k, v in weights.items() if int(k[1:]) <= n_layers}
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("model/version", b"3\n")
    seen = []

    def read(read_path):
        seen.append(read_path)
        return WeightsFile(kept, None, None, "torch")

    monkeypatch.setattr(torch_checkpoint, "read_checkpoint_file", read)
    return path, seen


def test_torch_checkpoint_needs_its_activations_named(tmp_path, monkeypatch):
    path, seen = _fake_torch_checkpoint(tmp_path, monkeypatch, 3)
    with pytest.raises(ValueError, match="PyTorch state_dict.*missing: hidden, output"):
        fastmlp.load(path)
    with pytest.raises(ValueError, match="missing: output"):
        fastmlp.load(path, hidden="relu")
    assert fastmlp.load(path, hidden="relu", output="identity").activations == (
        "relu",
        "relu",
        "identity",
    )
    assert fastmlp.load(path, activations=["tanh", "relu", "softmax"]).activations == (
        "tanh",
        "relu",
        "softmax",
    )
    assert seen and all(str(p) == str(path) for p in seen)  # recognised by its data.pkl


def test_one_layer_torch_checkpoint_needs_only_the_output_activation(tmp_path, monkeypatch):
    path, _ = _fake_torch_checkpoint(tmp_path, monkeypatch, 1)
    assert fastmlp.load(path, output="softmax").activations == ("softmax",)


# --- metadata that cannot be trusted ------------------------------------------------------


def _bad_record(record) -> str:
    return record if isinstance(record, str) else json.dumps(record)


_GOOD = {"fastmlp": 1, "activations": ["relu", "tanh", "softmax"], "input_scale": None}

BAD_METADATA = [
    pytest.param(
        dict(_GOOD, activations=["relu", "swish", "softmax"]),
        "unknown activations \\['swish'\\]",
        id="unknown-activation",
    ),
    pytest.param(
        dict(_GOOD, activations=["relu", "softmax"]),
        "2 activations for 3 layers",
        id="too-few-activations",
    ),
    pytest.param(
        dict(_GOOD, activations="relu"), "expected a list of names", id="activations-not-a-list"
    ),
    pytest.param(
        dict(_GOOD, input_scale=float("nan")), "input_scale nan; expected a finite", id="nan-scale"
    ),
    pytest.param(
        '{"fastmlp": 1, "activations": ["relu", "tanh", "softmax"], "input_scale": 1e999}',
        "input_scale inf",
        id="infinite-scale",
    ),
    pytest.param(dict(_GOOD, input_scale="1/255"), "expected a number or null", id="string-scale"),
    pytest.param(dict(_GOOD, input_scale=True), "expected a number or null", id="bool-scale"),
    pytest.param(
        dict(_GOOD, fastmlp=2), "version 2; this fastmlp reads version 1", id="newer-version"
    ),
    pytest.param({"activations": _GOOD["activations"]}, "version None", id="no-version"),
    pytest.param(["relu"], "expected a JSON object", id="not-an-object"),
    pytest.param("{not json", "not valid JSON", id="not-json"),
]


@pytest.mark.parametrize("record, message", BAD_METADATA)
@pytest.mark.parametrize("format", FORMATS)
def test_invalid_metadata_is_refused_naming_the_file(tmp_path, format, record, message):
    weights = _weights(_model())
    path = tmp_path / f"suspect.{format}"
    if format == "npz":
        np.savez(path, __fastmlp__=np.array(_bad_record(record)), **weights)
    else:
        write_safetensors(path, weights, {"fastmlp": _bad_record(record)})
    with pytest.raises(WeightsFormatError, match=message) as raised:
        fastmlp.load(path)
    assert os.fspath(path) in str(raised.value)


def test_npz_metadata_of_the_wrong_type_is_refused(tmp_path):
    np.savez(tmp_path / "net.npz", __fastmlp__=np.zeros(3), **_weights(_model()))
    with pytest.raises(WeightsFormatError, match="'__fastmlp__' has dtype float64.*0-d unicode"):
        fastmlp.load(tmp_path / "net.npz")


# --- saving never leaves half a file -----------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch, format):
    target = tmp_path / f"net.{format}"
    old = _model(np.float64)
    old.save(target)
    before = target.read_bytes()

    def fail_halfway(file, *args, **kwargs):
        file.write(b"half a file")
        raise OSError("disk full")

    if format == "npz":
        monkeypatch.setattr(np, "savez", fail_halfway)
    else:
        monkeypatch.setattr(safetensors, "dump_safetensors", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        _model(np.float32).save(target)
    assert target.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == [target.name]  # no temporary left
    monkeypatch.undo()
    assert fastmlp.load(target) == old


def test_save_onto_a_folder_fails_and_leaves_nothing(tmp_path):
    (tmp_path / "net.npz").mkdir()
    with pytest.raises(OSError):
        _model().save(tmp_path / "net.npz")
    assert [entry.name for entry in tmp_path.iterdir()] == ["net.npz"]
    assert (tmp_path / "net.npz").is_dir()


# --- a PyTorch state_dict saved as safetensors ---------------------------------------------


def _torch_style_state(rng) -> "dict[str, np.ndarray]":
    # nn.Sequential numbering with more than ten modules: "2" must come before "10".
    sizes = [(7, 5), (5, 4), (4, 3)]
    names = ["0", "2", "10"]
    state = {}
    for name, (n_in, n_out) in zip(names, sizes):
        state[f"{name}.weight"] = rng.standard_normal((n_out, n_in)).astype(np.float32)
        state[f"{name}.bias"] = rng.standard_normal(n_out).astype(np.float32)
    return state


def test_torch_state_dict_in_safetensors_loads_in_forward_order(tmp_path):
    rng = np.random.default_rng(11)
    state = _torch_style_state(rng)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, state)
    model = fastmlp.load(path, hidden="relu", output="softmax")
    X = rng.standard_normal((6, 7)).astype(np.float32)
    h = X.astype(np.float64)
    for name, activation in (("0", "relu"), ("2", "relu"), ("10", "softmax")):
        h = h @ state[f"{name}.weight"].T.astype(np.float64) + state[f"{name}.bias"]
        h = np.maximum(h, 0) if activation == "relu" else fastmlp.reference.softmax(h)
    np.testing.assert_allclose(model.predict_proba(X), h, rtol=1e-5, atol=1e-6)
    assert read_weights_file(path).format == "torch"


def test_torch_state_dict_in_safetensors_needs_its_activations(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, _torch_style_state(np.random.default_rng(12)))
    with pytest.raises(ValueError, match="PyTorch state_dict, which records no activations"):
        fastmlp.load(path)


def test_torch_state_dict_in_safetensors_that_does_not_chain_is_refused(tmp_path):
    state = _torch_style_state(np.random.default_rng(13))
    state["2.weight"] = state["2.weight"][:, :3]  # expects 3 inputs, layer 0 gives 5
    path = tmp_path / "model.safetensors"
    write_safetensors(path, state)
    with pytest.raises(WeightsFormatError, match="chain|inputs|features"):
        fastmlp.load(path, hidden="relu", output="softmax")


def test_torch_state_dict_with_fc_numbering_loads_in_forward_order(tmp_path):
    rng = np.random.default_rng(14)
    state = {
        "fc10.weight": rng.standard_normal((2, 3)).astype(np.float32),  # the last layer
        "fc10.bias": np.zeros(2, np.float32),
        "fc2.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "fc2.bias": np.zeros(3, np.float32),
    }
    path = tmp_path / "model.safetensors"
    write_safetensors(path, state)
    model = fastmlp.load(path, hidden="relu", output="identity")
    assert [W.shape for W in model.coefs_] == [(4, 3), (3, 2)]
    np.testing.assert_array_equal(model.coefs_[1], state["fc10.weight"].T)


def test_torch_state_dict_with_named_layers_is_refused_not_guessed(tmp_path):
    # "hidden" sorts before "input": any order taken from these names would be a guess, and
    # with square layers a wrong guess still chains, silently giving wrong outputs.
    rng = np.random.default_rng(15)
    state = {}
    for name, shape in (("input", (4, 4)), ("hidden", (4, 4)), ("output", (2, 4))):
        state[f"{name}.weight"] = rng.standard_normal(shape).astype(np.float32)
        state[f"{name}.bias"] = np.zeros(shape[0], np.float32)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, state)
    with pytest.raises(WeightsFormatError, match="'hidden' and 'input' are not numbered"):
        fastmlp.load(path, hidden="relu", output="identity")


def test_torch_state_dict_with_a_batchnorm_names_it(tmp_path):
    state = {
        "0.weight": np.ones((3, 4), np.float32),
        "0.bias": np.zeros(3, np.float32),
        "1.running_mean": np.zeros(3, np.float32),
    }
    path = tmp_path / "bn.safetensors"
    write_safetensors(path, state)
    with pytest.raises(WeightsFormatError, match=r"bn\.safetensors.*running_mean.*BatchNorm"):
        fastmlp.load(path, hidden="relu", output="identity")


def test_state_dict_of_a_single_linear_loads(tmp_path):
    path = tmp_path / "linear.safetensors"
    write_safetensors(
        path, {"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    )
    model = fastmlp.load(path, output="softmax")
    assert model.coefs_[0].shape == (3, 2)
