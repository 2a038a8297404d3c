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

The three swaps this module replaced (in index, import-features and runs/outdir) left their old folder in two
more shapes, and `finish_dead_swaps` recovers those too, so a swap killed under the earlier code is finished:
- import-features set the old cache aside one level down, `.<split>.old-<pid>-<random>/cache`: that subfolder
  goes back as the split, or is removed, as the earlier code did (the index's aside was this module's shape).
- embed and export moved a replaced result to the fixed name `.<out>.old-tmp` (no pid: the lock on `<out>` was
  its only guard, as it is here). The earlier code removed it once its next run had swapped a new result in;
  here it is removed when a result stands at `<out>` and put back when none does, so nothing is lost before a
  new result is whole (it was a damaged or edited result, which the next embed or export rebuilds, as the
  killed job meant to).
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
    try:
        atomic.replace(new, target)
    except BaseException:  # a failed rename (not a kill) must not leave this live process without `target`
        os.replace(aside, target)
        raise
    shutil.rmtree(aside)


def finish_dead_swaps(target: Path) -> None:
    """Under `target`'s lock: an old folder that a job killed between its two renames set aside goes back in
    place when nothing took its place, and is removed otherwise; the earlier swaps' leftovers too (module
    docstring). Live jobs' folders are never touched."""
    for old in [*tempdirs.dead(target.parent, _aside_prefix(target)), *_earlier_outdir_aside(target)]:
        if old.is_symlink() or not old.is_dir():  # not a folder this code made: drop it, never what a link points to
            old.unlink()
            continue
        held = _earlier_importer_cache(old)
        if any(held.iterdir()) and not (target.exists() or target.is_symlink()):
            atomic.replace(held, target)
        if old.exists():  # the new folder did arrive, or the aside was the importer's wrapper or empty
            shutil.rmtree(old, ignore_errors=True)


def _earlier_outdir_aside(target: Path) -> list[Path]:
    """`.<target>.old-tmp`, where embed and export before pcmpipe.folderswap set a replaced result aside."""
    aside = target.with_name(f".{target.name}.old-tmp")
    return [aside] if aside.exists() or aside.is_symlink() else []


def _earlier_importer_cache(old: Path) -> Path:
    """The folder an aside holds: the aside itself, or its `cache` subfolder where import-features before
    pcmpipe.folderswap put the old cache (`.<split>.old-<pid>-<random>/cache`, nothing beside it). No aside of
    this module holds that alone: an index, embed or export folder holding only `cache/` is refused before any
    swap, and a cache split holds its manifest (only a split of other files, just `cache/`, replaced with
    --overwrite by a job killed mid-swap, would come back as that subfolder)."""
    inner = old / "cache"
    if os.listdir(old) == ["cache"] and inner.is_dir() and not inner.is_symlink():
        return inner
    return old
