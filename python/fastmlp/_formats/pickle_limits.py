"""Limits every restricted unpickler applies before it builds anything: opcode count and nesting.

``pickle``'s C unpickler builds nested containers without recursion, but what is then done
with them recurses in C: hashing a tuple used as a dict key, comparing, ``repr`` in an error
message. A 200 kB pickle holding a tuple nested 200,000 deep therefore crashes the process
(SIGSEGV), and shallower ones raise a bare ``RecursionError``. So the opcodes are first walked
here, without building any object, and the nesting depth of every value the pickle would
build is computed with a simulated stack and memo: iteratively, never by recursion. A weights
pickle nests a few levels (a dict of arrays, each rebuilt from a tuple of arguments), far below
:data:`.limits.PICKLE_MAX_NESTING`. The walk also bounds the number of opcodes, and so of
objects the unpickler can create: each costs tens of bytes of memory for one byte of file.

A container changed after it was placed inside another (``APPEND`` to a list fetched back from
the memo) would make the depth recorded for its parent stale; Python's pickler emits that only
for self-referencing (cyclic) objects, which no weights file holds, so it is refused.
"""

from __future__ import annotations

import pickle
import pickletools
from typing import Any, Dict, List

from ..errors import WeightsFormatError
from . import limits

__all__ = ["PickleRefused", "check_pickle_limits", "load_within_limits"]

# Opcodes that pop n values and push one new object built from them.
_BUILD_FROM_N = {
    "TUPLE1": 1,
    "TUPLE2": 2,
    "TUPLE3": 3,
    "REDUCE": 2,
    "NEWOBJ": 2,
    "NEWOBJ_EX": 3,
    "STACK_GLOBAL": 2,
    "BINPERSID": 1,
    "READONLY_BUFFER": 1,
}
# Opcodes that pop everything above the last mark and push one new object built from it.
_BUILD_FROM_MARK = frozenset(("TUPLE", "LIST", "DICT", "FROZENSET", "INST", "OBJ"))
# Opcodes that pop n values and put them into the object left on top of the stack.
_ADD_N = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}
# Opcodes that pop everything above the last mark and put it into the object below the mark.
_ADD_FROM_MARK = frozenset(("APPENDS", "SETITEMS", "ADDITEMS"))
_EMPTY_CONTAINERS = frozenset(("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"))
_PUT = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
_GET = frozenset(("GET", "BINGET", "LONG_BINGET"))
_NO_STACK_EFFECT = frozenset(("PROTO", "FRAME"))


class PickleRefused(Exception):
    """The pickle breaks a limit; the caller names the file and raises its own error."""


class _Value:
    """A value the pickle would build: how deeply it nests, and whether a container holds it."""

    __slots__ = ("depth", "held")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.held = False


