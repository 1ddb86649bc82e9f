"""The NumPy reference: checked against straightforward float64 math, and on the tutorial's data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import TUTORIAL_ACCURACY_RAW, TUTORIAL_ACCURACY_SCALED
from fastmlp import reference


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def warnings_are_errors():
    # The stable reference must not warn; the tutorial tests opt back in explicitly.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- sigmoid -----------------------------------------------------------------------------


def test_sigmoid_matches_textbook_formula_where_it_does_not_overflow(rng):
    x = rng.uniform(-30, 30, size=1000)
    np.testing.assert_allclose(reference.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_silent_and_saturates_exactly_on_huge_inputs(dtype):
    x = np.array([-1e4, -1e3, -100.0, 100.0, 1e3, 1e4], dtype=dtype)
    result = reference.sigmoid(x)  # warnings are errors here
    assert result.dtype == dtype
    assert np.all(result[:3] >= 0) and np.all(result[:3] < 1e-40)
    assert np.all(result[3:] == 1)


def test_sigmoid_non_finite_inputs():
    result = reference.sigmoid(np.array([np.nan, np.inf, -np.inf]))
    assert np.isnan(result[0])
    assert result[1] == 1.0 and result[2] == 0.0


def test_sigmoid_is_symmetric(rng):
    x = rng.normal(scale=20, size=500)
    np.testing.assert_allclose(reference.sigmoid(x) + reference.sigmoid(-x), 1.0, rtol=1e-15)


def test_sigmoid_promotes_uint8_before_negating():
    # -x on uint8 wraps around (-3 becomes 253): promoting first keeps sigmoid(3) right.
    pixels = np.array([0, 3, 128, 255], dtype=np.uint8)
    result = reference.sigmoid(pixels)
    assert result.dtype == np.float64
    expected = 1 / (1 + np.exp(-pixels.astype(np.float64)))
    np.testing.assert_allclose(result, expected, rtol=1e-15)
    assert result[1] > 0.95


# --- relu, tanh, identity ----------------------------------------------------------------


def test_relu_tanh_identity_match_numpy_and_keep_float32(rng):
    x = rng.normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(reference.relu(x), np.where(x > 0, x, 0))
    np.testing.assert_array_equal(reference.tanh(x), np.tanh(x))
    assert reference.identity(x) is x
    for function in (reference.relu, reference.tanh, reference.identity, reference.sigmoid):
        assert function(x).dtype == np.float32


def test_integer_input_is_promoted_to_float64():
    counts = np.array([-2, 0, 5], dtype=np.int8)
    assert reference.identity(counts).dtype == np.float64
    np.testing.assert_array_equal(reference.relu(counts), [0.0, 0.0, 5.0])


# --- softmax and log_softmax -------------------------------------------------------------


def test_softmax_rows_sum_to_one_and_match_float64_math(rng):
    scores = rng.normal(scale=5, size=(50, 10))
    result = reference.softmax(scores)
    np.testing.assert_allclose(result.sum(axis=1), 1.0, rtol=1e-14)
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result, expected, rtol=1e-13)


def test_softmax_along_other_axis(rng):
    scores = rng.normal(size=(4, 6))
    np.testing.assert_allclose(reference.softmax(scores, axis=0), reference.softmax(scores.T).T)


def test_softmax_is_shift_invariant_and_silent_on_huge_scores(rng):
    scores = rng.normal(size=(5, 10)).astype(np.float32)
    shifted = reference.softmax(scores + np.float32(1e4))
    assert shifted.dtype == np.float32
    assert np.all(np.isfinite(shifted))
    np.testing.assert_allclose(shifted, reference.softmax(scores), atol=1e-3)


def test_softmax_non_finite_rows_follow_the_formula():
    scores = np.array(
        [
            [1.0, np.inf, 0.0],  # +inf: inf - inf is NaN, so the row is NaN
            [-np.inf, -np.inf, -np.inf],  # all -inf: NaN
            [-np.inf, 0.0, 0.0],  # one -inf among finite values: probability 0
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = reference.softmax(scores)
    assert np.all(np.isnan(result[0])) and np.all(np.isnan(result[1]))
    np.testing.assert_array_equal(result[2], [0.0, 0.5, 0.5])


def test_log_softmax_matches_log_of_softmax_where_that_is_finite(rng):
    scores = rng.normal(scale=3, size=(20, 10))
    np.testing.assert_allclose(
        reference.log_softmax(scores), np.log(reference.softmax(scores)), rtol=1e-12, atol=1e-12
    )


def test_log_softmax_stays_finite_where_log_of_softmax_is_minus_inf():
    scores = np.array([[0.0, 1000.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = np.log(reference.softmax(scores))
    assert naive[0, 0] == -np.inf
    result = reference.log_softmax(scores)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[-1000.0, 0.0]])


def test_log_softmax_exponentiates_to_rows_summing_to_one(rng):
    scores = rng.normal(scale=50, size=(30, 10))
    np.testing.assert_allclose(np.exp(reference.log_softmax(scores)).sum(axis=1), 1.0, rtol=1e-13)


def test_softmax_over_an_empty_axis_is_empty():
    assert reference.softmax(np.empty((3, 0))).shape == (3, 0)
    assert reference.log_softmax(np.empty((3, 0))).shape == (3, 0)


# --- dense and forward -------------------------------------------------------------------


def _random_layers(rng, sizes, dtype):
    activations = ["sigmoid"] * (len(sizes) - 2) + ["softmax"]
    return [
        (rng.normal(size=(n_in, n_out)).astype(dtype), rng.normal(size=n_out).astype(dtype), act)
        for n_in, n_out, act in zip(sizes[:-1], sizes[1:], activations)
    ]


def test_dense_is_activation_of_affine_map(rng):
    x, W, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    np.testing.assert_allclose(reference.dense(x, W, b, "tanh"), np.tanh(x @ W + b), rtol=1e-14)
    np.testing.assert_allclose(reference.dense(x, W, b, np.exp), np.exp(x @ W + b), rtol=1e-14)


def test_dense_rejects_unknown_activation(rng):
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        reference.dense(np.ones((1, 2)), np.ones((2, 2)), np.zeros(2), "swish")


def test_forward_chains_dense_layers_in_float64(rng):
    layers = _random_layers(rng, (12, 8, 5, 3), np.float64)
    X = rng.normal(size=(6, 12))
    expected = X
    for W, b, activation in layers:
        expected = reference.dense(expected, W, b, activation)
    np.testing.assert_array_equal(reference.forward(layers, X), expected)


def test_forward_computes_in_the_weights_dtype_and_flattens_images(rng):
    layers = _random_layers(rng, (16, 5, 3), np.float32)
    images = rng.integers(0, 256, size=(7, 4, 4), dtype=np.uint8)
    result = reference.forward(layers, images, input_scale=1 / 255)
    assert result.dtype == np.float32 and result.shape == (7, 3)
    flat = images.reshape(7, 16).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(result, reference.forward(layers, flat))


def test_forward_one_sample_returns_one_row(rng):
    layers = _random_layers(rng, (6, 4, 3), np.float64)
    X = rng.normal(size=(5, 6))
    np.testing.assert_allclose(reference.forward(layers, X[2]), reference.forward(layers, X)[2])
    assert reference.forward(layers, X[2]).shape == (3,)


def test_forward_rejects_wrong_feature_count(rng):
    layers = _random_layers(rng, (6, 3), np.float64)
    with pytest.raises(ValueError, match="K = 6"):
        reference.forward(layers, np.ones((2, 5)))


def test_predict_proba_is_forward():
    assert reference.predict_proba is reference.forward


# --- the tutorial's code and its traps ---------------------------------------------------


def test_tutorial_sigmoid_overflows_with_a_warning():
    with pytest.warns(RuntimeWarning, match="overflow encountered in exp"):
        result = reference.tutorial_sigmoid(np.array([-1000.0], dtype=np.float32))
    assert result[0] == 0.0


def test_tutorial_softmax_normalises_the_whole_batch_not_each_row(rng):
    scores = rng.normal(size=(100, 10))
    result = reference.tutorial_softmax(scores)
    assert np.isclose(result.sum(), 1.0)
    assert not np.allclose(result.sum(axis=1), 1.0)
    # ... which leaves the argmax of each row as it was.
    np.testing.assert_array_equal(result.argmax(axis=1), reference.softmax(scores).argmax(axis=1))


def test_tutorial_predict_on_one_sample_matches_the_stable_forward(rng):
    layers = _random_layers(rng, (12, 6, 5, 4), np.float64)
    network = {}
    for index, (W, b, _) in enumerate(layers, start=1):
        network[f"W{index}"], network[f"b{index}"] = W, b
    x = rng.normal(size=12)
    np.testing.assert_allclose(
        reference.tutorial_predict(network, x), reference.forward(layers, x), rtol=1e-12
    )


def test_tutorial_loops_agree_and_count_accuracy(rng):
    layers = _random_layers(rng, (12, 6, 4), np.float64)
    network = {"W1": layers[0][0], "b1": layers[0][1], "W2": layers[1][0], "b2": layers[1][1]}
    x = rng.normal(size=(250, 12))
    expected_predictions = reference.forward(layers, x).argmax(axis=1)
    labels = expected_predictions.copy()
    labels[:50] = (labels[:50] + 1) % 4  # 50 of 250 wrong
    per_sample = reference.tutorial_accuracy_per_sample(network, x, labels)
    batched = reference.tutorial_accuracy_batched(network, x, labels, batch_size=100)
    for accuracy, predictions in (per_sample, batched):
        assert accuracy == pytest.approx(200 / 250)
        assert predictions.dtype == np.int64
        np.testing.assert_array_equal(predictions, expected_predictions)


def test_tutorial_loops_return_outputs_on_request(rng):
    network = {"W1": rng.normal(size=(5, 3)), "b1": rng.normal(size=3)}
    x = rng.normal(size=(10, 5))
    labels = np.zeros(10, dtype=np.int64)
    _, _, per_sample = reference.tutorial_accuracy_per_sample(network, x, labels, return_proba=True)
    _, _, batched = reference.tutorial_accuracy_batched(network, x, labels, 5, return_proba=True)
    np.testing.assert_allclose(per_sample.sum(axis=1), 1.0)
    np.testing.assert_allclose(batched.sum(), 2.0)  # two batches of 5, each summing to 1


# --- the tutorial's published figures ----------------------------------------------------


def _tutorial_inputs(images, scaled):
    flat = images.reshape(len(images), -1)
    return flat.astype(np.float32) / 255 if scaled else flat


@pytest.mark.parametrize(
    "scaled, expected", [(False, TUTORIAL_ACCURACY_RAW), (True, TUTORIAL_ACCURACY_SCALED)]
)
def test_tutorial_loops_reproduce_published_accuracy(mnist, sample_weights, scaled, expected):
    images, labels = mnist
    x = _tutorial_inputs(images, scaled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tutorial's sigmoid overflows
        per_sample = reference.tutorial_accuracy_per_sample(sample_weights, x, labels)
        batched = reference.tutorial_accuracy_batched(sample_weights, x, labels, batch_size=100)
    assert per_sample[0] == expected
    assert batched[0] == expected
    np.testing.assert_array_equal(per_sample[1], batched[1])


def test_tutorial_sigmoid_overflows_on_raw_pixels(mnist, sample_weights):
    images, _ = mnist
    with pytest.warns(RuntimeWarning, match="overflow encountered in exp"):
        reference.tutorial_predict(sample_weights, images[:100].reshape(100, -1))


@pytest.mark.parametrize(
    "input_scale, expected", [(None, TUTORIAL_ACCURACY_RAW), (1 / 255, TUTORIAL_ACCURACY_SCALED)]
)
def test_stable_forward_reproduces_published_accuracy(mnist, sample_weights, input_scale, expected):
    images, labels = mnist
    layers = [
        (sample_weights["W1"], sample_weights["b1"], "sigmoid"),
        (sample_weights["W2"], sample_weights["b2"], "sigmoid"),
        (sample_weights["W3"], sample_weights["b3"], "softmax"),
    ]
    proba = reference.forward(layers, images, input_scale=input_scale)  # no warnings
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(proba.argmax(axis=1) == labels) == expected
