"""Writing files and directories so that a reader never sees half of one and a failure leaves nothing behind.

Requires: a target path whose parent directory exists or may be created.
Guarantees: everything is written into a temporary sibling of the target (same directory, hence same file
system, named ``.<target name>.…``) and renamed onto the target in one ``os.replace``, so the target holds either
what it held before or all of the new content; on any failure (an exception, KeyboardInterrupt included) the
temporary is removed and the target is untouched.
- :func:`staged_file` yields the temporary file's path for writers that need a path; :func:`write_file_atomically`
  writes given bytes through it.
- :func:`staged_directory` yields a fresh temporary directory to fill. An existing target directory is replaced
  (moved aside, the new one renamed in, the old one removed); with ``keep_existing`` a target that another
  writer installed first is kept and the staged copy discarded (for content-addressed caches, where both copies
  are the same).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` when the block ends without an error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_file_atomically(path: str | Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary sibling (see the module docstring); returns the path."""
    with staged_file(path) as temporary:
        temporary.write_bytes(content)
    return Path(path)


@contextmanager
def staged_directory(path: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """A fresh temporary sibling directory of ``path`` to fill; it becomes ``path`` when the block ends without
    an error. An existing ``path`` is replaced, or, with ``keep_existing``, kept if it is there by then."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if keep_existing:
            _install_unless_present(staging, target)
        elif target.exists():
            _swap_in(staging, target)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_unless_present(staging: Path, target: Path) -> None:
    try:
        os.replace(staging, target)
    except OSError:
        if not target.exists():  # anything but "another writer installed it first"
            raise


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the directory ``target`` by ``staging``: a directory cannot be renamed onto a non-empty one, so the
    old one is first moved into a retired sibling, removed once the new one is in place (put back if it is not)."""
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old = retired / target.name
    try:
        os.replace(target, old)
    except BaseException:
        retired.rmdir()
        raise
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)  # the old directory back in place
        retired.rmdir()
        raise
    shutil.rmtree(retired, ignore_errors=True)
