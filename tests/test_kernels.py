"""fastmlp's array functions checked against the plain NumPy reference, at every CPU level.

``sigmoid``, ``softmax``, ``log_softmax``, ``identity`` and ``dense`` are compared with
:mod:`fastmlp.reference` evaluated in float64 on the very same input values (the exact upcast),
so the tolerances below bound fastmlp's own error. Array functions run at the level active when
they are called, so each test forces a level with ``fastmlp._core.force_cpu_level`` and a fixture
finalizer always restores the detected one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastmlp
from fastmlp import _core, reference

LEVELS = tuple(_core.supported_levels())
FLOATS = (np.float32, np.float64)
# Lengths around every vector width (4, 8, 16 lanes) and the 32-element short-row threshold.
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 1001)
ACTIVATIONS = ("sigmoid", "relu", "tanh", "identity", "softmax")
AxisError = getattr(np, "exceptions", np).AxisError

# Tolerances against the float64 reference: (rtol, atol) per function and dtype.
TOLERANCES = {
    # Results below twice the smallest normal number are exactly 0 (no subnormal is made).
    ("sigmoid", np.float32): (1e-6, 2 * float(np.finfo(np.float32).tiny)),
    ("sigmoid", np.float64): (1e-12, 2 * float(np.finfo(np.float64).tiny)),
    ("softmax", np.float32): (0.0, 1e-6),
    ("softmax", np.float64): (0.0, 1e-12),
    # log-softmax values grow with |x - max|: float32 rounds x - max, so a relative term too.
    ("log_softmax", np.float32): (1e-6, 1e-5),
    ("log_softmax", np.float64): (1e-13, 1e-12),
    ("identity", np.float32): (0.0, 0.0),
    ("identity", np.float64): (0.0, 0.0),
}

FUNCTIONS = {
    "sigmoid": fastmlp.sigmoid,
    "softmax": fastmlp.softmax,
    "log_softmax": fastmlp.log_softmax,
    "identity": fastmlp.identity,
}
ROW_WISE = ("softmax", "log_softmax")


@pytest.fixture(params=LEVELS)
def level(request):
    """Forces each supported level for the test; the finalizer restores the detected one."""
    request.addfinalizer(lambda: _core.force_cpu_level(None))
    _core.force_cpu_level(request.param)
    assert _core.cpu_level() == request.param
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def reference_of(name: str, x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The reference result, computed in float64 on the exact values of ``x``."""
    x64 = np.asarray(x).astype(np.float64)
    with np.errstate(all="ignore"):
        if name in ROW_WISE:
            return getattr(reference, name)(x64, axis=axis)
        return getattr(reference, name)(x64)


def call(name: str, x, axis: int = -1, **kwargs) -> np.ndarray:
    if name in ROW_WISE:
        return FUNCTIONS[name](x, axis=axis, **kwargs)
    return FUNCTIONS[name](x, **kwargs)


def assert_matches_reference(got, x, name, dtype, axis=-1, context=""):
    """``got`` equals the reference: same dtype and shape, NaN where it is NaN, close elsewhere."""
    x = np.asarray(x)
    assert got.dtype == dtype, context
    assert got.shape == x.shape, context
    expected = reference_of(name, x, axis)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=context)
    rtol, atol = TOLERANCES[(name, np.dtype(dtype).type)]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=context)


def random_values(rng, shape, dtype, scale=5.0):
    """Mostly O(1) values with some large ones, so every branch and range is exercised."""
    values = rng.normal(scale=scale, size=shape)
    if values.size:
        large = rng.random(shape) < 0.1
        values[large] = rng.uniform(-120, 120, size=int(large.sum()))
    return values.astype(dtype)


# --- levels ----------------------------------------------------------------------------------


def test_supported_levels_are_known_and_portable_is_always_there():
    assert LEVELS, "supported_levels() is empty"
    assert set(LEVELS) <= {"avx512", "avx2", "neon", "portable"}
    assert LEVELS[-1] == "portable"
    assert fastmlp.cpu_level() == LEVELS[0]


def test_force_cpu_level_switches_the_active_level_and_none_restores_it():
    try:
        for name in LEVELS:
            _core.force_cpu_level(name)
            assert fastmlp.cpu_level() == name
        with pytest.raises(ValueError, match="unknown level"):
            _core.force_cpu_level("sse9")
    finally:
        _core.force_cpu_level(None)
    assert fastmlp.cpu_level() == LEVELS[0]


@pytest.mark.skipif(len(LEVELS) < 2, reason="this CPU runs only the portable level")
def test_array_functions_run_at_the_level_active_at_call_time(rng):
    # The portable level uses separate multiply and add, the SIMD levels FMA: on enough random
    # data their last bits differ, which shows that forcing a level reaches the kernels.
    x = rng.normal(scale=4, size=100_000).astype(np.float32)
    X = rng.normal(size=(200, 101)).astype(np.float32)
    W = (rng.normal(size=(101, 37)) / 10).astype(np.float32)
    b = rng.normal(size=37).astype(np.float32)

    def run():
        return fastmlp.sigmoid(x), fastmlp.dense(X, W, b, "tanh")

    best = run()
    try:
        _core.force_cpu_level("portable")
        portable = run()
    finally:
        _core.force_cpu_level(None)
    for at_best, at_portable in zip(best, portable):
        assert not np.array_equal(at_best, at_portable)
        np.testing.assert_allclose(at_portable, at_best, rtol=0, atol=1e-5)
    for again, first in zip(run(), best):
        assert np.array_equal(again, first)


