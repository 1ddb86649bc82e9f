"""``fastmlp bench``: fastmlp side by side with its peers, in one process, on the same arrays.

Peers run where installed (NumPy always; ONNX Runtime and PyTorch with the ``bench`` extra).
Rounds are interleaved across engines and the minimum kept, so a noisy machine slows every
engine alike; results are reported as ratios to fastmlp and as a share of the large-sgemm
FLOP rate measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ._model import MLP

TUTORIAL_SIZES = (784, 50, 100, 10)
TUTORIAL_ACTIVATIONS = ("sigmoid", "sigmoid", "softmax")


def tutorial_shaped_layers(
    seed: int = 0, dtype=np.float32
) -> "list[tuple[np.ndarray, np.ndarray, str]]":
    """The tutorial's 784-50-100-10 architecture with fixed-seed random weights."""
    rng = np.random.default_rng(seed)
    layers = []
    for (fan_in, fan_out), activation in zip(
        zip(TUTORIAL_SIZES, TUTORIAL_SIZES[1:]), TUTORIAL_ACTIVATIONS
    ):
        W = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype)
        b = (0.1 * rng.standard_normal(fan_out)).astype(dtype)
        layers.append((W, b, activation))
    return layers


def numpy_forward(layers, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """A plain NumPy forward pass (stable sigmoid and row-wise softmax), batched."""
    from . import reference

    return functools.partial(reference.forward, layers)


def onnxruntime_forward(layers, threads: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """An ONNX Runtime session over the same network, as ``MLP.to_onnx`` writes it."""
    try:
        import onnxruntime as ort

        from ._formats.onnx import onnx_bytes

        content = onnx_bytes(MLP(layers))
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ONNX Runtime keeps its default (spinning) workers: its fastest setting. The pause before
    # each engine's turn in `time_interleaved` keeps their spinning from slowing the next one.
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    output = "Y"

    def run(X: np.ndarray) -> np.ndarray:
        return session.run([output], {"X": X})[0]

    return run


def torch_forward(layers, threads: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """PyTorch (CPU, inference mode) over the same network, where torch is installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    modules: List[object] = []
    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    for W, b, activation in layers:
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if activation == "softmax":
            modules.append(torch.nn.Softmax(dim=-1))
        elif activation != "identity":
            modules.append(acts[activation]())
    net = torch.nn.Sequential(*modules).to(
        torch.float32 if layers[0][0].dtype == np.float32 else torch.float64
    )
    net.eval()

    def run(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(X)).numpy()

    return run


def engines(
    layers, threads: int, include: Sequence[str] = ("fastmlp", "numpy", "onnxruntime", "torch")
) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> forward callable for every engine available here, fastmlp first."""
    model = MLP(layers)
    makers: Dict[str, Callable[[], Optional[Callable[[np.ndarray], np.ndarray]]]] = {
        "fastmlp": lambda: lambda X: model.predict_proba(X, threads=threads),
        "numpy": lambda: numpy_forward(layers),
        "onnxruntime": lambda: onnxruntime_forward(layers, threads),
        "torch": lambda: torch_forward(layers, threads),
    }
    found = {name: make() for name, make in makers.items() if name in include}
    return {name: run for name, run in found.items() if run is not None}


def time_interleaved(
    callables: Dict[str, Callable[[], object]],
    rounds: int,
    settle: float = 1.0,
    block_seconds: float = 0.02,
) -> Dict[str, float]:
    """Minimum seconds per call of each callable, rounds interleaved across them.

    Each engine's turn starts after a ``settle`` pause: OpenBLAS and ONNX Runtime keep their
    workers spinning for a while after a call, and without the pause the next engine in the
    round would run on cores they still occupy. Within a turn the engine runs for about
    ``block_seconds`` and the fastest call counts. (Here, 0.2 s was not enough: after ONNX
    Runtime's or NumPy's turn a 100-row fastmlp call still took 53-62 us instead of 30-33 us,
    as if on one core; after 1 s it did not.)
    """
    best = {name: float("inf") for name in callables}
    calls_per_turn = {}
    for name, fn in callables.items():
        t0 = time.perf_counter()
        fn()  # warm up: first-call allocations, thread start-up, lazy initialisation
        first = time.perf_counter() - t0
        calls_per_turn[name] = max(1, min(1000, int(block_seconds / max(first, 1e-7))))
    for _ in range(rounds):
        for name, fn in callables.items():
            if settle:
                time.sleep(settle)
            for _ in range(calls_per_turn[name]):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def time_alternating(
    callables: Dict[str, Callable[[], object]], rounds: int, sweeps: int = 40
) -> Dict[str, float]:
    """Minimum seconds per call of each callable, called in turn one call at a time.

    For callables that all run on fastmlp's own threads (no peer's spinning workers to wait
    out, as ``time_interleaved`` does): neighbouring calls see the same machine, so their
    ratios hold on a shared VM whose second vCPU comes and goes. Here single two-thread sigmoid
    calls over the same array took from 0.36 to 7 ms within one 20 ms turn, and turn by turn
    the ratio of two ranges swung by up to 1.5x between runs.
    """
    best = {name: float("inf") for name in callables}
    for fn in callables.values():
        fn()  # warm up
    for _ in range(rounds * sweeps):
        for name, fn in callables.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


SGEMM = "sgemm"
SGEMM_SIZE = 2048


def _blas_threads(threads: int):
    """Limits NumPy's BLAS to ``threads`` (a no-op context without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl the BLAS uses its own default thread count
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def sgemm_call(size: int = SGEMM_SIZE) -> "tuple[Callable[[], object], float]":
    """A large float32 matrix product through NumPy's BLAS (the practical peak here), and its
    FLOP count."""
    rng = np.random.default_rng(1)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    return (lambda: a @ b), 2.0 * size**3


def machine_description() -> str:
    from . import _core
    from .cli.info import cpu_model

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, fastmlp level {_core.cpu_level()}, "
        f"{python}, NumPy {np.__version__}"
    )


def _every_row_in_turn(fn: Callable[[np.ndarray], object], rows: List[np.ndarray]):
    """A callable that calls ``fn`` once on each of ``rows``, in order."""

    def run() -> None:
        for row in rows:
            fn(row)

    return run


def run_comparison(
    batch_sizes: Sequence[int],
    threads: int,
    rounds: int,
    seed: int = 0,
    layers=None,
    *,
    settle: float = 1.0,
    sgemm_size: int = SGEMM_SIZE,
    images: Optional[np.ndarray] = None,
    block_seconds: float = 0.1,
) -> "list[dict]":
    """Times every engine at every batch size; returns one result row per (batch, engine).

    Each engine's turn lasts about ``block_seconds``: a tenth of a second gives a 10,000-row
    batch a dozen calls per turn, enough for the minimum to find a quiet moment on a shared
    machine (20 ms turns gave two or three, and the shares of sgemm moved by 10% run to run).

    The large sgemm runs in the same interleaved rounds as the engines at each batch size, so
    a machine that slows down mid-run moves the peak and the engines alike; each row's
    ``peak_share`` is against the sgemm rate measured beside it (``peak``).

    Rows are dense random values in [0, 1), or, with ``images`` (one flattened image per
    row, already scaled), those images, repeated to fill a large batch. A batch of one then
    runs every image in turn, one call each, and its time is the mean per call over the whole
    set: a single row's time depends on its zero pixels, and the minimum over single calls
    would be the emptiest image's.
    """
    layers = layers or tutorial_shaped_layers(seed)
    macs_per_row = sum(W.size for W, _, _ in layers)
    found = engines(layers, threads)
    fma_peak = fma_peak_gflops(threads)
    rng = np.random.default_rng(seed + 1)
    sgemm, sgemm_flops = sgemm_call(sgemm_size)
    rows = []
    dtype = layers[0][0].dtype
    if images is not None:
        images = np.ascontiguousarray(images, dtype=dtype).reshape(len(images), -1)
    with _blas_threads(threads):
        for batch in batch_sizes:
            calls: Dict[str, Callable[[], object]]
            if images is not None and batch == 1:
                one_each = [images[i : i + 1] for i in range(len(images))]
                calls = {name: _every_row_in_turn(fn, one_each) for name, fn in found.items()}
            else:
                if images is None:
                    X = rng.random((batch, layers[0][0].shape[0]), dtype=np.float32).astype(dtype)
                else:
                    X = images[np.arange(batch) % len(images)]
                calls = {name: functools.partial(fn, X) for name, fn in found.items()}
            calls[SGEMM] = sgemm
            best = time_interleaved(calls, rounds, settle=settle, block_seconds=block_seconds)
            peak = sgemm_flops / best.pop(SGEMM) / 1e9
            if images is not None and batch == 1:
                best = {name: seconds / len(images) for name, seconds in best.items()}
            for name, seconds in best.items():
                gflops = 2.0 * macs_per_row * batch / seconds / 1e9
                rows.append(
                    {
                        "batch": batch,
                        "engine": name,
                        "seconds": seconds,
                        "ratio": seconds / best["fastmlp"],
                        "gflops": gflops,
                        "peak": peak,
                        "sgemm_size": sgemm_size,
                        "peak_share": gflops / peak,
                        "fma_peak": fma_peak,
                        "fma_share": gflops / fma_peak,
                        "inputs": "random" if images is None else "images",
                    }
                )
    return rows


def fma_peak_gflops(threads: int) -> float:
    """This machine's float32 multiply-add peak at fastmlp's level: one core's register-only
    FMA loop (the best of several runs), times the threads used."""
    from . import _core

    return threads * _core.fma_peak_gflops()


# Value ranges of the "values" group: moderate ones, and ones that saturate exp (where a naive
# kernel makes subnormal numbers, which cost Intel cores a microcode assist per operation).
ELEMENTWISE_RANGES = {
    "moderate (-10, 10)": (-10.0, 10.0),
    "saturating (-100, -88)": (-100.0, -88.0),
    "saturating (88, 100)": (88.0, 100.0),
    "saturating (-1000, -200)": (-1000.0, -200.0),
}
SOFTMAX_RANGES = {
    "moderate (-10, 10)": (-10.0, 10.0),
    "spread of hundreds (-500, 0)": (-500.0, 0.0),
    "spread of thousands (-5000, 0)": (-5000.0, 0.0),
}


def placed_like(reference: np.ndarray, values: np.ndarray, page: int = 4096) -> np.ndarray:
    """A copy of ``values`` starting at the same offset within a memory page as ``reference``.

    Intel cores stall a load that shares its address's low 12 bits with a store still in
    flight ("4K aliasing"), so an element-wise kernel's time moves with where its input lies
    against its output: by up to 1.2x on an Intel Xeon here, for the same values. Placing every
    range's input alike makes the values the only thing that differs between them.
    """
    buffer = np.empty(values.nbytes + page, dtype=np.uint8)
    start = (reference.ctypes.data - buffer.ctypes.data) % page
    placed = buffer[start : start + values.nbytes].view(values.dtype).reshape(values.shape)
    placed[...] = values
    return placed


# fastmlp timed as the peers are, in settled turns on one array (see `run_values`).
TURNS = "fastmlp, turns"


def run_values(
    threads: int,
    rounds: int,
    *,
    elements: int = 1_000_000,
    rows: int = 10_000,
    images: Optional[np.ndarray] = None,
    layers=None,
    settle: float = 1.0,
) -> "list[dict]":
    """Times what should not depend on the input's values: each kernel over moderate and
    saturating ranges (per element, the ratio to the moderate range), and the tutorial network
    on raw pixels against pixels / 255, float32 and uint8 rows, beside ONNX Runtime and NumPy.

    ``images`` are raw uint8 pixels, one flattened image per row (MNIST's test set with
    ``--mnist``); without them, fixed-seed random pixels with four-fifths zeros stand in.
    """
    from . import _functions

    rng = np.random.default_rng(11)
    results: "list[dict]" = []
    kernel_calls: Dict[str, Callable[[], object]] = {}
    # Into one preallocated output: a new one per call would time the allocator's page faults
    # (which moved these two-thread ratios by up to 1.6x between runs), not the kernel.
    out = np.ones(elements, dtype=np.float32)
    for name in ("sigmoid", "tanh"):
        for label, (low, high) in ELEMENTWISE_RANGES.items():
            x = placed_like(out, rng.uniform(low, high, elements).astype(np.float32))
            kernel_calls[f"{name}|{label}"] = lambda name=name, x=x: _functions._elementwise(
                name, x, out, threads
            )
    softmax_out = out[: elements // 100 * 100].reshape(elements // 100, 100)
    for label, (low, high) in SOFTMAX_RANGES.items():
        x = placed_like(softmax_out, rng.uniform(low, high, softmax_out.shape).astype(np.float32))
        kernel_calls[f"softmax|{label}"] = lambda x=x: _functions.softmax(
            x, out=softmax_out, threads=threads
        )
    best = time_alternating(kernel_calls, rounds)
    for key, seconds in best.items():
        kernel, label = key.split("|")
        moderate = best[f"{kernel}|moderate (-10, 10)"]
        results.append(
            {
                "group": "kernel",
                "case": f"{kernel} {label}",
                "engine": "fastmlp",
                "seconds": seconds,
                "per_element": seconds / elements,
                "ratio": seconds / moderate,
                "ratio_to": "moderate",
            }
        )

    layers = layers or tutorial_shaped_layers()
    if images is None:
        images = rng.integers(0, 256, size=(rows, layers[0][0].shape[0]), dtype=np.uint8)
        images[rng.random(images.shape) < 0.8] = 0
    pixels = np.ascontiguousarray(images[np.arange(rows) % len(images)], dtype=np.uint8)
    raw = pixels.astype(np.float32)
    scaled = raw / np.float32(255)
    found = engines(layers, threads, include=("fastmlp", "numpy", "onnxruntime"))
    model = MLP(layers)
    model_scaled = MLP(layers, input_scale=1 / 255)
    calls: Dict[str, Callable[[], object]] = {}
    for name, fn in found.items():
        calls[f"{name}|raw float32"] = lambda fn=fn: fn(raw)
        calls[f"{name}|scaled float32"] = lambda fn=fn: fn(scaled)
    calls["fastmlp|raw uint8"] = lambda: model.predict_proba(pixels, threads=threads)
    calls["fastmlp|scaled uint8"] = lambda: model_scaled.predict_proba(pixels, threads=threads)
    # fastmlp's own cases call by call (their ratios are the targets), the peers in turns after
    # a settle pause for their spinning workers, long enough for as many calls as fastmlp's.
    # Within a turn a peer reads the same rows call after call, from the caches; fastmlp's
    # calls cycle through three arrays (70 MB), whose rows then come from memory (on a Xeon,
    # 1.2-1.3x the time for float32 rows). So fastmlp's float32 cases are also timed in turns,
    # as the peers are, and the ratio to ONNX Runtime is taken between those.
    ours = {key: fn for key, fn in calls.items() if key.startswith("fastmlp|")}
    peers = {key: fn for key, fn in calls.items() if key not in ours}
    in_turns = {
        f"{TURNS}|{case}": calls[f"fastmlp|{case}"] for case in ("raw float32", "scaled float32")
    }
    with _blas_threads(threads):
        best = time_interleaved({**peers, **in_turns}, rounds, settle=settle, block_seconds=0.1)
        if settle:
            time.sleep(settle)
        best.update(time_alternating(ours, rounds, sweeps=5))
    for key in [*calls, *in_turns]:
        seconds = best[key]
        engine, case = key.split("|")
        kind, dtype = case.split()
        scaled_time = best[f"{engine}|scaled {dtype}"]
        results.append(
            {
                "group": "network",
                "case": f"{rows:,} rows, {case}",
                "engine": engine,
                "seconds": seconds,
                "ratio": seconds / scaled_time,
                "ratio_to": "scaled",
                "vs_onnxruntime": (
                    seconds / best[f"onnxruntime|{case}"]
                    if engine == TURNS and f"onnxruntime|{case}" in best
                    else None
                ),
            }
        )
    return results


def format_values_table(rows: "list[dict]", threads: int) -> str:
    lines = [
        f"machine: {machine_description()}",
        f"threads: {threads}; float32; times are the fastest call (fastmlp's cases called in "
        f"turn, one call each; the peers, and '{TURNS}', in settled turns on one array)",
        "",
        "Kernels: per element, and the ratio to the same kernel over moderate values",
        f"{'case':<44} {'time':>11}  {'ns/element':>10}  {'x moderate':>10}",
    ]
    for row in rows:
        if row["group"] == "kernel":
            lines.append(
                f"{row['case']:<44} {_format_time(row['seconds']):>11}  "
                f"{1e9 * row['per_element']:>10.3f}  {row['ratio']:>10.2f}"
            )
    lines += [
        "",
        "Network 784-50-100-10 (sigmoid, sigmoid, softmax): raw 0..255 pixels against pixels / 255",
        f"{'case':<32} {'engine':<15} {'time':>11}  {'x scaled':>8}  {'x ORT':>6}",
    ]
    for row in rows:
        if row["group"] == "network":
            versus = row.get("vs_onnxruntime")
            lines.append(
                f"{row['case']:<32} {row['engine']:<15} {_format_time(row['seconds']):>11}  "
                f"{row['ratio']:>8.2f}  {'' if versus is None else f'{versus:.2f}':>6}"
            )
    return "\n".join(lines)


def _format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} µs"
    return f"{seconds * 1e3:8.2f} ms"


def format_table(rows: "list[dict]", threads: int) -> str:
    peaks = sorted({round(row["peak"]) for row in rows})
    size = rows[0]["sgemm_size"] if rows else SGEMM_SIZE
    if not peaks:
        peak_range = "not measured"
    elif len(peaks) == 1:
        peak_range = f"{peaks[0]}"
    else:
        peak_range = f"{peaks[0]}-{peaks[-1]}"
    fma_peak = rows[0]["fma_peak"] if rows else float("nan")
    lines = [
        f"machine: {machine_description()}",
        f"threads: {threads}; large sgemm (NumPy BLAS, float32, {size}^3), timed in the "
        f"same rounds as each batch size: {peak_range} GFLOP/s; FMA peak at fastmlp's level "
        f"(a register-only loop, per core x {threads}): {fma_peak:.0f} GFLOP/s",
        "network: 784-50-100-10 (sigmoid, sigmoid, softmax), float32; "
        "times are the minimum of interleaved rounds",
        "rows: "
        + (
            "the MNIST test images / 255 (a batch of 1: the mean of one call per image)"
            if rows and rows[0].get("inputs") == "images"
            else "dense random values in [0, 1)"
        ),
        "",
        f"{'batch':>7}  {'engine':<12} {'time':>11}  {'x fastmlp':>9}  "
        f"{'GFLOP/s':>8}  {'% sgemm':>7}  {'% FMA':>5}",
    ]
    for row in rows:
        lines.append(
            f"{row['batch']:>7}  {row['engine']:<12} {_format_time(row['seconds']):>11}  "
            f"{row['ratio']:>9.2f}  {row['gflops']:>8.1f}  {100 * row['peak_share']:>6.0f}%  "
            f"{100 * row['fma_share']:>4.0f}%"
        )
    return "\n".join(lines)


def plot(rows: "list[dict]", path: str) -> None:
    from ._optional import import_optional

    try:
        import_optional("matplotlib", extra="plot", needed_by="--plot").use("Agg")
    except ImportError as error:
        raise SystemExit(str(error)) from None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine in dict.fromkeys(r["engine"] for r in rows):
        points = [(r["batch"], r["batch"] / r["seconds"]) for r in rows if r["engine"] == engine]
        ax.plot(*zip(*points), marker="o", label=engine)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows)")
    ax.set_ylabel("throughput (rows / s)")
    ax.set_title("784-50-100-10 MLP forward, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmlp bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for every engine (default: all cores)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per batch size")
    parser.add_argument(
        "--plot", metavar="PNG", help="write throughput against batch size to this PNG"
    )
    parser.add_argument(
        "--mnist",
        metavar="DIR",
        help="run on the MNIST test images / 255 read from DIR (the IDX files) instead of "
        "dense random rows: a single row skips its zero pixels, a batch the pixels zero in "
        "every row of a chunk",
    )
    parser.add_argument(
        "--values",
        action="store_true",
        help="time what should not depend on the input's values instead: kernels over "
        "moderate and saturating ranges, the network on raw pixels against pixels / 255",
    )
    args = parser.parse_args(argv)
    from . import get_num_threads

    threads = args.threads or get_num_threads()
    pixels = None
    if args.mnist is not None:
        from .datasets import load_mnist

        try:
            pixels, _ = load_mnist(args.mnist)
        except (OSError, ValueError) as error:
            parser.error(f"--mnist: {error}")
    if args.values:
        raw = None if pixels is None else pixels.reshape(len(pixels), -1)
        print(format_values_table(run_values(threads, args.rounds, images=raw), threads))
        return 0
    images = None if pixels is None else pixels.reshape(len(pixels), -1) / np.float32(255)
    rows = run_comparison(args.batch_sizes, threads, args.rounds, images=images)
    print(format_table(rows, threads))
    if args.plot:
        plot(rows, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0
