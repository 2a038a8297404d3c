"""The one durable write: temp file in the same directory, write, flush + fsync, rename, fsync of the directory.

Every file pcmpipe means to keep (shards, manifests, run files, checkpoints, download records) goes through
here, so a kill or a power cut leaves either the old file or the new one, never a torn one, and the rename
itself survives a crash (the directory entry is fsynced too). The temp name `.<name>.tmp` is hidden from
dataset readers and lies on the same filesystem, which is what makes the rename atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_path(path: str | Path) -> Path:
    """`.<name>.tmp` beside `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path (a directory: makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | Path, dest: str | Path) -> None:
    """Rename `src` over `dest` and make the rename durable (fsync of the destination's directory)."""
    os.replace(src, dest)
    fsync_path(Path(dest).parent)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path for a writer that wants a file name (safetensors, parquet, HDF5); on a clean exit the
    file is fsynced and renamed over `path`, on an exception it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename is not None:
            raise
        # a writer that fills the disk seldom names its file (pyarrow, a plain f.write): name the one meant
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """`obj` as JSON plus a final newline."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def write_lines(path: str | Path, records: list[Any], sort_keys: bool = False) -> None:
    """JSON Lines: one compact object per line."""
    write_text(path, "".join(json.dumps(r, sort_keys=sort_keys) + "\n" for r in records))
