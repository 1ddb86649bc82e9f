"""``fastmlp bench``: fastmlp against NumPy and other engines; the program is fastmlp._bench,
which the benchmarks in benches/ share."""

from __future__ import annotations

from typing import Any, Sequence


def add_parser(commands: Any) -> None:
    # Listed for --help only: main hands `fastmlp bench ...` over before parsing, so that all
    # of the bench's own options pass through.
    commands.add_parser(
        "bench",
        add_help=False,
        help="time fastmlp against NumPy and other engines (fastmlp bench --help)",
    )


def run_unparsed(arguments: Sequence[str]) -> int:
    from .. import _bench

    return _bench.main(list(arguments))
