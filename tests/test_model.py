"""The ``MLP`` model: validation, agreement with ``reference.forward`` at every CPU level,
bit-identical rows whatever the batching and threading, pickling, thread safety and memory.

A model packs its weights for the level active when it is constructed (``MLP.cpu_level``) and
keeps it, so the tests force a level *before* building a model; a fixture finalizer restores
the detected level.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, _core, reference

LEVELS = tuple(_core.supported_levels())
FLOATS = (np.float32, np.float64)
ACTIVATIONS = ("sigmoid", "relu", "tanh", "identity", "softmax")
BATCHES = (0, 1, 2, 5, 31, 32, 33, 100, 1000)


@pytest.fixture(params=LEVELS)
def level(request):
    """Forces each supported level; models built in the test are packed for it."""
    request.addfinalizer(lambda: _core.force_cpu_level(None))
    _core.force_cpu_level(request.param)
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(987654321)


def random_layers(rng, n_inputs, widths, activations, dtype=np.float64, gain=2.0):
    """Random (W, b, activation) layers whose pre-activations stay O(1)."""
    layers = []
    k = n_inputs
    for width, activation in zip(widths, activations):
        W = (rng.normal(size=(k, width)) * (gain / np.sqrt(k))).astype(dtype)
        b = rng.normal(scale=0.5, size=width).astype(dtype)
        layers.append((W, b, activation))
        k = width
    return layers


def random_network(rng, dtype, output=None):
    """Inputs 1..300, widths 1..40, 1-4 layers, any hidden activations, the given output."""
    n_inputs = int(rng.integers(1, 301))
    depth = int(rng.integers(1, 5))
    widths = [int(w) for w in rng.integers(1, 41, size=depth)]
    activations = [str(a) for a in rng.choice(ACTIVATIONS, size=depth)]
    if output is not None:
        activations[-1] = output
    return random_layers(rng, n_inputs, widths, activations, dtype), n_inputs


def ground_truth(layers, X, model_dtype, input_scale=None, log=False):
    """reference.forward in float64 on exactly what the model computes with: the weights and the
    inputs rounded to the model's dtype (uint8 pixels are exact), scaled by the rounded scale."""
    X = np.asarray(X)
    if X.dtype != np.uint8:
        X = X.astype(model_dtype)
    X = X.astype(np.float64)
    scale = None if input_scale is None else float(np.dtype(model_dtype).type(input_scale))
    if scale is not None:
        X = (X.reshape(len(X), -1) * scale).astype(model_dtype).astype(np.float64)
    layers64 = [
        (
            np.asarray(W, model_dtype).astype(np.float64),
            np.asarray(b, model_dtype).astype(np.float64),
            a,
        )
        for W, b, a in layers
    ]
    if log:
        W, b, _ = layers64[-1]
        layers64[-1] = (W, b, "log_softmax")
    with np.errstate(all="ignore"):
        return reference.forward(layers64, X)


def assert_close_to_truth(got, expected, dtype, context=""):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    atol = (2e-5 if dtype == np.float32 else 1e-12) * scale
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=context)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=context)


@pytest.fixture
def small_model(rng):
    layers = random_layers(rng, 20, [13, 7], ["sigmoid", "softmax"], np.float32)
    return MLP(layers), layers


# --- construction ----------------------------------------------------------------------------


def test_shape_mismatch_names_the_layer_index_and_both_shapes():
    layers = [(np.ones((4, 3)), np.zeros(3), "relu"), (np.ones((5, 2)), np.zeros(2), "softmax")]
    with pytest.raises(ValueError) as info:
        MLP(layers)
    message = str(info.value)
    assert "layer 1" in message
    assert "(5, 2)" in message and "(4, 3)" in message


def test_shape_mismatch_deeper_in_the_network():
    layers = [
        (np.ones((4, 3)), np.zeros(3), "relu"),
        (np.ones((3, 6)), np.zeros(6), "tanh"),
        (np.ones((7, 2)), np.zeros(2), "softmax"),
    ]
    with pytest.raises(ValueError, match="layer 2") as info:
        MLP(layers)
    assert "(7, 2)" in str(info.value) and "(3, 6)" in str(info.value)


def test_bias_of_the_wrong_length():
    with pytest.raises(ValueError, match="layer 0") as info:
        MLP([(np.ones((4, 3)), np.zeros(4), "relu")])
    assert "(4,)" in str(info.value) and "(4, 3)" in str(info.value)
    with pytest.raises(ValueError, match="layer 1"):
        MLP([(np.ones((4, 3)), np.zeros(3), "relu"), (np.ones((3, 2)), np.zeros(3), "softmax")])
    with pytest.raises(ValueError, match="layer 0"):
        MLP([(np.ones((4, 3)), np.zeros((1, 3)), "relu")])
    with pytest.raises(ValueError, match="layer 0"):
        MLP([(np.ones((4, 3)), np.float64(0.0), "relu")])


def test_weights_must_be_two_dimensional():
    with pytest.raises(ValueError, match="2-D") as info:
        MLP([(np.ones(4), np.zeros(4), "relu")])
    assert "(4,)" in str(info.value)
    with pytest.raises(ValueError, match="2-D"):
        MLP([(np.ones((2, 3, 4)), np.zeros(4), "relu")])
    with pytest.raises(ValueError, match="empty"):
        MLP([(np.ones((0, 3)), np.zeros(3), "relu")])
    with pytest.raises(ValueError, match="empty"):
        MLP([(np.ones((3, 0)), np.zeros(0), "relu")])


@pytest.mark.parametrize("activation", ["gelu", "Softmax", "log_softmax", "", None, 3])
def test_unknown_activation(activation):
    with pytest.raises(ValueError, match="activation") as info:
        MLP([(np.ones((2, 3)), np.zeros(3), activation)])
    assert "layer 0" in str(info.value)


def test_empty_layer_list():
    with pytest.raises(ValueError, match="at least one layer"):
        MLP([])
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(iter(()))


@pytest.mark.parametrize(
    "layer",
    [
        {"W": np.ones((2, 2)), "b": np.zeros(2), "activation": "relu"},
        (np.ones((2, 2)), np.zeros(2)),
        (np.ones((2, 2)), np.zeros(2), "relu", "extra"),
        np.ones((2, 2)),
        "relu",
        None,
    ],
    ids=["dict", "pair", "four", "array", "str", "none"],
)
def test_a_layer_that_is_not_a_triple_is_refused(layer):
    good = (np.ones((2, 2)), np.zeros(2), "relu")
    with pytest.raises(TypeError, match="layer 1"):
        MLP([good, layer])


