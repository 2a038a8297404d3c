"""One exclusive lock per thing two jobs must not write at once (a cache split, a run directory).

`exclusive(path, what, wait)` holds an OS file lock (`filelock`, `flock(2)` on Unix) on the hidden sibling
`.<name>.lock` of `path`. The lock file sits beside the locked path, not inside it, so it can be taken before
the directory exists, survives the directory being renamed into place, and never shows up among a cache
split's files (dataset readers see the split directory only). The kernel drops an `flock` when its holder dies,
SIGKILL included, so a lock left by a dead process is reclaimed by the next job with nothing to clean up; the
lock file itself stays (deleting it would let a waiter and a newcomer lock two different inodes).

While held, `.<name>.lock.owner` (written atomically) records the holder's pid and host, so a job that gives up
can say who holds the lock. It is advice for the message only: the OS lock decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
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
        who = holder(path)
        raise UserError(
            f"{what} is in use by another job ({who + ', ' if who else ''}lock {lock_path}); "
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
