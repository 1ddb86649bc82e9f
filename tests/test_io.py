"""Reading weights: the book's pickle, .npz archives, and hostile or broken files."""

from __future__ import annotations

import builtins
import os
import pathlib
import pickle
import stat
import subprocess
import warnings

import fastmlp
import numpy as np
import pytest
from fastmlp._formats import read_weights, save_npz
from fastmlp.errors import UnsafePickleError, WeightsFormatError

EXPECTED_SHAPES = {
    "W1": (784, 50),
    "b1": (50,),
    "W2": (50, 100),
    "b2": (100,),
    "W3": (100, 10),
    "b3": (10,),
}


def _small_weights(dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "W1": rng.normal(size=(6, 4)).astype(dtype),
        "b1": rng.normal(size=4).astype(dtype),
        "W2": rng.normal(size=(4, 3)).astype(dtype),
        "b2": rng.normal(size=3).astype(dtype),
    }


def _write_pickle(path: pathlib.Path, obj, protocol: int = 3) -> pathlib.Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _Payload:
    """Pickles to a call of ``function(*args)``: what a hostile weights file would contain."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


# --- the book's file ---------------------------------------------------------------------


def test_sample_weights_load_as_six_float32_arrays(sample_weights_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core DeprecationWarning under numpy 2
        weights = read_weights(sample_weights_path)
    assert {key: value.shape for key, value in weights.items()} == EXPECTED_SHAPES
    assert all(value.dtype == np.float32 for value in weights.values())


def test_sample_weights_load_equals_plain_pickle(sample_weights_path):
    # The file is trusted here (it is the project's reference data) to check the safe loader
    # rebuilds exactly the same arrays as pickle itself.
    with open(sample_weights_path, "rb") as file, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = pickle.load(file)
    weights = read_weights(sample_weights_path)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)


def test_load_builds_the_tutorial_network(sample_weights_path):
    model = fastmlp.load(sample_weights_path, input_scale=1 / 255)
    assert isinstance(model, fastmlp.MLP)
    assert model.n_features_in_ == 784
    assert tuple(model.activations) == ("sigmoid", "sigmoid", "softmax")
    assert model.dtype == np.float32
    assert model.input_scale == pytest.approx(1 / 255)


@pytest.mark.parametrize("protocol", [3, 4])
def test_pickles_of_protocol_3_and_4_load(tmp_path, protocol):
    weights = _small_weights(np.float64)
    loaded = read_weights(_write_pickle(tmp_path / "weights.pkl", weights, protocol))
    for key in weights:
        np.testing.assert_array_equal(loaded[key], weights[key])


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickles_needing_more_globals_are_refused_with_advice(tmp_path, protocol):
    # Python 3 writes protocol-2 bytes through _codecs.encode, and protocol 5 arrays through
    # numpy's _frombuffer: outside the minimal allowlist, so the message says how to re-save.
    path = _write_pickle(tmp_path / "weights.pkl", _small_weights(), protocol)
    with pytest.raises(UnsafePickleError, match="re-save it with pickle protocol 3 or 4"):
        read_weights(path)


# --- hostile pickles ---------------------------------------------------------------------


def test_pickle_that_would_create_a_file_is_refused_and_creates_nothing(tmp_path):
    # First make sure the payload is real: plain pickle does create the file.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(pathlib.Path.touch, proof)))
    assert proof.exists()

    target = tmp_path / "pwned"
    path = _write_pickle(tmp_path / "evil.pkl", _Payload(pathlib.Path.touch, target))
    with pytest.raises(UnsafePickleError, match="refused to load"):
        read_weights(path)
    with pytest.raises(UnsafePickleError):
        fastmlp.load(path)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload, refused_name",
    [
        (_Payload(builtins.eval, ("1 + 1",)), "builtins.eval"),
        (_Payload(subprocess.Popen, ["true"]), "subprocess.Popen"),
        (_Payload(os.system, "true"), r"(posix|nt)\.system"),
        (_Payload(getattr, pathlib.Path, "touch"), "builtins.getattr"),
    ],
)
def test_pickle_naming_a_global_outside_the_allowlist_is_refused(tmp_path, payload, refused_name):
    path = _write_pickle(tmp_path / "evil.pkl", payload)
    with pytest.raises(UnsafePickleError, match=refused_name):
        read_weights(path)


def test_payload_nested_inside_the_weights_dict_is_refused(tmp_path):
    target = tmp_path / "pwned"
    weights = dict(_small_weights(), W2=_Payload(pathlib.Path.touch, target))
    path = _write_pickle(tmp_path / "nested.pkl", weights)
    with pytest.raises(UnsafePickleError, match="refused to load"):
        read_weights(path)
    assert not target.exists()


def test_malicious_pickle_renamed_npz_is_still_refused(tmp_path):
    target = tmp_path / "pwned"
    path = _write_pickle(tmp_path / "weights.npz", _Payload(pathlib.Path.touch, target))
    with pytest.raises(UnsafePickleError):
        read_weights(path)
    assert not target.exists()


def test_object_array_in_a_pickle_is_refused(tmp_path):
    weights = dict(_small_weights(), b2=np.array([1, "two", 3.0], dtype=object))
    path = _write_pickle(tmp_path / "object.pkl", weights)
    with pytest.raises(UnsafePickleError, match="'b2'.*object"):
        read_weights(path)


def test_pickled_list_is_refused(tmp_path):
    path = _write_pickle(tmp_path / "list.pkl", list(_small_weights().values()))
    with pytest.raises(UnsafePickleError, match="holds a list; expected a dict"):
        read_weights(path)


def test_dict_with_a_non_array_value_is_refused(tmp_path):
    path = _write_pickle(tmp_path / "value.pkl", dict(_small_weights(), b1=[0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(WeightsFormatError, match="'b1' is a list; expected a numpy array"):
        read_weights(path)


def test_dict_with_a_non_string_key_is_refused(tmp_path):
    weights = _small_weights()
    weights[1] = weights.pop("W1")
    path = _write_pickle(tmp_path / "key.pkl", weights)
    with pytest.raises(WeightsFormatError, match="key 1 of type int"):
        read_weights(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w.pop("b2"), r"expected W1\.\.Wn and b1\.\.bn"),
        (lambda w: w.update(extra=np.zeros(3)), "unexpected key 'extra'"),
        (lambda w: w.update(W3=w.pop("W2"), b3=w.pop("b2")), r"expected W1\.\.Wn"),
    ],
)
def test_keys_must_be_consecutive_layers(tmp_path, change, message):
    weights = _small_weights()
    change(weights)
    path = _write_pickle(tmp_path / "keys.pkl", weights)
    with pytest.raises(WeightsFormatError, match=message):
        read_weights(path)


# --- broken files ------------------------------------------------------------------------


def test_truncated_pickle_is_a_format_error(tmp_path):
    content = pickle.dumps(_small_weights(), protocol=3)
    path = tmp_path / "cut.pkl"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(WeightsFormatError, match="damaged or truncated pickle"):
        read_weights(path)


def test_empty_file_is_a_format_error(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(WeightsFormatError, match="is empty"):
        read_weights(path)


def test_random_bytes_are_an_unknown_format(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(np.random.default_rng(3).integers(1, 128, 512, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsFormatError, match="unknown format"):
        read_weights(path)


def test_garbage_after_a_pickle_header_is_a_format_error(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x80\x03" + bytes(range(256)))
    with pytest.raises(WeightsFormatError) as raised:
        read_weights(path)
    assert not isinstance(raised.value, UnsafePickleError) or "refused" in str(raised.value)


def test_single_npy_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "W1.npy"
    np.save(path, np.zeros((3, 2)))
    with pytest.raises(WeightsFormatError, match="single .npy array"):
        read_weights(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_weights(tmp_path / "nowhere.pkl")


# --- npz ---------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    weights = _small_weights(np.float64)
    save_npz(tmp_path / "weights.npz", weights)
    loaded = read_weights(tmp_path / "weights.npz")
    assert loaded.keys() == weights.keys()
    for key in weights:
        np.testing.assert_array_equal(loaded[key], weights[key])
        assert loaded[key].dtype == weights[key].dtype


def test_npz_renamed_pkl_is_recognised_by_content(tmp_path):
    np.savez(tmp_path / "weights.npz", **_small_weights())
    renamed = tmp_path / "weights.pkl"
    (tmp_path / "weights.npz").rename(renamed)
    assert set(read_weights(renamed)) == {"W1", "b1", "W2", "b2"}


def test_pickle_renamed_npz_is_recognised_by_content(tmp_path):
    path = _write_pickle(tmp_path / "weights.npz", _small_weights())
    np.testing.assert_array_equal(read_weights(path)["W2"], _small_weights()["W2"])


def test_npz_holding_an_object_array_is_refused(tmp_path):
    np.savez(tmp_path / "object.npz", **dict(_small_weights(), b1=np.array([{}, []], object)))
    with pytest.raises(UnsafePickleError, match="object array"):
        read_weights(tmp_path / "object.npz")


def test_truncated_npz_is_a_format_error(tmp_path):
    np.savez(tmp_path / "weights.npz", **_small_weights())
    content = (tmp_path / "weights.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(WeightsFormatError):
        read_weights(tmp_path / "cut.npz")


def test_sample_weights_survive_conversion_to_npz(tmp_path, sample_weights):
    save_npz(tmp_path / "sample_weight.npz", sample_weights)
    model = fastmlp.load(tmp_path / "sample_weight.npz")
    assert model.n_features_in_ == 784
    for mine, theirs in zip(model.coefs_, (sample_weights[f"W{i}"] for i in (1, 2, 3))):
        np.testing.assert_array_equal(mine, theirs)


def test_save_npz_refuses_bad_keys(tmp_path):
    with pytest.raises(WeightsFormatError, match="unexpected key 'weights'"):
        save_npz(
            tmp_path / "bad.npz",
            {"W1": np.zeros((2, 2)), "b1": np.zeros(2), "weights": np.zeros(1)},
        )
    assert not (tmp_path / "bad.npz").exists()


def test_errors_are_value_errors():
    assert issubclass(UnsafePickleError, WeightsFormatError)
    assert issubclass(WeightsFormatError, ValueError)
    assert fastmlp.UnsafePickleError is UnsafePickleError


# --- saving over an existing file ----------------------------------------------------------


def _small_model() -> fastmlp.MLP:
    return fastmlp.MLP.from_dict(_small_weights())


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_saving_over_a_file_keeps_its_permission_bits(tmp_path, suffix, mode):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"old")
    path.chmod(mode)
    _small_model().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert fastmlp.load(path) == _small_model()


def test_saving_a_new_file_follows_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = _small_model().save(tmp_path / "model.npz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_saving_over_a_file_keeps_its_owner_and_group_as_root(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    os.chown(path, 4321, 8765)
    path.chmod(0o4750)  # set-user-ID too: chown would clear it if done after chmod
    _small_model().save(path)
    status = path.stat()
    assert (status.st_uid, status.st_gid) == (4321, 8765)
    assert stat.S_IMODE(status.st_mode) == 0o4750


def test_saving_through_a_symbolic_link_keeps_the_target_permissions(tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    target.chmod(0o600)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    _small_model().save(link)
    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert fastmlp.load(target) == _small_model()


def test_saving_over_a_hard_linked_file_leaves_the_other_link_as_it_was(tmp_path):
    # What the README promises: the saved name gets a new file; other links keep the old one.
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    other = tmp_path / "other.npz"
    os.link(path, other)
    _small_model().save(path)
    assert other.read_bytes() == b"old"
    assert fastmlp.load(path) == _small_model()


# --- the limits every restricted unpickler applies first -------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_ordinary_weight_pickles_are_within_the_limits(protocol):
    from fastmlp._formats.pickle_limits import check_pickle_limits

    shared = np.ones(3)
    check_pickle_limits(pickle.dumps({**_small_weights(), "x": shared, "y": shared}, protocol))


def test_pickle_with_too_many_opcodes_is_refused_by_name(tmp_path, monkeypatch):
    from fastmlp._formats import limits

    monkeypatch.setattr(limits, "PICKLE_MAX_OPCODES", 50)
    path = _write_pickle(tmp_path / "long.pkl", {f"W{i}": i for i in range(40)})
    with pytest.raises(WeightsFormatError, match=r"long\.pkl.*more than 50 opcodes"):
        read_weights(path)


@pytest.mark.parametrize("depth, refused", [(99, False), (100, True)])
def test_nesting_limit_is_exact(depth, refused):
    from fastmlp._formats.pickle_limits import PickleRefused, check_pickle_limits

    value: object = ()
    for _ in range(depth - 1):
        value = (value,)
    content = pickle.dumps({"key": value}, protocol=4)  # the dict adds one level
    if refused:
        with pytest.raises(PickleRefused, match="more than 100 levels"):
            check_pickle_limits(content)
    else:
        check_pickle_limits(content)


def test_keys_sharing_one_array_are_refused(tmp_path):
    # One array object under W1 and W2, stored once (memoised): as a model, twice the file.
    square = np.ones((100, 100), np.float32)
    tied = {"W1": square, "b1": np.zeros(100), "W2": square, "b2": np.zeros(100)}
    path = _write_pickle(tmp_path / "tied.pkl", tied)
    with pytest.raises(WeightsFormatError, match=r"tied\.pkl.*keys share arrays"):
        read_weights(path)