def test_a_list_layer_is_accepted():
    model = MLP([[np.eye(2), np.zeros(2), "identity"]])
    np.testing.assert_array_equal(model.predict_proba(np.array([1.0, 2.0])), [1.0, 2.0])


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((2, 2), complex),
        np.ones((2, 2), bool),
        np.ones((2, 2), object),
        np.array([["1", "2"], ["3", "4"]]),
    ],
    ids=["complex", "bool", "object", "str"],
)
def test_non_real_weights_raise_type_error(bad):
    with pytest.raises(TypeError, match="layer 0"):
        MLP([(bad, np.zeros(2), "relu")])
    with pytest.raises(TypeError, match="layer 0"):
        MLP([(np.ones((2, 2)), bad[0], "relu")])


def test_model_dtype_rules():
    W32, b32 = np.ones((3, 2), np.float32), np.zeros(2, np.float32)
    assert MLP([(W32, b32, "relu")]).dtype == np.float32
    assert MLP([(W32, b32.astype(np.float64), "relu")]).dtype == np.float64
    assert MLP([(W32.astype(int), b32.astype(int), "relu")]).dtype == np.float64
    assert MLP([(W32.astype(np.float16), b32, "relu")]).dtype == np.float64
    assert MLP([(W32.astype(np.float64), b32, "relu")], dtype=np.float32).dtype == np.float32
    assert MLP([(W32, b32, "relu")], dtype="float64").dtype == np.float64
    for bad in (np.float16, np.int32, complex):
        with pytest.raises(TypeError, match="dtype"):
            MLP([(W32, b32, "relu")], dtype=bad)


def test_non_native_byte_order(rng):
    other = ">" if np.little_endian else "<"
    layers = random_layers(rng, 6, [4], ["softmax"], np.float32)
    swapped = [
        (W.astype(W.dtype.newbyteorder(other)), b.astype(b.dtype.newbyteorder(other)), a)
        for W, b, a in layers
    ]
    X = rng.normal(size=(5, 6))
    model = MLP(layers)
    # Inputs in either byte order give the same result.
    np.testing.assert_array_equal(model.predict_proba(X.astype(">f8")), model.predict_proba(X))
    np.testing.assert_array_equal(model.predict_proba(X.astype("<f8")), model.predict_proba(X))
    # Big-endian float32 weights are float32 weights: the model computes in float32.
    assert MLP(swapped).dtype == np.float32
    assert MLP(swapped) == model


@pytest.mark.parametrize("scale", [np.nan, np.inf, -np.inf])
def test_input_scale_must_be_finite(scale):
    with pytest.raises(ValueError, match="input_scale"):
        MLP([(np.ones((3, 2)), np.zeros(2), "relu")], input_scale=scale)


def test_from_dict_builds_the_same_model(rng):
    layers = random_layers(rng, 6, [5, 4, 3], ["tanh", "tanh", "softmax"])
    weights = {}
    for i, (W, b, _) in enumerate(layers, start=1):
        weights[f"W{i}"], weights[f"b{i}"] = W, b
    model = MLP.from_dict(weights, hidden="tanh", output="softmax", input_scale=0.5)
    assert model == MLP(layers, input_scale=0.5)
    assert model.activations == ("tanh", "tanh", "softmax")
    default = MLP.from_dict(weights)
    assert default.activations == ("sigmoid", "sigmoid", "softmax")


def test_from_dict_with_missing_or_unexpected_keys():
    W = np.ones((2, 2))
    b = np.zeros(2)
    with pytest.raises(ValueError, match="b2"):
        MLP.from_dict({"W1": W, "b1": b, "W2": W})
    with pytest.raises(ValueError, match="W3"):
        MLP.from_dict({"W1": W, "b1": b, "W3": W, "b3": b})
    with pytest.raises(ValueError, match="extra"):
        MLP.from_dict({"W1": W, "b1": b, "extra": b})
    with pytest.raises(ValueError, match="W1"):
        MLP.from_dict({"W2": W, "b2": b})
    with pytest.raises(ValueError, match="W1"):
        MLP.from_dict({})
    with pytest.raises(TypeError, match="mapping"):
        MLP.from_dict([("W1", W), ("b1", b)])


# --- immutability ----------------------------------------------------------------------------


def test_mutating_the_callers_arrays_changes_nothing(rng):
    layers = random_layers(rng, 8, [6, 3], ["relu", "softmax"])
    model = MLP(layers)
    X = rng.normal(size=(10, 8))
    before = model.predict_proba(X)
    for W, b, _ in layers:
        W[...] = 123.0
        b[...] = -5.0
    np.testing.assert_array_equal(model.predict_proba(X), before)
    assert not np.any(model.coefs_[0] == 123.0)


def test_float32_weights_are_copied_too(rng):
    layers = random_layers(rng, 8, [3], ["sigmoid"], np.float32)
    model = MLP(layers)
    assert not np.shares_memory(model.coefs_[0], layers[0][0])
    layers[0][0][...] = 0
    assert np.any(model.coefs_[0] != 0)


def test_coefs_and_intercepts_are_read_only(small_model):
    model, layers = small_model
    for array in model.coefs_ + model.intercepts_:
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[...] = 0
    model.coefs_.clear()  # a fresh list: the model keeps its own
    assert len(model.coefs_) == 2
    for got, (W, b, _) in zip(zip(model.coefs_, model.intercepts_), layers):
        np.testing.assert_array_equal(got[0], W)
        np.testing.assert_array_equal(got[1], b)


def test_attributes(small_model):
    model, layers = small_model
    assert model.n_features_in_ == 20 and model.n_outputs_ == 7
    assert model.activations == ("sigmoid", "softmax")
    assert model.out_activation_ == "softmax"
    assert model.dtype == np.float32
    assert model.input_scale is None
    assert MLP(layers, input_scale=0.25).input_scale == 0.25


def test_non_contiguous_and_read_only_weights(rng):
    layers = random_layers(rng, 9, [5, 4], ["tanh", "softmax"])
    expected = MLP(layers).predict_proba(np.ones((3, 9)))
    odd = []
    for W, b, a in layers:
        W = np.asfortranarray(W)
        W.setflags(write=False)
        wide = np.zeros(2 * len(b))
        wide[::2] = b
        odd.append((W, wide[::2], a))
    np.testing.assert_array_equal(MLP(odd).predict_proba(np.ones((3, 9))), expected)


