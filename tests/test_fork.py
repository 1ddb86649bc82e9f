"""A process forked while other threads run fastmlp calls can use fastmlp.

``multiprocessing`` (fork start method), gunicorn and Dask's process workers fork a parent
that may be in the middle of a call on another thread. The child has only the forking thread:
whatever the others held at that instant (the thread pool's lock, borrows of ``out=`` arrays)
must not stay held. Each test forks many times while a thread keeps calling, and every child
must finish a call of its own within a deadline; a child that hangs is killed and counted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import fastmlp

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin",
    reason="fork() is a POSIX call (and macOS discourages it in threaded processes)",
)

CHILD_DEADLINE = 20.0


def tutorial_like(seed: int = 0) -> fastmlp.MLP:
    rng = np.random.default_rng(seed)
    sizes = (784, 50, 100, 10)
    layers = [
        (rng.normal(0, 0.05, size=(a, b)), rng.normal(0, 0.1, size=b), act)
        for a, b, act in zip(sizes, sizes[1:], ("sigmoid", "sigmoid", "softmax"))
    ]
    return fastmlp.MLP(layers, dtype=np.float32)


def wait_for(pid: int, deadline: float) -> "int | None":
    """The child's exit status, or None (after killing it) if it outlives the deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def fork_while(busy, child_work, forks: int) -> "list[str]":
    """Forks ``forks`` times while a thread runs ``busy()`` in a loop; each child runs
    ``child_work()`` and exits 0, or 1 with its error. Returns what went wrong."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            busy()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    failures = []
    try:
        for attempt in range(forks):
            pid = os.fork()
            if pid == 0:  # the child: no pytest machinery, just the call and an exit code
                code = 0
                try:
                    child_work()
                except BaseException as error:  # noqa: B036 - reported through the exit code
                    os.write(2, f"child {attempt}: {error!r}\n".encode())
                    code = 1
                os._exit(code)
            status = wait_for(pid, CHILD_DEADLINE)
            if status is None:
                failures.append(f"fork {attempt}: the child hung for {CHILD_DEADLINE} s")
            elif status != 0:
                failures.append(f"fork {attempt}: the child failed (exit {status})")
            if len(failures) >= 3:
                break
    finally:
        stop.set()
        thread.join(timeout=30)
    return failures


def test_a_child_forked_during_split_calls_runs_its_own_split_call():
    model = tutorial_like()
    rng = np.random.default_rng(1)
    small = rng.random((64, 784), dtype=np.float32)  # split over both cores: uses the pool
    large = rng.random((5000, 784), dtype=np.float32)
    expected = model.predict_proba(large, threads=1)

    def child_work():
        got = model.predict_proba(large, threads=2)
        if not np.array_equal(got, expected):
            raise AssertionError("the child's result differs from the parent's")

    failures = fork_while(lambda: model.predict_proba(small, threads=2), child_work, forks=300)
    assert not failures, failures


def test_a_child_forked_during_calls_with_out_can_borrow_the_same_arrays():
    model = tutorial_like()
    rng = np.random.default_rng(2)
    X = rng.random((20_000, 784), dtype=np.float32)  # long enough to release the GIL
    buffer = np.empty((20_000, 10), np.float32)
    values = rng.normal(size=1 << 17).astype(np.float32)
    values_out = np.empty_like(values)

    def busy():
        model.predict_proba(X, out=buffer)
        fastmlp.sigmoid(values, out=values_out)

    def child_work():
        model.predict_proba(X[:10], out=buffer[:10])
        fastmlp.sigmoid(X[:10], out=X[:10])
        fastmlp.sigmoid(values, out=values_out)

    failures = fork_while(busy, child_work, forks=100)
    assert not failures, failures
