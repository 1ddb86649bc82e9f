"""Batch inference on Dask: the same model over a ``dask.array`` or a ``dask.dataframe``.

Where the data outgrows one machine, fastmlp runs on Dask rather than on a scheduler of its
own. :func:`predict_proba` and :func:`predict` return lazy Dask collections; nothing is
computed until the caller asks (``.compute()``, ``.persist()``, ``to_npy_stack``, ...).
:func:`from_npy` opens a ``.npy`` file as a ``dask.array`` whose blocks are read by the
workers, so a file larger than the client's memory never passes through it.

Install with ``pip install "fastmlp[dask]"``; this module imports Dask only when called.

How the work is placed:

- With a ``distributed`` client (the default client when the graph is built), the model is
  scattered to every worker once per call (``client.scatter(..., broadcast=True)``) and each
  task receives it from its worker's memory, so it is deserialised once per worker rather
  than once per task. (An :class:`~fastmlp.MLP` unpickles by rebuilding its packed weights,
  which is worth doing once.) Build the collection while that client is the default: the
  graph refers to data held by that cluster.
- Each task passes ``threads=`` to fastmlp: the host's cores divided by the total Dask worker
  threads on that host (at least 1), computed when the graph is built from
  ``client.nthreads()`` and each worker's available cores. Per call rather than through a
  worker plugin calling ``set_num_threads``: a plugin would change the default of every later
  fastmlp call on those workers, outliving this call on a cluster that may be shared, while
  ``threads=`` keeps the choice visible in the graph and lets the caller override it.
- Without a distributed client (Dask's local threaded scheduler), the model object is used in
  place, and each task gets the cores divided by the scheduler's threads, so Dask's threads
  times fastmlp's threads never exceed the cores.
"""

from __future__ import annotations

import operator
import os
import sys
import uuid
import warnings
from collections import defaultdict
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ._common import PathLike, available_cores, check_input_dtype, check_threads
from ._optional import import_optional
from ._model import MLP
from .datasets import read_npy
from .errors import DataFormatError

__all__ = ["from_npy", "predict", "predict_proba"]


#: Per-task thread plan: one count for every task, or per host name (distributed workers).
ThreadPlan = Union[int, Dict[str, int]]


def _import_dask_array() -> Any:
    return import_optional("dask.array", extra="dask", needed_by="fastmlp.dask", package="Dask")


# -- inputs --------------------------------------------------------------------------------


def _check_model(model: Any, function: str) -> None:
    if not isinstance(model, MLP):
        raise TypeError(
            f"fastmlp.dask.{function}(model, X): model must be a fastmlp.MLP, "
            f"got {type(model).__name__}"
        )


def _dask_collection_kind(X: Any) -> Optional[str]:
    """Returns "array" or "dataframe" for a Dask collection of that kind, else None.

    Looks only at modules already imported: a Dask DataFrame cannot exist unless
    ``dask.dataframe`` was imported, so a check never pays for importing pandas.
    """
    dask_array = sys.modules.get("dask.array")
    if dask_array is not None and isinstance(X, dask_array.Array):
        return "array"
    dask_dataframe = sys.modules.get("dask.dataframe")
    if dask_dataframe is not None and isinstance(X, dask_dataframe.DataFrame):
        return "dataframe"
    return None


def _not_a_collection(X: Any, function: str) -> TypeError:
    kind = type(X)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(X, np.ndarray) or kind.__module__.split(".")[0] == "pandas":
        hint = (
            f"for data in memory call model.{function}(X) (fastmlp.MLP.{function}) directly, "
            "or wrap it with dask.array.from_array(X, chunks=(rows, -1))"
        )
    else:
        hint = "wrap the data in a dask.array or dask.dataframe first"
    return TypeError(
        f"fastmlp.dask.{function} expects a dask.array.Array or dask.dataframe.DataFrame, "
        f"got {name}; {hint}"
    )