# --- agreement with reference.forward --------------------------------------------------------


@pytest.mark.parametrize("input_dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("dtype", FLOATS)
def test_predict_proba_matches_reference_forward(level, dtype, input_dtype, rng):
    for trial in range(24):
        output = ACTIVATIONS[trial % len(ACTIVATIONS)]
        layers, n_inputs = random_network(rng, dtype, output)
        scale = [None, 1 / 255, 0.5][trial % 3] if input_dtype == np.uint8 else None
        model = MLP(layers, input_scale=scale)
        assert model.cpu_level == level
        assert model.dtype == dtype
        n = BATCHES[trial % len(BATCHES)]
        if input_dtype == np.uint8:
            X = rng.integers(0, 256, size=(n, n_inputs), dtype=np.uint8)
            # keep the scaled pixels O(1), as the weights expect
            X //= {None: 64, 0.5: 32}.get(scale, 1)
        else:
            X = rng.normal(size=(n, n_inputs)).astype(input_dtype)
        got = model.predict_proba(X)
        assert got.shape == (n, layers[-1][0].shape[1]) and got.dtype == dtype
        expected = ground_truth(layers, X, dtype, scale)
        context = f"trial {trial}: {model!r} N={n} input {np.dtype(input_dtype).name}"
        assert_close_to_truth(got, expected, dtype, context)


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_activation_mix(level, dtype, rng):
    for hidden in ACTIVATIONS:
        for output in ACTIVATIONS:
            layers = random_layers(rng, 19, [17, 9], [hidden, output], dtype)
            model = MLP(layers)
            for n in (1, 33):
                X = rng.normal(size=(n, 19)).astype(dtype)
                assert_close_to_truth(
                    model.predict_proba(X),
                    ground_truth(layers, X, dtype),
                    dtype,
                    f"{hidden}->{output} N={n}",
                )


def test_input_scale_on_raw_pixels(level, rng):
    layers = random_layers(rng, 784, [40, 10], ["sigmoid", "softmax"], np.float32)
    model = MLP(layers, input_scale=1 / 255)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    got = model.predict_proba(images)
    with np.errstate(all="ignore"):
        expected = reference.forward(layers, images, input_scale=1 / 255)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # The same as scaling first, in float64, within rounding.
    scaled = MLP(layers).predict_proba(images.reshape(50, -1) / 255.0)
    np.testing.assert_allclose(got, scaled, rtol=0, atol=1e-5)


def test_model_keeps_the_level_it_was_built_at(rng):
    layers = random_layers(rng, 101, [37, 5], ["tanh", "softmax"], np.float32)
    X = rng.normal(size=(200, 101)).astype(np.float32)
    results = {}
    try:
        for name in LEVELS:
            _core.force_cpu_level(name)
            model = MLP(layers)
            assert model.cpu_level == name
            before = results[name] = model.predict_proba(X)
            for other in LEVELS:
                _core.force_cpu_level(other)
                assert model.cpu_level == name
                np.testing.assert_array_equal(model.predict_proba(X), before)
    finally:
        _core.force_cpu_level(None)
    assert MLP(layers).cpu_level == LEVELS[0]
    if len(LEVELS) > 1:
        # Portable multiplies and adds separately, the SIMD levels use FMA: the last bits
        # differ somewhere, so the level a model was packed at really is the one it runs.
        assert not np.array_equal(results["portable"], results[LEVELS[0]])


# --- row independence and determinism ----------------------------------------------------------


def deterministic_models(rng, dtype):
    yield MLP(random_layers(rng, 100, [40, 20], ["relu", "softmax"], dtype))
    yield MLP(random_layers(rng, 33, [13, 13, 3], ["sigmoid", "tanh", "sigmoid"], dtype))
    yield MLP(random_layers(rng, 7, [50], ["softmax"], dtype), input_scale=0.3)
    yield MLP(random_layers(rng, 150, [130, 10], ["relu", "softmax"], dtype))
    # A batch runs the first layer in blocks of its inputs (128 or 256 at the levels here) and
    # a single row in one pass: over several blocks, the last ending in a partial vector.
    yield MLP(random_layers(rng, 1101, [12, 5], ["sigmoid", "softmax"], dtype))
    # Softmax widths around the vector widths (8 and 16 lanes), one output included.
    for width in (1, 8, 16, 17, 33):
        yield MLP(random_layers(rng, 9, [width], ["softmax"], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_rows_are_bit_identical_however_they_are_batched(level, dtype, rng):
    for model in deterministic_models(rng, dtype):
        assert model.cpu_level == level
        K = model.n_features_in_
        for X in (
            rng.normal(size=(1000, K)).astype(dtype),
            rng.integers(0, 256, size=(301, K), dtype=np.uint8),
            # Mostly zeros, as an image's background: a single row skips its zero inputs.
            (rng.normal(size=(301, K)) * (rng.random((301, K)) < 0.2)).astype(dtype),
        ):
            n = len(X)
            whole = model.predict_proba(X)
            for batch_size in (1, 7, 100):
                assert np.array_equal(model.predict_proba(X, batch_size), whole), batch_size
            singles = np.stack([model.predict_proba(X[i]) for i in range(n)])
            assert singles.tobytes() == whole.tobytes(), "single-row calls differ from the batch"
            one = model.predict_proba(X, threads=1)
            two = model.predict_proba(X, threads=2)
            assert np.array_equal(one, whole) and np.array_equal(two, whole)
            permutation = rng.permutation(n)
            assert np.array_equal(model.predict_proba(X[permutation]), whole[permutation])
            for start, stop in ((3, 40), (17, 18), (5, n - 9)):
                assert np.array_equal(model.predict_proba(X[start:stop]), whole[start:stop])
            if model.out_activation_ == "softmax":
                log_whole = model.predict_log_proba(X)
                assert np.array_equal(model.predict_log_proba(X, 7), log_whole)
                assert np.array_equal(model.predict_log_proba(X, threads=2), log_whole)
                log_singles = np.stack([model.predict_log_proba(X[i]) for i in range(0, n, 9)])
                assert np.array_equal(log_singles, log_whole[::9])
            labels = model.predict(X)
            assert np.array_equal(labels, np.argmax(whole, axis=1))
            assert np.array_equal(model.predict(X, 7), labels)
            assert np.array_equal(model.predict(X, threads=1), labels)
            assert np.array_equal(model.predict(X[permutation]), labels[permutation])


@pytest.mark.parametrize("dtype", FLOATS)
def test_single_rows_skip_zero_pixels_without_changing_a_bit(level, dtype, rng):
    # A single row skips the steps of its zero inputs. Rows as MNIST's (mostly zero pixels, as
    # uint8 or float, scaled by input_scale), through layers whose sums can end at exactly
    # zero (zero and -0.0 biases, weights in eighths) and outputs that keep a zero's sign
    # (identity, relu) or its log: every bit must match the same row in the batch.
    K = 70
    pixels = (rng.integers(1, 256, (120, K)) * (rng.random((120, K)) < 0.2)).astype(np.uint8)
    pixels[5] = 0
    pixels[9] = rng.integers(1, 256, K)  # a dense row among sparse ones: nothing to skip
    W1 = (rng.integers(-8, 9, (K, 12)) / 8).astype(dtype)
    W2 = (rng.integers(-8, 9, (12, 10)) / 8).astype(dtype)
    b1 = np.where(np.arange(12) % 2 == 0, 0.0, -0.0).astype(dtype)
    b2 = np.zeros(10, dtype)
    models = [
        MLP([(W1, b1, "identity")], input_scale=1 / 255),
        MLP([(W1, b1, "relu"), (W2, -b2, "identity")], input_scale=1 / 255),
        MLP([(W1, b1, "relu"), (W2, b2, "softmax")], input_scale=1 / 255),
    ]
    with_nan = pixels.astype(dtype)
    with_nan[7, 3] = np.nan
    for model in models:
        for X in (pixels, pixels.astype(dtype), with_nan):
            whole = model.predict_proba(X)
            singles = np.stack([model.predict_proba(row) for row in X])
            assert singles.tobytes() == whole.tobytes(), (model.out_activation_, X.dtype)
            # Batches of fewer rows than half a chunk run their rows through the single-row
            # path together (skipping the steps zero in all of them): 2 to 16 rows cover every
            # group size at every level, and 100 the rows left after whole chunks (3 x 32 + 4
            # at AVX-512 float32, 6 x 16 + 4 at AVX2).
            for batch_size in (*range(2, 17), 100):
                batched = model.predict_proba(X, batch_size)
                assert batched.tobytes() == whole.tobytes(), (batch_size, X.dtype)
            if model.out_activation_ == "softmax":
                log_whole = model.predict_log_proba(X)
                log_singles = np.stack([model.predict_log_proba(row) for row in X])
                assert log_singles.tobytes() == log_whole.tobytes()
                assert model.predict_log_proba(X, 5).tobytes() == log_whole.tobytes()
    assert np.isnan(models[0].predict_proba(with_nan[7])).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_batch_skips_inputs_zero_in_every_row_without_changing_a_bit(level, dtype, rng):
    # A batch's first layer skips the inputs that are zero in every row of its chunk (an
    # image's border), and runs the chunk again in full where a sum ends at zero or NaN, whose
    # bits a skipped step could set. Sums here do end at exactly zero (zero and -0.0 biases,
    # weights in eighths, rows of zeros), through outputs that keep a zero's sign (identity,
    # relu); every bit must match the single-row path and the same rows batched differently.
    K = 300  # two or three blocks of the first layer at every level
    X = (rng.integers(1, 256, (200, K)) * (rng.random((200, K)) < 0.3)).astype(np.uint8)
    X[:, :40] = 0  # zero in every row
    X[:, 100::3] = 0
    X[64:96] = 0  # a whole chunk of zero rows
    X[20] = 0
    X[:32] = rng.integers(1, 256, (32, K))  # a dense chunk (nothing to skip) before the others
    W1 = (rng.integers(-8, 9, (K, 12)) / 8).astype(dtype)
    W2 = (rng.integers(-8, 9, (12, 10)) / 8).astype(dtype)
    b1 = np.where(np.arange(12) % 2 == 0, 0.0, -0.0).astype(dtype)
    b2 = np.zeros(10, dtype)
    W_inf = W1.copy()
    W_inf[7, 3] = np.inf  # 0 * inf is NaN: no step may be skipped
    models = [
        MLP([(W1, b1, "identity")], input_scale=1 / 255),
        MLP([(W1, -b1, "relu"), (W2, -b2, "identity")]),
        MLP([(W1, b1, "relu"), (W2, b2, "softmax")], input_scale=1 / 255),
        MLP([(W_inf, b1, "identity")]),
    ]
    floats = X.astype(dtype)
    floats[:, 100::3] = -0.0
    with_nan = X.astype(dtype)
    with_nan[150, 10] = np.nan  # in a column otherwise zero in every row
    for model in models:
        for rows in (X, floats, with_nan):
            whole = model.predict_proba(rows)
            singles = np.stack([model.predict_proba(row) for row in rows])
            assert singles.tobytes() == whole.tobytes(), (model.out_activation_, rows.dtype)
            for batch_size in (33, 7):
                assert model.predict_proba(rows, batch_size).tobytes() == whole.tobytes()
            shuffled = rng.permutation(len(rows))
            assert model.predict_proba(rows[shuffled]).tobytes() == whole[shuffled].tobytes()
    # The zero sums really are there: over every step, a -0.0 bias plus products +0.0 (from
    # the weights >= 0) is +0.0, where a sum that skipped every step would keep the -0.0.
    zero_rows = models[0].predict_proba(X[64:96])
    assert np.all(zero_rows == 0) and not np.signbit(zero_rows).any()
    assert np.signbit(b1).any()
    assert np.isnan(models[0].predict_proba(with_nan)[150]).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_single_rows_match_the_batch_on_extreme_logits(level, dtype, rng):
    # A single row's softmax runs on each value broadcast to a whole vector, a batch's on a
    # column of rows: huge, tiny, infinite and NaN logits must come out the same bits either way.
    for width in (3, 10, 17):
        model = MLP([(np.eye(width, dtype=dtype), np.zeros(width, dtype), "softmax")])
        special = [1e30, -1e30, np.inf, -np.inf, np.nan, 0.0, -0.0, 88.0, -104.0, 709.0]
        X = rng.choice(np.array(special, dtype), size=(200, width))
        X[:50] = rng.normal(scale=50.0, size=(50, width))
        whole = model.predict_proba(X)
        log_whole = model.predict_log_proba(X)
        for i in range(len(X)):
            np.testing.assert_array_equal(model.predict_proba(X[i]), whole[i], f"row {i}")
            np.testing.assert_array_equal(
                model.predict_log_proba(X[i]), log_whole[i], f"log row {i}"
            )


@pytest.mark.parametrize("dtype", FLOATS)
def test_no_state_leaks_between_calls_of_different_models(level, dtype, rng):
    # Scratch space reused between calls must never carry values (NaN above all) from one
    # call, model or shape into another.
    models = [
        MLP(random_layers(rng, 150, [130, 10], ["relu", "softmax"], dtype)),
        MLP(random_layers(rng, 7, [50], ["softmax"], dtype)),
        MLP(random_layers(rng, 33, [3, 40, 2], ["tanh", "sigmoid", "softmax"], dtype)),
        MLP(random_layers(rng, 5, [1], ["identity"], dtype)),
    ]
    inputs = [rng.normal(size=(n, m.n_features_in_)) for m in models for n in (1, 3, 70)]
    calls = [
        (i, j)
        for i in range(len(models))
        for j in range(len(inputs))
        if inputs[j].shape[1] == models[i].n_features_in_
    ]
    expected = {}
    for i, j in calls:
        expected[i, j] = models[i].predict_proba(inputs[j])
    poisoned = [np.full((n, m.n_features_in_), np.nan) for m in models for n in (1, 70)]
    for round_ in range(3):
        for position in rng.permutation(len(calls)):
            i, j = calls[position]
            # poison the scratch with NaN through another model first
            other = models[(i + 1 + round_) % len(models)]
            for X in poisoned:
                if X.shape[1] == other.n_features_in_:
                    assert np.all(np.isnan(other.predict_proba(X)))
            got = models[i].predict_proba(inputs[j])
            assert np.array_equal(got, expected[i, j]), (i, inputs[j].shape, round_)
            single = models[i].predict_proba(inputs[j][-1])
            assert np.array_equal(single, expected[i, j][-1])


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
    reason="needs at least two cores for a multi-threaded split",
)
def test_the_multi_threaded_path_is_really_taken(rng):
    model = next(deterministic_models(rng, np.float32))
    assert model._packed.planned_tasks(1000, 2) >= 2
    assert model._packed.planned_tasks(1, 2) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_few_rows_through_a_wide_layer_split_its_columns_without_changing_a_bit(
    level, dtype, rng
):
    # 300 x 7003 is over 2^21 multiply-adds: one row's pass, or one chunk's, splits the layer's
    # columns over the threads. The width is not a whole number of vectors, so the last two overlap.
    layers = random_layers(rng, 300, [7003, 5], ["relu", "softmax"], dtype)
    wide_softmax = random_layers(rng, 300, [7003], ["softmax"], dtype)
    X = rng.normal(size=(40, 300)).astype(dtype)
    X[:, ::3] = 0  # zero inputs: the single-row path skips them
    for model_layers in (layers, wide_softmax):
        model = MLP(model_layers)
        batch = model.predict_proba(X, threads=1)
        assert_close_to_truth(batch, ground_truth(model_layers, X, dtype), dtype)
        # One row, two, and twelve (one chunk: the column tiles are split instead).
        for rows in (slice(0, 1), slice(5, 7), 17, slice(8, 20)):
            one_thread = model.predict_proba(X[rows], threads=1)
            two_threads = model.predict_proba(X[rows], threads=2)
            assert np.array_equal(one_thread, two_threads)
            assert np.array_equal(two_threads, batch[rows])


def test_a_result_too_large_for_the_core_to_allocate_is_left_to_numpy(rng):
    # 2,048 rows x 1,024 outputs is over the 2^20 elements the core allocates itself: its fast
    # path answers None (a return value, not an exception) and the Python layer allocates.
    layers = random_layers(rng, 3, [1024], ["sigmoid"], np.float32)
    model = MLP(layers)
    X = rng.normal(size=(2048, 3)).astype(np.float32)
    run_direct, _, predict_direct = model._direct
    assert run_direct(X, None, 1 << 30) is None
    assert predict_direct(X, None, 1 << 30) is not None  # 2,048 labels are small
    small = run_direct(X[:1000], None, 1 << 30)
    assert small is not None and small.shape == (1000, 1024)
    proba = model.predict_proba(X)
    assert proba.shape == (2048, 1024)
    assert np.array_equal(proba[:1000], small)
    assert_close_to_truth(proba, ground_truth(layers, X, np.float32), np.float32)


# --- shapes ----------------------------------------------------------------------------------


def test_single_sample_and_trailing_dimensions(small_model, rng):
    model, _ = small_model
    X = rng.normal(size=(6, 20)).astype(np.float32)
    whole = model.predict_proba(X)
    one = model.predict_proba(X[2])
    assert one.shape == (7,)
    assert np.array_equal(one, whole[2])
    images = X.reshape(6, 4, 5)
    assert np.array_equal(model.predict_proba(images), whole)
    assert np.array_equal(model.predict_proba(X.reshape(6, 2, 2, 5)), whole)
    assert np.array_equal(model.predict_proba(np.asfortranarray(images)), whole)
    assert model.predict_proba(np.empty((0, 20))).shape == (0, 7)
    assert model.predict_proba(np.empty((0, 4, 5))).shape == (0, 7)
    assert model.predict_proba(X.tolist()).shape == (6, 7)


def test_shape_mismatches_show_both_shapes(small_model):
    model, _ = small_model
    for shape in [(3, 21), (21,), (3, 4, 6), (19,), (3, 0)]:
        with pytest.raises(ValueError) as info:
            model.predict_proba(np.ones(shape))
        message = str(info.value)
        assert str(shape) in message, message
        assert "20" in message, message
    with pytest.raises(ValueError):
        model.predict_proba(np.float64(1.0))
    with pytest.raises(ValueError):
        model.predict_proba(3)
    with pytest.raises(ValueError):
        model.predict(np.ones((3, 21)))


@pytest.mark.parametrize(
    "X, dtype_name",
    [
        (np.ones((2, 20), bool), "bool"),
        (np.ones((2, 20), complex), "complex128"),
        (np.ones((2, 20), object), "object"),
        (np.full((2, 20), "a"), "<U1"),
    ],
    ids=["bool", "complex", "object", "str"],
)
def test_refused_input_dtypes(small_model, X, dtype_name):
    model, _ = small_model
    for method in (model.predict_proba, model.predict_log_proba, model.predict):
        with pytest.raises(TypeError) as info:
            method(X)
        assert dtype_name in str(info.value)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint16, np.float16, np.int32])