def check_pickle_limits(content: bytes) -> None:
    """Raise :class:`PickleRefused` unless ``content`` stays within the limits above.

    A damaged pickle makes :func:`pickletools.genops` raise (usually ``ValueError``), which is
    left to the caller. Lengths the pickle declares are checked against the bytes present by
    ``genops``, so nothing is allocated for them here.
    """
    fail = PickleRefused
    stack: List[Any] = []  # _Value entries; marks are kept apart, as the C unpickler does
    marks: List[int] = []
    memo: Dict[Any, _Value] = {}

    def pop(count: int) -> "list[_Value]":
        if len(stack) - (marks[-1] if marks else 0) < count:
            raise fail("it pops more values than it pushed (a damaged pickle)")
        values = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return values

    def pop_to_mark() -> "list[_Value]":
        if not marks:
            raise fail("it uses a mark it never set (a damaged pickle)")
        start = marks.pop()
        values = stack[start:]
        del stack[start:]
        return values

    def nested(children: "list[_Value]") -> int:
        depth = 1
        for child in children:
            child.held = True
            depth = max(depth, child.depth + 1)
        if depth > limits.PICKLE_MAX_NESTING:
            raise fail(
                f"it nests values more than {limits.PICKLE_MAX_NESTING} levels deep; a weights "
                "pickle nests a few (a hostile file can crash Python this way)"
            )
        return depth

    def add_to_top(children: "list[_Value]") -> None:
        if not stack or len(stack) == (marks[-1] if marks else 0):
            raise fail("it adds items to a container that is not there (a damaged pickle)")
        container = stack[-1]
        if container.held or any(child is container for child in children):
            raise fail(
                "it changes a container after placing it inside another (a self-referencing "
                "object); a weights pickle holds none"
            )
        container.depth = max(container.depth, nested(children))

    for count, (opcode, argument, _) in enumerate(pickletools.genops(content), start=1):
        if count > limits.PICKLE_MAX_OPCODES:
            raise fail(
                f"it holds more than {limits.PICKLE_MAX_OPCODES:,} opcodes; a weights pickle "
                "holds about 30 per array (a hostile file could exhaust memory this way)"
            )
        name = opcode.name
        if name in _BUILD_FROM_N:
            stack.append(_Value(nested(pop(_BUILD_FROM_N[name]))))
        elif name in _BUILD_FROM_MARK:
            children = pop_to_mark()
            if name == "OBJ" and not children:
                raise fail("OBJ without a class (a damaged pickle)")
            stack.append(_Value(nested(children)))
        elif name in _ADD_N:
            add_to_top(pop(_ADD_N[name]))
        elif name in _ADD_FROM_MARK:
            add_to_top(pop_to_mark())
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "POP":
            if marks and marks[-1] == len(stack):
                marks.pop()  # POP right after MARK discards the mark, as in the C unpickler
            else:
                pop(1)
        elif name == "POP_MARK":
            pop_to_mark()
        elif name == "DUP":
            stack.append(pop(1)[0])
            stack.append(stack[-1])
        elif name in _PUT or name == "MEMOIZE":
            if not stack:
                raise fail("it memoises a value that is not there (a damaged pickle)")
            memo[len(memo) if name == "MEMOIZE" else argument] = stack[-1]
        elif name in _GET:
            if argument not in memo:
                raise fail(f"it refers to memo entry {argument!r} it never stored")
            stack.append(memo[argument])
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise fail("it stops with a stack that is not one value (a damaged pickle)")
            return
        elif name in _EMPTY_CONTAINERS:
            stack.append(_Value(1))
        elif name in _NO_STACK_EFFECT:
            pass
        else:  # every other opcode pushes one scalar, string, global or persistent id
            stack.append(_Value(0))
    raise fail("it ends without a STOP opcode (truncated)")


def load_within_limits(
    content: bytes,
    unpickler: pickle.Unpickler,
    where: str,
    refused: str,
    damaged: str,
) -> Any:
    """``unpickler.load()`` once ``content``, what it reads, is within the limits (walked first,
    building nothing), every failure a :class:`WeightsFormatError` naming the file ``where``.

    ``refused`` (over a limit) and ``damaged`` (unreadable) are the messages, formatted with
    ``where``, ``exc`` and ``kind`` (the exception's type name).
    """
    try:
        check_pickle_limits(content)
    except PickleRefused as exc:
        raise WeightsFormatError(refused.format(where=where, exc=exc)) from None
    except Exception as exc:
        kind = type(exc).__name__
        raise WeightsFormatError(damaged.format(where=where, exc=exc, kind=kind)) from exc
    try:
        return unpickler.load()
    except WeightsFormatError as exc:
        # Raised by the unpickler's stand-ins, which mostly do not know the file: name it.
        if where in str(exc):
            raise
        raise type(exc)(f"{where}: {exc}") from None
    except Exception as exc:
        # EOFError, UnpicklingError, a stand-in called the wrong way: all mean "unreadable".
        kind = type(exc).__name__
        raise WeightsFormatError(damaged.format(where=where, exc=exc, kind=kind)) from exc
