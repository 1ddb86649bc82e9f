"""The ``fastmlp`` command: one module per command, and :func:`main`, which dispatches.

- ``demo`` (:mod:`.demo`) reproduces the tutorial; ``bench`` (:mod:`.bench`) times peers;
  ``predict`` (:mod:`.predict`) runs a network over a data file; ``convert``
  (:mod:`.convert`) rewrites a weights file as ``.npz``/``.safetensors``; ``info`` and
  ``--version`` (:mod:`.info`) describe the install.
- :mod:`.common`: what they share. A command reports a problem the user can fix by raising
  :class:`~.common.CommandError` (exit code 1) or :class:`~.common.UsageError` (2); the
  exception's type, never its text, sets the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, convert, demo, info, predict
from .common import CommandError

__all__ = ["main"]

# In the order `fastmlp --help` lists them.
_COMMANDS = {"info": info, "demo": demo, "bench": bench, "predict": predict, "convert": convert}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmlp",
        description="Fast inference for small dense neural networks (MLPs) on the CPU.",
    )
    parser.add_argument("--version", action="version", version=info.version_line())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS.values():
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastmlp`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name. Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 on success, 1 when a file is missing or unreadable, 2 for usage
        errors.

    Raises
    ------
    SystemExit
        From argparse, for ``--help`` and malformed options.

    Examples
    --------
    >>> main(["demo"])  # doctest: +SKIP
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        return bench.run_unparsed(arguments[1:])
    parser = _build_parser()
    options = parser.parse_args(arguments)
    if options.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _COMMANDS[options.command].run(options)
    except CommandError as exc:
        print(f"fastmlp {options.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