def test_other_real_input_dtypes_are_converted(small_model, dtype, rng):
    model, _ = small_model
    X = rng.integers(0, 3, size=(4, 20)).astype(dtype)
    got = model.predict_proba(X)
    assert got.dtype == np.float32
    assert np.array_equal(got, model.predict_proba(X.astype(np.float32)))


def test_batch_size_and_threads_are_validated(small_model):
    model, _ = small_model
    X = np.ones((3, 20))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict_proba(X, 0)
    with pytest.raises(TypeError, match="batch_size"):
        model.predict_proba(X, 2.5)
    with pytest.raises(ValueError, match="threads"):
        model.predict_proba(X, threads=0)
    with pytest.raises(ValueError, match="threads"):
        model.predict(X, threads=-2)


# --- out= ------------------------------------------------------------------------------------


def test_out_buffer_is_reused(small_model, rng):
    model, _ = small_model
    out = np.full((9, 7), np.nan, np.float32)
    for _ in range(3):
        X = rng.normal(size=(9, 20))
        result = model.predict_proba(X, out=out)
        assert result is out
        assert np.array_equal(out, model.predict_proba(X))
    single = np.empty(7, np.float32)
    assert model.predict_proba(X[0], out=single) is single
    assert np.array_equal(single, model.predict_proba(X[0]))
    log_out = np.empty((9, 7), np.float32)
    assert model.predict_log_proba(X, out=log_out) is log_out
    assert np.array_equal(log_out, model.predict_log_proba(X))
    batched = np.empty((9, 7), np.float32)
    model.predict_proba(X, batch_size=2, out=batched)
    assert np.array_equal(batched, out)


