"""fastmlp.dask: batch inference over Dask arrays and DataFrames, locally and on a cluster.

The cluster tests share one ``LocalCluster`` (2 worker processes, 1 thread each, loopback
only), closed at the end of the module; its teardown checks that no worker process is left.
Every result is compared with the in-process call on the same rows, exactly.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp._common import available_cores
from fastmlp.errors import DataFormatError

da = pytest.importorskip("dask.array", reason='Dask is not installed (pip install "fastmlp[dask]")')
dd = pytest.importorskip(
    "dask.dataframe", reason='dask.dataframe is not installed (pip install "fastmlp[dask]")'
)
distributed = pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "fastmlp[dask]")'
)
pd = pytest.importorskip("pandas")
psutil = pytest.importorskip("psutil")  # a dependency of distributed

import dask  # noqa: E402
import fastmlp.dask as fdask  # noqa: E402

ROWS = 200_000
FEATURES = 64
OUTPUTS = 10
SEED = 20240611
WORKERS = 2


def random_layers(sizes, activations, dtype=np.float32, seed=SEED):
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype),
            (0.1 * rng.standard_normal(fan_out)).astype(dtype),
            activation,
        )
        for (fan_in, fan_out), activation in zip(zip(sizes, sizes[1:]), activations)
    ]


@pytest.fixture(scope="module")
def model() -> fastmlp.MLP:
    """64-32-10 (sigmoid, softmax), float32, reading uint8 pixels scaled by 1/255."""
    return fastmlp.MLP(
        random_layers((FEATURES, 32, OUTPUTS), ("sigmoid", "softmax")), input_scale=1 / 255
    )


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """ROWS x FEATURES uint8 values, fixed seed, in the client's memory."""
    return np.random.default_rng(SEED + 1).integers(0, 256, (ROWS, FEATURES), dtype=np.uint8)


