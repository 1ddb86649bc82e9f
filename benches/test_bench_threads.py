"""Does a call release the GIL? Two Python threads against one thread doing the same work.

Group ``gil``, all on 10,000-row float32 blocks, every call with ``threads=1`` (so the only
parallelism is Python's own threads):

- ``one_python_thread``: one thread runs the model on block A, then on block B.
- ``two_python_threads``: two threads (a pool started beforehand) run block A and block B at
  the same time. With the GIL released during the computation this takes about half as long
  on 2 free cores; holding it, as long as the one-thread case.
- ``one_call_two_threads``: for comparison, one call on both blocks (20,000 rows) with
  fastmlp's own 2 threads.

``benchmark.extra_info["ratio_to_one_thread"]`` holds two threads' minimum over one thread's
(about 0.5 ideal, 1.0 means no overlap); the terminal summary prints it as well. Never
asserted: only the results are, which must equal the single-threaded ones exactly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ROWS = 10_000
ROUNDS = 15
GROUP = "gil"


@pytest.fixture(scope="module")
def blocks(x32):
    both = x32[max(x32)][: 2 * ROWS]
    return both[:ROWS], both[ROWS:], both


@pytest.fixture(scope="module")
def expected(model, blocks):
    """Each block's probabilities, computed on the calling thread with one thread."""
    a, b, _ = blocks
    return model.predict_proba(a, threads=1), model.predict_proba(b, threads=1)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-gil") as executor:
        # Start both workers before any timing.
        list(executor.map(lambda _: None, range(2)))
        yield executor


def pedantic(benchmark, fn):
    benchmark.group = GROUP
    benchmark.extra_info["rows_per_block"] = ROWS
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_one_python_thread(benchmark, record, model, blocks, expected):
    a, b, _ = blocks

    def sequential():
        return model.predict_proba(a, threads=1), model.predict_proba(b, threads=1)

    results = pedantic(benchmark, sequential)
    for result, want in zip(results, expected):
        np.testing.assert_array_equal(result, want)
    record()


def test_two_python_threads(benchmark, record, timings, derived, model, blocks, expected, pool):
    a, b, _ = blocks

    def concurrent():
        futures = [pool.submit(model.predict_proba, block, threads=1) for block in (a, b)]
        return [future.result() for future in futures]

    results = pedantic(benchmark, concurrent)
    for result, want in zip(results, expected):
        np.testing.assert_array_equal(result, want)
    seconds = record()
    one_thread = timings.get((GROUP, "test_one_python_thread"))
    if seconds is not None and one_thread:
        ratio = seconds / one_thread
        benchmark.extra_info["ratio_to_one_thread"] = ratio
        derived.append(
            f"{GROUP:>13}: two Python threads / one Python thread = {ratio:.2f} "
            "(0.5 = full overlap on 2 free cores, 1.0 = none)"
        )


def test_one_call_two_threads(benchmark, record, timings, derived, model, blocks, expected):
    _, _, both = blocks
    result = pedantic(benchmark, lambda: model.predict_proba(both, threads=2))
    np.testing.assert_array_equal(result, np.concatenate(expected))
    seconds = record()
    one_thread = timings.get((GROUP, "test_one_python_thread"))
    if seconds is not None and one_thread:
        ratio = seconds / one_thread
        benchmark.extra_info["ratio_to_one_thread"] = ratio
        derived.append(f"{GROUP:>13}: one call with threads=2 / one Python thread = {ratio:.2f}")
