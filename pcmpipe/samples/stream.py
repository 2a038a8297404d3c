"""Training samples streamed from the cache: a split larger than memory, read shard by shard.

`pcmpipe.samples.memory` holds a split's features in memory. `StreamedSplit` gives the same samples (the join of
`pcmpipe.samples.table`, the views of `pcmpipe.samples.views`) without doing so:

- The *base* modalities (the finest key, e.g. T) are read shard by shard (`CacheReader.iter_shards`). Shards are
  assigned to ranks once (rank r of W takes shards r, r + W, ...: each rank reads only its own) and, each epoch,
  a rank visits its shards in a seeded order and shuffles *windows* of consecutive shards (at least
  `buffer_rows` rows, at most that plus one shard) with a seeded permutation. Memory: one window.
- Every other modality (images, classes, and a second base modality such as S next to T) is looked up by the
  key its rows carry, through a `RowStore` (pcmpipe.samples.rowstore).

The order is a pure function of (seed, epoch, rank, shard row counts): `epoch_batches(..., start_step=s)` resumes
mid-epoch by skipping whole windows without reading them, and gives the batches an uninterrupted epoch gives.
With shuffling off the order is the sample table's, so streamed and in-memory training see the same batches
(tests/test_samples_stream.py), augmented views included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmpipe import distributed
from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.samples.caches import cache_info, open_modality
from pcmpipe.samples.modality import CacheInfo
from pcmpipe.samples.rowstore import RowStore, memory_dtype
from pcmpipe.samples.split import Batches
from pcmpipe.samples.table import Carrier, Join, KeyIndex, find_base, hash_keys, key_column
from pcmpipe.samples.views import draw_views, view_index, with_views
from pcmpipe.samples.window import Unit, Window, WindowReader, take

# Seeds of the per-epoch orders are drawn from (seed, epoch, rank[, window]) through numpy's SeedSequence, so
# no order depends on how many batches an earlier epoch drew.
_SALT = 0x5EED


class StreamedSplit:
    """A split's samples read from its caches window by window (see module docstring); a `TrainingSplit`."""

    def __init__(
        self,
        cache_root: str | Path,
        dataset: str,
        modalities: list[str],
        split: str,
        *,
        seed: int = 0,
        shuffle: bool = True,
        buffer_rows: int = 16384,
        resident_bytes: int = 0,
        spill_dir: str | Path | None = None,
        rank: int | None = None,
        world: int | None = None,
        views: bool = True,
    ):
        self.split, self.seed, self.shuffle, self.buffer_rows = split, seed, shuffle, max(1, buffer_rows)
        self.rank = distributed.get_rank() if rank is None else rank
        self.world = distributed.get_world_size() if world is None else world
        self.device: torch.device | str = "cpu"
        readers = {m: open_modality(cache_root, dataset, m, split) for m in modalities}
        self.modalities: dict[str, CacheInfo] = {m: cache_info(r, n, p, m) for m, (r, n, p) in readers.items()}
        carriers = {m: Carrier(r.key, {*r.columns, r.key}, int(r.num_rows), str(p)) for m, (r, _, p) in readers.items()}
        self.base = find_base(carriers)
        self.stores, self.view_stores = self._stores(cache_root, dataset, readers, resident_bytes, spill_dir, views)
        keys = {m: r.key for m, (r, _, _) in readers.items()}
        indexes = {m: s.index for m, s in self.stores.items()}
        if len(self.base) > 1:  # a later base modality's rows are samples where the first one lacks their key
            indexes[self.base[0]] = self._index_of(readers[self.base[0]][0], keys[self.base[0]])
        join = Join(self.base, keys, indexes)
        want = join.lookup_columns()
        self.source = WindowReader(
            join,
            {b: [c for c in readers[b][0].columns if c in want] for b in self.base},
            {m: d.feature for m, d in self.modalities.items()},
            {m: d.shape for m, d in self.modalities.items()},
            {m: np.dtype(memory_dtype(r.dtypes[n])) for m, (r, n, _) in readers.items()},
        )
        self.units, self._complete = self._units(readers)
        self._placeholder = self.source.first_row(next(u for u in self.units if u.modality == self.base[0]))
        self.mine = self.units[self.rank :: self.world]  # this rank's shards, the same every epoch
        self._draws: tuple[int, dict[str, np.ndarray]] | None = None  # (epoch, m -> each sample's view)

    def _stores(self, cache_root, dataset, readers, budget: int, spill_dir, views: bool):
        """(stores, view stores): every modality but the first base one, looked up by key, then the augmented
        views of each modality whose cache holds them (`extract --views K`, in cache row order; none without
        `views`); the first ones within the budget stay in memory, the others are spilled."""
        wanted = [(m, name) for m, (_, name, _) in readers.items() if m != self.base[0]]
        wanted += [(m, VIEWS_FEATURE) for m, (r, name, _) in readers.items() if views and _has_views(r, name)]
        stores: dict[str, RowStore] = {}
        view_stores: dict[str, RowStore] = {}
        for m, feature in wanted:
            r = readers[m][0]
            size = r.num_rows * int(np.prod(r.shapes[feature])) * np.dtype(memory_dtype(r.dtypes[feature])).itemsize
            resident = size <= budget
            budget -= size if resident else 0
            store = RowStore(cache_root, dataset, m, self.split, resident, spill_dir, feature)
            if feature == VIEWS_FEATURE:
                view_stores[m] = store
                self.modalities[m].view_count = int(r.shapes[VIEWS_FEATURE][0])
            else:
                stores[m] = store
        return stores, view_stores

    @staticmethod
    def _index_of(reader, key: str) -> KeyIndex:
        """The keys of the first base modality, hashed shard by shard (the keys themselves are never all held)."""
        col = key if key in reader.columns else "id"
        parts = [hash_keys(key_column(s.columns([col]), col)) for s in reader.iter_shards()]
        return KeyIndex.build(parts, str(reader.directory))

    def _units(self, readers) -> tuple[list[Unit], set[str]]:
        """One pass over the base shards' id columns (no features): the units, the samples each contributes, and
        which modalities every sample has (the losses then need no mask)."""
        units: list[Unit] = []
        found_all = dict.fromkeys(self.modalities, True)
        start = 0
        for b in self.base:
            for shard in readers[b][0].iter_shards():
                unit = Unit(b, shard, shard.rows, start)
                blk = self.source.block(unit)
                unit.rows = len(blk.kept)
                start += unit.rows
                for m, ok in blk.present.items():
                    found_all[m] = found_all[m] and bool(ok.all())
                units.append(unit)
        return units, {m for m, ok in found_all.items() if ok}

    # ------------------------------------------------------------ the trainer's interface

    def __len__(self) -> int:
        return sum(u.rows for u in self.units)

    def complete(self) -> set[str]:
        """Modalities every sample has."""
        return set(self._complete)

    def to(self, device: torch.device | str) -> StreamedSplit:
        self.device = device
        return self

    def shards_read(self) -> list[str] | None:
        """This rank's shards, as `<modality>/<file>` in the order assigned."""
        return [f"{u.modality}/{u.shard.file}" for u in self.mine]

    def local_sizes(self, batch_size: int) -> list[int]:
        """Rows of a global batch each rank contributes (`distributed.local_rows`' slices)."""
        return [len(x) for x in torch.arange(batch_size).tensor_split(self.world)]

    def steps(self, batch_size: int) -> int:
        """Full global batches per epoch: every rank takes part in every step (collectives)."""
        local = self.local_sizes(batch_size)
        return min(sum(u.rows for u in self.units[r :: self.world]) // local[r] for r in range(self.world))

    def buffers(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {}  # batches are assembled from windows and stores: nothing to preallocate

    def order(self, epoch: int) -> list[Unit]:
        """This rank's units in the order of `epoch` (seeded), or in cache order without shuffling."""
        if not self.shuffle:
            return list(self.mine)
        rng = np.random.default_rng([_SALT, self.seed, epoch, self.rank])
        return [self.mine[i] for i in rng.permutation(len(self.mine))]

    def windows(self, epoch: int) -> list[list[Unit]]:
        """Consecutive units of `epoch`'s order, each group at least `buffer_rows` rows (the last may be less)."""
        groups: list[list[Unit]] = [[]]
        held = 0
        for u in self.order(epoch):
            if held >= self.buffer_rows:
                groups.append([])
                held = 0
            groups[-1].append(u)
            held += u.rows
        return [g for g in groups if g]

    def epoch_batches(self, epoch: int, steps: int, batch_size: int, generator=None, out=None, start_step=0) -> Batches:
        """This rank's slice of each global batch of `epoch`, from step `start_step` on. `generator` and `out`
        are unused: the order comes from the seed and the epoch, so a resumed run draws the same."""
        local = self.local_sizes(batch_size)[self.rank]
        skip = start_step * local  # samples of this rank before the first batch wanted
        pending: list[tuple[Window, np.ndarray]] = []
        held, done = 0, start_step
        for w, group in enumerate(self.windows(epoch)):
            if done >= steps:
                return
            rows = sum(u.rows for u in group)
            if skip >= rows:  # resume: windows before the position are never read
                skip -= rows
                continue
            win = self.source.load(group)
            perm = np.arange(win.size)
            if self.shuffle:
                perm = np.random.default_rng([_SALT, self.seed, epoch, self.rank, w]).permutation(win.size)
            pending.append((win, perm[skip:]))
            held += win.size - skip
            skip = 0
            while held >= local and done < steps:
                parts, pending = take(pending, local)
                held -= local
                done += 1
                yield self._batch(parts, epoch)

    # ------------------------------------------------------------ one batch from window parts

    def _batch(self, parts: list[tuple[Window, np.ndarray]], epoch: int):
        def joined(pieces: list) -> Any:  # most batches come from one window: no copy then
            return (
                pieces[0]
                if len(pieces) == 1
                else (torch.cat(pieces) if torch.is_tensor(pieces[0]) else np.concatenate(pieces))
            )

        inputs = {m: joined([self._features(w, m, pos) for w, pos in parts]) for m in self.modalities}
        if self.view_stores:
            draws = self._epoch_draws(epoch)
            samples = joined([w.samples[pos] for w, pos in parts])
            for m, store in self.view_stores.items():
                rows = joined([w.rows[m][pos] for w, pos in parts])
                drawn = torch.from_numpy(draws[m][samples])
                picked = store.gather(rows)[torch.arange(len(rows)), view_index(drawn)]  # [B, K, *shape] -> [B, ...]
                inputs[m] = with_views(inputs[m], picked, drawn)
        present = {m: joined([w.present[m][pos] for w, pos in parts]) for m in self.modalities}
        x = {m: v.to(self.device) for m, v in inputs.items()}
        rows = {m: torch.from_numpy(self._rows(parts, m)).to(self.device) for m in self.modalities}
        return x, {m: torch.from_numpy(v).to(self.device) for m, v in present.items()}, rows

    def _epoch_draws(self, epoch: int) -> dict[str, np.ndarray]:
        """m -> the view of every sample of the table in `epoch` (one byte a sample), drawn once per epoch."""
        if self._draws is None or self._draws[0] != epoch:
            n = len(self)
            counts = {m: self.modalities[m].view_count for m in self.view_stores}
            self._draws = (epoch, {m: draw_views(self.seed, epoch, m, k, n) for m, k in counts.items()})
        return self._draws[1]

    def _rows(self, parts: list[tuple[Window, np.ndarray]], m: str) -> np.ndarray:
        """Which cached row of m each sample of a batch uses, as PCMR's `shared` target compares them: a looked-up
        modality's row in its cache (>= 0); a sample's own row of a base modality is its own, so it gets a value
        no other sample of the global batch has (negative, distinct per rank)."""
        pieces = []
        for w, pos in parts:
            r = w.rows[m][pos].astype(np.int64)
            if m in w.own:
                r = np.where(w.own[m][0][pos] >= 0, -1, r)
            pieces.append(r)
        rows = np.concatenate(pieces)
        own = rows == -1
        rows[own] = -(1 + self.rank * (1 << 40) + np.arange(int(own.sum())))
        return rows

    def _features(self, win: Window, m: str, pos: np.ndarray) -> torch.Tensor:
        """Float32 features of modality m at window positions `pos`: the window's own rows, else the store's row
        (row 0 where absent, as in memory), else (the first base modality, absent) its first row."""
        width = int(np.prod(self.modalities[m].shape))
        slot = win.own[m][0][pos] if m in win.own else np.full(len(pos), -1)
        if m in win.own and bool((slot >= 0).all()):  # every row the window's own: one gather and one cast
            return torch.from_numpy(win.own[m][1][slot]).float()
        if m in self.stores:  # the rows the window holds are not read again
            x = self.stores[m].gather(np.where(slot >= 0, 0, win.rows[m][pos])).reshape(len(pos), -1)
        else:
            x = torch.from_numpy(np.broadcast_to(self._placeholder, (len(pos), width)).astype(np.float32))
        hit = slot >= 0
        if hit.any():
            feats = win.own[m][1]
            x[torch.from_numpy(hit)] = torch.from_numpy(feats[slot[hit]].reshape(int(hit.sum()), -1)).float()
        return x.reshape(len(pos), *self.modalities[m].shape)


def _has_views(reader, name: str) -> bool:
    """Whether a cache holds augmented views beside its training feature `name`."""
    return VIEWS_FEATURE in reader.feature_names and name != VIEWS_FEATURE