@pytest.fixture
def local_scheduler():
    """Dask's threaded scheduler, even while the module's cluster is the default client."""
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def client():
    """A 2-process LocalCluster on loopback, closed (and checked gone) after the module."""
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )
    client = distributed.Client(cluster)
    worker_pids = set(client.run(os.getpid).values())
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = [pid for pid in worker_pids if _running(pid)]
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"worker processes {alive} still running after cluster.close()"
        left = [
            child.pid
            for child in psutil.Process().children(recursive=True)
            if child.pid not in children_before
            and _running(child.pid)
            and not _is_resource_tracker(child)
        ]
        assert not left, f"processes {left} started by the cluster are still running"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_resource_tracker(process) -> bool:
    """multiprocessing's resource tracker: started with the first spawned process, it stays
    for the life of the interpreter (shared by every user of multiprocessing) and exits with
    it, so it is not something the cluster left running."""
    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def cluster_pixels(client):
    """ROWS x FEATURES uint8, made and held on the workers, and the same values on the client."""
    X = da.random.default_rng(SEED + 2).integers(
        0, 256, size=(ROWS, FEATURES), dtype=np.uint8, chunks=(ROWS // 8, FEATURES)
    )
    X = X.persist()
    distributed.wait(X)
    return X, X.compute()


# -- the cluster ---------------------------------------------------------------------------


def test_cluster_predict_proba_equals_in_process(client, model, cluster_pixels):
    X, values = cluster_pixels
    proba = fdask.predict_proba(model, X)
    assert proba.dtype == model.dtype
    assert proba.shape == (ROWS, OUTPUTS)
    assert proba.chunks == (X.chunks[0], (OUTPUTS,))
    result = proba.compute()
    assert result.dtype == model.dtype
    assert np.array_equal(result, model.predict_proba(values))


def test_cluster_predict_equals_in_process(client, model, cluster_pixels):
    X, values = cluster_pixels
    labels = fdask.predict(model, X)
    assert labels.dtype == np.int64
    assert labels.shape == (ROWS,)
    result = labels.compute()
    assert result.dtype == np.int64
    assert np.array_equal(result, model.predict(values))


def test_model_is_deserialised_once_per_worker_not_per_task(client, model, cluster_pixels):
    X, _ = cluster_pixels
    tasks = X.numblocks[0]
    assert tasks > WORKERS

    def count_rebuilds():
        # Runs on each worker: MLP's pickle calls fastmlp._model._rebuild by name.
        import fastmlp._model as model_module

        if not hasattr(model_module, "_unpatched_rebuild"):
            model_module._unpatched_rebuild = model_module._rebuild

            def counting_rebuild(*args):
                model_module._rebuild_count += 1
                return model_module._unpatched_rebuild(*args)

            model_module._rebuild = counting_rebuild
        model_module._rebuild_count = 0

    def rebuilds():
        import fastmlp._model as model_module

        return model_module._rebuild_count

    def restore():
        import fastmlp._model as model_module

        model_module._rebuild = model_module._unpatched_rebuild
        del model_module._unpatched_rebuild

    client.run(count_rebuilds)
    try:
        fdask.predict_proba(model, X).compute()
        scattered = sum(client.run(rebuilds).values())
        # The control: the model passed into every task, as a plain map_blocks would.
        client.run(count_rebuilds)
        X.map_blocks(
            lambda block, m: m.predict_proba(block),
            model,
            chunks=(X.chunks[0], (OUTPUTS,)),
            dtype=model.dtype,
        ).compute()
        embedded = sum(client.run(rebuilds).values())
    finally:
        client.run(restore)
    assert 1 <= scattered <= WORKERS, f"the model was unpickled {scattered} times on workers"
    assert embedded >= tasks, "the counter missed the per-task unpickling it should see"


def test_threads_per_task_do_not_oversubscribe_the_host(client):
    cores = client.run(available_cores)
    assert len(cores) == WORKERS
    plan = fdask._plan_threads(client.nthreads(), cores)
    host_cores = max(cores.values())
    assert plan == {"127.0.0.1": max(1, host_cores // WORKERS)}
    # What a task looks up on its worker.
    assert client.submit(fdask._threads_here, {"127.0.0.1": 3}, pure=False).result() == 3
    assert client.submit(fdask._threads_here, {"10.9.9.9": 3}, pure=False).result() == 1


def test_plan_threads_divides_each_hosts_cores_among_its_worker_threads():
    nthreads = {"tcp://a:1": 4, "tcp://a:2": 4, "tcp://b:1": 2, "tcp://c:1": 16}
    cores = {"tcp://a:1": 16, "tcp://a:2": 16, "tcp://b:1": 8, "tcp://c:1": 8}
    assert fdask._plan_threads(nthreads, cores) == {"a": 2, "b": 4, "c": 1}


def test_cluster_dataframe(client, model, pixels):
    rows = 20_000
    names = [f"pixel{i}" for i in range(FEATURES)]
    frame = pd.DataFrame(pixels[:rows], columns=names)
    frame.insert(0, "id", [f"row{i}" for i in range(rows)])
    frame.index = frame.index + 1_000  # not a default index: it must be kept
    ddf = dd.from_pandas(frame, npartitions=5)

    proba = fdask.predict_proba(model, ddf, columns=names)
    assert list(proba.columns) == [f"proba_{i}" for i in range(OUTPUTS)]
    assert all(dtype == model.dtype for dtype in proba.dtypes)
    assert proba.npartitions == ddf.npartitions
    result = proba.compute()
    expected = model.predict_proba(frame[names].to_numpy())
    assert np.array_equal(result.to_numpy(), expected)
    assert result.index.equals(frame.index)

    labels = fdask.predict(model, ddf, columns=names)
    assert labels.name == "label"
    assert labels.dtype == np.int64
    result = labels.compute()
    assert np.array_equal(result.to_numpy(), model.predict(frame[names].to_numpy()))
    assert result.index.equals(frame.index)


def test_progress_bar_on_the_cluster(client, model, cluster_pixels, capsys):
    X, values = cluster_pixels
    labels = fdask.predict(model, X).persist()
    distributed.progress(labels)
    assert "100% Completed" in capsys.readouterr().out
    assert np.array_equal(labels.compute(), model.predict(values))


# -- streaming from disk -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixels_file(tmp_path_factory, pixels):
    path = tmp_path_factory.mktemp("dask") / "pixels.npy"
    np.save(path, pixels)
    return path


def test_npy_file_streams_through_the_cluster(client, model, pixels_file, tmp_path):
    X = fdask.from_npy(pixels_file, chunks=ROWS // 8)
    assert X.shape == (ROWS, FEATURES) and X.dtype == np.uint8
    assert X.numblocks == (8, 1)
    proba = fdask.predict_proba(model, X)
    # The graph the client sends names the file; it holds none of its 12.8 MB.
    graph_bytes = len(pickle.dumps(dict(proba.__dask_graph__())))
    assert graph_bytes < 100_000 < pixels_file.stat().st_size
    # The workers write the result too, one .npy per block.
    da.to_npy_stack(tmp_path / "proba", proba)
    written = sorted((tmp_path / "proba").glob("*.npy"))
    assert len(written) == 8
    result = np.concatenate([np.load(path) for path in sorted(written, key=_block_number)])
    expected = model.predict_proba(np.load(pixels_file))
    assert np.array_equal(result, expected)


def test_zarr_store_streams_through_the_cluster(client, model, pixels, tmp_path):
    zarr = pytest.importorskip("zarr", reason="zarr is not installed (it is in the test extra)")
    store = str(tmp_path / "pixels.zarr")
    array = zarr.open_array(
        store, mode="w", shape=pixels.shape, chunks=(ROWS // 8, FEATURES), dtype=np.uint8
    )
    array[:] = pixels
    X = da.from_zarr(store)
    assert X.numblocks == (8, 1)
    labels = fdask.predict(model, X)
    # The workers open the store and read their own blocks: the graph names the store only.
    graph_bytes = len(pickle.dumps(dict(labels.__dask_graph__())))
    assert graph_bytes < 100_000 < pixels.nbytes
    assert np.array_equal(labels.compute(), model.predict(pixels))


def _block_number(path) -> int:
    return int(path.stem)


def test_memmap_in_the_graph_warns_with_a_cluster(client, model, pixels_file):
    X = da.from_array(np.load(pixels_file, mmap_mode="r"), chunks=(ROWS // 8, FEATURES))
    with pytest.warns(UserWarning, match="from_npy"):
        fdask.predict_proba(model, X)


def test_memmap_streams_on_the_local_scheduler(model, pixels_file, tmp_path, local_scheduler):
    X = da.from_array(np.load(pixels_file, mmap_mode="r"), chunks=(ROWS // 8, FEATURES))
    target = np.lib.format.open_memmap(
        tmp_path / "proba.npy", mode="w+", dtype=model.dtype, shape=(ROWS, OUTPUTS)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no memmap warning: threads share the map
        da.store(fdask.predict_proba(model, X), target)
    target.flush()
    del target
    expected = model.predict_proba(np.load(pixels_file))
    assert np.array_equal(np.load(tmp_path / "proba.npy"), expected)


def test_from_npy_reads_blocks_with_the_local_scheduler(pixels_file, pixels, local_scheduler):
    X = fdask.from_npy(pixels_file, chunks=30_000)
    assert X.chunks == ((30_000,) * 6 + (20_000,), (FEATURES,))
    assert np.array_equal(X.compute(), pixels)
    assert np.array_equal(X[12_345:12_350].compute(), pixels[12_345:12_350])
    assert fdask.from_npy(str(pixels_file)).shape == pixels.shape  # chunks="auto"


def test_from_npy_refuses_what_it_cannot_stream(tmp_path):
    archive = tmp_path / "weights.npz"
    np.savez(archive, a=np.zeros(3))
    with pytest.raises(DataFormatError, match="npz"):
        fdask.from_npy(archive)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="objects.npy"):
        fdask.from_npy(objects)
    scalar = tmp_path / "scalar.npy"
    np.save(scalar, np.float32(1))
    with pytest.raises(DataFormatError, match="0-d"):
        fdask.from_npy(scalar)
    with pytest.raises(FileNotFoundError):
        fdask.from_npy(tmp_path / "missing.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty"):
        fdask.from_npy(tmp_path / "empty.npy")
    np.save(tmp_path / "cut.npy", np.zeros((4, 2)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-8])
    with pytest.raises(DataFormatError, match="truncated"):
        fdask.from_npy(tmp_path / "cut.npy")
    np.save(tmp_path / "ok.npy", np.zeros((4, 2)))
    for chunks in (0, -3, 2.5, "big", True):
        with pytest.raises(ValueError, match="chunks"):
            fdask.from_npy(tmp_path / "ok.npy", chunks=chunks)


def test_from_npy_notices_a_file_replaced_after_opening(tmp_path, local_scheduler):
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((10, 4), dtype=np.float32))
    X = fdask.from_npy(path)
    np.save(path, np.zeros((12, 4), dtype=np.float32))
    with pytest.raises(DataFormatError, match="changed"):
        X.compute()


# -- the local scheduler -------------------------------------------------------------------


def test_local_scheduler_equals_in_process(model, pixels, local_scheduler):
    # Feature chunks are joined: every row needs all of its features in one block.
    X = da.from_array(pixels, chunks=(ROWS // 8, FEATURES // 4))
    proba = fdask.predict_proba(model, X)
    assert proba.chunks == ((ROWS // 8,) * 8, (OUTPUTS,))
    assert np.array_equal(proba.compute(), model.predict_proba(pixels))
    labels = fdask.predict(model, X)
    assert labels.chunks == ((ROWS // 8,) * 8,)
    assert np.array_equal(labels.compute(), model.predict(pixels))


def test_local_scheduler_dataframe(model, pixels, local_scheduler):
    frame = pd.DataFrame(pixels[:5_000])
    ddf = dd.from_pandas(frame, npartitions=3)
    result = fdask.predict_proba(model, ddf).compute()
    assert np.array_equal(result.to_numpy(), model.predict_proba(frame.to_numpy()))
    assert np.array_equal(fdask.predict(model, ddf).compute(), model.predict(frame.to_numpy()))


def test_progress_bar_on_the_local_scheduler(model, pixels, local_scheduler, capsys):
    from dask.diagnostics import ProgressBar

    X = da.from_array(pixels[:50_000], chunks=(10_000, FEATURES))
    with ProgressBar():
        result = fdask.predict(model, X).compute()
    assert "100% Completed" in capsys.readouterr().out
    assert np.array_equal(result, model.predict(pixels[:50_000]))


def test_local_threads_share_the_cores(local_scheduler):
    import dask.local
    import dask.threaded

    cores = available_cores()
    assert fdask._local_threads(dask.local.get_sync) == cores
    with dask.config.set(num_workers=1):
        assert fdask._local_threads(dask.threaded.get) == cores
    with dask.config.set(num_workers=cores):
        assert fdask._local_threads(dask.threaded.get) == 1
    with dask.config.set(num_workers=4 * cores):
        assert fdask._local_threads(dask.threaded.get) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_images_and_float_inputs(dtype, local_scheduler):
    model = fastmlp.MLP(random_layers((16, 8, 3), ("relu", "softmax"), dtype=dtype))
    images = np.random.default_rng(SEED).random((1_000, 4, 4)).astype(np.float32)
    X = da.from_array(images, chunks=(300, 2, 4))  # (N, 4, 4) images, split columns
    proba = fdask.predict_proba(model, X)
    assert proba.dtype == model.dtype and proba.shape == (1_000, 3)
    assert proba.compute().dtype == model.dtype
    assert np.array_equal(proba.compute(), model.predict_proba(images))
    assert np.array_equal(fdask.predict(model, X).compute(), model.predict(images))


def test_binary_and_regression_outputs(local_scheduler):
    rng = np.random.default_rng(SEED)
    values = rng.standard_normal((500, 6))
    X = da.from_array(values, chunks=(100, 6))
    binary = fastmlp.MLP(random_layers((6, 4, 1), ("tanh", "sigmoid"), dtype=np.float64))
    labels = fdask.predict(binary, X)
    assert labels.dtype == np.int64 and labels.shape == (500,)
    assert np.array_equal(labels.compute(), binary.predict(values))
    regressor = fastmlp.MLP(random_layers((6, 4, 2), ("relu", "identity"), dtype=np.float64))
    outputs = fdask.predict(regressor, X)
    assert outputs.dtype == np.float64 and outputs.shape == (500, 2)
    assert np.array_equal(outputs.compute(), regressor.predict(values))
    frame = fdask.predict(regressor, dd.from_pandas(pd.DataFrame(values), npartitions=2))
    assert list(frame.columns) == ["output_0", "output_1"]
    assert np.array_equal(frame.compute().to_numpy(), regressor.predict(values))


def test_results_are_lazy_with_known_meta(model, local_scheduler):
    def refuse(block):
        raise RuntimeError("computed while building the graph")

    X = da.zeros((1_000, FEATURES), dtype=np.uint8, chunks=(100, FEATURES)).map_blocks(
        refuse, dtype=np.uint8
    )
    proba = fdask.predict_proba(model, X)
    labels = fdask.predict(model, X)
    assert (proba.dtype, proba.shape, proba._meta.dtype) == (model.dtype, (1_000, 10), model.dtype)
    assert (labels.dtype, labels.shape) == (np.int64, (1_000,))
    with pytest.raises(RuntimeError, match="computed while building"):
        proba.compute()

    frame = pd.DataFrame(np.zeros((10, FEATURES), dtype=np.uint8))
    ddf = dd.from_pandas(frame, npartitions=2).map_partitions(
        lambda part: refuse(part), meta=frame.iloc[:0]
    )
    proba = fdask.predict_proba(model, ddf)
    assert list(proba.dtypes) == [model.dtype] * OUTPUTS
    assert fdask.predict(model, ddf).dtype == np.int64
    with pytest.raises(RuntimeError, match="computed while building"):
        proba.compute()


def test_unknown_row_chunks(model, pixels, local_scheduler):
    frame = pd.DataFrame(pixels[:3_000])
    X = dd.from_pandas(frame, npartitions=3).to_dask_array()  # row counts unknown
    assert np.isnan(X.shape[0])
    proba = fdask.predict_proba(model, X)
    assert np.array_equal(proba.compute(), model.predict_proba(pixels[:3_000]))


# -- bad inputs: clear errors before anything runs -----------------------------------------


def test_in_memory_data_is_pointed_at_the_model(model, pixels):
    with pytest.raises(TypeError, match=r"MLP\.predict_proba"):
        fdask.predict_proba(model, pixels)
    with pytest.raises(TypeError, match=r"MLP\.predict"):
        fdask.predict(model, pd.DataFrame(pixels[:10]))
    with pytest.raises(TypeError, match="dask.array"):
        fdask.predict_proba(model, [[0] * FEATURES])


def test_bad_inputs(model, local_scheduler):
    X = da.zeros((100, FEATURES), chunks=50)
    with pytest.raises(TypeError, match="fastmlp.MLP"):
        fdask.predict_proba("model.npz", X)
    with pytest.raises(ValueError, match=f"63 features per row.*expects {FEATURES}"):
        fdask.predict_proba(model, da.zeros((100, FEATURES - 1), chunks=50))
    with pytest.raises(ValueError, match="shape"):
        fdask.predict(model, da.zeros(FEATURES, chunks=8))
    with pytest.raises(TypeError, match="bool"):
        fdask.predict_proba(model, da.zeros((100, FEATURES), dtype=bool, chunks=50))
    with pytest.raises(TypeError, match="columns"):
        fdask.predict_proba(model, X, columns=["a"])
    with pytest.raises(ValueError, match="threads"):
        fdask.predict_proba(model, X, threads=0)


def test_bad_dataframes(model, local_scheduler):
    names = [f"f{i}" for i in range(FEATURES)]
    frame = pd.DataFrame(np.zeros((10, FEATURES)), columns=names)
    frame["text"] = "x"
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(ValueError, match=f"{FEATURES + 1} features per row.*columns="):
        fdask.predict_proba(model, ddf)
    with pytest.raises(ValueError, match=r"\['nope'\] are not in X"):
        fdask.predict_proba(model, ddf, columns=names[:-1] + ["nope"])
    with pytest.raises(TypeError, match="'text'"):
        fdask.predict_proba(model, ddf, columns=names[:-1] + ["text"])
    with pytest.raises(TypeError, match="list of column names"):
        fdask.predict_proba(model, ddf, columns="f0")
    nullable = dd.from_pandas(frame[names].astype("Int64"), npartitions=2)
    with pytest.raises(TypeError, match="astype"):
        fdask.predict(model, nullable)