def _rows_only(X: Any, model: MLP) -> Any:
    """``X`` checked against the model and chunked along rows only."""
    if X.ndim < 2:
        raise ValueError(
            f"X has shape {X.shape}; fastmlp.dask expects (N, {model.n_features_in_}) rows, "
            "or (N, ...) with trailing dimensions multiplying to the model's features"
        )
    trailing = X.shape[1:]
    if any(np.isnan(size) for size in trailing):
        raise ValueError(
            f"X has shape {X.shape}: the feature dimensions must be known "
            "(call X.compute_chunk_sizes() first)"
        )
    features = int(np.prod(trailing))
    if features != model.n_features_in_:
        raise ValueError(
            f"X has shape {X.shape}: {features} features per row, but the model expects "
            f"{model.n_features_in_} (shape (N, {model.n_features_in_}))"
        )
    check_input_dtype(np.dtype(X.dtype), "X")
    if any(len(chunks) > 1 for chunks in X.chunks[1:]):
        # Every output row needs all of its row's features, and the kernel computes the whole
        # network per row: splitting the features would need partial first-layer sums added
        # across blocks, in another order than one call's, so results would not be
        # bit-identical to MLP.predict_proba. One row of features is small; join them.
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X


# -- where the work runs -------------------------------------------------------------------


def _distributed_client(get: Any) -> Any:
    """The distributed Client behind a Dask scheduler function, or None for a local one."""
    client = getattr(get, "__self__", None)
    distributed = sys.modules.get("distributed")
    if client is not None and distributed is not None and isinstance(client, distributed.Client):
        return client
    return None


