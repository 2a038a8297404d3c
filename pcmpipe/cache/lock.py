"""One exclusive lock per thing two jobs must not write at once (a cache split, a run directory).

`exclusive(path, what, wait)` holds an OS file lock (`filelock`, `flock(2)` on Unix) on the hidden sibling
`.<name>.lock` of `path`. The lock file sits beside the locked path, not inside it, so it can be taken before
the directory exists, survives the directory being renamed into place, and never shows up among a cache
split's files (dataset readers see the split directory only). The kernel drops an `flock` when its holder dies,
SIGKILL included, so a lock left by a dead process is reclaimed by the next job with nothing to clean up.

A job that ends (cleanly or with an error, not killed) deletes its lock file, so none is left beside the
outputs. Deleting a lock file alone would break mutual exclusion: a waiter that opened the file just before it
was deleted would then lock the deleted inode while a newcomer creates and locks a new file at the same path.
So the lock counts as held only when the inode locked is the one the path names (checked after every acquire:
otherwise the acquire is retried on the new file), and the holder deletes the file while still holding it. A
deleted inode can then never be held by anyone who counts it as the lock (docs/reliability.md, "Lock files").

While held, `.<name>.lock.owner` (written atomically) records the holder's pid and host, so a job that gives up
can say who holds the lock. It is advice for the message only: the OS lock decides.

`shared(path, what, wait)` holds the same lock file shared (`flock(LOCK_SH)`): any number of readers at once and
no writer. A training holds it on every cache split it reads for its whole run, so an `import-features
--overwrite` or an `extract --overwrite` of such a split waits for the training to end (or refuses after its
`--lock-timeout`) instead of changing the data under it; and a training refuses a split a writer holds. Where no
lock file can be made (a read-only cache), a reader goes on without one. A process must not ask for `exclusive`
on a path it holds `shared`: the two descriptors are separate flock holders, so it would wait for itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import filelock

from pcmpipe import atomic
from pcmpipe.errors import UserError


def lock_file(path: str | Path) -> Path:
    """The lock file guarding `path`: `.<name>.lock` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _owner_file(path: Path) -> Path:
    return lock_file(path).with_name(lock_file(path).name + ".owner")


def holder(path: str | Path) -> str:
    """'pid N on HOST' of the job that holds (or last held) the lock on `path`, or '' when unknown."""
    try:
        rec = json.loads(_owner_file(Path(path)).read_text(encoding="utf-8"))
        return f"pid {int(rec['pid'])} on {rec['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _timeout(wait: bool | float) -> float:
    """filelock's timeout: -1 blocks, 0 tries once, t > 0 waits up to t seconds."""
    if wait is True:
        return -1
    if wait is False:
        return 0
    if not isinstance(wait, int | float) or not math.isfinite(wait) or wait < 0:
        raise UserError(f"lock wait must be a finite number of seconds >= 0, got {wait!r}")
    return float(wait)


WAIT_HINT = "wait for it to finish and rerun, or run without a lock timeout to wait"


@contextlib.contextmanager
def exclusive(path: Path, what: str, wait: bool | float = True, hint: str = WAIT_HINT) -> Iterator[Path]:
    """Hold the exclusive lock on `path` (a file or directory, which need not exist yet) for the `with` body.

    `what` names the locked thing for the message ("cache flickr8k/I/train"). `wait`: True blocks until the
    holder finishes, False refuses at once, a number waits that many seconds. Refusing raises `UserError`
    naming `what`, the lock file and the holder, then `hint` (what to do). Yields the lock file's path. Not
    re-entrant across calls: a second `exclusive` on the same path in the same process waits like any other
    job. The lock file is deleted when the body ends (module docstring).
    """
    path = Path(path)
    lock_path = lock_file(path)
    # an OSError here (a file where a folder belongs, a read-only disk) reaches the CLI guard, which names
    # the path and what to do in the same words for every command
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock, held = _acquire(lock_path, _timeout(wait))
    except filelock.Timeout:
        # no owner record: a training's shared hold (it records none), or a writer that has just taken the lock
        who = holder(path) or "no writer recorded: a training may be reading it"
        raise UserError(f"{what} is in use by another job ({who}, lock {lock_path}); {hint}") from None
    except OSError as e:
        raise UserError(f"cannot lock {lock_path} for {what}: {e.strerror or e}") from None
    try:
        owner = _owner_file(path)
        with contextlib.suppress(OSError):
            atomic.write_json(owner, {"pid": os.getpid(), "host": socket.gethostname()})
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            owner.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # still held: nobody can be counting this inode as the lock
            if os.path.samestat(os.stat(lock_path), held):
                lock_path.unlink()
        lock.release()


