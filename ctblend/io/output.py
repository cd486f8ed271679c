"""Output files: a write check before the work, one writer per output, and atomic writes with
the usual permissions."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctblend.io.volume import DataError


def default_mode(folder: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` gives under the current umask (0644 / 0755 for 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def check_writable(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now, with one line naming ``what`` and ``folder``, when files cannot be created in
    ``folder`` (made later if missing): its nearest existing ancestor must be a folder that takes
    a new file (read-only mounts and missing permissions fail here, before any work)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{what} {folder}: {existing} is a file; expected a folder to write into")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(
            f"{what} {folder}: cannot create files in {existing} ({reason}); "
            "expected a writable folder"
        ) from None
    return folder


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _lock(lock: Path) -> int | None:
    """A descriptor holding the exclusive ``flock`` of the file ``lock`` (made if missing), or
    None when another process holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, default_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the holder before us may have removed the file after we opened it: retry
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def single_writer(path: str | os.PathLike, what: str = "--out") -> Iterator[None]:
    """Hold the output ``path`` (a file or folder) for this process during the block: a second
    process asking for it meanwhile gets one DataError line at once. The lock is the hidden file
    ``.<name>.lock`` beside ``path``; folders made for it are removed again when the block fails
    and leaves them empty."""
    path = Path(path)
    made = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    fd = _lock(lock)
    if fd is None:
        raise DataError(
            f"{what} {path}: another process is writing it now (it holds {lock}); expected one "
            "writer per output (wait for it to finish, or choose another output)"
        )
    failed = True
    try:
        yield
        failed = False
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        for folder in made if failed else ():
            with contextlib.suppress(OSError):  # not empty: something else is in it
                folder.rmdir()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or folder) beside ``path`` to write; when the block ends it gets the
    umask's usual mode and is renamed onto ``path`` (a folder replaces an old one, see
    :func:`replace_dir`), on an error it is removed. The one atomic writer of ctblend."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"dir": path.parent, "prefix": f".{path.name}.", "suffix": ".tmp"}
    if folder:
        tmp = Path(tempfile.mkdtemp(**options))
    else:
        fd, name = tempfile.mkstemp(**options)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(default_mode(folder))  # mkstemp/mkdtemp made it private
        if folder:
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_dir(src: Path, dst: Path) -> None:
    """Move the complete folder ``src`` to ``dst``; an old ``dst`` is removed only afterwards."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def removed_on_error(*paths: Path) -> Iterator[None]:
    """On any exception in the block, remove those of ``paths`` that did not exist before (the
    files of a command that writes several)."""
    existed = {p: p.exists() for p in paths}
    try:
        yield
    except BaseException:
        for path, was_there in existed.items():
            if not was_there:
                path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")
    return Path(path)
