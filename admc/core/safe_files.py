"""Reading input files without trusting them: regular files only, bounded size, no symlinks inside bundles.

Guarantees:
- :func:`read_file` reads a regular file the user named (a FIFO, ``/dev/zero``, a directory or a socket is
  refused before any read, so nothing hangs or reads without end), refusing files over a size limit.
- :func:`read_text` also refuses text that is not UTF-8, naming the file and the byte offset.
- :func:`check_member_name` accepts only relative, normalised names that stay inside a directory
  (no ``/`` prefix, ``..``, ``.``, empty parts, backslashes or control characters).
- :func:`read_member` opens such a name below an open directory one component at a time with
  ``O_NOFOLLOW``, so neither the file nor any directory on its way may be a symbolic link, and checks the
  file is regular and within the size limit *before* reading it.
Every failure is an :class:`AdmcError` naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from admc.core.errors import AdmcError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not block waiting for a writer
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _read_open(descriptor: int, label: str, limit: int, what: str) -> bytes:
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        raise AdmcError(f"{label}: {what} is {_kind(info.st_mode)}, expected a regular file")
    if info.st_size > limit:
        raise AdmcError(f"{label}: {what} has {info.st_size} bytes, more than the limit of {limit}")
    chunks, total = [], 0
    while True:
        chunk = os.read(descriptor, min(1 << 24, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise AdmcError(f"{label}: {what} grew past the limit of {limit} bytes while being read")
    return b"".join(chunks)


def check_regular(path: str | Path, what: str = "file") -> None:
    """Refuse a path that exists but is not a regular file (checked without opening it)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AdmcError(f"{path}: {what} not found") from None
    except OSError as error:
        raise AdmcError(f"{path}: cannot read {what}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise AdmcError(f"{path}: {what} is {_kind(info.st_mode)}, expected a regular file")


def read_file(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (symlinks the user named are followed)."""
    label = str(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise AdmcError(f"{label}: {what} not found") from None
    except IsADirectoryError:
        raise AdmcError(f"{label}: {what} is a directory, expected a regular file") from None
    except OSError as error:
        raise AdmcError(f"{label}: cannot read {what}: {error.strerror}") from None
    try:
        return _read_open(descriptor, label, limit, what)
    except OSError as error:
        raise AdmcError(f"{label}: cannot read {what}: {error.strerror}") from None
    finally:
        os.close(descriptor)


def decode_text(content: bytes, label: str, what: str = "file") -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AdmcError(f"{label}: {what} is not UTF-8 text (byte {error.start}: {error.reason})") from None


def read_text(path: str | Path, limit: int, what: str = "file") -> str:
    return decode_text(read_file(path, limit, what), str(path), what)


def check_member_name(name: object, label: str) -> str:
    """``name`` if it is a safe relative path inside a bundle, else AdmcError."""
    if not isinstance(name, str) or not name:
        raise AdmcError(f"{label}: payload name {name!r} is not a non-empty string")
    if any(not character.isprintable() for character in name) or "\\" in name:
        raise AdmcError(f"{label}: payload name {name!r} holds control characters or backslashes")
    if name.startswith("/"):
        raise AdmcError(f"{label}: payload name {name!r} is an absolute path; payloads must be inside the bundle")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise AdmcError(f"{label}: payload name {name!r} is not a normalised relative path inside the bundle")
    if len(name) > 1024 or len(parts) > 16:
        raise AdmcError(f"{label}: payload name {name[:40]!r}… is longer or deeper than a bundle allows")
    return name


def open_directory(path: str | Path, what: str = "bundle") -> int:
    """A descriptor of the directory ``path`` (the user's own path may be a symlink)."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except FileNotFoundError:
        raise AdmcError(f"{path}: no such {what} directory") from None
    except NotADirectoryError:
        raise AdmcError(f"{path}: not an admc {what} (not a directory)") from None
    except OSError as error:
        raise AdmcError(f"{path}: cannot open {what}: {error.strerror}") from None


def read_member(root: int, name: str, label: str, limit: int, what: str = "payload") -> bytes:
    """Read ``name`` (already checked by :func:`check_member_name`) below the directory ``root``.

    ``label`` is how the file is named in errors (the bundle path joined with the name).
    """
    parts = name.split("/")
    opened: list[int] = []
    directory = root
    try:
        for part in parts[:-1]:
            try:
                directory = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=directory)
            except FileNotFoundError:
                raise AdmcError(f"{label}: {what} listed in the manifest is missing") from None
            except OSError as error:
                raise AdmcError(f"{label}: {what} path goes through a symbolic link or a non-directory "
                                f"({error.strerror})") from None
            opened.append(directory)
        try:
            descriptor = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=directory)
        except FileNotFoundError:
            raise AdmcError(f"{label}: {what} listed in the manifest is missing") from None
        except OSError as error:
            try:
                info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
                reason = _kind(info.st_mode)
            except OSError:
                reason = error.strerror
            raise AdmcError(f"{label}: {what} is {reason}; bundles hold regular files only") from None
        try:
            return _read_open(descriptor, label, limit, what)
        finally:
            os.close(descriptor)
    finally:
        for descriptor in opened:
            os.close(descriptor)
