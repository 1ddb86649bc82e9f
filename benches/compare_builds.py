"""Two builds of fastmlp in one process, their calls alternating: a change's speed, measured.

On a shared machine the same build's time moves by 3-5% from one process to the next, which
hides most kernel changes worth making; processes run alternately only narrow it by repetition.
Here both builds are imported side by side (each unpacked wheel's ``fastmlp`` package copied
under its own name, so each loads its own ``_core``), checked to give bit-identical outputs,
and called in turn one call at a time on the same rows, the fastest call of each counting. The
network is ``fastmlp bench``'s (784-50-100-10, sigmoid, sigmoid, softmax, fixed seed).

Run: ``python benches/compare_builds.py BEFORE AFTER [--rows 10000] [--threads 1] [--mnist DIR]``
(``--mnist``: the first rows of MNIST's test images, raw 0..255 pixels as float32, instead of
dense random rows: images leave many inputs zero in every row of a chunk; ``--copies N``: each
call reads the next of N copies of the rows, so that it finds them in memory rather than in
the caches, as when a batch is new) where each
is a directory holding a ``fastmlp`` package with its compiled ``_core``, e.g. a wheel unpacked
with ``unzip -d BEFORE dist/fastmlp-*.whl``; the installed fastmlp supplies the network and
the timing (``fastmlp._bench``). Prints both times and AFTER / BEFORE.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from fastmlp._bench import time_alternating, tutorial_shaped_layers


def import_build(directory: Path, name: str, into: Path):
    """The ``fastmlp`` package in ``directory``, imported as ``name`` from a copy in ``into``."""
    package = directory / "fastmlp"
    if not list(package.glob("_core*")):
        raise SystemExit(f"{directory}: expected a fastmlp package with its compiled _core in it")
    shutil.copytree(package, into / name)
    return importlib.import_module(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweeps", type=int, default=100, help="calls of each build")
    parser.add_argument("--mnist", type=Path, help="directory of MNIST's IDX files")
    parser.add_argument("--copies", type=int, default=1, help="copies of the rows, in turn")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        sys.path.insert(0, scratch)
        builds = [
            import_build(args.before, "fastmlp_before", Path(scratch)),
            import_build(args.after, "fastmlp_after", Path(scratch)),
        ]
        layers = tutorial_shaped_layers()
        features = layers[0][0].shape[0]
        if args.mnist is None:
            X = np.random.default_rng(1).random((args.rows, features), dtype=np.float32)
        else:
            from fastmlp.datasets import load_mnist

            images = load_mnist(args.mnist)[0][: args.rows]
            X = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
        copies = [X] + [X.copy() for _ in range(args.copies - 1)]
        models = [build.MLP(layers) for build in builds]
        outs = [model.predict_proba(X, threads=args.threads) for model in models]
        if not np.array_equal(outs[0], outs[1]):
            print("the builds' outputs differ:", np.abs(outs[0] - outs[1]).max())
        # Each build cycles through the copies on its own, so both read every copy in turn.
        turns = {name: itertools.cycle(copies) for name in ("before", "after")}
        best = time_alternating(
            {
                name: lambda name=name, model=model, out=out: model.predict_proba(
                    next(turns[name]), threads=args.threads, out=out
                )
                for name, model, out in zip(("before", "after"), models, outs)
            },
            rounds=1,
            sweeps=args.sweeps,
        )
    print(
        f"{len(X)} rows, {args.threads} thread(s), {args.copies} copies, "
        f"fastest of {args.sweeps} calls each: "
        f"before {best['before'] * 1e3:.3f} ms, after {best['after'] * 1e3:.3f} ms, "
        f"after / before {best['after'] / best['before']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
