"""No subnormal float in any hot loop, proved by the CPU's own status flags.

A floating-point operation that makes a subnormal result or reads a subnormal operand costs a
microcode assist on Intel cores (a hundred cycles or more per vector) and almost nothing on AMD
ones, so timing cannot catch it on every machine. The SSE status flags can: every x86-64 CPU
raises the underflow flag (UE) when a result is tiny and inexact and the denormal-operand flag
(DE) when an operand is subnormal. Each test clears the calling thread's flags, makes one
``threads=1`` call, and reads them back. The positive controls show that the flags see what
NumPy does on the same thread, so a kernel that made a subnormal would fail here.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import _core

DENORMAL_OPERAND = 0x02
UNDERFLOW = 0x10
STATUS_FLAGS = 0x3F
LEVELS = tuple(_core.supported_levels())
FLOATS = (np.float32, np.float64)

pytestmark = pytest.mark.skipif(
    _core.mxcsr() is None, reason="the MXCSR status flags exist only on x86-64"
)


@pytest.fixture(params=LEVELS)
def level(request):
    """Forces each supported level; models built in the test are packed for it."""
    request.addfinalizer(lambda: _core.force_cpu_level(None))
    _core.force_cpu_level(request.param)
    return request.param


def subnormal_flags(call) -> int:
    """The DE and UE flags raised on this thread while ``call()`` runs."""
    _core.clear_fp_status_flags()
    call()
    return _core.mxcsr() & (DENORMAL_OPERAND | UNDERFLOW)


def describe(flags: int) -> str:
    names = [n for bit, n in ((DENORMAL_OPERAND, "DE"), (UNDERFLOW, "UE")) if flags & bit]
    return "+".join(names) or "none"


def saturating(dtype) -> np.ndarray:
    """Values whose exp, sigmoid and tanh saturate, densely around where exp underflows."""
    lowest = 87.0 if dtype == np.float32 else 708.0
    edge = np.linspace(lowest - 3, lowest + 3, 4001)
    far = np.concatenate([np.linspace(88, 1000, 2001), np.linspace(700, 760, 2001)])
    values = np.concatenate([edge, far, [np.inf], np.linspace(40, 90, 2001)])
    if dtype == np.float64:
        values = np.concatenate([values, np.linspace(745, 800, 1001)])
    return np.concatenate([values, -values]).astype(dtype)


def tiny(dtype) -> np.ndarray:
    """Normal values near zero, down to the smallest: exp's reduced argument is then tiny too,
    where a multiply-add that is not fused would make a subnormal product."""
    smallest = np.finfo(dtype).tiny
    scales = np.geomspace(1.0, 2.0**80, 801)
    return np.concatenate([smallest * scales, -smallest * scales]).astype(dtype)


def subnormal(dtype) -> np.ndarray:
    """Subnormal inputs of both signs, zeros and the smallest normal number: read as zero
    (sigmoid reads them through their bits alone), so no operation may see them."""
    finfo = np.finfo(dtype)
    magnitudes = np.geomspace(float(finfo.smallest_subnormal), float(finfo.tiny), 801)
    values = np.concatenate([magnitudes, -magnitudes, [0.0, -0.0]]).astype(dtype)
    assert np.any((values != 0) & (np.abs(values) < finfo.tiny))
    return values


def moderate(dtype) -> np.ndarray:
    return np.linspace(-10, 10, 10_001).astype(dtype)


def test_the_flags_see_a_subnormal_made_or_read_by_numpy_on_this_thread():
    tiny = np.float32(1e-38)
    assert subnormal_flags(lambda: np.multiply(tiny, np.float32(1e-3))) & UNDERFLOW
    subnormal = np.array([1e-40], np.float32)
    assert subnormal_flags(lambda: np.add(subnormal, np.float32(1.0))) & DENORMAL_OPERAND


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("function", ["sigmoid", "tanh"])
def test_elementwise_kernels_on_saturating_inputs_raise_no_subnormal_flag(level, dtype, function):
    for values in (saturating(dtype), tiny(dtype), subnormal(dtype), moderate(dtype)):
        out = np.empty_like(values)
        flags = subnormal_flags(lambda v=values, o=out: _core.elementwise(function, v, o, 1))
        assert flags == 0, f"{function} at {level}: {describe(flags)}"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_over_spreads_of_hundreds_raises_no_subnormal_flag(level, dtype, function, axis):
    rng = np.random.default_rng(5)
    kernel = getattr(fastmlp, function)
    spreads = [
        rng.uniform(-500, 0, size=(64, 100)),
        rng.uniform(-1000, 1000, size=(33, 7)),
        # Every gap from the max close to where exp underflows, in float32 and float64.
        np.concatenate([np.zeros((1, 3)), -np.linspace(80, 95, 300).reshape(100, 3)]).T,
        np.concatenate([np.zeros((1, 3)), -np.linspace(700, 750, 300).reshape(100, 3)]).T,
        # Short rows (the vertical kernel) and long ones (the row kernel).
        rng.uniform(-300, 0, size=(1000, 3)),
        rng.uniform(-300, 0, size=(3, 5000)),
    ]
    for values in spreads + [rng.uniform(-5, 5, size=(64, 100))]:
        values = values.astype(dtype)
        flags = subnormal_flags(lambda v=values: kernel(v, axis=axis, threads=1))
        assert flags == 0, f"{function} at {level} on {values.shape}: {describe(flags)}"


def tutorial_like(dtype, rng) -> fastmlp.MLP:
    """The tutorial's 784-50-100-10 shape with zero biases: a saturated sigmoid's tiny output
    meets its next weight on an accumulator of exactly zero, the hardest case."""
    sizes = (784, 50, 100, 10)
    layers = [
        (rng.normal(0, 0.1, size=(a, b)), np.zeros(b), act)
        for a, b, act in zip(sizes, sizes[1:], ("sigmoid", "sigmoid", "softmax"))
    ]
    return fastmlp.MLP(layers, dtype=dtype)


def raw_pixels(rng, rows: int = 300) -> np.ndarray:
    pixels = rng.integers(0, 256, size=(rows, 784), dtype=np.uint8)
    pixels[rng.random((rows, 784)) < 0.8] = 0
    return pixels


def check_network(model, pixels, level, what):
    for x in (pixels, pixels.astype(np.float32), pixels.astype(np.float64)):
        for rows in (x, x[0], x[:1]):
            flags = subnormal_flags(lambda r=rows: model.predict_proba(r, threads=1))
            assert flags == 0, f"{what} at {level}, {rows.dtype} {rows.shape}: {describe(flags)}"


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_tutorial_like_network_on_raw_pixels_raises_no_subnormal_flag(level, dtype):
    rng = np.random.default_rng(7)
    model = tutorial_like(dtype, rng)
    pixels = raw_pixels(rng)
    # Raw pixels drive the first layer's sums far past where exp underflows: the premise.
    sums = pixels.astype(np.float64) @ model.coefs_[0]
    assert sums.min() < -200 and ((sums > -95) & (sums < -80)).any()
    check_network(model, pixels, level, "tutorial-like network")
    # Control: the same network on pixels / 255.
    scaled = fastmlp.MLP(
        list(zip(model.coefs_, model.intercepts_, model.activations)),
        input_scale=1 / 255,
        dtype=dtype,
    )
    check_network(scaled, pixels, level, "tutorial-like network on pixels / 255")


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_tutorial_network_on_raw_mnist_raises_no_subnormal_flag(
    level, dtype, mnist, sample_weights
):
    images, _ = mnist
    model = fastmlp.MLP.from_dict(sample_weights, dtype=dtype)
    check_network(model, images[:500].reshape(500, 784), level, "the book's network")


@pytest.mark.parametrize("dtype", FLOATS)
def test_calls_leave_the_control_bits_of_mxcsr_as_they_were(dtype):
    rng = np.random.default_rng(3)
    model = tutorial_like(dtype, rng)
    pixels = raw_pixels(rng, rows=5000)
    before = _core.mxcsr() & ~STATUS_FLAGS
    model.predict_proba(pixels, threads=2)
    model.predict_proba(pixels[0])
    fastmlp.softmax(saturating(dtype).reshape(-1, 2), threads=2)
    fastmlp.sigmoid(saturating(dtype), threads=2)
    _core.elementwise("tanh", saturating(dtype), np.empty_like(saturating(dtype)), 2)
    assert _core.mxcsr() & ~STATUS_FLAGS == before
