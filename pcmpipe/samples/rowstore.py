"""A looked-up modality of a streamed split: its key index and its feature rows, in memory or in a spill file.

A streamed split reads its base modality shard by shard; every other modality (images, classes, a second base
modality such as S next to T) is looked up by key. Its rows are held in the cache's dtype (fp16 stays fp16) while
the memory budget lasts; above it they are written once to a raw file and read back with `pread`, so the page
cache holds them, not the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from pcmpipe.samples.caches import cache_info, open_modality
from pcmpipe.samples.table import KeyIndex, hash_keys, key_column


def memory_dtype(stored: str):
    """fp16 caches stay fp16 in memory (cast per batch); anything else is held as float32."""
    return np.float16 if stored == "float16" else np.float32


class RowStore:
    """One looked-up modality: a key index plus its feature rows (cache order), in memory or in a spill file."""

    def __init__(
        self, cache_root, dataset: str, modality: str, split: str, resident: bool, spill_dir=None, feature=None
    ):
        reader, name, path = open_modality(cache_root, dataset, modality, split)
        name = feature or name  # another feature than the training one: the augmented views
        self.info = cache_info(reader, name, path, modality)
        self.key = reader.key
        key_col = self.key if self.key in reader.columns else "id"
        self.dtype = np.dtype(memory_dtype(reader.dtypes[name]))
        self.row_bytes = int(np.prod(self.info.shape)) * self.dtype.itemsize
        shaped = self.info.shape  # HDF5 shards are read into arrays of the feature's own shape
        self._mem: np.ndarray | None = np.empty((self.info.rows, *shaped), self.dtype) if resident else None
        self._fd: int | None = None
        spill = None
        if not resident:
            tmp = Path(tempfile.mkdtemp(prefix=f"pcmpipe-{modality}-", dir=spill_dir))
            weakref.finalize(self, shutil.rmtree, tmp, True)  # the spill goes with the store
            spill = open(tmp / "rows.bin", "wb")  # noqa: SIM115 -- closed after the last shard
        hashes: list[np.ndarray] = []
        buf = np.empty((1024, *shaped), self.dtype)
        for shard in reader.iter_shards():
            hashes.append(hash_keys(key_column(shard.columns([key_col]), key_col)))
            at = shard.offset
            for k in shard.iter_feature_into(name, buf):
                if self._mem is not None:
                    self._mem[at : at + k] = buf[:k]
                else:
                    assert spill is not None
                    spill.write(buf[:k].tobytes())
                at += k
        if spill is not None:
            spill.close()
            self._fd = os.open(spill.name, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        self.index = KeyIndex.build(hashes, str(path))

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """Feature rows [B] -> float32 [B, *shape] (the cast happens here, per batch)."""
        if self._mem is not None:
            out = self._mem[rows]
        else:
            assert self._fd is not None, "a spilled store has its file open"
            uniq, inv = np.unique(rows, return_inverse=True)
            blob = b"".join(os.pread(self._fd, self.row_bytes, int(r) * self.row_bytes) for r in uniq)
            out = np.frombuffer(blob, self.dtype).reshape(len(uniq), -1)[inv]
        return torch.from_numpy(out.astype(np.float32, copy=False).reshape(len(rows), *self.info.shape))
