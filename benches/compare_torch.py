"""PyTorch against fastmlp on the book's MLP and the kernels, one engine at a time.

Run where torch is installed (it is in no extra: the registry's build is several GB):
``python benches/compare_torch.py``. Needs ``../shared/data/dlfs/sample_weight.pkl`` beside the
repository (``FASTMLP_SHARED_DATA`` overrides the folder). The peers take turns rather than
sharing the cores: with PyTorch's OpenMP workers and NumPy's OpenBLAS workers both alive, each
slows the other (see BENCHMARKS.md). Prints times and PyTorch / fastmlp ratios.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

import fastmlp

THREADS = 2


def best_seconds(call: Callable[[], object], repeats: int, rounds: int = 7) -> float:
    """The fastest mean time per call over `rounds` rounds of `repeats` calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        times.append((time.perf_counter() - start) / repeats)
    return min(times)


def book_network_in_torch(model: fastmlp.MLP, torch) -> object:
    layers = []
    for W, b, activation in zip(model.coefs_, model.intercepts_, model.activations):
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(W.T))
            linear.bias.copy_(torch.tensor(b))
        layers.append(linear)
        layers.append(torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.Softmax(dim=-1))
    return torch.nn.Sequential(*layers).eval()


def main() -> int:
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed; nothing to compare", file=sys.stderr)
        return 1
    shared = Path(
        os.environ.get("FASTMLP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data")
    )
    weights = shared / "dlfs" / "sample_weight.pkl"
    if not weights.exists():
        print(f"{weights} is missing: the book's weights are needed", file=sys.stderr)
        return 1
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    model = fastmlp.load(weights, dtype=np.float32)
    network = book_network_in_torch(model, torch)
    X = rng.integers(0, 256, (10_000, 784)).astype(np.float32) / 255
    wide = rng.standard_normal((1000, 1000)).astype(np.float32)
    narrow = rng.standard_normal((10_000, 10)).astype(np.float32)
    values = rng.standard_normal(10_000_000).astype(np.float32)
    X_t, wide_t, narrow_t, values_t = (torch.from_numpy(a) for a in (X, wide, narrow, values))
    with torch.inference_mode():
        np.testing.assert_allclose(network(X_t).numpy(), model.predict_proba(X), atol=1e-5)
        cases = [
            ("MLP, 1 row", lambda: model.predict_proba(X[0]), lambda: network(X_t[:1]), 2000),
            ("MLP, 10,000 rows", lambda: model.predict_proba(X), lambda: network(X_t), 20),
            (
                "softmax (1000, 1000)",
                lambda: fastmlp.softmax(wide),
                lambda: torch.softmax(wide_t, -1),
                50,
            ),
            (
                "softmax (10000, 10)",
                lambda: fastmlp.softmax(narrow),
                lambda: torch.softmax(narrow_t, -1),
                50,
            ),
            ("sigmoid, 10M", lambda: fastmlp.sigmoid(values), lambda: torch.sigmoid(values_t), 5),
            ("copy x * 1, 10M", lambda: values * 1, lambda: values_t * 1, 5),
        ]
        for _ in range(2):
            for name, ours, theirs, repeats in cases:
                mine, peer = best_seconds(ours, repeats), best_seconds(theirs, repeats)
                print(
                    f"{name:22s} fastmlp {mine * 1e6:9.1f} us   torch {peer * 1e6:9.1f} us   "
                    f"torch / fastmlp {peer / mine:5.2f}"
                )
            print()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fastmlp {model.cpu_level}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
