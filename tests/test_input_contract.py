"""Inputs that used to be accepted and give silently wrong numbers: masked arrays, scales that
overflow the model's dtype. Each is now refused with an error naming what was wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastmlp


@pytest.fixture
def model() -> fastmlp.MLP:
    rng = np.random.default_rng(3)
    return fastmlp.MLP(
        [
            (rng.normal(size=(4, 5)).astype(np.float32), np.zeros(5, np.float32), "relu"),
            (rng.normal(size=(5, 3)).astype(np.float32), np.zeros(3, np.float32), "softmax"),
        ]
    )


def _masked(shape: "tuple[int, ...]") -> np.ma.MaskedArray:
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return np.ma.masked_array(values, mask=values % 3 == 0)


@pytest.mark.parametrize("shape", [(4,), (6, 4), (6, 2, 2)])
@pytest.mark.parametrize("method", ["predict_proba", "predict_log_proba", "predict"])
def test_masked_rows_are_refused_by_name(model, method, shape):
    with pytest.raises(TypeError, match=r"X is a numpy masked array; fastmlp would ignore"):
        getattr(model, method)(_masked(shape))


def test_masked_rows_are_refused_on_every_path(model):
    # batch_size and threads take the validating path rather than the core's direct one.
    X = _masked((6, 4))
    for kwargs in ({"batch_size": 2}, {"threads": 1}):
        with pytest.raises(TypeError, match="masked array"):
            model.predict_proba(X, **kwargs)
        with pytest.raises(TypeError, match="masked array"):
            model.predict(X, **kwargs)


def test_score_refuses_masked_rows_and_masked_labels(model):
    X = np.ones((6, 4), np.float32)
    with pytest.raises(TypeError, match="X is a numpy masked array"):
        model.score(_masked((6, 4)), np.zeros(6, np.int64))
    labels = np.ma.masked_array(np.zeros(6, np.int64), mask=[1, 0, 0, 0, 0, 0])
    with pytest.raises(TypeError, match="y is a numpy masked array"):
        model.score(X, labels)


def test_masked_out_buffer_is_refused(model):
    out = np.ma.masked_array(np.empty((6, 3), np.float32), mask=False)
    with pytest.raises(TypeError, match="out is a numpy masked array"):
        model.predict_proba(np.ones((6, 4), np.float32), out=out)
    with pytest.raises(TypeError, match="out is a numpy masked array"):
        fastmlp.sigmoid(np.ones(3), out=np.ma.masked_array(np.empty(3), mask=False))


@pytest.mark.parametrize(
    "function",
    [fastmlp.sigmoid, fastmlp.identity, fastmlp.softmax, fastmlp.log_softmax],
    ids=lambda function: function.__name__,
)
def test_elementwise_functions_refuse_masked_arrays(function):
    with pytest.raises(TypeError, match=r"x is a numpy masked array.*\.filled\(value\)"):
        function(_masked((2, 3)))


def test_dense_refuses_masked_arrays_by_argument_name():
    x, W, b = np.ones((2, 3)), np.ones((3, 2)), np.zeros(2)
    for name, args in (
        ("x", (_masked((2, 3)), W, b)),
        ("W", (x, _masked((3, 2)), b)),
        ("b", (x, W, _masked((2,)))),
    ):
        with pytest.raises(TypeError, match=f"{name} is a numpy masked array"):
            fastmlp.dense(*args, "relu")


def test_filled_masked_arrays_work(model):
    X = _masked((6, 4))
    np.testing.assert_array_equal(
        model.predict_proba(X.filled(0)), model.predict_proba(np.where(X.mask, 0, X.data))
    )


@pytest.mark.parametrize("scale", [1e300, -1e39, 1e-50, 1e-40, -1e-39])
def test_input_scale_outside_float32_is_refused_naming_value_and_dtype(scale):
    layers = [(np.ones((2, 2), np.float32), np.zeros(2, np.float32), "softmax")]
    expected = rf"input_scale {re.escape(repr(scale))} becomes .* float32 model"
    with pytest.raises(ValueError, match=expected):
        fastmlp.MLP(layers, input_scale=scale)


def test_input_scale_that_fits_the_dtype_is_kept():
    layers = [(np.ones((2, 2)), np.zeros(2), "softmax")]
    assert fastmlp.MLP(layers, input_scale=1e300).input_scale == 1e300  # float64 holds it
    small = [(np.ones((2, 2), np.float32), np.zeros(2, np.float32), "softmax")]
    net = fastmlp.MLP(small, input_scale=2e-38)  # just above float32's smallest normal
    assert np.isfinite(net.predict_proba(np.zeros((1, 2), np.float32))).all()
    assert fastmlp.MLP(small, input_scale=0.0).input_scale == 0.0


def test_float32_model_with_a_huge_scale_no_longer_gives_nan_silently(tmp_path):
    # Through load, as a file written for a float64 model and read as float32 would.
    net = fastmlp.MLP([(np.ones((2, 2)), np.zeros(2), "softmax")], input_scale=1e300)
    path = net.save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match=r"1e\+300 becomes inf in this float32 model"):
        fastmlp.load(path, dtype=np.float32)
