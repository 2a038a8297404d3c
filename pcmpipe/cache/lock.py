"""One exclusive lock per thing two jobs must not write at once (a cache split, a run directory).

`exclusive(path, what, wait)` holds an OS file lock (`filelock`, `flock(2)` on Unix) on the hidden sibling
`.<name>.lock` of `path`. The lock file sits beside the locked path, not inside it, so it can be taken before
the directory exists, survives the directory being renamed into place, and never shows up among a cache
split's files (dataset readers see the split directory only). The kernel drops an `flock` when its holder dies,
SIGKILL included, so a lock left by a dead process is reclaimed by the next job with nothing to clean up; the
lock file itself stays (deleting it would let a waiter and a newcomer lock two different inodes).

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
from collections.abc import Iterable, Iterator
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


@contextlib.contextmanager
def exclusive(path: Path, what: str, wait: bool | float = True) -> Iterator[Path]:
    """Hold the exclusive lock on `path` (a file or directory, which need not exist yet) for the `with` body.

    `what` names the locked thing for the message ("cache flickr8k/I/train"). `wait`: True blocks until the
    holder finishes, False refuses at once, a number waits that many seconds. Refusing raises `UserError`
    naming `what`, the lock file and the holder. Yields the lock file's path. Not re-entrant across calls:
    a second `exclusive` on the same path in the same process waits like any other job.
    """
    path = Path(path)
    lock_path = lock_file(path)
    # an OSError here (a file where a folder belongs, a read-only disk) reaches the CLI guard, which names
    # the path and what to do in the same words for every command
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path), thread_local=False)
    try:
        lock.acquire(timeout=_timeout(wait))
    except filelock.Timeout:
        who = holder(path) or "no writer recorded: a training may be reading it"
        raise UserError(
            f"{what} is in use by another job ({who}, lock {lock_path}); "
            "wait for it to finish and rerun, or run without a lock timeout to wait"
        ) from None
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
        lock.release()


@contextlib.contextmanager
def shared(path: Path, what: str, wait: bool | float = False) -> Iterator[Path | None]:
    """Hold the lock on `path` shared for the `with` body: other readers may hold it too, no `exclusive` holder.

    `what` names the locked thing for the message; `wait` as for `exclusive`. A writer holding it is waited
    for or refused (`UserError` naming the holder). Yields the lock file, or None where there is none to take
    (the folder holding `path` is missing, or it is read-only and holds no lock file yet). Never creates folders.
    """
    lock_path = lock_file(Path(path))
    fd = _open_shared(lock_path)
    if fd is None:
        yield None
        return
    try:
        _acquire_shared(fd, lock_path, Path(path), what, _timeout(wait))
        yield lock_path
    finally:
        os.close(fd)  # closing the descriptor drops its flock


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


def _acquire_shared(fd: int, lock_path: Path, path: Path, what: str, timeout: float) -> None:
    deadline = None if timeout < 0 else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # no flock here: writers fall back to
                return  # filelock's soft lock, which a reader cannot share, so it reads as before
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
