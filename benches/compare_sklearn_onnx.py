"""Drop-in replacements against what they replace: scikit-learn and ONNX Runtime sessions.

Times, in one process with the engines interleaved:

- ``predict_proba`` of scikit-learn's ``MLPClassifier`` against ``fastmlp.sklearn``'s (the same
  fitted weights: both estimators are fitted with the same seed and data);
- a fitted ``Pipeline(StandardScaler(), MLPClassifier())`` against
  ``fastmlp.sklearn.accelerate(pipeline)`` (the scaler folded into the first layer);
- ``onnxruntime.InferenceSession.run(None, {"X": X})`` against
  ``fastmlp.onnx.InferenceSession`` on the same skl2onnx file of that classifier, without
  ZipMap (``zipmap=False``: label and probability tensors) and with it (a list of dicts).

on one row and on 10,000 rows. The network is MNIST-shaped, 784-100-10 (relu, softmax), fitted
briefly on fixed-seed random data (the time of a forward pass does not depend on how well the
weights were trained); scikit-learn runs in float64, the skl2onnx file in float32.

Each round times every engine in turn (blocks of calls, a pause between turns so that
OpenBLAS's and ONNX Runtime's spinning threads go idle); the fastest round's mean per call
counts. Ratios are the peer's time over fastmlp's. On a shared, noisy machine compare the
ratios, not the absolute times.

Run: ``python benches/compare_sklearn_onnx.py`` (needs scikit-learn, skl2onnx, onnxruntime).
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Callable, Dict, List, Tuple

import numpy as np

ROUNDS = 7
PAUSE_SECONDS = 0.2
TARGET_SECONDS_PER_TURN = 0.05


def _per_call(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def compare(engines: "Dict[str, Callable[[], object]]") -> "Dict[str, float]":
    """The fastest round's mean seconds per call of each engine, engines interleaved."""
    calls = {}
    for name, call in engines.items():
        call()  # warm up
        once = _per_call(call, 3)
        calls[name] = max(1, min(20_000, int(TARGET_SECONDS_PER_TURN / max(once, 1e-7))))
    best = {name: float("inf") for name in engines}
    for _ in range(ROUNDS):
        for name, call in engines.items():
            time.sleep(PAUSE_SECONDS)
            best[name] = min(best[name], _per_call(call, calls[name]))
    return best


def _format(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def main() -> None:
    import onnxruntime
    import skl2onnx
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import fastmlp
    import fastmlp.onnx
    import fastmlp.sklearn

    rng = np.random.default_rng(0)
    X_train = rng.uniform(0, 255, size=(3000, 784))
    y_train = rng.integers(0, 10, size=3000)
    params = dict(hidden_layer_sizes=(100,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = MLPClassifier(**params).fit(X_train / 255, y_train)
        ours = fastmlp.sklearn.MLPClassifier(**params).fit(X_train / 255, y_train)
        pipe = make_pipeline(StandardScaler(), MLPClassifier(**params)).fit(X_train, y_train)
    fast_pipe = fastmlp.sklearn.accelerate(pipe)
    onnx_plain = skl2onnx.to_onnx(
        theirs, X_train[:1].astype(np.float32), options={id(theirs): {"zipmap": False}}
    ).SerializeToString()
    onnx_zipmap = skl2onnx.to_onnx(theirs, X_train[:1].astype(np.float32)).SerializeToString()

    rows: List[Tuple[str, str, str, float, float]] = []
    for n in (1, 10_000):
        X = rng.uniform(0, 1, size=(n, 784))
        X_raw = X * 255
        X32 = X.astype(np.float32)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-12)
        np.testing.assert_allclose(
            fast_pipe.predict_proba(X_raw), pipe.predict_proba(X_raw), atol=1e-6
        )
        times = compare(
            {
                "sklearn": partial(theirs.predict_proba, X),
                "fastmlp.sklearn": partial(ours.predict_proba, X),
                "sklearn pipeline": partial(pipe.predict_proba, X_raw),
                "accelerate(pipeline)": partial(fast_pipe.predict_proba, X_raw),
            }
        )
        rows.append(
            (
                "classifier predict_proba",
                f"{n:,}",
                "scikit-learn",
                times["sklearn"],
                times["fastmlp.sklearn"],
            )
        )
        rows.append(
            (
                "StandardScaler + classifier predict_proba",
                f"{n:,}",
                "scikit-learn",
                times["sklearn pipeline"],
                times["accelerate(pipeline)"],
            )
        )
        for label, model in (("zipmap=False", onnx_plain), ("ZipMap", onnx_zipmap)):
            ort = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
            fast = fastmlp.onnx.InferenceSession(model)
            feed = {"X": X32}
            expected, got = ort.run(None, feed), fast.run(None, feed)
            np.testing.assert_array_equal(got[0], expected[0])
            times = compare(
                {
                    "onnxruntime": partial(ort.run, None, feed),
                    "fastmlp": partial(fast.run, None, feed),
                }
            )
            rows.append(
                (
                    f"skl2onnx file, session.run ({label})",
                    f"{n:,}",
                    "ONNX Runtime",
                    times["onnxruntime"],
                    times["fastmlp"],
                )
            )

    print(
        f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, fastmlp {fastmlp.__version__} "
        f"({fastmlp.cpu_level()}, {fastmlp.get_num_threads()} threads); "
        f"{ROUNDS} interleaved rounds, fastest round's mean per call"
    )
    print()
    print("| what | rows | peer | peer time | fastmlp | peer / fastmlp |")
    print("|---|---|---|---|---|---|")
    for what, n, peer, peer_time, fast_time in rows:
        print(
            f"| {what} | {n} | {peer} | {_format(peer_time)} | {_format(fast_time)} | "
            f"{peer_time / fast_time:.1f}x |"
        )


if __name__ == "__main__":
    main()