# --- agreement with the reference --------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_matches_reference_for_every_size(level, dtype, rng):
    for size in (0,) + SIZES:
        x = random_values(rng, size, dtype)
        assert_matches_reference(fastmlp.sigmoid(x), x, "sigmoid", dtype, context=f"n={size}")
    for shape in [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 7), (0, 5), (4, 0, 3)]:
        x = random_values(rng, shape, dtype)
        assert_matches_reference(fastmlp.sigmoid(x), x, "sigmoid", dtype, context=str(shape))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_over_its_whole_range(level, dtype):
    # Dense sweep through both tails, the subnormal range of the result and the saturation.
    x = np.linspace(-800, 800, 160_001).astype(dtype)
    assert_matches_reference(fastmlp.sigmoid(x), x, "sigmoid", dtype)
    x = np.linspace(-5, 5, 10_001).astype(dtype)
    assert_matches_reference(fastmlp.sigmoid(x), x, "sigmoid", dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_identity_is_an_exact_copy(level, dtype, rng):
    for size in (0,) + SIZES:
        x = random_values(rng, size, dtype)
        got = fastmlp.identity(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, x)
        assert not np.shares_memory(got, x)
    x = np.array([np.nan, np.inf, -np.inf, -0.0], dtype)
    got = fastmlp.identity(x)
    np.testing.assert_array_equal(got, x)
    assert np.signbit(got[3])


SOFTMAX_SHAPES = [(n,) for n in SIZES] + [
    (1, 1),
    (3, 1),
    (1, 5),
    (5, 3),
    (7, 17),
    (33, 31),
    (2, 65),
    (40, 33),
    (3, 5, 7),
    (2, 33, 9),
    (17, 2, 3),
    (2, 3, 4, 5),
    (3, 1, 17, 2),
    (2, 9, 2, 33),
]


@pytest.mark.parametrize("name", ROW_WISE)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_matches_reference_on_every_axis(level, name, dtype, rng):
    for shape in SOFTMAX_SHAPES:
        x = random_values(rng, shape, dtype)
        for axis in range(-len(shape), len(shape)):
            got = call(name, x, axis)
            assert_matches_reference(got, x, name, dtype, axis, context=f"{shape} axis={axis}")
            if name == "softmax":
                np.testing.assert_allclose(
                    got.sum(axis=axis), 1.0, atol=1e-5 if dtype == np.float32 else 1e-12
                )


@pytest.mark.parametrize("name", ROW_WISE)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_of_zero_size_arrays_and_single_elements(level, name, dtype):
    for shape in [(0,), (0, 3), (3, 0), (2, 0, 4), (0, 0), (1,), (1, 1), (1, 1, 1, 1)]:
        x = np.full(shape, 3.5, dtype=dtype)
        for axis in range(len(shape)):
            got = call(name, x, axis)
            assert got.shape == shape and got.dtype == dtype
            # A single element along the axis: softmax 1, log-softmax 0.
            if shape[axis] == 1:
                np.testing.assert_array_equal(got, 1.0 if name == "softmax" else 0.0)


def dense_cases():
    """(N, K, M) triples: every awkward K, output widths around the tile widths, all batches."""
    batches = (0, 1, 2, 5, 17, 33, 100)
    widths = (1, 2, 3, 5, 7, 12, 13, 17, 25, 33, 65)
    cases = []
    for i, k in enumerate(SIZES):
        cases.append((batches[i % len(batches)], k, widths[i % len(widths)]))
        cases.append((batches[(i + 3) % len(batches)], k, widths[(i + 5) % len(widths)]))
    return cases


def reference_dense(x, W, b, activation):
    with np.errstate(all="ignore"):
        return reference.dense(
            np.asarray(x, np.float64),
            np.asarray(W, np.float64),
            np.asarray(b, np.float64),
            activation,
        )


def dense_tolerance(x, W, b, dtype):
    """An absolute error bound for a dot product of K terms in ``dtype`` (ULP-scaled)."""
    eps = float(np.finfo(dtype).eps)
    magnitude = np.abs(np.atleast_2d(x).astype(np.float64)) @ np.abs(W.astype(np.float64))
    magnitude = magnitude + np.abs(b.astype(np.float64))
    k = W.shape[0]
    bound = 4 * eps * np.sqrt(k + 1) * (magnitude.max() if magnitude.size else 0.0)
    return bound + (1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_matches_reference(level, activation, dtype, rng):
    for n, k, m in dense_cases():
        x = rng.normal(size=(n, k)).astype(dtype)
        W = (rng.normal(size=(k, m)) / np.sqrt(k)).astype(dtype)
        b = rng.normal(scale=0.5, size=m).astype(dtype)
        got = fastmlp.dense(x, W, b, activation)
        assert got.shape == (n, m) and got.dtype == dtype
        expected = reference_dense(x, W, b, activation)
        np.testing.assert_allclose(
            got,
            expected,
            rtol=0,
            atol=dense_tolerance(x, W, b, dtype),
            err_msg=f"N={n} K={k} M={m} {activation}",
        )
        if n:
            one = fastmlp.dense(x[0], W, b, activation)
            assert one.shape == (m,)
            np.testing.assert_array_equal(one, got[0])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_dtype_rules_and_uint8_input(level, activation, rng):
    k, m = 37, 11
    pixels = rng.integers(0, 256, size=(9, k), dtype=np.uint8)
    W32 = (rng.normal(size=(k, m)) / 300).astype(np.float32)
    b32 = rng.normal(size=m).astype(np.float32)
    # uint8 x keeps the weights' dtype; a float64 x promotes float32 weights to float64.
    got = fastmlp.dense(pixels, W32, b32, activation)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got,
        reference_dense(pixels, W32, b32, activation),
        rtol=0,
        atol=dense_tolerance(pixels, W32, b32, np.float32),
    )
    got64 = fastmlp.dense(pixels.astype(np.float64), W32, b32, activation)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(
        got64,
        reference_dense(pixels, W32, b32, activation),
        rtol=0,
        atol=dense_tolerance(pixels, W32, b32, np.float64),
    )
    assert fastmlp.dense(pixels, W32, b32.astype(np.float64), activation).dtype == np.float64
    assert fastmlp.dense(pixels.astype(np.float32), W32, b32, activation).dtype == np.float32


def test_dense_out_and_threads(level, rng):
    x = rng.normal(size=(300, 64))
    W = rng.normal(size=(64, 20)) / 8
    b = rng.normal(size=20)
    expected = fastmlp.dense(x, W, b, "softmax")
    out = np.full((300, 20), np.nan)
    assert fastmlp.dense(x, W, b, "softmax", out=out) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(fastmlp.dense(x, W, b, "softmax", threads=1), expected)
    np.testing.assert_array_equal(fastmlp.dense(x, W, b, "softmax", threads=2), expected)
    single = np.full(20, np.nan)
    assert fastmlp.dense(x[7], W, b, "softmax", out=single) is single
    np.testing.assert_array_equal(single, expected[7])
    wrong = np.full((300, 20), 42.0, np.float32)
    with pytest.raises(TypeError):
        fastmlp.dense(x, W, b, "softmax", out=wrong)
    np.testing.assert_array_equal(wrong, 42.0)


def test_dense_errors():
    W = np.ones((4, 3))
    b = np.zeros(3)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        fastmlp.dense(np.ones(5), W, b)
    with pytest.raises(ValueError):
        fastmlp.dense(np.ones((2, 5)), W, b)
    with pytest.raises(ValueError, match=r"\(2, 2, 4\)"):
        fastmlp.dense(np.ones((2, 2, 4)), W, b)
    with pytest.raises(ValueError, match="unknown activation"):
        fastmlp.dense(np.ones((2, 4)), W, b, "gelu")
    with pytest.raises(ValueError):
        fastmlp.dense(np.ones((2, 4)), W, np.zeros(4))
    with pytest.raises(TypeError, match="bool"):
        fastmlp.dense(np.ones((2, 4), bool), W, b)
    with pytest.raises(TypeError, match="complex"):
        fastmlp.dense(np.ones((2, 4)), W.astype(complex), b)


# --- the multi-threaded paths ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_large_sigmoid_agrees_and_is_identical_for_any_thread_count(level, dtype, rng):
    x = rng.uniform(-60, 60, size=1_000_003).astype(dtype)
    one = fastmlp.sigmoid(x, threads=1)
    two = fastmlp.sigmoid(x, threads=2)
    default = fastmlp.sigmoid(x)
    assert np.array_equal(one, two)
    assert np.array_equal(one, default)
    assert_matches_reference(two, x, "sigmoid", dtype)


@pytest.mark.parametrize("name", ROW_WISE)
@pytest.mark.parametrize("axis", [-1, 0])
def test_large_softmax_agrees_and_is_identical_for_any_thread_count(level, name, axis, rng):
    for dtype, shape in [
        (np.float32, (3001, 257)),
        (np.float64, (3001, 257)),
        (np.float32, (8001, 31)),
        (np.float32, (10001, 10)),  # short rows, split from 2^15 elements
    ]:
        x = random_values(rng, shape, dtype)
        one = call(name, x, axis, threads=1)
        two = call(name, x, axis, threads=2)
        assert np.array_equal(one, two), f"{dtype.__name__} {shape}"
        assert_matches_reference(two, x, name, dtype, axis)


def test_large_three_d_softmax_splits_over_the_outer_axis(level, rng):
    x = random_values(rng, (64, 101, 67), np.float32)
    for axis in (0, 1, 2):
        one = fastmlp.softmax(x, axis=axis, threads=1)
        two = fastmlp.softmax(x, axis=axis, threads=2)
        assert np.array_equal(one, two)
        assert_matches_reference(two, x, "softmax", np.float32, axis)


def test_threads_argument_is_validated():
    x = np.ones(10)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="threads"):
            fastmlp.sigmoid(x, threads=bad)
        with pytest.raises(ValueError, match="threads"):
            fastmlp.softmax(x, threads=bad)
    with pytest.raises(TypeError, match="threads"):
        fastmlp.sigmoid(x, threads="2")
    with pytest.raises(TypeError, match="threads"):
        fastmlp.log_softmax(x, threads=1.5)
    # More threads than cores is allowed (capped), and changes nothing.
    assert np.array_equal(fastmlp.sigmoid(x, threads=10_000), fastmlp.sigmoid(x, threads=1))


