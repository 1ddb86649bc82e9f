"""What the commands share: their error classes (whose type sets the exit code), the model
options and how a model is loaded from them, OUT checks, and SIGTERM turned into clean-up."""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from .._common import ACTIVATIONS, ActivationChoiceError
from ..errors import WeightsFormatError


class CommandError(Exception):
    """A problem the user can fix, reported as ``fastmlp COMMAND: error: ...`` (exit code 1):
    a file is missing, unreadable or does not fit."""

    exit_code = 1


class UsageError(CommandError):
    """The options do not work together (exit code 2, as argparse's own usage errors)."""

    exit_code = 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _activation_name(text: str) -> str:
    name = text.strip()
    if name not in ACTIVATIONS:
        raise argparse.ArgumentTypeError(
            f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
        )
    return name


def _input_scale(text: str) -> float:
    # "1/255" is accepted as well as "0.00392...": the fraction is what people think of.
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number such as 0.5 or 1/255, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hidden",
        metavar="A",
        type=_activation_name,
        help="activation of every hidden layer, for files that do not record it "
        "(default: the file's, else sigmoid)",
    )
    parser.add_argument(
        "--output",
        metavar="A",
        type=_activation_name,
        help="activation of the output layer (default: the file's, else softmax)",
    )
    parser.add_argument(
        "--activations",
        metavar="A,B,C",
        type=lambda text: [_activation_name(name) for name in text.split(",")],
        help="one activation per layer, comma-separated; instead of --hidden/--output",
    )
    parser.add_argument(
        "--input-scale",
        metavar="X",
        type=_input_scale,
        help="factor applied to every input value, e.g. 1/255 for raw pixels "
        "(default: the file's, else none)",
    )


def load_model(path: Path, options: argparse.Namespace) -> Any:
    from .._formats import load

    if options.activations is not None and (
        options.hidden is not None or options.output is not None
    ):
        raise UsageError(
            "give either --activations (one name per layer) or --hidden/--output, not both"
        )
    try:
        return load(
            path,
            hidden=options.hidden,
            output=options.output,
            activations=options.activations,
            input_scale=options.input_scale,
        )
    except WeightsFormatError as exc:
        raise CommandError(f"cannot read the model {str(path)!r}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        # The file reads but does not fit the options (activations missing for a PyTorch
        # checkpoint, one name too many) or does not form a network (layers that do not
        # chain), said in the command line's words rather than load()'s keyword arguments.
        # Only the activations are the caller's to fix with options: a usage error.
        message = str(exc)
        for keyword, option in _OPTION_NAMES:
            message = message.replace(keyword, option)
        if str(path) not in message:
            message = f"the model {str(path)!r}: {message}"
        error = UsageError if isinstance(exc, ActivationChoiceError) else CommandError
        raise error(message) from exc
    except (OSError, ImportError) as exc:
        raise CommandError(f"cannot read the model {str(path)!r}: {exc}") from exc


# load()'s keyword arguments as they appear in its messages, and the options that set them.
_OPTION_NAMES = (
    ("activations=[...]", "--activations A,B,..."),
    ("activations=", "--activations "),
    ("hidden=/output=", "--hidden/--output"),
    ("hidden= and output=", "--hidden and --output"),
    ("input_scale=", "--input-scale "),
)


def describe(model: Any) -> str:
    sizes = "-".join(str(n) for n in [model.n_features_in_] + [W.shape[1] for W in model.coefs_])
    scale = "" if model.input_scale is None else f", input scale {model.input_scale:g}"
    return f"{sizes} {model.dtype.name} network ({', '.join(model.activations)}{scale})"


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file ``path`` names, through symbolic links; None if absent."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def refuse_overwriting_inputs(output: Path, inputs: dict[str, Path]) -> None:
    """A usage error if OUT is one of the inputs (the model included), however it is spelled.

    Compared by device and inode, so ``./x``, a symbolic link and a hard link to an input are
    caught as well as the same name: writing OUT would otherwise replace that input.
    """
    written = _file_identity(output)
    if written is None:
        return
    for role, path in inputs.items():
        if _file_identity(path) == written:
            same = "" if str(path) == str(output) else f" ({str(output)!r} is {str(path)!r})"
            raise UsageError(
                f"OUT and {role} are the same file{same}; writing OUT would destroy {role}: "
                "give another OUT"
            )


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that every ``finally`` removes its files."""


_TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process killed so


def cleans_up_on_sigterm(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a command with SIGTERM turned into an exception for its duration.

    ``kill``, ``timeout`` and ``docker stop`` send SIGTERM, whose default action ends the
    process at once and leaves a half-written temporary file behind. The previous handler is
    restored afterwards, so that a program calling :func:`main` keeps its own.
    """

    @functools.wraps(run)
    def wrapper(options: argparse.Namespace) -> int:
        if threading.current_thread() is not threading.main_thread():
            return run(options)  # signal handlers can only be set from the main thread

        def terminate(signum: int, frame: Any) -> None:
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            return run(options)
        except _Terminated:
            print(f"fastmlp {options.command}: terminated; OUT was not written", file=sys.stderr)
            return _TERMINATED_EXIT_CODE
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper


def write_error(destination: Path, exc: OSError) -> CommandError:
    return CommandError(f"cannot write {str(destination)!r}: {exc.strerror or exc}")
