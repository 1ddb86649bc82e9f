"""fastmlp on the tutorial's own network and data: the published accuracies, exactly, and the
stable NumPy reference's probabilities, closely."""

from __future__ import annotations

import warnings

import fastmlp
import numpy as np
import pytest
from conftest import TUTORIAL_ACCURACY_RAW, TUTORIAL_ACCURACY_SCALED
from fastmlp import reference

SCALE = 1 / 255
CONDITIONS = [(None, TUTORIAL_ACCURACY_RAW), (SCALE, TUTORIAL_ACCURACY_SCALED)]


def _layers(model: fastmlp.MLP) -> list:
    return list(zip(model.coefs_, model.intercepts_, model.activations))


@pytest.fixture(autouse=True)
def warnings_are_errors():
    # fastmlp's sigmoid must not overflow where the tutorial's does (raw pixels).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("input_scale, expected", CONDITIONS)
def test_uint8_images_give_the_published_accuracy(mnist, sample_weights, input_scale, expected):
    images, labels = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=input_scale)
    assert model.dtype == np.float32
    assert model.score(images, labels) == expected


@pytest.mark.parametrize("input_scale, expected", CONDITIONS)
def test_float64_model_gives_the_published_accuracy(mnist, sample_weights, input_scale, expected):
    images, labels = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=input_scale, dtype=np.float64)
    assert model.score(images, labels) == expected


def test_tutorial_style_float32_division_gives_the_published_accuracy(mnist, sample_weights):
    images, labels = mnist
    model = fastmlp.MLP.from_dict(sample_weights)
    scaled = images.reshape(len(images), -1).astype(np.float32) / 255
    assert model.score(scaled, labels) == TUTORIAL_ACCURACY_SCALED


@pytest.mark.parametrize("input_scale", [None, SCALE])
def test_per_sample_and_batched_calls_match_the_whole_batch(mnist, sample_weights, input_scale):
    images, _ = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=input_scale)
    whole = model.predict(images)
    np.testing.assert_array_equal(model.predict(images, batch_size=1), whole)
    np.testing.assert_array_equal(model.predict(images, batch_size=100), whole)
    one_by_one = np.array([model.predict(image.ravel()) for image in images[:500]])
    np.testing.assert_array_equal(one_by_one, whole[:500])
    proba = model.predict_proba(images)
    np.testing.assert_array_equal(model.predict_proba(images, batch_size=100), proba)
    np.testing.assert_array_equal(proba.argmax(axis=1), whole)


# Raw pixels drive the first layer's pre-activations into the thousands, where one float32
# ulp is ~1e-4: summation order alone then moves the outputs by ~1e-5, so raw pixels get a
# looser float32 bound than pixels / 255.
@pytest.mark.parametrize(
    "input_scale, dtype, atol",
    [
        (SCALE, np.float32, 1e-5),
        (None, np.float32, 1e-4),
        (SCALE, np.float64, 1e-12),
        (None, np.float64, 1e-12),
    ],
)
def test_probabilities_match_the_reference(mnist, sample_weights, input_scale, dtype, atol):
    images, _ = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=input_scale, dtype=dtype)
    proba = model.predict_proba(images)
    expected = reference.forward(_layers(model), images, input_scale=input_scale)
    assert proba.dtype == expected.dtype == dtype
    np.testing.assert_allclose(proba, expected, rtol=0, atol=atol)
    np.testing.assert_array_equal(proba.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_log_probabilities_match_the_reference(mnist, sample_weights, dtype, rtol):
    images, _ = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=SCALE, dtype=dtype)
    layers = _layers(model)
    W, b, _ = layers[-1]
    expected = reference.forward(layers[:-1] + [(W, b, "log_softmax")], images, SCALE)
    log_proba = model.predict_log_proba(images)
    assert np.all(np.isfinite(log_proba))
    np.testing.assert_allclose(log_proba, expected, rtol=rtol, atol=rtol)


def test_rows_are_probabilities_unlike_the_tutorials_batched_softmax(mnist, sample_weights):
    images, _ = mnist
    model = fastmlp.MLP.from_dict(sample_weights, input_scale=SCALE)
    row_sums = model.predict_proba(images[:100]).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(row_sums, 1.0, atol=1e-6)
    tutorial = reference.tutorial_predict(
        sample_weights, images[:100].reshape(100, -1).astype(np.float32) / 255
    )
    assert not np.allclose(tutorial.sum(axis=1), 1.0, atol=1e-2)


def test_load_then_score_on_raw_pixels(mnist, sample_weights_path):
    images, labels = mnist
    assert fastmlp.load(sample_weights_path).score(images, labels) == TUTORIAL_ACCURACY_RAW
