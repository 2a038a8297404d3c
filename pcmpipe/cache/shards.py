"""A finished cache's shards one at a time, for readers that stream a cache instead of loading it.

`CacheReader.iter_shards()` yields a `CacheShard` per shard of the manifest, in cache order: where its rows sit
in the cache and how to read its columns and features. The file's encoding stays in `shard.py`; the manifest's
shard list stays here and in `reader.py`, so code outside `pcmpipe.cache` never names a shard file (the training
split streamed shard by shard, pcmpipe.samples.stream, reads through this).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcmpipe.cache.shard import iter_feature_into, read_columns, read_feature_into
from pcmpipe.errors import UserError


@dataclass(frozen=True)
class CacheShard:
    """One shard of an opened cache (its manifest entry, checked by `open_cache`)."""

    directory: Path  # the cache directory
    file: str  # the shard's file name, as the manifest lists it
    fmt: str  # parquet | hdf5
    rows: int
    offset: int  # the cache row of its first row (the rows of the shards before it)
    sha256: str | None

    @property
    def path(self) -> Path:
        return self.directory / self.file

    def columns(self, names: list[str]) -> dict[str, np.ndarray]:
        """String columns `names` -> str arrays [rows]."""
        with named_in_manifest(self.path, self.directory):
            return read_columns(self.path, self.fmt, names)

    def read_feature_into(self, name: str, out: np.ndarray) -> int:
        """Every row of feature `name` into `out` [rows, *shape] (values cast to its dtype); the rows read."""
        with named_in_manifest(self.path, self.directory):
            return read_feature_into(self.path, self.fmt, name, out)

    def iter_feature_into(self, name: str, buf: np.ndarray) -> Generator[int, None, None]:
        """Feature `name` decoded into the reused `buf` [R, *shape], R rows at a time; yields each count (the rows
        are buf[:k] until the next step)."""
        with named_in_manifest(self.path, self.directory):
            yield from iter_feature_into(self.path, self.fmt, name, buf)


def shards_of(directory: Path, manifest: dict) -> Iterator[CacheShard]:
    """The manifest's shards in cache order."""
    offset = 0
    for shard in manifest["shards"]:
        rows = int(shard["rows"])
        yield CacheShard(directory, shard["file"], manifest["format"], rows, offset, shard.get("sha256"))
        offset += rows


@contextlib.contextmanager
def named_in_manifest(file: Path, directory: Path) -> Iterator[None]:
    """A column or feature the manifest names but the shard lacks (pyarrow and h5py raise KeyError): the manifest
    was edited or damaged after its shards were checked against it."""
    try:
        yield
    except KeyError as e:
        detail = str(e.args[0] if e.args else e)[:120]
        raise UserError(
            f"shard {file.name} of cache {directory} does not hold what its manifest names ({detail}); the manifest "
            "is damaged: delete the cache directory and rerun the extraction"
        ) from None
