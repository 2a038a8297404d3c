"""Training samples streamed from the cache: a split larger than memory, read shard by shard.

`pcmpipe.samples` holds a split's features in memory. This module gives the same samples (the same join of
modalities by their id columns, docs/design.md) without doing so:

- The *base* modalities (the finest key, e.g. T; see `samples.find_base`) are read shard by shard. Shards are
  assigned to ranks once (rank r of W takes shards r, r + W, ...: each rank reads only its own) and, each epoch,
  a rank visits its shards in a seeded order and shuffles *windows* of consecutive shards (at least
  `buffer_rows` rows, at most that plus one shard) with a seeded permutation. Memory: one window.
- Every other modality (images, classes, and a second base modality such as S next to T) is looked up by the
  key its rows carry, through a `RowStore`: the keys as sorted 64-bit hashes (16 bytes a row) and the
  features either in memory in the cache's dtype (fp16 stays fp16) or, above the budget, in a raw spill file
  read back with `pread` (the page cache holds it, not the process).

The order is a pure function of (seed, epoch, rank, shard row counts): `batches(epoch, start_step=s)` resumes
mid-epoch by skipping whole windows without reading them, and gives the batches an uninterrupted epoch gives.
With shuffling off the order is the cache order of `samples.join`, so streamed and in-memory training see the
same batches (tests/test_samples_stream.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmpipe import distributed
from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.errors import UserError
from pcmpipe.samples import VIEW_SALT, Batches, CacheInfo, SplitData, _open, find_base, load_split, with_views

# Seeds of the per-epoch orders are drawn from (seed, epoch, rank[, window]) through numpy's SeedSequence, so
# no order depends on how many batches an earlier epoch drew.
_SALT = 0x5EED


def hash_keys(keys: np.ndarray) -> np.ndarray:
    """Deterministic 64-bit hashes of string keys (pandas' SipHash with its fixed key; no PYTHONHASHSEED)."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(keys, dtype=object), categorize=False).view(np.uint64)


@dataclass
class KeyIndex:
    """Keys of one cache -> row numbers, as sorted 64-bit hashes (16 bytes a row, whatever the key's length)."""

    hashes: np.ndarray  # uint64 [N], sorted
    rows: np.ndarray  # int64 [N], the row (cache order) of each hash

    @classmethod
    def build(cls, parts: list[np.ndarray], where: str) -> KeyIndex:
        """From the keys' hashes (`hash_keys`), shard by shard: the keys themselves are never all held."""
        h = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        order = np.argsort(h, kind="stable")
        hashes = h[order]
        if hashes.size > 1 and bool((hashes[1:] == hashes[:-1]).any()):
            # Keys are unique per cache, so equal hashes are a 64-bit collision (about 3e-4 at 1e8 keys).
            raise UserError(f"two keys of {where} share a 64-bit hash; load it in memory (--stream false)")
        return cls(hashes, order.astype(np.int64))

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, found) per key: row 0 where absent, as `samples._lookup` does (the placeholder row)."""
        if self.hashes.size == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        h = hash_keys(keys)
        pos = np.clip(np.searchsorted(self.hashes, h), 0, self.hashes.size - 1)
        found = self.hashes[pos] == h
        return np.where(found, self.rows[pos], 0), found


class RowStore:
    """One looked-up modality: a key index plus its feature rows, in memory or in a spill file."""

    def __init__(
        self, cache_root, dataset: str, modality: str, split: str, resident: bool, spill_dir=None, feature=None
    ):
        from pcmpipe.cache.shard import iter_feature_into, read_columns

        reader, name, path = _open(cache_root, dataset, modality, split)
        name = feature or name  # another feature than the training one: the augmented views
        self.info = CacheInfo(modality, tuple(reader.shapes[name]), int(reader.num_rows), reader.fingerprint, str(path))
        self.key = reader.key
        key_column = self.key if self.key in reader.columns else "id"
        self.dtype = np.dtype(_memory_dtype(reader.dtypes[name]))
        width = int(np.prod(self.info.shape))
        self.row_bytes = width * self.dtype.itemsize
        shaped = self.info.shape  # HDF5 shards are read into arrays of the feature's own shape
        self._mem: np.ndarray | None = np.empty((self.info.rows, *shaped), self.dtype) if resident else None
        self._fd: int | None = None
        spill = None
        if not resident:
            tmp = Path(tempfile.mkdtemp(prefix=f"pcmpipe-{modality}-", dir=spill_dir))
            weakref.finalize(self, shutil.rmtree, tmp, True)  # the spill goes with the store
            spill = open(tmp / "rows.bin", "wb")  # noqa: SIM115 -- closed after the last shard
        keys: list[np.ndarray] = []
        buf = np.empty((1024, *shaped), self.dtype)
        at = 0
        for shard in reader.manifest["shards"]:
            file = reader.directory / shard["file"]
            keys.append(hash_keys(read_columns(file, reader.fmt, [key_column])[key_column]))
            for k in iter_feature_into(file, reader.fmt, name, buf):
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
        self.index = KeyIndex.build(keys, str(path))

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


@dataclass
class Unit:
    """One shard of a base modality, as a stream reads it; `rows` counts the rows it contributes."""

    modality: str
    file: Path
    fmt: str
    rows: int
    earlier: list[str] = field(default_factory=list)  # base modalities read before: their keys are skipped here
    offset: int = 0  # the shard's first row in its cache (rows of the shards before it)


@dataclass
class _Window:
    """The rows of consecutive units, in memory: own features and each looked-up modality's rows."""

    size: int
    own: dict[str, tuple[np.ndarray, np.ndarray]]  # base m -> (slot [size], -1 where not m's own row; features)
    rows: dict[str, np.ndarray]  # looked-up m -> row in its store [size] (0 where absent: the placeholder)
    present: dict[str, np.ndarray]  # m -> bool [size]
    # base m with augmented views -> the cache row of each position (-1 where not m's own row), for `view_stores`
    cache_rows: dict[str, np.ndarray] = field(default_factory=dict)