# Retries of an acquire that locked a file deleted meanwhile: each means another job finished in between, so a
# bound is only a guard against a path that is deleted and created again without end by something else.
_STALE_RETRIES = 1000


def _recorder(into: list[os.stat_result]) -> Callable[[int], None]:
    """filelock's on_acquired: the stat of the inode it has just locked, from the locked descriptor."""
    return lambda fd: into.append(os.fstat(fd))


def _acquire(lock_path: Path, timeout: float) -> tuple[filelock.BaseFileLock, os.stat_result]:
    """Lock `lock_path` -> (the lock, the stat of the inode held). The inode locked must still be the one the
    path names; one deleted by its last holder between our open and our flock is released and the acquire
    retried. filelock.Timeout when `timeout` runs out (-1: never)."""
    deadline = _deadline(timeout)
    for _ in range(_STALE_RETRIES):
        locked: list[os.stat_result] = []
        lock = filelock.FileLock(str(lock_path), thread_local=False, on_acquired=_recorder(locked))
        left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        lock.acquire(timeout=left)
        try:
            if locked and os.path.samestat(os.stat(lock_path), locked[0]):
                return lock, locked[0]
        except FileNotFoundError:
            pass
        lock.release()
    raise filelock.Timeout(str(lock_path))


@contextlib.contextmanager
def shared(path: Path, what: str, wait: bool | float = False) -> Iterator[Path | None]:
    """Hold the lock on `path` shared for the `with` body: other readers may hold it too, no `exclusive` holder.

    `what` names the locked thing for the message; `wait` as for `exclusive`. A writer holding it is waited
    for or refused (`UserError` naming the holder). Yields the lock file, or None where there is none to take
    (the folder holding `path` is missing, or it is read-only and holds no lock file yet). Never creates folders.
    Like `exclusive`, a lock on an inode that a finished writer deleted meanwhile does not count: the acquire is
    retried on the file the path names now.
    """
    lock_path = lock_file(Path(path))
    deadline = _deadline(_timeout(wait))
    for _ in range(_STALE_RETRIES):
        fd = _open_shared(lock_path)
        if fd is None:
            yield None
            return
        try:
            if not _acquire_shared(fd, lock_path, Path(path), what, deadline):
                yield None
                return
            if _names(lock_path, fd):
                yield lock_path
                return
        finally:
            os.close(fd)  # closing the descriptor drops its flock
    raise UserError(f"cannot lock {lock_path} for {what}: it keeps being replaced; is another tool deleting it?")


def _deadline(timeout: float) -> float | None:
    return None if timeout < 0 else time.monotonic() + timeout


def _names(lock_path: Path, fd: int) -> bool:
    """The locked descriptor's inode is the one `lock_path` names now (not deleted by a finished holder)."""
    try:
        return os.path.samestat(os.stat(lock_path), os.fstat(fd))
    except FileNotFoundError:
        return False


def _open_shared(lock_path: Path) -> int | None:
    if not lock_path.parent.is_dir():
        return None
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # a read-only folder: an existing lock file still locks
        try:
            return os.open(lock_path, flags | nofollow, 0o644)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise UserError(f"cannot lock {lock_path}: {e.strerror or e}") from None
    return None


def _acquire_shared(fd: int, lock_path: Path, path: Path, what: str, deadline: float | None) -> bool:
    """flock(LOCK_SH) on `fd` until `deadline` -> True when held, False where this filesystem has no flock
    (writers then fall back to filelock's soft lock, which a reader cannot share, so it reads as before)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return False
            raise UserError(f"cannot lock {lock_path} for {what}: {e.strerror or e}") from None
        if deadline is not None and time.monotonic() >= deadline:
            who = holder(path)
            raise UserError(
                f"{what} is being written by another job ({who + ', ' if who else ''}lock {lock_path}); "
                "wait for it to finish and rerun"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def reading(cache_root: str | Path, dataset: str, modalities: Iterable[str], splits: Iterable[str]) -> Iterator[None]:
    """Hold every (modality, split) cache of `dataset` that a job reads `shared` for the `with` body, refusing
    at once where a writer holds one (a training that waited could hold its run lock for hours)."""
    from pcmpipe.cache.layout import cache_dir

    with contextlib.ExitStack() as held:
        for split in dict.fromkeys(splits):
            for m in dict.fromkeys(modalities):
                where = cache_dir(cache_root, dataset, m, split)
                held.enter_context(shared(where, f"cache {dataset}/{m}/{split}", wait=False))
        yield
