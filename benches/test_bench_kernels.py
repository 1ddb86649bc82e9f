"""The element-wise and row-wise kernels on their own.

Groups:

- ``sigmoid-10M``: sigmoid over 10,000,000 float32 values: fastmlp (default threads and one
  thread), the NumPy stable reference, ``scipy.special.expit`` and ``torch.sigmoid`` where
  installed, and ``x * 1``, a plain copy: the memory-bound floor any kernel that reads the input
  and writes a new array pays.
- ``softmax-1000x1000`` and ``softmax-10000x10``: row-wise softmax (few long rows, many short
  ones): fastmlp, the NumPy reference, ``torch.softmax`` where installed.

Every call allocates its output, as a user's call would. NumPy and SciPy run one thread here;
fastmlp's default uses ``fastmlp.get_num_threads()``, hence the extra one-thread row.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import reference

SIGMOID_SIZE = 10_000_000
SOFTMAX_SHAPES = [(1000, 1000), (10000, 10)]

pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=5)


def measure(benchmark, fn, *args, group: str, rounds=5, **kwargs):
    """Times ``fn(*args, **kwargs)``: ``rounds`` rounds after one warm-up, or calibrated by
    pytest-benchmark when ``rounds`` is None (for calls well under a millisecond)."""
    benchmark.group = group
    if rounds is None:
        return benchmark(fn, *args, **kwargs)
    return benchmark.pedantic(
        fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1, warmup_rounds=1
    )


def close(actual, expected, atol: float) -> None:
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# -- sigmoid -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigmoid_input():
    """10M float32 values, mostly in [-12, 12], some beyond the float32 overflow of exp."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(SIGMOID_SIZE) * 4).astype(np.float32)
    x[::100_000] = -100.0  # exp(100) overflows float32: the stable forms must not care
    return x


@pytest.fixture(scope="module")
def sigmoid_expected(sigmoid_input):
    return reference.sigmoid(sigmoid_input)


SIGMOID_ATOL = 1e-6  # about 8 float32 ulps at 1.0; the kernels agree to 1 ulp here


def test_sigmoid_fastmlp(benchmark, sigmoid_input, sigmoid_expected):
    result = measure(benchmark, fastmlp.sigmoid, sigmoid_input, group="sigmoid-10M")
    close(result, sigmoid_expected, SIGMOID_ATOL)


def test_sigmoid_fastmlp_one_thread(benchmark, sigmoid_input, sigmoid_expected):
    result = measure(benchmark, fastmlp.sigmoid, sigmoid_input, threads=1, group="sigmoid-10M")
    close(result, sigmoid_expected, SIGMOID_ATOL)


def test_sigmoid_numpy_reference(benchmark, sigmoid_input):
    result = measure(benchmark, reference.sigmoid, sigmoid_input, group="sigmoid-10M")
    close(result, fastmlp.sigmoid(sigmoid_input), SIGMOID_ATOL)


def test_sigmoid_scipy_expit(benchmark, scipy_expit, sigmoid_input, sigmoid_expected):
    result = measure(benchmark, scipy_expit, sigmoid_input, group="sigmoid-10M")
    close(result, sigmoid_expected, SIGMOID_ATOL)


def test_sigmoid_torch(benchmark, torch_module, threads, sigmoid_input, sigmoid_expected):
    torch = torch_module
    torch.set_num_threads(threads)
    tensor = torch.from_numpy(sigmoid_input)
    result = measure(benchmark, torch.sigmoid, tensor, group="sigmoid-10M")
    close(result.numpy(), sigmoid_expected, SIGMOID_ATOL)


def test_sigmoid_floor_copy(benchmark, sigmoid_input):
    """``x * 1``: read 40 MB, write 40 MB, no arithmetic to speak of: the floor."""
    result = measure(benchmark, np.multiply, sigmoid_input, 1, group="sigmoid-10M")
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, sigmoid_input)


# -- softmax -----------------------------------------------------------------------------


def shape_id(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


@pytest.fixture(scope="module", params=SOFTMAX_SHAPES, ids=shape_id)
def softmax_case(request):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(request.param) * 3).astype(np.float32)
    return f"softmax-{shape_id(request.param)}", x, reference.softmax(x)


SOFTMAX_ATOL = 1e-6


def test_softmax_fastmlp(benchmark, softmax_case):
    group, x, expected = softmax_case
    result = measure(benchmark, fastmlp.softmax, x, group=group, rounds=None)
    close(result, expected, SOFTMAX_ATOL)


def test_softmax_numpy_reference(benchmark, softmax_case):
    group, x, _ = softmax_case
    result = measure(benchmark, reference.softmax, x, group=group, rounds=None)
    close(result, fastmlp.softmax(x), SOFTMAX_ATOL)


def test_softmax_torch(benchmark, torch_module, threads, softmax_case):
    torch = torch_module
    torch.set_num_threads(threads)
    group, x, expected = softmax_case
    result = measure(benchmark, torch.softmax, torch.from_numpy(x), -1, group=group, rounds=None)
    close(result.numpy(), expected, SOFTMAX_ATOL)
