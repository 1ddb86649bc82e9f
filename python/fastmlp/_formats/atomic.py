"""Writing a file all at once or not at all: every writer (``save``, ``MLP.to_onnx``,
``fastmlp predict``) writes through :func:`write_atomically`."""

from __future__ import annotations

import os
import pathlib
import secrets
import stat
from typing import IO, Callable, Optional

from .._common import PathLike


def write_atomically(path: PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    A failure (a full disk, an exception while writing) leaves ``path`` as it was: never a
    half-written file that would later load as a truncated one. A symbolic link is written
    through, as ``open(path, "wb")`` would, rather than replaced by a file. A file replaced
    keeps its permission bits (and, where allowed, its owner and group). Errors name
    ``path``, never the temporary file the caller did not ask for.
    """
    target, temporary = _temporary_beside(path)
    try:
        descriptor = _create_beside(target, temporary)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise _naming(exc, path) from None
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _create_beside(target: pathlib.Path, temporary: pathlib.Path) -> int:
    """Create ``temporary`` (exclusively) to be renamed over ``target``; its descriptor.

    When ``target`` exists, the new file takes its permission bits, and its owner and group
    where the operating system allows (root; or a group the user belongs to), so that
    replacing a 0600 file does not leave a 0644 one. Otherwise the umask decides, as for a
    file ``open`` creates. Hard links to ``target`` keep the old content: the rename gives
    ``target`` a new inode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        existing: Optional[os.stat_result] = os.stat(target)
    except OSError:
        existing = None
    # Created owner-only when replacing a file, so that no one else can open it before its
    # final permissions are set; mode 0o666 otherwise lets the umask decide.
    descriptor = os.open(temporary, flags, 0o600 if existing is not None else 0o666)
    if existing is None:
        return descriptor
    try:
        if hasattr(os, "fchown"):
            try:
                os.fchown(descriptor, existing.st_uid, existing.st_gid)
            except OSError:
                try:
                    os.fchown(descriptor, -1, existing.st_gid)
                except OSError:
                    pass  # not ours to give away: the file becomes the writer's
        # After fchown, which may clear set-user-ID and set-group-ID bits.
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, stat.S_IMODE(existing.st_mode))
        else:  # pragma: no cover - Windows
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    return descriptor


def _temporary_beside(path: PathLike) -> "tuple[pathlib.Path, pathlib.Path]":
    """``(target, temporary)``: the file ``path`` names (through symbolic links, which are
    written through as ``open`` would) and a fresh hidden name in its folder to write first.

    Renaming the temporary file over the target is atomic only within one folder.
    """
    target = pathlib.Path(os.path.realpath(path))
    return target, target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")


def _naming(error: OSError, path: PathLike) -> OSError:
    """The same kind of error, about ``path`` (e.g. IsADirectoryError for a folder)."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, os.fspath(path))