def _local_threads(get: Any) -> int:
    """fastmlp threads per task under Dask's local schedulers: cores // scheduler threads."""
    import dask
    import dask.local

    cores = available_cores()
    if get is dask.local.get_sync:
        return cores  # one task at a time
    workers = dask.config.get("num_workers", None)
    if not workers:
        pool = dask.config.get("pool", None)
        workers = getattr(pool, "_max_workers", None) or dask.system.CPU_COUNT
    return max(1, cores // int(workers))


def _plan_threads(nthreads: Dict[str, int], cores: Dict[str, int]) -> Dict[str, int]:
    """fastmlp threads per task on each host: its cores // all worker threads on it (>= 1).

    ``nthreads`` and ``cores`` map worker addresses to Dask threads and available cores.
    """
    from distributed.comm import get_address_host

    host_threads: Dict[str, int] = defaultdict(int)
    host_cores: Dict[str, int] = defaultdict(int)
    for address, count in nthreads.items():
        host = get_address_host(address)
        host_threads[host] += count
        host_cores[host] = max(host_cores[host], cores.get(address, 1))
    return {host: max(1, host_cores[host] // host_threads[host]) for host in host_threads}


def _model_token(model: MLP) -> str:
    """A token of the model's content: the same weights, the same token (no pickling)."""
    from dask.base import tokenize

    return tokenize(
        model.dtype.name,
        model.activations,
        model.input_scale,
        *model.coefs_,
        *model.intercepts_,
    )


def _placement(model: MLP, X: Any, threads: Optional[int]) -> "tuple[Any, ThreadPlan]":
    """The model (or its future on the cluster) and the thread plan each task receives."""
    import dask

    # The scheduler that computes X if the caller names none: the default distributed
    # client when there is one, else Dask's local scheduler for this kind of collection.
    get = dask.base.get_scheduler(collections=[X])
    client = _distributed_client(get)
    if client is None:
        return model, threads if threads is not None else _local_threads(get)
    # A fresh key per call: reusing a content-derived key races with the release of an earlier
    # call's future for it (the scheduler may forget the key just after the new scatter).
    # broadcast puts a copy on every worker now, so no task waits for (or repeats) it.
    key = f"fastmlp-MLP-{uuid.uuid4().hex}"
    future = client.scatter({key: model}, broadcast=True)[key]
    if threads is not None:
        return future, threads
    return future, _plan_threads(client.nthreads(), client.run(available_cores))


def _threads_here(plan: ThreadPlan) -> int:
    """This task's fastmlp threads, looked up by the worker's host."""
    if isinstance(plan, int):
        return plan
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        host = get_address_host(get_worker().address)
    except (ImportError, ValueError):
        return 1
    # A worker that joined after the graph was built is not in the plan: one thread never
    # oversubscribes, whatever else runs on its host.
    return plan.get(host, 1)


def _warn_if_memmap_embedded(X: Any) -> None:
    """Warns when ``X``'s graph holds a memory-mapped array that would travel whole.

    ``da.from_array(np.load(path, mmap_mode="r"))`` puts the memmap itself in the graph; a
    distributed client pickles it, which reads the entire file on the client and sends it
    through the scheduler. Best effort: graphs of an unexpected shape are not inspected.
    """
    try:
        from dask.highlevelgraph import MaterializedLayer

        embedded = 0
        for layer in X.dask.layers.values():
            if isinstance(layer, MaterializedLayer):
                for value in layer.mapping.values():
                    value = getattr(value, "value", value)  # a task-spec DataNode
                    if isinstance(value, np.memmap):
                        embedded += value.nbytes
    except Exception:  # pragma: no cover - depends on Dask's internals
        return
    if embedded:
        warnings.warn(
            f"X embeds a memory-mapped array of {embedded:,} bytes in its graph; with a "
            "distributed client the whole array is read on the client and sent through the "
            "scheduler. To stream it, open the file with fastmlp.dask.from_npy(path) so the "
            "workers read their own blocks.",
            UserWarning,
            stacklevel=5,  # the caller of predict_proba or predict
        )


# -- what each task runs -------------------------------------------------------------------


def _run_block(block: np.ndarray, model: MLP, plan: ThreadPlan, method: str) -> np.ndarray:
    threads = _threads_here(plan)
    if method == "predict_proba":
        return model.predict_proba(block, threads=threads)
    return model.predict(block, threads=threads)


def _run_partition(
    partition: Any,
    model: MLP,
    plan: ThreadPlan,
    method: str,
    names: Sequence[str],
) -> Any:
    import pandas as pd

    result = _run_block(partition.to_numpy(), model, plan, method)
    if result.ndim == 1:
        return pd.Series(result, index=partition.index, name=names[0])
    return pd.DataFrame(result, index=partition.index, columns=list(names))


def _output(model: MLP, method: str) -> "tuple[np.dtype, bool]":
    """The result's dtype, and whether it is one label per row (else one row of outputs)."""
    if method == "predict_proba" or model.out_activation_ == "identity":
        # MLP.predict returns the outputs themselves for a regressor.
        return model.dtype, False
    return np.dtype(np.int64), True


def _output_names(model: MLP, method: str, labels: bool) -> "list[str]":
    if labels:
        return ["label"]
    prefix = "proba" if method == "predict_proba" else "output"
    return [f"{prefix}_{index}" for index in range(model.n_outputs_)]


# -- public functions ----------------------------------------------------------------------


def _predict(
    model: MLP,
    X: Any,
    method: str,
    columns: Optional[Sequence[Any]],
    threads: Optional[int],
) -> Any:
    _check_model(model, method)
    kind = _dask_collection_kind(X)
    if kind is None:
        raise _not_a_collection(X, method)
    threads = check_threads(threads)
    if kind == "array":
        if columns is not None:
            raise TypeError("columns= selects DataFrame columns; X is a dask.array")
        return _predict_array(model, X, method, threads)
    return _predict_dataframe(model, X, method, columns, threads)


def _predict_array(model: MLP, X: Any, method: str, threads: Optional[int]) -> Any:
    da = _import_dask_array()
    from dask.base import tokenize

    X = _rows_only(X, model)
    dtype, labels = _output(model, method)
    placed, plan = _placement(model, X, threads)
    if not isinstance(placed, MLP):
        _warn_if_memmap_embedded(X)
    if labels:
        chunks: tuple = (X.chunks[0],)
        meta = np.empty((0,), dtype=dtype)
        drop_axis = list(range(1, X.ndim))
    else:
        chunks = (X.chunks[0], (model.n_outputs_,))
        meta = np.empty((0, model.n_outputs_), dtype=dtype)
        drop_axis = list(range(2, X.ndim))
    # The name is derived from the input's, the model's weights (or its key on the cluster)
    # and the plan, so Dask never has to tokenize (pickle) the model object itself.
    model_id = _model_token(model) if isinstance(placed, MLP) else placed.key
    name = f"fastmlp-{method}-{tokenize(X.name, model_id, plan, method)}"
    return da.map_blocks(
        _run_block,
        X,
        placed,
        plan,
        method,
        name=name,
        chunks=chunks,
        drop_axis=drop_axis or None,
        dtype=dtype,
        meta=meta,
    )


def _predict_dataframe(
    model: MLP,
    X: Any,
    method: str,
    columns: Optional[Sequence[Any]],
    threads: Optional[int],
) -> Any:
    import pandas as pd

    if columns is not None:
        if isinstance(columns, (str, bytes)) or not hasattr(columns, "__iter__"):
            raise TypeError(f"columns must be a list of column names, got {columns!r}")
        columns = list(columns)
        missing = [column for column in columns if column not in X.columns]
        if missing:
            raise ValueError(f"columns {missing} are not in X; its columns are {list(X.columns)}")
        X = X[columns]
    features = len(X.columns)
    if features != model.n_features_in_:
        which = "the selected columns" if columns is not None else "X's columns"
        raise ValueError(
            f"{which} give {features} features per row, but the model expects "
            f"{model.n_features_in_} (pick them with columns=[...])"
        )
    not_numeric = [
        f"{column!r} ({dtype})"
        for column, dtype in X.dtypes.items()
        if not isinstance(dtype, np.dtype) or dtype.kind not in "fiu"
    ]
    if not_numeric:
        raise TypeError(
            f"feature columns must have NumPy integer or float dtypes; {', '.join(not_numeric)} "
            "do not (convert them with .astype('float32'), after filling any missing values)"
        )
    dtype, labels = _output(model, method)
    names = _output_names(model, method, labels)
    index = X._meta.index
    if labels:
        meta: Any = pd.Series(np.empty(0, dtype=dtype), index=index, name=names[0])
    else:
        meta = pd.DataFrame(
            np.empty((0, model.n_outputs_), dtype=dtype), index=index, columns=names
        )
    placed, plan = _placement(model, X, threads)
    return X.map_partitions(_run_partition, placed, plan, method, names, meta=meta)


def predict_proba(
    model: MLP,
    X: Any,
    *,
    columns: Optional[Sequence[Any]] = None,
    threads: Optional[int] = None,
) -> Any:
    """The model's outputs for every row of a Dask collection, computed lazily.

    Parameters
    ----------
    model : fastmlp.MLP
        The network. With a distributed client it is sent once to every worker.
    X : dask.array.Array or dask.dataframe.DataFrame
        Array: shape ``(N, K)``, or ``(N, ...)`` whose trailing dimensions multiply to ``K``
        (``(N, 28, 28)`` images), dtype uint8, float32 or float64 (uint8 blocks reach the
        kernel unconverted; other real dtypes are converted to the model's dtype). Blocks
        split along rows only: feature chunks are joined (``rechunk``), since each row needs
        all of its features. DataFrame: the feature columns (all, or ``columns``) with NumPy
        integer or float dtypes, read per partition with ``DataFrame.to_numpy()`` (NumPy's
        common type of the selected columns).
    columns : sequence of column labels, optional
        DataFrame only: the feature columns, in the model's input order. Default: all.
    threads : int, optional
        fastmlp threads per task. Default: the host's cores divided by the Dask threads
        running on that host (see the module's notes), at least 1.

    Returns
    -------
    dask.array.Array or dask.dataframe.DataFrame
        For an array: shape ``(N, n_outputs)`` in the model's dtype, chunked as ``X`` along
        rows. For a DataFrame: columns ``proba_0 .. proba_{n-1}`` in the model's dtype, with
        ``X``'s index and divisions. Lazy: dtype, shape and ``meta`` are known without
        computing anything. Values equal ``model.predict_proba`` on the same rows exactly.

    Raises
    ------
    TypeError
        If ``model`` is not an MLP, ``X`` is not a Dask array or DataFrame (NumPy arrays and
        pandas DataFrames go to :meth:`fastmlp.MLP.predict_proba`), or the features are not
        real numbers.
    ValueError
        If the number of features does not match the model, or a column is missing.
    ImportError
        If Dask is not installed.

    Examples
    --------
    >>> import dask.array as da
    >>> X = da.from_array(images, chunks=(100_000, -1))       # doctest: +SKIP
    >>> proba = fastmlp.dask.predict_proba(model, X)           # doctest: +SKIP
    >>> proba.compute()                                         # doctest: +SKIP
    """
    return _predict(model, X, "predict_proba", columns, threads)


def predict(
    model: MLP,
    X: Any,
    *,
    columns: Optional[Sequence[Any]] = None,
    threads: Optional[int] = None,
) -> Any:
    """Predicted labels (each row's argmax, int64) for every row of a Dask collection.

    As :meth:`fastmlp.MLP.predict`, block by block: for a single sigmoid output the label is
    ``output > 0.5``, and for an identity output layer (a regressor) the outputs themselves
    are returned, as :func:`predict_proba` returns them.

    Parameters
    ----------
    model, X, columns, threads
        As for :func:`predict_proba`.

    Returns
    -------
    dask.array.Array or dask.dataframe.Series
        For an array: int64 labels, shape ``(N,)``. For a DataFrame: an int64 Series named
        ``label`` with ``X``'s index. (A regressor's outputs: shape ``(N, n_outputs)``, or
        columns ``output_0 ..``.) Values equal ``model.predict`` on the same rows exactly.

    Raises
    ------
    TypeError, ValueError, ImportError
        As for :func:`predict_proba`.
    """
    return _predict(model, X, "predict", columns, threads)


# -- streaming a .npy file -----------------------------------------------------------------


class _NpyRows:
    """A ``.npy`` file as an array-like whose slices are read from disk when taken.

    Only the path, shape and dtype travel in the graph; each block's task opens the file
    memory-mapped where it runs and copies out its own rows.
    """

    def __init__(self, path: str, shape: "tuple[int, ...]", dtype: np.dtype, stamp: tuple):
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)
        self._stamp = stamp

    def __getitem__(self, index: Any) -> np.ndarray:
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        if array.shape != self.shape or array.dtype != self.dtype:
            raise DataFormatError(
                f"{self.path} changed since it was opened: now {array.shape} {array.dtype}, "
                f"was {self.shape} {self.dtype}"
            )
        # A copy, in memory and C-ordered: a memmap slice would hold the file open and would
        # be pickled whole if the block moves to another worker.
        return np.ascontiguousarray(array[index])

    def __dask_tokenize__(self) -> tuple:
        return (self.path, self.shape, self.dtype.str, self._stamp)


def from_npy(path: PathLike, *, chunks: Union[int, str] = "auto") -> Any:
    """A ``.npy`` file as a ``dask.array`` whose blocks the workers read from disk.

    Unlike ``da.from_array(np.load(path, mmap_mode="r"))``, whose graph holds the memory map
    itself (so a distributed client reads the whole file and sends it through the scheduler),
    this graph holds only the path: each task opens the file memory-mapped on its worker and
    reads its own rows. The file is never loaded on the client.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file, made absolute here. With a distributed cluster every worker must
        see it at that path (a shared file system).
    chunks : int or "auto"
        Rows per block; other dimensions stay whole. ``"auto"`` follows Dask's
        ``array.chunk-size`` setting (128 MiB by default).

    Returns
    -------
    dask.array.Array
        Of the file's shape and dtype.

    Raises
    ------
    fastmlp.DataFormatError
        If the file is not a ``.npy`` array that can be memory-mapped (for example an
        ``.npz`` archive or an array of Python objects; pickled data is never loaded).
    FileNotFoundError
        If the file does not exist.
    ValueError
        If ``chunks`` is not a positive int or ``"auto"``.
    """
    da = _import_dask_array()
    path = os.path.abspath(os.fspath(path))
    rows: Union[int, str] = "auto"
    if chunks != "auto":
        try:
            rows = operator.index(chunks)  # type: ignore[arg-type]
        except TypeError:
            rows = 0
        if isinstance(chunks, bool) or rows < 1:
            raise ValueError(f'chunks must be a positive int or "auto", got {chunks!r}')
    # read_npy checks the header against the file first: an empty, truncated, foreign or
    # object-dtype file is a DataFormatError here, not a failure inside a worker later.
    header = read_npy(path, mmap=True)
    if header.ndim == 0:
        raise DataFormatError(f"{path} is a 0-d array; from_npy reads .npy arrays with rows")
    shape, dtype = tuple(header.shape), header.dtype
    del header  # releases the map
    status = os.stat(path)
    source = _NpyRows(path, shape, dtype, (status.st_size, status.st_mtime_ns))
    return da.from_array(
        source,
        chunks={0: rows, **{axis: -1 for axis in range(1, len(shape))}},
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