class StreamedSplit:
    """A split's samples read from its caches window by window (see module docstring).

    Same interface as `samples.SplitData` where the trainer uses it: `len()`, `modalities` (CacheInfo per
    modality), `base`, `complete()`, `buffers()`, `to()`, `epoch_batches()`.
    """

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
    ):
        self.split, self.seed, self.shuffle, self.buffer_rows = split, seed, shuffle, max(1, buffer_rows)
        self.rank = distributed.get_rank() if rank is None else rank
        self.world = distributed.get_world_size() if world is None else world
        self.device: torch.device | str = "cpu"
        readers = {m: _open(cache_root, dataset, m, split) for m in modalities}
        carriers = {m: _Carrier(r.key, set(r.columns) | {r.key}) for m, (r, _, _) in readers.items()}
        self.base = find_base(carriers)  # type: ignore[arg-type]
        self.key = readers[self.base[0]][0].key
        self._names = {m: name for m, (_, name, _) in readers.items()}
        self.shapes = {m: tuple(r.shapes[self._names[m]]) for m, (r, _, _) in readers.items()}
        self._dtype = {m: _memory_dtype(r.dtypes[self._names[m]]) for m, (r, _, _) in readers.items()}
        self.modalities = {
            m: CacheInfo(m, self.shapes[m], int(r.num_rows), r.fingerprint, str(p)) for m, (r, _, p) in readers.items()
        }
        # Every modality but the first base one is looked up by key; the first ones within the budget stay in
        # memory, the others are spilled.
        budget = resident_bytes

        def store(m: str, values: int, feature: str | None = None) -> RowStore:
            """m's rows of `feature` (default: the training one), in memory while the budget lasts, else spilled."""
            nonlocal budget
            size = values * np.dtype(self._dtype[m]).itemsize
            resident = size <= budget
            budget -= size if resident else 0
            return RowStore(cache_root, dataset, m, split, resident=resident, spill_dir=spill_dir, feature=feature)

        self.stores: dict[str, RowStore] = {
            m: store(m, self.modalities[m].rows * self._width(m)) for m in modalities if m != self.base[0]
        }
        # Augmented views (`extract --views K`): a store per modality whose cache holds them, in its cache's row
        # order, so a looked-up row or a base row's place in its cache finds its views.
        self.view_stores: dict[str, RowStore] = {}
        for m, (r, _, _) in readers.items():
            if VIEWS_FEATURE in r.feature_names and self._names[m] != VIEWS_FEATURE:
                values = r.num_rows * int(np.prod(r.shapes[VIEWS_FEATURE]))
                self.view_stores[m] = store(m, values, VIEWS_FEATURE)
                self.modalities[m].view_count = int(r.shapes[VIEWS_FEATURE][0])
        want = {"id", self.key} | {s.key for s in self.stores.values()}
        self._cols = {b: [c for c in readers[b][0].columns if c in want] for b in self.base}
        # One pass over the base shards' id columns (no features): the units, their rows after skipping keys an
        # earlier base modality has, and which modalities every sample has (the losses then need no mask).
        self.units: list[Unit] = []
        found_all = dict.fromkeys(modalities, True)
        for j, b in enumerate(self.base):
            reader, offset = readers[b][0], 0
            for shard in reader.manifest["shards"]:
                unit = Unit(b, reader.directory / shard["file"], reader.fmt, int(shard["rows"]), self.base[:j], offset)
                offset += int(shard["rows"])
                columns = self._columns(unit)
                keep = self._keep(unit, columns)
                unit.rows = int(keep.sum())
                for m, (_, ok) in self._lookups(b, columns, keep).items():
                    found_all[m] = found_all[m] and bool(ok.all())
                if j > 0 and unit.rows:
                    found_all[self.base[0]] = False
                self.units.append(unit)
        self._complete = {m for m, ok in found_all.items() if ok}
        first = next(u for u in self.units if u.modality == self.base[0])
        self._placeholder = _first_row(first, self._names[first.modality], self.shapes[first.modality], self._dtype)
        self.mine = self.units[self.rank :: self.world]  # this rank's shards, the same every epoch

    # ------------------------------------------------------------ the join, per shard

    def _width(self, m: str) -> int:
        return int(np.prod(self.shapes[m]))

    def _columns(self, u: Unit) -> dict[str, np.ndarray]:
        from pcmpipe.cache.shard import read_columns

        return read_columns(u.file, u.fmt, self._cols[u.modality])

    def _keep(self, unit: Unit, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Rows of a unit that are samples: in a later base modality, those whose key no earlier one has."""
        keep = np.ones(len(columns["id"]), bool)
        for e in unit.earlier:
            keep &= ~self._base_index(e).lookup(_key_col(columns, self.key))[1]
        return keep

    def _base_index(self, b: str) -> KeyIndex:
        """The keys of a base modality (a store's index, or for the first one built once from its units)."""
        if b in self.stores:
            return self.stores[b].index
        if getattr(self, "_primary_index", None) is None:
            parts = [hash_keys(_key_col(self._columns(u), self.key)) for u in self.units if u.modality == b]
            self._primary_index = KeyIndex.build(parts, b)
        return self._primary_index

    def _lookups(self, b: str, columns, keep) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """For the kept rows of a shard of base modality b: row and presence of every looked-up modality."""
        return {m: store.index.lookup(_key_col(columns, store.key)[keep]) for m, store in self.stores.items() if m != b}

    # ------------------------------------------------------------ the trainer's interface

    def __len__(self) -> int:
        return sum(u.rows for u in self.units)

    def complete(self) -> set[str]:
        """Modalities every sample has."""
        return set(self._complete)

    def to(self, device: torch.device | str) -> StreamedSplit:
        self.device = device
        return self

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
        pending: list[tuple[_Window, np.ndarray]] = []
        held, done = 0, start_step
        for w, group in enumerate(self.windows(epoch)):
            if done >= steps:
                return
            rows = sum(u.rows for u in group)
            if skip >= rows:  # resume: windows before the position are never read
                skip -= rows
                continue
            win = self._load(group)
            perm = np.arange(win.size)
            if self.shuffle:
                perm = np.random.default_rng([_SALT, self.seed, epoch, self.rank, w]).permutation(win.size)
            pending.append((win, perm[skip:]))
            held += win.size - skip
            skip = 0
            while held >= local and done < steps:
                parts, pending = _split(pending, local)
                held -= local
                done += 1
                yield self._batch(parts, (epoch, done))

    def _batch(self, parts: list[tuple[_Window, np.ndarray]], step: tuple[int, int] = (0, 0)):
        def joined(pieces: list) -> Any:  # most batches come from one window: no copy then
            return (
                pieces[0]
                if len(pieces) == 1
                else (torch.cat(pieces) if torch.is_tensor(pieces[0]) else np.concatenate(pieces))
            )

        inputs = {m: joined([self._features(w, m, pos) for w, pos in parts]) for m in self.modalities}
        for m, store in self.view_stores.items():
            inputs[m] = self._views(
                m, store, inputs[m], np.concatenate([self._cache_rows(w, m, pos) for w, pos in parts]), step
            )
        present = {m: joined([w.present[m][pos] for w, pos in parts]) for m in self.modalities}
        x = {m: v.to(self.device) for m, v in inputs.items()}
        rows = {m: torch.from_numpy(self._rows(parts, m)).to(self.device) for m in self.modalities}
        return x, {m: torch.from_numpy(v).to(self.device) for m, v in present.items()}, rows

    def _rows(self, parts: list[tuple[_Window, np.ndarray]], m: str) -> np.ndarray:
        """Which cached row of m each sample of a batch uses, as PCMR's `shared` target compares them: a looked-up
        modality's row in its store (>= 0); a sample's own row of a base modality is its own, so it gets a value
        no other sample of the global batch has (negative, distinct per rank)."""
        pieces = []
        for w, pos in parts:
            r = w.rows[m][pos].astype(np.int64) if m in w.rows else np.zeros(len(pos), np.int64)
            if m in w.own:
                r = np.where(w.own[m][0][pos] >= 0, -1, r)
            pieces.append(r)
        rows = np.concatenate(pieces)
        own = rows == -1
        rows[own] = -(1 + self.rank * (1 << 40) + np.arange(int(own.sum())))
        return rows

    def _views(self, m: str, store: RowStore, clean: torch.Tensor, rows: np.ndarray, step: tuple[int, int]):
        """The batch's rows of m with one view drawn per sample (0 clean, 1..K augmented), seeded by (seed, epoch,
        rank, step, m): a resumed epoch draws what the uninterrupted one drew."""
        k = store.info.shape[0]
        rng = np.random.default_rng([VIEW_SALT, self.seed, *step, self.rank, zlib.crc32(m.encode())])
        drawn = rng.integers(0, k + 1, size=len(rows))
        views = store.gather(rows)  # [B, K, *shape]
        picked = views[torch.arange(len(rows)), torch.from_numpy(np.maximum(drawn - 1, 0))]
        return with_views(clean, picked, torch.from_numpy(drawn))

    def _cache_rows(self, win: _Window, m: str, pos: np.ndarray) -> np.ndarray:
        """Each sample's row in m's cache: its own (a base modality), else the looked-up one (0 where absent)."""
        rows = win.rows[m][pos] if m in win.rows else np.zeros(len(pos), np.int64)
        if m in win.cache_rows:
            own = win.cache_rows[m][pos]
            rows = np.where(own >= 0, own, rows)
        return rows

    def _features(self, win: _Window, m: str, pos: np.ndarray) -> torch.Tensor:
        """Float32 features of modality m at window positions `pos`: the window's own rows, else the store's row
        (row 0 where absent, as in memory), else (the first base modality, absent) its first row."""
        if m in win.own:
            slot = win.own[m][0][pos]
            if bool((slot >= 0).all()):  # every row the window's own: one gather and one cast
                return torch.from_numpy(win.own[m][1][slot]).float()
        if m in self.stores:
            x = self.stores[m].gather(win.rows[m][pos]).reshape(len(pos), -1)
        else:
            x = torch.from_numpy(np.broadcast_to(self._placeholder, (len(pos), self._width(m))).astype(np.float32))
        if m in win.own:
            slot, feats = win.own[m]
            hit = slot[pos] >= 0
            if hit.any():
                x[torch.from_numpy(hit)] = torch.from_numpy(feats[slot[pos][hit]].reshape(int(hit.sum()), -1)).float()
        return x.reshape(len(pos), *self.shapes[m])

    def _load(self, group: list[Unit]) -> _Window:
        """Read a window's units: the features of their own modality, the lookups of every other one."""
        from pcmpipe.cache.shard import read_feature_into

        size = sum(u.rows for u in group)
        slots = {m: np.full(size, -1, np.int64) for m in self.base}
        # One block per base modality, filled shard by shard in place: the window is held once, not copied.
        feats = {
            m: np.empty((sum(u.rows for u in group if u.modality == m), *self.shapes[m]), self._dtype[m])
            for m in self.base
        }
        filled = dict.fromkeys(self.base, 0)
        rows = {m: np.zeros(size, np.int64) for m in self.stores}
        present = {m: np.zeros(size, bool) for m in self.modalities}
        cache_rows = {m: np.full(size, -1, np.int64) for m in self.base if m in self.view_stores}
        at = 0
        for u in group:
            columns = self._columns(u)
            keep = self._keep(u, columns)
            k, held, name = int(keep.sum()), filled[u.modality], self._names[u.modality]
            if k == len(keep):
                read_feature_into(u.file, u.fmt, name, feats[u.modality][held : held + k])
            else:  # rows another base modality has: read the shard, keep the others
                block = np.empty((len(keep), *self.shapes[u.modality]), self._dtype[u.modality])
                read_feature_into(u.file, u.fmt, name, block)
                feats[u.modality][held : held + k] = block[keep]
            slots[u.modality][at : at + k] = np.arange(held, held + k)
            filled[u.modality] += k
            present[u.modality][at : at + k] = True
            if u.modality in cache_rows:
                cache_rows[u.modality][at : at + k] = u.offset + np.flatnonzero(keep)
            for m, (r, ok) in self._lookups(u.modality, columns, keep).items():
                rows[m][at : at + k] = r
                present[m][at : at + k] = ok
            at += k
        own = {m: (slots[m], f) for m, f in feats.items() if len(f)}
        return _Window(size, own, rows, present, cache_rows)


def _split(pending: list[tuple[_Window, np.ndarray]], n: int):
    """The next `n` samples of the pending windows -> (parts, pending left)."""
    parts = []
    while n:
        win, perm = pending[0]
        k = min(n, len(perm))
        parts.append((win, perm[:k]))
        n -= k
        pending = pending[1:] if k == len(perm) else [(win, perm[k:]), *pending[1:]]
    return parts, pending


def _key_col(columns: dict[str, np.ndarray], key: str) -> np.ndarray:
    return columns[key] if key in columns else columns["id"]


def _memory_dtype(stored: str):
    """fp16 caches stay fp16 in memory (cast per batch); anything else is held as float32."""
    return np.float16 if stored == "float16" else np.float32


def _first_row(unit: Unit, name: str, shape: tuple[int, ...], dtypes: dict) -> np.ndarray:
    """Row 0 of a base modality's cache: the placeholder the in-memory join gives an absent modality."""
    from pcmpipe.cache.shard import iter_feature_into

    buf = np.empty((1, *shape), dtypes[unit.modality])
    rows = iter_feature_into(unit.file, unit.fmt, name, buf)
    next(rows)
    del rows  # a generator, closed here: the rest of the shard is not decoded
    return buf[0].reshape(-1).copy()


@dataclass
class _Carrier:
    """What `find_base` asks of a modality (its key, the columns it carries), from a manifest alone."""

    key: str
    cols: set[str]

    def carries(self, column: str) -> bool:
        return column in self.cols


def held_bytes(cache_root: str | Path, dataset: str, modalities: list[str], split: str) -> int:
    """Bytes a split's features take in memory (fp16 caches at 2 bytes a value), from the manifests alone."""
    from pcmpipe.cache.reader import read_manifest

    total = 0
    for m in modalities:
        manifest = read_manifest(cache_root, dataset, m, split)
        if manifest is None:
            continue  # reported, with the command that makes it, when the split is opened
        for f in manifest["features"].values():
            total += manifest["num_rows"] * int(np.prod(f["shape"])) * np.dtype(_memory_dtype(f["dtype"])).itemsize
    return total


def resolve_stream(cfg):
    """The run's loading mode, decided once when it starts: `stream` True (streamed) or None (in memory).

    `stream: None` streams when the training split's features exceed `memory_budget_mb`. In-memory runs keep
    the fingerprint they always had (None is the legacy value); a streamed run's fingerprint says it streamed.
    """
    stream = cfg.stream
    if stream is None:
        size = held_bytes(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_train)
        stream = size > cfg.memory_budget_mb * 2**20
    return cfg.model_copy(update={"stream": True if stream else None})


def load_training(cfg) -> SplitData | StreamedSplit:
    """The training split of a resolved config (`resolve_stream`): streamed, or in memory (fp16 stays fp16)."""
    if cfg.stream:
        return StreamedSplit(
            cfg.cache_root,
            cfg.dataset,
            cfg.modalities,
            cfg.split_train,
            seed=cfg.seed,
            shuffle=cfg.shuffle,
            buffer_rows=cfg.shuffle_buffer,
            # looked-up modalities within half the budget stay in memory; the window and the rest use the other half
            resident_bytes=int(cfg.memory_budget_mb * 2**20) // 2,
            spill_dir=cfg.spill_dir,
        )
    split = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_train, half=True, views=True)
    split.shuffle, split.view_seed = cfg.shuffle, cfg.seed  # the seed also draws each epoch's views
    return split
