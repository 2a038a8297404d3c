"""Where `embed` and `export` write, and what they check before any work (importing nothing heavy, so the
CLI refuses a bad flag at once, not after the seconds torch takes to import).

The output is built in one hidden temp folder beside it and swapped in whole when finished.

A job locks its output (`cache.lock.exclusive` on `OUT`), builds the result in `.<OUT>.<tag>-tmp` beside it
on the same filesystem, and swaps that folder in at the end (`pcmpipe.folderswap`, which also finishes a swap a
killed job left half done). So `OUT` is either absent, the folder the user made, or a finished result: a kill or
a full disk never leaves half a result under its name, and the next run with the same arguments finds the temp
folder (resumes or redoes it) and needs no manual cleanup.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pcmpipe.errors import UserError
from pcmpipe.limits import check_int, check_workers
from pcmpipe.training.rundir.files import is_run_folder

DTYPES = ("float32", "float16")
# 4,096 images of 224 x 224 x 3 float32 are 2.4 GB of pixels before the backbone's activations
MAX_BATCH_SIZE = 4096
MAX_ROWS_PER_SHARD = 1 << 20  # a shard is buffered in memory before it is written: 2^20 x 1 KB is 1 GB


def check_embed_settings(*, dtype: str, batch_size: int = 64, workers: int = 0, rows_per_shard: int = 4096) -> None:
    """The sizing settings of an embedding job (one line naming the flag and its limit)."""
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    check_int("--batch-size", batch_size, low=1, high=MAX_BATCH_SIZE, why="inputs per forward pass")
    check_workers("--workers", workers)
    check_int("--rows-per-shard", rows_per_shard, low=1, high=MAX_ROWS_PER_SHARD, why="rows held before a write")


def temp_for(out: Path, tag: str) -> Path:
    """The working folder of a job writing `out`: `.<name>.<tag>-tmp` beside it."""
    return out.with_name(f".{out.name}.{tag}-tmp")


def remove(path: Path) -> None:
    """Delete a file, a folder, or a symbolic link itself (never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def check_out(out: Path, flag: str, what: str) -> None:
    """Refuse, in one line, an output that is a symbolic link, a file, under a file, or inside a run directory
    or an export (a finished run's folder is never written into). `out` itself may be absent or a folder: the
    caller decides what an existing folder may hold."""
    if out.is_symlink():
        raise UserError(f"{flag} {out} is a symbolic link; give a new folder for the {what}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file; give a new folder for the {what}")
    for parent in out.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{flag} {out}: {parent} is a file, not a folder; give a new folder for the {what}")
        if is_run_folder(parent):
            raise UserError(f"{flag} {out} is inside the run {parent}; write the {what} outside run directories")


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())
