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
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
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
    if wait < 0:
        raise UserError(f"lock wait must be >= 0 seconds, got {wait}")
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
        who = holder(path)
        who = f"{who}, " if who else ""
        raise UserError(f"{what} is in use by another job ({who}lock {lock_path}); {hint}") from None
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
    deadline = None if timeout < 0 else time.monotonic() + timeout
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
