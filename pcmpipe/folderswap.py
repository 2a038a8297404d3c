"""Replacing a folder by a complete one built beside it: readers find the old folder or the new one, never a mix.

A job builds its output (an index, an imported cache, embeddings, an export) whole in a hidden temp folder on the
same filesystem, then `swap_in(new, target)` puts it in place while the job holds `target`'s lock
(`pcmpipe.cache.lock.exclusive`; this module takes no lock itself, since every caller already holds it for its
reuse check):

- `target` absent or an empty folder: one durable rename.
- otherwise, where Linux can exchange two paths in one step (renameat2 RENAME_EXCHANGE), the two folders trade
  places, so `target` is never missing; the old folder, now under `new`'s temp name, is removed. A kill before
  that removal leaves it under the temp name, which its caller clears as it clears any dead job's temp folder.
- elsewhere, two renames: the old folder goes aside to `.<target>.old-<pid>-<random>` (pcmpipe.tempdirs), the new
  one comes in, the old one is removed. A job killed between the renames leaves no `target`;
  `finish_dead_swaps(target)`, which every caller runs under the lock before anything else, puts the old folder
  back, or removes it when the new one did arrive.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from pcmpipe import atomic, tempdirs

_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths in one step
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS or filesystem cannot,
    so the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:  # glibc before 2.28
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here
        return False
    raise OSError(err, os.strerror(err), str(b))


def _aside_prefix(target: Path) -> str:
    return f"{target.name}.old"


def swap_in(new: Path, target: Path) -> None:
    """Put the complete folder `new` at `target` and delete what was there (module docstring). The caller holds
    `target`'s lock and has run `finish_dead_swaps(target)` under it."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        atomic.replace(new, target)  # an empty folder is replaced by the rename itself
        return
    if exchange(new, target):
        atomic.fsync_path(target.parent)
        shutil.rmtree(new)
        return
    aside = tempdirs.make(target.parent, _aside_prefix(target))
    os.replace(target, aside)  # onto the empty folder just made: a rename, never a copy
    atomic.replace(new, target)
    shutil.rmtree(aside)


def finish_dead_swaps(target: Path) -> None:
    """Under `target`'s lock: an old folder that a job killed between its two renames set aside goes back in
    place when nothing took its place, and is removed otherwise. Live jobs' folders are never touched."""
    for old in tempdirs.dead(target.parent, _aside_prefix(target)):
        if old.is_symlink():  # not one this code made: drop the link, never what it points to
            old.unlink()
        elif target.exists() or target.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            atomic.replace(old, target)