# --- stability and special values ------------------------------------------------------------


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            yield


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_special_values(level, dtype, no_warnings):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array(
        [
            -np.inf,
            np.inf,
            np.nan,
            -1e4,
            1e4,
            -0.0,
            0.0,
            tiny,
            -tiny,
            np.finfo(dtype).tiny / 4,
            np.finfo(dtype).max,
            -np.finfo(dtype).max,
        ],
        dtype=dtype,
    )
    got = fastmlp.sigmoid(x)
    assert got.dtype == dtype
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == 1.0
    assert np.isnan(got[2])
    assert got[3] == 0.0 and got[4] == 1.0
    np.testing.assert_array_equal(got[5:10], 0.5)
    assert got[10] == 1.0 and got[11] == 0.0
    assert_matches_reference(got, x, "sigmoid", dtype)
    # Every lane position of a vector and of the scalar tail handles the specials the same way.
    for size in (5, 9, 17, 33):
        for position in range(size):
            y = np.zeros(size, dtype)
            y[position] = np.nan
            y[(position + 1) % size] = np.inf
            y[(position + 2) % size] = -np.inf
            got = fastmlp.sigmoid(y)
            assert np.isnan(got[position]), (size, position)
            if size > 2:
                assert got[(position + 1) % size] == 1.0
                assert got[(position + 2) % size] == 0.0
            assert np.count_nonzero(np.isnan(got)) == 1


