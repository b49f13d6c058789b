"""Output files: checked before a run starts, so that no result is measured only to be lost, then written so that
a regular file is either the old one or the complete new one, and a device, a pipe or a terminal is written
through (never replaced by a file of the same name)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from loadgen.errors import OptionError

PathLike = str | os.PathLike[str]


def _probe(folder: Path, flag: str, path: PathLike) -> None:
    """Fail unless a file can be created in `folder` (what the process may do, read-only mounts included)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".loadgen-check-")
    except OSError as error:
        raise OptionError(f"{flag} {path}: cannot write in {folder}: {error.strerror}") from None
    os.close(handle)
    os.unlink(name)


def _replaceable(path: Path) -> Path | None:
    """Where an atomic write goes: the path itself, or the regular file a symlink points at; None when the path is
    something to write through (a device, a pipe, a terminal, a process's open file)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return path
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISLNK(mode):
        real = Path(os.path.realpath(path))
        if real.parts[:2] == ("/", "proc"):  # /dev/stdout and the like: the process's open file, written through
            return None
        return _replaceable(real)
    return None


def check_file(path: PathLike, flag: str) -> None:
    """Fail with a one-line OptionError unless `path` can be written as an output file."""
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise OptionError(f"{flag} {path}: {error.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OptionError(f"{flag} {path}: is a directory; give a file name")
    destination = _replaceable(target)
    if destination is None:
        if not os.access(target, os.W_OK):
            raise OptionError(f"{flag} {path}: not writable")
        return
    folder = destination.parent
    if not folder.is_dir():
        raise OptionError(f"{flag} {path}: no such directory {folder}")
    _probe(folder, flag, path)


def check_directory(path: PathLike, flag: str) -> None:
    """Fail with a one-line OptionError unless `path` is, or can be made, a directory to write files in."""
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise OptionError(f"{flag} {path}: not a directory")
        _probe(target, flag, path)
        return
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OptionError(f"{flag} {path}: {ancestor} is not a directory")
    _probe(ancestor, flag, path)


def write_file(path: PathLike, content: str | bytes) -> None:
    """Write an output file: atomically over a regular file (temporary file, then rename, keeping its mode), through
    to a device, a pipe or a terminal. Raises OSError when the write fails."""
    data = content.encode() if isinstance(content, str) else content
    destination = _replaceable(Path(path))
    if destination is None:
        with open(path, "wb") as handle:
            handle.write(data)
        return
    try:
        mode = stat.S_IMODE(destination.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # as an ordinary new file (mkstemp makes it private)
    descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
