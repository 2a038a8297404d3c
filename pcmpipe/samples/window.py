"""The pieces a streamed split reads at a time: a `Unit` (one shard of a base modality) and a `Window` (the rows
of consecutive units, in memory until their batches are taken)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcmpipe.cache.shards import CacheShard
from pcmpipe.samples.table import Block, Join


@dataclass
class Unit:
    """One shard of a base modality, as a stream reads it."""

    modality: str
    shard: CacheShard
    rows: int  # the samples it contributes (its rows whose key no earlier base modality has)
    start: int = 0  # its first sample's place in the sample table (views are drawn by that place)


@dataclass
class Window:
    """The samples of consecutive units, in memory: base modalities' own features and every modality's rows."""

    size: int
    own: dict[str, tuple[np.ndarray, np.ndarray]]  # base m -> (slot [size], -1 where not m's own row; features)
    rows: dict[str, np.ndarray]  # m -> each sample's row in m's cache [size] (0 where absent: the placeholder)
    present: dict[str, np.ndarray]  # m -> bool [size]
    samples: np.ndarray  # int64 [size]: each position's place in the sample table


@dataclass
class WindowReader:
    """How a streamed split reads its windows: the join, the columns it reads of each base modality, and each
    modality's training feature (name, one row's shape, dtype in memory)."""

    join: Join
    columns: dict[str, list[str]]
    names: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]

    def block(self, unit: Unit) -> Block:
        """The join's block of a unit: which of its rows are samples, and every modality's row for each."""
        columns = unit.shard.columns(self.columns[unit.modality])
        return self.join.block(unit.modality, columns, unit.shard.offset)

    def load(self, group: list[Unit]) -> Window:
        """Read a window's units: the features of their own modality, the join's rows of every modality."""
        size = sum(u.rows for u in group)
        base = self.join.base
        slots = {m: np.full(size, -1, np.int64) for m in base}
        # One block per base modality, filled shard by shard in place: the window is held once, not copied.
        feats = {
            m: np.empty((sum(u.rows for u in group if u.modality == m), *self.shapes[m]), self.dtypes[m]) for m in base
        }
        filled = dict.fromkeys(base, 0)
        rows = {m: np.zeros(size, np.int64) for m in self.join.keys}
        present = {m: np.zeros(size, bool) for m in self.join.keys}
        samples = np.zeros(size, np.int64)
        at = 0
        for u in group:
            blk = self.block(u)
            k, held, name = len(blk.kept), filled[u.modality], self.names[u.modality]
            if k == u.shard.rows:
                u.shard.read_feature_into(name, feats[u.modality][held : held + k])
            else:  # rows another base modality has: read the shard, keep the others
                block = np.empty((u.shard.rows, *self.shapes[u.modality]), self.dtypes[u.modality])
                u.shard.read_feature_into(name, block)
                feats[u.modality][held : held + k] = block[blk.kept]
            slots[u.modality][at : at + k] = np.arange(held, held + k)
            filled[u.modality] += k
            for m in self.join.keys:
                rows[m][at : at + k] = blk.rows[m]
                present[m][at : at + k] = blk.present[m]
            samples[at : at + k] = u.start + np.arange(k)
            at += k
        own = {m: (slots[m], f) for m, f in feats.items() if len(f)}
        return Window(size, own, rows, present, samples)

    def first_row(self, unit: Unit) -> np.ndarray:
        """Row 0 of a base modality's cache, flat: the placeholder the in-memory join gives an absent modality."""
        buf = np.empty((1, *self.shapes[unit.modality]), self.dtypes[unit.modality])
        rows = unit.shard.iter_feature_into(self.names[unit.modality], buf)
        next(rows)
        rows.close()  # the rest of the shard is not decoded
        return buf[0].reshape(-1).copy()


def take(pending: list[tuple[Window, np.ndarray]], n: int):
    """The next `n` samples of the pending windows (each with its positions still to give) -> (parts, pending
    left)."""
    parts = []
    while n:
        win, perm = pending[0]
        k = min(n, len(perm))
        parts.append((win, perm[:k]))
        n -= k
        pending = pending[1:] if k == len(perm) else [(win, perm[k:]), *pending[1:]]
    return parts, pending