def test_sigmoid_float32_saturates_exactly(level, no_warnings):
    x = np.array([100.0, 50.0, 17.0, 90.0, 89.0, 88.0, -88.0, -89.0, -104.0, -200.0], np.float32)
    got = fastmlp.sigmoid(x)
    assert got[0] == np.float32(1.0) and got[1] == 1.0 and got[2] == 1.0
    # Far negative inputs give the tiny true value, never negative, and never a subnormal:
    # exactly 0 where the true value is below twice the smallest normal number.
    assert np.all(got[6:] >= 0) and got[-1] == 0.0
    assert np.all((got == 0) | (got >= np.finfo(np.float32).tiny))
    assert_matches_reference(got, x, "sigmoid", np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ROW_WISE)
def test_softmax_of_large_scores_is_finite(level, dtype, name, no_warnings):
    x = np.array([1010.0, 1000.0, 990.0], dtype)
    got = call(name, x)
    assert np.all(np.isfinite(got))
    if name == "softmax":
        assert abs(float(got.sum()) - 1.0) < 1e-6
        assert got[0] > got[1] > got[2] > 0
    assert_matches_reference(got, x, name, dtype)
    batch = np.array([[1010.0, 1000.0, 990.0], [-1010.0, -1000.0, -990.0]], dtype)
    got = call(name, batch)
    assert np.all(np.isfinite(got))
    assert_matches_reference(got, batch, name, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_sums_without_losing_an_ulp_per_term(level, dtype):
    if dtype == np.float64 and np.finfo(np.longdouble).nmant < 63:
        pytest.skip("the exact float64 values need an extended long double, absent here")
    # One dominant score and n - 1 equal ones 13.5 below: each exp(-13.5) is about 11.5 ulp of
    # the running sum near 1, so a plain running sum rounds the same way at every term and
    # drifts by up to half an ulp per term (17 terms were already beyond 1e-6 in float32), and
    # so does a plain sum of the dropped parts over 100,000 terms (33 ulp).
    for n in (10, 18, 100, 1000, 100_000, 1_000_000):
        x = np.full(n, -13.5, dtype)
        top_index = n // 3
        x[top_index] = 0.0
        others = (n - 1) * np.exp(np.longdouble(-13.5))
        exact = 1.0 / (1.0 + others)
        exact_log = -np.log1p(others)
        forms = [(x, -1), (x[:, None], 0)]  # the long-row kernel
        if n <= 100_000:
            # the vertical kernel (columns in lanes), and through scratch for the last column
            forms += [(np.tile(x, (8, 1)).T.copy(), 0), (np.tile(x, (17, 1)).T.copy(), 0)]
        for scores, axis in forms:
            got = fastmlp.softmax(scores, axis=axis)
            top = np.take(got, top_index, axis=axis)
            # The long-row kernel adds blocks of four vectors plainly: up to 1.5 ulp of the
            # sum, 3 of a probability just below 1, and the division rounds once more.
            ulps = np.abs(top - exact) / np.spacing(dtype(exact))
            assert np.all(ulps <= 4), (n, scores.shape, float(ulps.max()))
            total = np.sum(got, axis=axis, dtype=np.longdouble)
            assert np.all(np.abs(total - 1) <= 8 * np.finfo(dtype).eps), (n, scores.shape)
            # ln of the sum is within an ulp of 1 in absolute terms, as a log of a value
            # near 1 can be; a drifting sum would be off by its drift.
            top_log = np.take(fastmlp.log_softmax(scores, axis=axis), top_index, axis=axis)
            error = np.abs(top_log - exact_log)
            assert np.all(error <= 2 * np.finfo(dtype).eps), (n, scores.shape, float(error.max()))


def special_rows(n: int, dtype, rng) -> np.ndarray:
    """Rows of length n: plain, with NaN, with +inf, with a -inf among finite values, all -inf,
    with both infinities, all +inf, each special put at the start, middle and end."""
    rows = [rng.normal(size=n)]
    for special in (np.nan, np.inf, -np.inf):
        for position in sorted({0, n // 2, n - 1}):
            row = rng.normal(size=n)
            row[position] = special
            rows.append(row)
    rows.append(np.full(n, -np.inf))
    rows.append(np.full(n, np.inf))
    mixed = np.full(n, -np.inf)
    mixed[-1] = np.inf
    rows.append(mixed)
    one_finite = np.full(n, -np.inf)
    one_finite[n // 2] = 2.0
    rows.append(one_finite)
    rows.append(rng.normal(size=n))
    return np.array(rows, dtype=dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ROW_WISE)
def test_softmax_rows_with_nan_and_infinities_follow_the_stable_formula(
    level, dtype, name, rng, no_warnings
):
    for n in (1, 2, 3, 7, 8, 15, 16, 17, 32, 33, 64, 65, 100):
        rows = special_rows(n, dtype, rng)
        for x, axis in [(rows, -1), (rows.T.copy(), 0), (rows[:, None, :].copy(), -1)]:
            got = call(name, x, axis)
            assert_matches_reference(got, x, name, dtype, axis, context=f"n={n} axis={axis}")
            # Only the rows holding NaN/+inf or only -inf are NaN; the plain rows are untouched.
            expected = reference_of(name, x, axis)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        got = call(name, rows)
        assert np.all(np.isfinite(got[0])) and np.all(np.isfinite(got[-1]))
        assert np.all(np.isnan(got[-4])), "all -inf row must be NaN"
        assert np.all(np.isnan(got[-5])), "all +inf row must be NaN"
        if n > 1:
            # a -inf among finite values: probability 0 (log-probability -inf), the rest finite
            row = rng.normal(size=(1, n)).astype(dtype)
            row[0, n // 2] = -np.inf
            got = call(name, row)[0]
            assert got[n // 2] == (0.0 if name == "softmax" else -np.inf)
            assert np.all(np.isfinite(np.delete(got, n // 2)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_log_softmax_is_finite_where_the_probability_underflows(level, dtype, no_warnings):
    gap = 200.0 if dtype == np.float32 else 1000.0
    for n in (2, 3, 17, 40, 100):
        x = np.zeros(n, dtype)
        x[1:] = -gap
        with np.errstate(divide="ignore"):
            naive = np.log(reference.softmax(x))
        assert np.isneginf(naive[1:]).all()  # the naive route fails here...
        got = fastmlp.log_softmax(x)
        assert np.all(np.isfinite(got))  # ...log_softmax does not
        with np.errstate(under="ignore"):
            exact = -gap - np.log1p((n - 1) * np.exp(-gap))
        np.testing.assert_allclose(got[1:], exact, rtol=1e-6)
        assert_matches_reference(got, x, "log_softmax", dtype)
        # the same along axis 0 of a 2-D array
        got2 = fastmlp.log_softmax(np.stack([x, x[::-1]], axis=1), axis=0)
        assert np.all(np.isfinite(got2))


@pytest.mark.parametrize("name", ROW_WISE + ("sigmoid",))
def test_uint8_input_is_promoted_before_any_arithmetic(level, name):
    x = np.array([0, 255], np.uint8)
    got = call(name, x)
    assert got.dtype == np.float64
    expected = call(name, np.array([0.0, 255.0]))
    np.testing.assert_array_equal(got, expected)
    if name == "softmax":
        assert got[1] > 0.99 and got[0] < 1e-100
    images = np.random.default_rng(3).integers(0, 256, size=(5, 33), dtype=np.uint8)
    assert_matches_reference(call(name, images), images, name, np.float64)


# --- dtype rules -----------------------------------------------------------------------------

ACCEPTED = [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.float16, np.float32),
    (np.int8, np.float64),
    (np.int16, np.float64),
    (np.int32, np.float64),
    (np.int64, np.float64),
    (np.uint8, np.float64),
    (np.uint16, np.float64),
    (np.uint32, np.float64),
    (np.uint64, np.float64),
]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("in_dtype, out_dtype", ACCEPTED)
def test_dtype_rules(name, in_dtype, out_dtype):
    x = np.array([[0, 1, 2, 3, 100], [5, 6, 7, 8, 9]]).astype(in_dtype)
    got = call(name, x)
    assert got.dtype == out_dtype
    assert_matches_reference(got, x, name, out_dtype)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_non_native_byte_order_floats_keep_their_precision(name, dtype):
    # A big-endian float array (as read from a file) holds float32/float64 values all the same.
    x = np.array([[-3.0, 0.5, 2.0], [1.0, 1.0, 7.0]], dtype=dtype)
    swapped = x.astype(np.dtype(dtype).newbyteorder(">" if np.little_endian else "<"))
    got = call(name, swapped)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, call(name, x))


def test_python_lists_and_scalars_compute_in_float64():
    assert fastmlp.softmax([1.0, 2.0, 3.0]).dtype == np.float64
    assert fastmlp.softmax([1, 2, 3]).dtype == np.float64
    np.testing.assert_allclose(fastmlp.softmax([0.0, 0.0]), [0.5, 0.5])
    half = fastmlp.sigmoid(0.0)
    assert half.shape == () and half == 0.5
    assert fastmlp.sigmoid(np.float32(0.0)).dtype == np.float32


REFUSED = [
    (np.array([True, False]), "bool"),
    (np.array([1 + 2j, 3j], np.complex64), "complex64"),
    (np.array([1 + 2j, 3j], np.complex128), "complex128"),
    (np.array([1.0, 2.0], dtype=object), "object"),
    (np.array(["1.0", "2.0"]), "<U3"),
    (np.array([b"1", b"2"]), "|S1"),
]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("x, dtype_name", REFUSED, ids=[d for _, d in REFUSED])
def test_refused_dtypes_raise_type_error_naming_the_dtype(name, x, dtype_name):
    with pytest.raises(TypeError) as info:
        call(name, x)
    assert dtype_name in str(info.value)


# --- out= ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_out_receives_the_result_and_is_returned(level, name, dtype, rng):
    for shape in [(37,), (5, 33), (3, 4, 5)]:
        x = random_values(rng, shape, dtype)
        out = np.full(shape, -7.0, dtype)
        result = call(name, x, out=out)
        assert result is out
        np.testing.assert_array_equal(out, call(name, x))
    # Integer input writes into a float64 out.
    out = np.empty(4)
    assert call(name, np.arange(4, dtype=np.uint8), out=out) is out
    assert_matches_reference(out, np.arange(4.0), name, np.float64)


def bad_outs(shape, dtype):
    """(description, buffer, exception) for each out= that must be refused."""
    other = np.float64 if dtype == np.float32 else np.float32
    base = np.full((shape[0], 2 * shape[1]), 42.0, dtype)
    readonly = np.full(shape, 42.0, dtype)
    readonly.setflags(write=False)
    return [
        ("wrong shape", np.full((shape[0], shape[1] + 1), 42.0, dtype), ValueError),
        ("transposed shape", np.full(shape[::-1], 42.0, dtype), ValueError),
        ("flat", np.full(shape[0] * shape[1], 42.0, dtype), ValueError),
        ("wrong dtype", np.full(shape, 42.0, other), TypeError),
        ("int dtype", np.full(shape, 42, np.int64), TypeError),
        ("non-contiguous", base[:, ::2], ValueError),
        ("fortran", np.asfortranarray(np.full(shape, 42.0, dtype)), ValueError),
        ("read-only", readonly, ValueError),
    ]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_refused_out_is_left_untouched(name, dtype, rng):
    shape = (3, 5)
    x = random_values(rng, shape, dtype)
    for description, out, error in bad_outs(shape, dtype):
        before = out.copy()
        with pytest.raises(error):
            call(name, x, out=out)
        np.testing.assert_array_equal(out, before, err_msg=description)
    with pytest.raises(TypeError, match="ndarray"):
        call(name, x, out=[[0.0] * 5] * 3)


@pytest.mark.parametrize("name", ROW_WISE)
def test_bad_axis_with_out_leaves_out_untouched(name):
    out = np.full((2, 3), 42.0)
    with pytest.raises(AxisError):
        call(name, np.ones((2, 3)), 2, out=out)
    np.testing.assert_array_equal(out, 42.0)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_in_place_equals_out_of_place(level, name, dtype, rng):
    for shape in [(1,), (17,), (1001,), (6, 33), (40, 7), (3, 5, 17)]:
        x = random_values(rng, shape, dtype)
        for axis in range(len(shape)) if name in ROW_WISE else [-1]:
            expected = call(name, x, axis)
            buffer = x.copy()
            result = call(name, buffer, axis, out=buffer)
            assert result is buffer
            np.testing.assert_array_equal(buffer, expected, err_msg=f"{shape} axis={axis}")
            # another view object of the same memory is in place too
            buffer = x.copy()
            view = buffer[...]
            assert call(name, buffer, axis, out=view) is view
            np.testing.assert_array_equal(buffer, expected, err_msg=f"{shape} axis={axis} view")


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("shift", [1, 3, 8, 17])
def test_out_partially_overlapping_the_input(level, name, shift, rng):
    n = 100
    source = random_values(rng, n + shift, np.float64)
    for out_first in (True, False):
        buffer = source.copy()
        if out_first:
            x, out = buffer[shift:], buffer[:-shift]
        else:
            x, out = buffer[:-shift], buffer[shift:]
        expected = call(name, x.copy())
        assert np.shares_memory(x, out)
        result = call(name, x, out=out)
        assert result is out
        np.testing.assert_array_equal(out, expected, err_msg=f"out_first={out_first}")
    # 2-D views of one buffer: rows shifted by one.
    buffer = random_values(rng, (11, 9), np.float32)
    x, out = buffer[1:], buffer[:-1]
    expected = call(name, x.copy(), 0) if name in ROW_WISE else call(name, x.copy())
    if name in ROW_WISE:
        call(name, x, 0, out=out)
    else:
        call(name, x, out=out)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_in_place_on_empty_arrays(name, shape):
    buffer = np.empty(shape)
    assert call(name, buffer, out=buffer) is buffer
    assert buffer.shape == shape


@pytest.mark.parametrize("name", ["sigmoid", "identity"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_zero_dimensional_input_keeps_its_shape(name, dtype):
    x = np.array(-0.75, dtype)
    got = call(name, x)
    assert got.shape == () and got.dtype == dtype
    assert_matches_reference(got, x, name, dtype)
    out = np.full((), 42.0, dtype)
    assert call(name, x, out=out) is out
    assert_matches_reference(out, x, name, dtype)


# --- inputs are never modified; any layout works ------------------------------------------------


def layouts(x: np.ndarray):
    """Non-contiguous and read-only versions of ``x`` (each with the same values as ``x``)."""
    yield "fortran", np.asfortranarray(x)
    wide = np.zeros((x.shape[0] * 2,) + x.shape[1:], x.dtype)
    wide[::2] = x
    yield "step 2", wide[::2]
    flipped = np.ascontiguousarray(x[::-1])
    yield "negative stride", flipped[::-1]
    readonly = x.copy()
    readonly.setflags(write=False)
    yield "read-only", readonly
    padded = np.zeros(x.shape[:-1] + (x.shape[-1] + 3,), x.dtype)
    padded[..., 1:-2] = x
    yield "column slice", padded[..., 1:-2]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_non_contiguous_inputs_give_the_same_results(level, name, dtype, rng):
    for shape in [(7, 33), (40, 5), (3, 4, 17)]:
        x = random_values(rng, shape, dtype)
        for axis in range(len(shape)) if name in ROW_WISE else [-1]:
            expected = call(name, x, axis)
            for layout, view in layouts(x):
                before = view.copy()
                got = call(name, view, axis)
                assert got.flags.c_contiguous
                np.testing.assert_array_equal(got, expected, err_msg=f"{layout} axis={axis}")
                np.testing.assert_array_equal(view, before, err_msg=f"{layout} was modified")


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_inputs_are_never_modified(level, name, rng):
    inputs = [
        random_values(rng, (5, 33), np.float32),
        random_values(rng, (1001,), np.float64),
        random_values(rng, (3, 2, 7), np.float16),
        rng.integers(0, 256, size=(4, 9), dtype=np.uint8),
        rng.integers(-50, 50, size=(4, 9), dtype=np.int64),
        np.array([[np.nan, np.inf, -np.inf, 0.0]]),
    ]
    for x in inputs:
        before = x.copy()
        call(name, x)
        np.testing.assert_array_equal(x, before)
        call(name, x, out=np.empty(x.shape, fastmlp._functions.float_dtype_for(x.dtype, "x")))
        np.testing.assert_array_equal(x, before)


def test_dense_inputs_are_never_modified(rng):
    x = rng.normal(size=(5, 7))
    W = rng.normal(size=(7, 3))
    b = rng.normal(size=3)
    copies = [a.copy() for a in (x, W, b)]
    fastmlp.dense(x, W, b, "softmax")
    for original, copy in zip((x, W, b), copies):
        np.testing.assert_array_equal(original, copy)


def test_dense_non_contiguous_inputs(level, rng):
    x = rng.normal(size=(9, 20))
    W = rng.normal(size=(20, 13))
    b = rng.normal(size=13)
    expected = fastmlp.dense(x, W, b, "tanh")
    np.testing.assert_array_equal(fastmlp.dense(np.asfortranarray(x), W, b, "tanh"), expected)
    np.testing.assert_array_equal(fastmlp.dense(x, np.asfortranarray(W), b, "tanh"), expected)
    np.testing.assert_array_equal(fastmlp.dense(x[::-1][::-1], W, b[::1], "tanh"), expected)
    wide = np.zeros((9, 40))
    wide[:, ::2] = x
    np.testing.assert_array_equal(fastmlp.dense(wide[:, ::2], W, b, "tanh"), expected)


# --- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ROW_WISE)
def test_bad_axis_raises_axis_error(name):
    x = np.ones((2, 3))
    for axis in (2, -3, 100):
        with pytest.raises(AxisError) as info:
            call(name, x, axis)
        assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)
    with pytest.raises(AxisError):
        call(name, np.ones(4), 1)
    with pytest.raises(TypeError, match="axis"):
        call(name, x, 1.0)


@pytest.mark.parametrize("name", ROW_WISE)
def test_scalar_input_to_softmax_raises_value_error(name):
    for scalar in (1.0, np.float32(2.0), np.array(3.0)):
        with pytest.raises(ValueError, match="scalar"):
            call(name, scalar)


# --- properties (hypothesis) -----------------------------------------------------------------

MAX_SIDE = {1: 300, 2: 40, 3: 12, 4: 7}


def shapes():
    return st.integers(1, 4).flatmap(
        lambda dims: hnp.array_shapes(
            min_dims=dims, max_dims=dims, min_side=0, max_side=MAX_SIDE[dims]
        )
    )


def values(dtype, specials=True):
    width = 32 if dtype == np.float32 else 64
    finfo = np.finfo(dtype)
    finite = st.floats(-1e4, 1e4, width=width, allow_subnormal=True)
    if not specials:
        return finite
    special = st.sampled_from(
        [
            np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            float(finfo.smallest_subnormal),
            -float(finfo.smallest_subnormal),
            float(finfo.tiny) / 2,
            1e4,
            -1e4,
        ]
    )
    return st.one_of(finite, finite, finite, special)


@st.composite
def float_arrays(draw, specials=True):
    dtype = draw(st.sampled_from(FLOATS))
    return draw(hnp.arrays(dtype, shapes(), elements=values(dtype, specials)))


def at_level(level_name, function, *args, **kwargs):
    _core.force_cpu_level(level_name)
    try:
        return function(*args, **kwargs)
    finally:
        _core.force_cpu_level(None)


@settings(max_examples=1000, deadline=None)
@given(x=float_arrays(), level_name=st.sampled_from(LEVELS))
def test_property_sigmoid_matches_reference(x, level_name):
    before = x.copy()
    got = at_level(level_name, fastmlp.sigmoid, x)
    assert_matches_reference(got, x, "sigmoid", x.dtype.type)
    assert np.all((got >= 0) & (got <= 1) | np.isnan(got))
    np.testing.assert_array_equal(x, before)


@settings(max_examples=1000, deadline=None)
@given(data=st.data(), x=float_arrays(), level_name=st.sampled_from(LEVELS))
def test_property_softmax_matches_reference(data, x, level_name):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    before = x.copy()
    got = at_level(level_name, fastmlp.softmax, x, axis=axis)
    assert_matches_reference(got, x, "softmax", x.dtype.type, axis)
    if x.shape[axis] > 0:
        finite_rows = np.all(np.isfinite(got), axis=axis)
        sums = np.sum(got, axis=axis, dtype=np.float64)[finite_rows]
        np.testing.assert_allclose(sums, 1.0, atol=1e-5 if x.dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(x, before)


@settings(max_examples=1000, deadline=None)
@given(data=st.data(), x=float_arrays(), level_name=st.sampled_from(LEVELS))
def test_property_log_softmax_matches_reference(data, x, level_name):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    got = at_level(level_name, fastmlp.log_softmax, x, axis=axis)
    assert_matches_reference(got, x, "log_softmax", x.dtype.type, axis)
    assert not np.any(got > 0)


@settings(max_examples=800, deadline=None)
@given(data=st.data(), x=float_arrays(), level_name=st.sampled_from(LEVELS))
def test_property_in_place_equals_out_of_place(data, x, level_name):
    name = data.draw(st.sampled_from(list(FUNCTIONS)), label="function")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    expected = at_level(level_name, call, name, x, axis)
    buffer = x.copy()
    at_level(level_name, call, name, buffer, axis, out=buffer)
    np.testing.assert_array_equal(buffer, expected)


@settings(max_examples=800, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from(FLOATS),
    n=st.integers(0, 40),
    k=st.integers(1, 70),
    m=st.integers(1, 40),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
    level_name=st.sampled_from(LEVELS),
)
def test_property_dense_matches_reference(data, dtype, n, k, m, activation, seed, level_name):
    finite = st.floats(-10, 10, width=32 if dtype == np.float32 else 64)
    x = data.draw(hnp.arrays(dtype, (n, k), elements=finite, fill=finite), label="x")
    rng = np.random.default_rng(seed)
    W = (rng.normal(size=(k, m)) / np.sqrt(k)).astype(dtype)
    b = rng.normal(size=m).astype(dtype)
    got = at_level(level_name, fastmlp.dense, x, W, b, activation)
    assert got.shape == (n, m) and got.dtype == dtype
    np.testing.assert_allclose(
        got, reference_dense(x, W, b, activation), rtol=0, atol=dense_tolerance(x, W, b, dtype)
    )