def test_refused_out_buffers_are_not_written(small_model):
    model, _ = small_model
    X = np.ones((4, 20))
    readonly = np.full((4, 7), 42.0, np.float32)
    readonly.setflags(write=False)
    wide = np.full((4, 14), 42.0, np.float32)
    cases = [
        (np.full((4, 8), 42.0, np.float32), ValueError),
        (np.full((5, 7), 42.0, np.float32), ValueError),
        (np.full(28, 42.0, np.float32), ValueError),
        (np.full((4, 7), 42.0, np.float64), TypeError),
        (np.full((4, 7), 42, np.int64), TypeError),
        (wide[:, ::2], ValueError),
        (np.asfortranarray(np.full((4, 7), 42.0, np.float32)), ValueError),
        (readonly, ValueError),
    ]
    for out, error in cases:
        before = out.copy()
        for method in (model.predict_proba, model.predict_log_proba):
            with pytest.raises(error):
                method(X, out=out)
            np.testing.assert_array_equal(out, before)
    with pytest.raises(TypeError):
        model.predict_proba(X, out=[[0.0] * 7] * 4)


def test_out_aliasing_the_input(rng):
    layers = random_layers(rng, 6, [6], ["tanh"])
    model = MLP(layers)
    buffer = rng.normal(size=(40, 6))
    expected = model.predict_proba(buffer.copy())
    assert model.predict_proba(buffer, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, expected)


