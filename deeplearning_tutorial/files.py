"""What any code that writes files needs: atomic writes, temporary files beside a target, run locks.

A file is written to a temporary file beside it, then renamed over it, so an
interrupted write leaves the old file as it was.  While a training run goes,
each file it writes has a ``<name>.lock`` beside it holding the run's process
id, so that a second run in the same folder stops at once instead of
overwriting the first one's files.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class RunFileError(ValueError):
    """A checkpoint or model file that cannot be used, or that a new run would clobber."""


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def create_temporary_beside(path: Path) -> tuple[int, str]:
    """A new, empty file beside ``path`` with a unique name, open for writing (and reading back): ``(fd, name)``.

    Its mode is what ``open()`` would give (0666 less the umask, applied by the
    kernel: the process's umask is not touched)."""
    while True:
        name = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    An exception (or Ctrl-C) inside the block removes the temporary file and
    leaves any previous ``path`` untouched.

    Raises
    ------
    OSError
        When the file cannot be written (a full disk, no permission): the
        error of the write, naming ``path`` itself rather than the temporary
        file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = create_temporary_beside(path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


class RunLock:
    """``<file>.lock`` beside each file of a running run, holding the process id.

    A lock left by a process that no longer exists (killed, crashed) or by
    this very process (an earlier call that raised) is taken over.  A lock
    appears with its pid already in it, so an empty one is a crash's too.
    ``elsewhere`` ends the message when another run holds a lock: how to run
    beside it (by default, with a program's options).
    """

    def __init__(self, paths: Sequence[Path],
                 elsewhere: str = "give this run other file names (--checkpoint-file, --best-model-file) "
                                  "or another folder") -> None:
        self.locks = [path.with_name(path.name + ".lock") for path in paths]
        self.elsewhere = elsewhere
        self.held: list[Path] = []

    def acquire(self) -> None:
        """Take every lock, or none: on an error the ones already taken are released.

        The locks are also released when the process exits.

        Raises
        ------
        RunFileError
            When a live process other than this one holds a lock, or a lock
            file cannot be created (no permission to write in the folder, or
            another OS error).
        """
        try:
            for lock in self.locks:
                self._take(lock)
                self.held.append(lock)
        except BaseException:
            self.release()
            raise
        atexit.register(self.release)  # also when the run fails before training ends

    def _take(self, lock: Path) -> None:
        target = lock.with_name(lock.name[: -len(".lock")])
        while True:
            try:
                _create_lock(lock)
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is not None and owner != os.getpid() and _process_exists(owner):
                    raise RunFileError(
                        f"another run (process {owner}) is writing {target}; wait for it to end, or "
                        f"{self.elsewhere}. If no such run exists, delete {lock}."
                    ) from None
                if _take_over(lock):  # stale: its process is gone (or it crashed before writing)
                    return
                continue  # another process took it over, or it went away: look again
            except PermissionError:
                raise RunFileError(
                    f"cannot write in {lock.parent.resolve()} (permission denied), so the run could not "
                    f"save {target.name} there; run it in a folder you can write to, or give other "
                    f"file names (--checkpoint-file, --best-model-file)") from None
            except OSError as exc:
                raise RunFileError(f"cannot create {lock}: {exc.strerror or exc}") from None
            return

    def release(self) -> None:
        """Remove the lock files this process holds; those another process took over stay."""
        for lock in self.held:
            if _lock_owner(lock) == os.getpid():
                lock.unlink(missing_ok=True)
        self.held = []
        atexit.unregister(self.release)


def _create_lock(lock: Path) -> None:
    """Create ``lock`` holding this process's id, or raise FileExistsError if it exists.

    The id is written to a temporary file first, which is then hard-linked to
    ``lock`` (a link, like ``O_EXCL``, fails where the name exists), so that
    no other run ever finds the lock empty and takes it for a stale one.  On
    a filesystem without hard links the lock is created with ``O_EXCL`` and
    the id written into it.
    """
    pid = str(os.getpid())
    fd, name = create_temporary_beside(lock)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(pid)
        try:
            os.link(temporary, lock)
            return
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares)
            pass
    finally:
        temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as handle:
        handle.write(pid)


def _take_over(lock: Path) -> bool:
    """Write this process's id into the stale ``lock``; False if another process got there first.

    Several runs may find the same stale lock at once.  Each one that still
    finds it stale under an exclusive ``flock`` of the file, which one process
    holds at a time, and finds the file still at the lock's name, writes its
    id; a later one then reads that live id and is refused.
    """
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            owner = int(os.pread(fd, 64, 0).decode().strip())
        except (OSError, ValueError):
            owner = None
        if owner is not None and owner != os.getpid() and _process_exists(owner):
            return False
        try:
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:  # removed, or replaced by a new lock
                return False
        except FileNotFoundError:
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return True
    finally:
        os.close(fd)  # releases the flock


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
