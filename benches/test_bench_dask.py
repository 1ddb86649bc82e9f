"""fastmlp on Dask: one process against a LocalCluster of 1 and of 2 worker processes.

Group ``dask``, 1,000,000 rows of uint8 pixels (784 MB) through the 784-50-100-10 network
reading pixels with ``input_scale=1/255`` (the ``pixel_model`` fixture):

- ``in_process``: one ``MLP.predict_proba`` call on the client, fastmlp's default threads.
- ``local_threads``: ``fastmlp.dask.predict_proba`` on Dask's threaded scheduler (16 blocks).
- ``workers_N_compute``: a LocalCluster of N worker processes (1 thread each) on loopback,
  the pixels already generated and held on the workers (``persist``); the timed call builds
  the graph (scattering the model), computes, and gathers the 40 MB of probabilities back
  to the client, as ``.compute()`` does.
- ``workers_N_persist``: the same, but the results stay on the workers (``persist`` and
  wait), which is what a pipeline that writes its output from the workers pays.

Each task gets ``threads=`` cores // worker threads on the host: 2 fastmlp threads with one
worker, 1 with two. The summary prints each time over the in-process call's. Never asserted
on speed; every result must equal the in-process one exactly.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason='Dask is not installed (pip install "fastmlp[dask]")')
distributed = pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "fastmlp[dask]")'
)

import dask  # noqa: E402
import fastmlp.dask as fdask  # noqa: E402

GROUP = "dask"
ROWS = 1_000_000
BLOCK_ROWS = 62_500  # 16 blocks of 49 MB
FEATURES = 784
SEED = 7
ROUNDS = 5


def pixel_blocks():
    """The same uint8 pixels wherever they are computed: Dask seeds each block from SEED."""
    return da.random.default_rng(SEED).integers(
        0, 256, size=(ROWS, FEATURES), dtype=np.uint8, chunks=(BLOCK_ROWS, FEATURES)
    )


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    with dask.config.set(scheduler="threads"):
        return pixel_blocks().compute()


@pytest.fixture(scope="module")
def expected(pixel_model, pixels) -> np.ndarray:
    return pixel_model.predict_proba(pixels)


@pytest.fixture(scope="module", params=[1, 2], ids=["workers_1", "workers_2"])
def cluster(request):
    """A LocalCluster of N worker processes with 1 thread each, the pixels held on it."""
    workers = request.param
    local_cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )
    with local_cluster, distributed.Client(local_cluster) as client:
        held = pixel_blocks().persist()
        distributed.wait(held)
        yield workers, client, held


def pedantic(benchmark, fn):
    benchmark.group = GROUP
    benchmark.extra_info["rows"] = ROWS
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def report(benchmark, record, timings, derived, label: str) -> None:
    seconds = record(label)
    base = timings.get((GROUP, "in_process"))
    if seconds is None:
        return
    line = f"{GROUP:>13}: {label:<18} {seconds:6.3f} s, {ROWS / seconds / 1e6:5.2f} M rows/s"
    if base and label != "in_process":
        benchmark.extra_info["ratio_to_in_process"] = seconds / base
        line += f", {seconds / base:.2f}x the in-process time"
    derived.append(line)


def test_in_process(benchmark, record, timings, derived, pixel_model, pixels, expected):
    result = pedantic(benchmark, lambda: pixel_model.predict_proba(pixels))
    assert np.array_equal(result, expected)
    report(benchmark, record, timings, derived, "in_process")


def test_local_threads(benchmark, record, timings, derived, pixel_model, pixels, expected):
    X = da.from_array(pixels, chunks=(BLOCK_ROWS, FEATURES))

    def run():
        with dask.config.set(scheduler="threads"):
            return fdask.predict_proba(pixel_model, X).compute()

    result = pedantic(benchmark, run)
    assert np.array_equal(result, expected)
    report(benchmark, record, timings, derived, "local_threads")


def test_cluster_compute(benchmark, record, timings, derived, pixel_model, expected, cluster):
    workers, client, held = cluster
    result = pedantic(benchmark, lambda: fdask.predict_proba(pixel_model, held).compute())
    assert np.array_equal(result, expected)
    benchmark.extra_info["workers"] = workers
    report(benchmark, record, timings, derived, f"workers_{workers}_compute")


def test_cluster_persist(benchmark, record, timings, derived, pixel_model, expected, cluster):
    workers, client, held = cluster

    def run():
        on_cluster = fdask.predict_proba(pixel_model, held).persist()
        distributed.wait(on_cluster)
        return on_cluster

    on_cluster = pedantic(benchmark, run)
    assert np.array_equal(on_cluster.compute(), expected)
    benchmark.extra_info["workers"] = workers
    report(benchmark, record, timings, derived, f"workers_{workers}_persist")