# --- predict, score, predict_log_proba --------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_predict_is_the_argmax_of_predict_proba(level, dtype, rng):
    for output in ("softmax", "sigmoid", "relu", "tanh"):
        layers = random_layers(rng, 30, [25, 11], ["relu", output], dtype)
        model = MLP(layers)
        for n in (0, 1, 5, 33, 250):
            X = rng.normal(size=(n, 30)).astype(dtype)
            labels = model.predict(X)
            assert labels.dtype == np.int64 and labels.shape == (n,)
            assert np.array_equal(labels, np.argmax(model.predict_proba(X), axis=1))
        one = model.predict(X[0])
        assert np.ndim(one) == 0 and isinstance(one, np.integer)
        assert one == np.argmax(model.predict_proba(X[0]))


class _RowsSubclass(np.ndarray):
    pass


def test_predict_gives_the_same_labels_for_every_form_of_input(rng):
    # Exact float32 rows go straight to the core; the others (a list, another dtype, a
    # non-contiguous view, an ndarray subclass, image-shaped rows) through the Python layer.
    model = MLP(random_layers(rng, 12, [9, 5], ["relu", "softmax"], np.float32))
    X = rng.normal(size=(40, 12)).astype(np.float32)
    expected = np.argmax(model.predict_proba(X), axis=1)
    wide = np.zeros((40, 24), np.float32)
    wide[:, ::2] = X
    forms = {
        "float32": X,
        "list": X.tolist(),
        "float16": X.astype(np.float16),
        "int32": np.rint(X * 4).astype(np.int32),
        "strided": wide[:, ::2],
        "Fortran": np.asfortranarray(X),
        "subclass": X.view(_RowsSubclass),
        "images": X.reshape(40, 3, 4),
    }
    for name, rows in forms.items():
        as_floats = np.asarray(rows).astype(np.float32).reshape(40, 12)
        labels = model.predict(rows)
        assert type(labels) is np.ndarray and labels.dtype == np.int64, name
        assert labels.shape == (40,), name
        assert np.array_equal(labels, np.argmax(model.predict_proba(as_floats), axis=1)), name
    assert np.array_equal(model.predict(X), expected)
    for empty in (np.empty((0, 12), np.float32), np.empty((0, 12), np.uint8)):
        labels = model.predict(empty)
        assert labels.dtype == np.int64 and labels.shape == (0,)
    for threads in (None, 1, 2):
        assert np.array_equal(model.predict(X, threads=threads), expected)
        one = model.predict(X[3], threads=threads)
        assert type(one) is np.int64 and one == expected[3]
        assert model.predict(X[3].tolist(), threads=threads) == expected[3]
    with pytest.raises(ValueError, match="expects 12"):
        model.predict(X[:, :11])
    with pytest.raises(TypeError, match="dtype"):
        model.predict(X.astype(np.complex64))
    with pytest.raises(ValueError, match="threads"):
        model.predict(X, threads=0)


def test_predict_of_single_output_and_regression_networks(rng):
    binary = MLP(random_layers(rng, 5, [4, 1], ["tanh", "sigmoid"]))
    X = rng.normal(size=(50, 5))
    proba = binary.predict_proba(X)
    assert np.array_equal(binary.predict(X), (proba[:, 0] > 0.5).astype(np.int64))
    regressor = MLP(random_layers(rng, 5, [4, 3], ["tanh", "identity"]))
    assert np.array_equal(regressor.predict(X), regressor.predict_proba(X))


def test_score_is_the_mean_accuracy(small_model, rng):
    model, _ = small_model
    X = rng.normal(size=(200, 20))
    labels = model.predict(X)
    y = labels.copy()
    y[::4] = (y[::4] + 1) % 7
    assert model.score(X, y) == pytest.approx(np.mean(labels == y))
    assert model.score(X, labels) == 1.0
    assert model.score(X, y, batch_size=9, threads=1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="label"):
        model.score(X, y[:-1])
    with pytest.raises(ValueError):
        model.score(np.empty((0, 20)), np.empty(0, np.int64))


@pytest.mark.parametrize("dtype", FLOATS)
def test_predict_log_proba_matches_the_reference_log_softmax(level, dtype, rng):
    for n in (1, 5, 33, 200):
        layers = random_layers(rng, 40, [30, 10], ["sigmoid", "softmax"], dtype)
        model = MLP(layers)
        X = rng.normal(size=(n, 40)).astype(dtype)
        got = model.predict_log_proba(X)
        assert got.dtype == dtype and got.shape == (n, 10)
        expected = ground_truth(layers, X, dtype, log=True)
        atol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(
                got, np.log(ground_truth(layers, X, dtype)), rtol=0, atol=atol
            )
        assert np.array_equal(np.argmax(got, axis=1), model.predict(X))


@pytest.mark.parametrize("dtype", FLOATS)
def test_predict_log_proba_stays_finite_where_probabilities_underflow(level, dtype, rng):
    layers = random_layers(rng, 10, [8, 6], ["tanh", "softmax"], dtype, gain=1.0)
    W, b, _ = layers[-1]
    layers[-1] = (W * 2000, b, "softmax")  # logits spread over thousands
    model = MLP(layers)
    X = rng.normal(size=(64, 10)).astype(dtype)
    proba = model.predict_proba(X)
    assert np.any(proba == 0), "the test needs probabilities that underflow"
    got = model.predict_log_proba(X)
    assert np.all(np.isfinite(got))
    expected = ground_truth(layers, X, dtype, log=True)
    # float32 logits in the thousands carry absolute rounding errors of ~1e-3.
    atol = (4e-6 if dtype == np.float32 else 1e-13) * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    single = model.predict_log_proba(X[3])
    assert np.array_equal(single, got[3])


def test_predict_log_proba_needs_a_softmax_output(rng):
    for output in ("sigmoid", "relu", "tanh", "identity"):
        model = MLP(random_layers(rng, 4, [3], [output]))
        with pytest.raises(ValueError, match="softmax"):
            model.predict_log_proba(np.ones((2, 4)))


# --- NaN inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_nan_row_gives_nan_outputs_and_leaves_other_rows_alone(level, dtype, rng):
    for hidden in ("relu", "sigmoid", "tanh", "identity"):
        layers = random_layers(rng, 21, [14, 6], [hidden, "softmax"], dtype)
        model = MLP(layers)
        for n in (1, 3, 40):
            X = rng.normal(size=(n, 21)).astype(dtype)
            clean = model.predict_proba(X)
            bad_row = n // 2
            X[bad_row, 4] = np.nan
            got = model.predict_proba(X)
            assert np.all(np.isnan(got[bad_row])), (hidden, n)
            others = np.arange(n) != bad_row
            assert np.array_equal(got[others], clean[others])
            labels = model.predict(X)
            assert labels[bad_row] == 0
            assert np.array_equal(labels, np.argmax(got, axis=1))
            assert np.all(np.isnan(model.predict_log_proba(X)[bad_row]))


def test_predict_follows_np_argmax_for_partly_nan_outputs(level):
    # inf * 0 = NaN in the middle output only: outputs [1, NaN, 0] after the sigmoid.
    W = np.array([[1.0, 0.0, -1.0], [1.0, 1.0, 1.0]])
    model = MLP([(W, np.zeros(3), "sigmoid")])
    X = np.array([[np.inf, 1.0]] * 3 + [[0.0, 1.0]])
    proba = model.predict_proba(X)
    assert proba[0, 0] == 1.0 and np.isnan(proba[0, 1]) and proba[0, 2] == 0.0
    labels = model.predict(X)
    assert np.array_equal(labels, np.argmax(proba, axis=1))
    assert labels[0] == 1


# --- pickling, copies, repr ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_pickle_round_trip(dtype, rng):
    layers = random_layers(rng, 12, [9, 4], ["relu", "softmax"], dtype)
    model = MLP(layers, input_scale=0.5)
    X = rng.normal(size=(50, 12))
    expected = model.predict_proba(X)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(model, protocol=protocol))
        assert clone == model and clone is not model
        assert clone.dtype == dtype and clone.input_scale == 0.5
        assert clone.activations == model.activations
        assert np.array_equal(clone.predict_proba(X), expected)
        assert not clone.coefs_[0].flags.writeable
    deep = copy.deepcopy(model)
    assert deep == model
    assert np.array_equal(deep.predict_proba(X), expected)
    assert np.array_equal(copy.copy(model).predict_proba(X), expected)


def test_equality(rng):
    layers = random_layers(rng, 5, [3], ["softmax"])
    model = MLP(layers)
    assert model == MLP(layers)
    assert model != MLP(layers, input_scale=2.0)
    assert model != MLP(layers, dtype=np.float32)
    assert model != MLP([(layers[0][0] + 1, layers[0][1], "softmax")])
    assert model != MLP([(layers[0][0], layers[0][1], "sigmoid")])
    assert model != "model"
    with pytest.raises(TypeError):
        hash(model)


def test_repr_mentions_sizes(rng):
    model = MLP(random_layers(rng, 784, [50, 100, 10], ["sigmoid", "sigmoid", "softmax"]))
    text = repr(model)
    assert "784-50-100-10" in text
    assert "float64" in text and "softmax" in text
    assert "input_scale" in repr(MLP(random_layers(rng, 3, [2], ["relu"]), input_scale=0.5))


# --- threads ---------------------------------------------------------------------------------


def test_one_model_shared_by_eight_threads(rng):
    # 8 Python threads x 500 calls (issue: threads and memory), mixing batch sizes and paths.
    model = MLP(random_layers(rng, 100, [32, 10], ["sigmoid", "softmax"], np.float32))
    X = rng.normal(size=(1000, 100)).astype(np.float32)
    expected = model.predict_proba(X)
    expected_labels = model.predict(X)
    sizes = (1, 64, 1000)

    def worker(seed):
        local = np.random.default_rng(seed)
        mismatches = 0
        for call in range(500):
            size = sizes[(call + seed) % 3]
            start = int(local.integers(0, 1000 - size + 1))
            rows = slice(start, start + size)
            if call % 5 == 4:
                got = model.predict(X[rows])
                mismatches += not np.array_equal(got, expected_labels[rows])
            else:
                threads = None if call % 2 else 2
                got = model.predict_proba(X[rows], threads=threads)
                mismatches += not np.array_equal(got, expected[rows])
        return mismatches

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(worker, seed) for seed in range(8)]
        results = [future.result(timeout=120) for future in futures]
    assert results == [0] * 8


def test_a_row_another_thread_is_writing_is_refused_on_the_one_row_path(rng):
    # Small calls into a new array skip registering their read of X while no fastmlp call runs
    # with the GIL released; while one does (here: writing into `written` with out=), a row of
    # the array it writes must still be refused rather than read half-written.
    writer_model = MLP(random_layers(rng, 64, [10], ["softmax"], np.float32))
    reader_model = MLP(random_layers(rng, 10, [3], ["softmax"], np.float32))
    X = rng.normal(size=(200_000, 64)).astype(np.float32)
    written = np.empty((200_000, 10), np.float32)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            writer_model.predict_proba(X, out=written, threads=1)

    thread = threading.Thread(target=writer)
    thread.start()
    refusals = []
    try:
        deadline = time.monotonic() + 10
        while not refusals and time.monotonic() < deadline:
            try:
                reader_model.predict_proba(written[5])
            except ValueError as error:
                refusals.append(str(error))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert refusals and "being written elsewhere" in refusals[0]
    # Once the writer is done, the same row is read again (and gives what a copy of it gives).
    assert np.array_equal(
        reader_model.predict_proba(written[5]), reader_model.predict_proba(written[5].copy())
    )


# --- memory ----------------------------------------------------------------------------------


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads resident memory from /proc/self/statm"
)
def test_repeated_single_row_calls_do_not_leak(rng):
    model = MLP(random_layers(rng, 64, [32, 10], ["relu", "softmax"], np.float32))
    row = rng.normal(size=64).astype(np.float32)
    expected = model.predict_proba(row)
    for _ in range(5000):
        model.predict_proba(row)
    before = resident_bytes()
    for _ in range(100_000):
        result = model.predict_proba(row)
    growth = resident_bytes() - before
    assert np.array_equal(result, expected)
    assert growth < 5 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB over 100,000 calls"
    # The validating path (out=, threads=) and predict must not leak either.
    out = np.empty(10, np.float32)
    before = resident_bytes()
    for _ in range(30_000):
        model.predict_proba(row, out=out, threads=1)
        model.predict(row)
    growth = resident_bytes() - before
    assert np.array_equal(out, expected)
    assert growth < 5 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB over 30,000 calls"


# --- thread-count settings ---------------------------------------------------------------------


def test_set_and_get_num_threads():
    default = fastmlp.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= default
    try:
        fastmlp.set_num_threads(1)
        assert fastmlp.get_num_threads() == 1
        fastmlp.set_num_threads(0)
        assert fastmlp.get_num_threads() == default
        fastmlp.set_num_threads(10_000)
        capped = fastmlp.get_num_threads()
        assert 1 <= capped <= cores
        fastmlp.set_num_threads(cores + 7)
        assert fastmlp.get_num_threads() == capped
        with pytest.raises(ValueError):
            fastmlp.set_num_threads(-1)
        assert fastmlp.get_num_threads() == capped  # a refused value changes nothing
        with pytest.raises(TypeError):
            fastmlp.set_num_threads(1.5)
    finally:
        fastmlp.set_num_threads(0)
    assert fastmlp.get_num_threads() == default


def test_num_threads_setting_does_not_change_results(small_model, rng):
    model, _ = small_model
    X = rng.normal(size=(3000, 20)).astype(np.float32)
    expected = model.predict_proba(X)
    try:
        fastmlp.set_num_threads(1)
        assert np.array_equal(model.predict_proba(X), expected)
        assert np.array_equal(fastmlp.softmax(X), fastmlp.softmax(X, threads=2))
    finally:
        fastmlp.set_num_threads(0)


def test_views_whose_byte_size_overflows_raise_instead_of_crashing():
    # A zero-stride view can claim far more rows than memory holds; it must be refused with a
    # Python exception (NumPy's MemoryError/ValueError on the deliberate copy), never a crash.
    from numpy.lib.stride_tricks import as_strided

    model = MLP([(np.ones((784, 10), np.float32), np.zeros(10, np.float32), "softmax")])
    base = np.zeros(784, np.float32)
    rows = as_strided(base, shape=(2**40, 784), strides=(0, 4))
    with pytest.raises((MemoryError, ValueError)):
        model.predict_proba(rows)
    overflowing = as_strided(base, shape=(2**40, 2**20), strides=(0, 0))
    with pytest.raises((MemoryError, ValueError)):
        fastmlp.sigmoid(overflowing)


def _unaligned(values: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``values`` that starts one byte past an aligned address."""
    raw = np.zeros(values.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(values.dtype).reshape(values.shape)
    view[...] = values
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_inputs_give_the_aligned_results(dtype):
    # np.frombuffer at an odd offset or packed records give such arrays; the core once
    # refused them as "not C-contiguous".
    rng = np.random.default_rng(3)
    layers = [
        (rng.normal(size=(5, 4)).astype(dtype), rng.normal(size=4).astype(dtype), "tanh"),
        (rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=3).astype(dtype), "softmax"),
    ]
    model = MLP(layers, dtype=dtype)
    X = rng.normal(size=(6, 5)).astype(dtype)
    odd = _unaligned(X)
    assert np.array_equal(model.predict_proba(odd), model.predict_proba(X))
    assert np.array_equal(model.predict_proba(odd[0]), model.predict_proba(X[0]))
    assert np.array_equal(model.predict(odd), model.predict(X))
    for kernel in (fastmlp.sigmoid, fastmlp.softmax, fastmlp.log_softmax, fastmlp.identity):
        assert np.array_equal(kernel(odd), kernel(X))
    W, b, _ = layers[0]
    assert np.array_equal(fastmlp.dense(odd, W, b, "relu"), fastmlp.dense(X, W, b, "relu"))
    assert np.array_equal(odd, X)  # the caller's array is untouched


def test_unaligned_out_is_refused_before_anything_is_written():
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    out = _unaligned(np.full(8, 7.0, dtype=np.float32))
    with pytest.raises(ValueError, match="out is not aligned"):
        fastmlp.sigmoid(x, out=out)
    assert np.all(out == 7.0)
