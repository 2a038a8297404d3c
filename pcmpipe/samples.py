"""Training samples: the join of several cached modalities of one split (docs/design.md "Training samples").

Each modality's features stay one contiguous float32 tensor [N_m, *shape]. A sample is a row of the *base*
modality (the one whose rows carry every other modality's key column); `idx[m][s]` is the row of modality m
that belongs to sample s and `present[m][s]` says whether there is one. A batch is then a handful of
`index_select`s on those tensors: no per-sample Python, no DataLoader over single rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmpipe import distributed
from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.errors import UserError
from pcmpipe.modalities import MODALITIES

# One epoch's batches: (inputs m -> float32 [B, *shape_m], present m -> bool [B]) per step.
# (inputs m -> [B, *shape_m], present m -> bool [B], rows m -> int64 [B]): rows say which cached row of m each
# sample uses (equal values: the same image, class, ...), for PCMR's `shared` target
VIEW_SALT = 0x76696577  # "view": keeps the view draws apart from any other stream seeded by (seed, epoch)

Batches = Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]]


@dataclass
class FeatureStream:
    """Where a streamed modality's features are read from, chunk by chunk, every time they are needed."""

    name: str  # the feature inside the cache
    shape: tuple[int, ...]
    rows: int
    device: torch.device | str = "cpu"


@dataclass
class ModalityData:
    """One cached modality of one split: ids in memory, features in memory or streamed from the cache."""

    name: str
    key: str  # the key column, e.g. "caption_id"
    columns: dict[str, np.ndarray]  # "id" + link columns, arrays of str, length N
    # [N, *shape] float32, or float16 when the cache is fp16 and the caller asked for half (`load_modality`): cast
    # to float32 per batch and per chunk, never as a whole. None when streamed (see `chunks`).
    features: torch.Tensor | None
    fingerprint: str  # the cache manifest's fingerprint
    directory: str
    stream: FeatureStream | None = None
    # [N, K, *shape]: K augmented views per row (`pcmpipe extract --views K`), loaded for training only; the
    # features above are view 0, the clean one, which validation, test and every evaluation use
    views: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:]) if self.features is not None else self.streamed().shape

    @property
    def rows(self) -> int:
        return int(self.features.shape[0]) if self.features is not None else self.streamed().rows

    @property
    def view_count(self) -> int:
        """K, the augmented views per row training draws from (0: none loaded)."""
        return 0 if self.views is None else int(self.views.shape[1])

    def streamed(self) -> FeatureStream:
        """The stream of features that are not in memory; `load_modality` sets exactly one of the two."""
        assert self.stream is not None, f"{self.name}: neither features in memory nor a stream"
        return self.stream

    def resident(self) -> torch.Tensor:
        """The features in memory; batches are gathered only from those (training data is never streamed)."""
        assert self.features is not None, f"{self.name}: features are streamed, not in memory"
        return self.features

    def chunks(self, rows: int) -> Iterator[torch.Tensor]:
        """The features in row order, at most `rows` rows at a time (streamed: at most 64).

        Resident features give slices. Streamed ones are decoded from the cache into one reused buffer, so each
        chunk is valid only until the next is produced; the cache must still be the one loaded (same fingerprint).
        """
        if self.features is not None:
            for i in range(0, self.features.shape[0], rows):
                yield self.features[i : i + rows].float()  # a view when float32, a cast chunk when float16
            return
        from pcmpipe.cache import open_cache

        reader = open_cache(self.directory, verify=False)  # row counts only: the hashes were checked at load
        now = reader.fingerprint
        if now != self.fingerprint:
            raise UserError(
                f"cache {self.directory} changed while in use (fingerprint {now[:12]} vs "
                f"{self.fingerprint[:12]}); restore it, or delete the run directory and train again"
            )
        # Decoded 64 rows at a time whatever `rows` is (2.5 MB of HuBERT features): pyarrow's decoding buffers
        # grow with the batch (measured peak above the start on Flickr8k-sized val HuBERT features: 9 MB at 64
        # rows, 70 MB at 256, 0.3 GiB at 4,096) for no gain in speed, and memory is what streaming is for.
        stream = self.streamed()
        for chunk in reader.iter_feature(stream.name, min(rows, 64)):
            yield torch.from_numpy(chunk).to(stream.device)

    def moments(self, with_scale: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, unbiased std or None) per feature element, float32, accumulated in float64.

        Two passes over chunks of about 32 MB of float64: a float64 copy of the whole block (2.4 GB for
        Flickr8k's 30,000 HuBERT rows, 4x the fp16 block) was the largest transient of a training run.
        """
        rows = moment_chunk_rows(self.shape)
        device = self.features.device if self.features is not None else self.streamed().device
        total = torch.zeros(self.shape, dtype=torch.float64, device=device)  # where the chunks are: GPU or CPU
        for x in self.chunks(rows):
            total += x.double().sum(0)
        mean = total / self.rows
        if not with_scale:
            return mean.float(), None
        squares = torch.zeros_like(total)
        for x in self.chunks(rows):
            squares += (x.double() - mean).square().sum(0)
        std = (squares / max(self.rows - 1, 1)).sqrt()
        return mean.float(), std.clamp_min(1e-6).float()

    def carries(self, column: str) -> bool:
        return column == self.key or column in self.columns

    def key_values(self) -> np.ndarray:
        return self.columns[self.key] if self.key in self.columns else self.columns["id"]


def moment_chunk_rows(shape: tuple[int, ...]) -> int:
    """Rows per chunk of a moments pass: about 4 Mi feature values (32 MB as float64), at least one row."""
    return max(1, (4 << 20) // max(1, int(np.prod(shape))))


@dataclass
class SplitData:
    """The modalities of one split plus the sample join used for training batches."""

    split: str
    modalities: dict[str, ModalityData]
    base: list[str]  # modalities whose rows define the samples (several when they share the finest key)
    idx: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> LongTensor [N_samples], 0 where absent
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> BoolTensor [N_samples]
    shuffle: bool = True  # training order: a seeded permutation per epoch, or (False) the sample table's order
    view_seed: int = 0  # the run's seed: with the epoch it draws each sample's view (`draw_views`)
    # m -> LongTensor [N_samples]: the view (0 clean, 1..K augmented) each sample of the current epoch uses;
    # set by `epoch_batches`, so `batch` outside an epoch (and for modalities without views) gives clean rows
    drawn: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.idx.values())).shape[0])

    def to(self, device: torch.device | str) -> SplitData:
        """Move features and index tensors once, so batches are gathered on the device."""
        for m in self.modalities.values():
            if m.features is not None:
                m.features = m.features.to(device)
            else:
                m.streamed().device = device
            if m.views is not None:
                m.views = m.views.to(device)
        self.idx = {k: v.to(device) for k, v in self.idx.items()}
        self.present = {k: v.to(device) for k, v in self.present.items()}
        return self

    def steps(self, batch_size: int) -> int:
        """Full batches per epoch (drop_last: every step sees a full batch)."""
        return len(self) // batch_size

    def complete(self) -> set[str]:
        """Modalities every sample has (the losses then need no mask)."""
        return {m for m, p in self.present.items() if bool(p.all())}

    def epoch_batches(
        self,
        epoch: int,
        steps: int,
        batch_size: int,
        generator: torch.Generator | None = None,
        out: dict[str, torch.Tensor] | None = None,
        start_step: int = 0,
    ) -> Batches:
        """This rank's slice of each global batch of one epoch (`batch`'s output), from `start_step` on.

        The order is one `randperm` from `generator` per epoch (drop_last: `steps` full batches), as the trainer
        always drew it, or the sample table's order without shuffling (`pcmpipe.samples_stream` streams the same
        samples in that order). The generator's state carries the epoch; `epoch` seeds the views drawn
        (`draw_views`), from their own generator, so a cache without views draws the order it always did."""
        self.drawn = self.draw_views(epoch)
        n = len(self)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        device = next(iter(self.idx.values())).device
        order = order[: steps * batch_size].view(steps, batch_size).to(device)
        for s in range(start_step, steps):
            local = distributed.local_rows(order[s])
            inputs, present = self.batch(local, out=out)
            yield inputs, present, {m: idx.index_select(0, local) for m, idx in self.idx.items()}

    def draw_views(self, epoch: int) -> dict[str, torch.Tensor]:
        """m -> the view [N_samples] each sample uses in `epoch`, uniform over the clean view and the K augmented
        ones, for the modalities whose cache holds views. A function of (view_seed, epoch, m) alone: a resumed run
        draws what the uninterrupted one drew."""
        out = {}
        for m, d in self.modalities.items():
            if d.views is not None:
                k = int(d.views.shape[1])
                rng = np.random.default_rng([VIEW_SALT, self.view_seed, epoch, zlib.crc32(m.encode())])
                drawn = torch.from_numpy(rng.integers(0, k + 1, size=len(self)))
                out[m] = drawn.to(self.idx[m].device)
        return out

    def buffers(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Preallocated float32 batch tensors m -> [batch_size, *shape_m] for `batch(..., out=)`."""
        return {
            m: d.resident().new_empty((batch_size, *d.shape), dtype=torch.float32) for m, d in self.modalities.items()
        }

    def batch(
        self, rows: torch.Tensor, out: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Gather samples `rows` [B] -> (inputs m -> [B, *shape_m], present m -> bool [B]).

        Absent modalities get row 0 of their matrix as a placeholder; the losses ignore it through `present`.
        With `out` (from `buffers`), rows are written into those tensors: no 3 MB allocation per step for HuBERT
        features (about 3x faster gathers on CPU). They are overwritten by the next call, so a caller must finish
        its forward/backward pass on one batch before gathering the next.
        """
        inputs = {}
        for m, d in self.modalities.items():
            rows_m = self.idx[m].index_select(0, rows)
            feats = d.resident()
            if feats.dtype != torch.float32:  # half in memory: gather the rows, then cast this batch only
                inputs[m] = feats.index_select(0, rows_m).float()
                if out is not None and out[m].shape == inputs[m].shape:
                    inputs[m] = out[m].copy_(inputs[m])
            elif out is not None and out[m].shape[0] == rows.shape[0]:
                inputs[m] = torch.index_select(feats, 0, rows_m, out=out[m])
            else:
                inputs[m] = feats.index_select(0, rows_m)
            if m in self.drawn and d.views is not None:
                drawn = self.drawn[m].index_select(0, rows)
                inputs[m] = with_views(inputs[m], d.views[rows_m, (drawn - 1).clamp_min(0)], drawn)
        present = {m: self.present[m].index_select(0, rows) for m in self.modalities}
        return inputs, present


def with_views(clean: torch.Tensor, picked: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """A batch's rows [B, *shape] with each sample's drawn view: `picked` [B, *shape] holds augmented view
    drawn[b] (1..K) of row b (anything where drawn[b] is 0, the clean row already in `clean`). Written into
    `clean` in place, so a preallocated buffer stays the batch's tensor; no host sync."""
    keep = (drawn == 0).view(-1, *([1] * (clean.dim() - 1)))
    return clean.copy_(torch.where(keep, clean, picked.float()))


@dataclass
class CacheInfo:
    """What the manifest says about one cache, without reading its features (see `peek_split`)."""

    name: str
    shape: tuple[int, ...]
    rows: int
    fingerprint: str
    directory: str
    view_count: int = 0  # augmented views per row a streamed training split draws from


@dataclass
class SplitInfo:
    """The caches of one split, checked complete and intact but not loaded."""

    split: str
    modalities: dict[str, CacheInfo]


def feature_name(reader, modality: str, path: Path) -> str:
    """The one feature of a modality cache (or the one named after the modality / 'features'); a cache's
    augmented views (`extract --views K`) are never it."""
    names = [n for n in reader.feature_names if n != VIEWS_FEATURE] or list(reader.feature_names)
    if len(names) == 1:
        return names[0]
    for candidate in (modality, "features", "feature", "embedding"):
        if candidate in names:
            return candidate
    raise UserError(f"cache {path} holds several features ({', '.join(names)}); cannot tell which one is {modality}")


def _open(cache_root: str | Path, dataset: str, modality: str, split: str):
    """(reader, feature name, path) of one cache; a missing cache names the command that makes it."""
    from pcmpipe.cache import cache_dir, open_cache
    from pcmpipe.cache.layout import manifest_path

    path = cache_dir(cache_root, dataset, modality, split)
    if not manifest_path(cache_root, dataset, modality, split).is_file():
        _check_known(cache_root, dataset, modality)
        raise UserError(
            f"no cached features at {path}; create them with {_make_command(dataset, modality, split, cache_root)}"
        )
    reader = open_cache(path)
    return reader, feature_name(reader, modality, path), path


def peek_split(cache_root: str | Path, dataset: str, modalities: list[str], split: str) -> SplitInfo:
    """Check a split's caches (complete, shards intact) and read their shapes, without loading features.

    The trainer uses it for the test split, which it loads only after training: a bad test cache still
    fails the run before the first epoch, and its features are not resident while training.
    """
    info = {}
    for m in modalities:
        reader, name, path = _open(cache_root, dataset, m, split)
        info[m] = CacheInfo(m, tuple(reader.shapes[name]), int(reader.num_rows), reader.fingerprint, str(path))
    return SplitInfo(split, info)


def load_modality(
    cache_root: str | Path,
    dataset: str,
    modality: str,
    split: str,
    stream_above: int | None = None,
    half: bool = False,
    views: bool = False,
) -> ModalityData:
    """Read one (dataset, modality, split) cache into memory; a missing cache names the command that makes it.

    With `stream_above`, features larger than that many bytes (as float32) stay in the cache: only the id
    columns are read (`read_into` with no feature), and `ModalityData.chunks` decodes the features whenever
    they are used. With `half`, an fp16 cache stays fp16 in memory (half the bytes; `SplitData.batch` and
    `chunks` cast to float32 per batch); an fp32 cache is read as float32 either way. With `views`, a cache's
    augmented views (`extract --views K`) are read too, into `ModalityData.views` (training draws from them).
    """
    reader, name, path = _open(cache_root, dataset, modality, split)
    shape = tuple(reader.shapes[name])
    if stream_above is not None and 4 * reader.num_rows * int(np.prod(shape)) > stream_above:
        return ModalityData(
            modality,
            reader.key,
            reader.read_into({}),
            None,
            reader.fingerprint,
            str(path),
            FeatureStream(name, shape, int(reader.num_rows)),
        )
    # One contiguous float32 block; the shards are decoded 256 rows at a time straight into it
    # (CacheReader.read_into), so peak memory is the block plus a few MB. The tensor shares the block's memory.
    dtype = np.float16 if half and reader.dtypes[name] == "float16" else np.float32
    blocks = {name: np.empty((reader.num_rows, *shape), dtype=dtype)}
    if views and name != VIEWS_FEATURE and VIEWS_FEATURE in reader.feature_names:
        blocks[VIEWS_FEATURE] = np.empty((reader.num_rows, *reader.shapes[VIEWS_FEATURE]), dtype=dtype)
    columns = reader.read_into(blocks)
    held = torch.from_numpy(blocks[VIEWS_FEATURE]) if VIEWS_FEATURE in blocks else None
    return ModalityData(
        modality, reader.key, columns, torch.from_numpy(blocks[name]), reader.fingerprint, str(path), views=held
    )


def _check_known(cache_root: str | Path, dataset: str, modality: str) -> None:
    """A name that is neither the paper's nor cached is a typo: say so, with the valid choices."""
    from pcmpipe.cache.layout import cached_datasets, cached_modalities
    from pcmpipe.datasets import DATASETS

    root = Path(cache_root)
    cached = cached_datasets(root)
    if dataset not in set(DATASETS) | set(cached):
        # Any name is a dataset once it is cached (a generic dataset.yaml, imported vectors): a name that is
        # not cached yet is far more often a dataset not extracted yet than a typo, so say how to make it.
        raise UserError(
            f"no cache of dataset {dataset!r} under {root}/ (cached there: {', '.join(cached) or 'none'}); make "
            f"one with `pcmpipe extract --dataset {dataset} --root DATA --cache-root {root}` or `pcmpipe "
            f"import-features MODALITY --dataset {dataset} --split SPLIT --cache-root {root} ...`"
        )
    modalities = sorted(set(MODALITIES) | set(cached_modalities(root, dataset)))
    if modality not in modalities:
        raise UserError(f"unknown modality {modality!r}; valid choices: {', '.join(modalities)}")


def _make_command(dataset: str, modality: str, split: str, cache_root: str | Path) -> str:
    """The command that makes a missing cache: `extract` only where the dataset has the modality's raw data."""
    from pcmpipe.datasets import DATASETS

    if modality in getattr(DATASETS.get(dataset), "modalities", ()):
        return (
            f"`pcmpipe extract --dataset {dataset} --modalities {modality} --split {split} --cache-root {cache_root}`"
        )
    return (
        f"`pcmpipe import-features {modality} --dataset {dataset} --split {split} --cache-root {cache_root} "
        f"--npy FEATS.npy --ids IDS.tsv` ({dataset} has no raw {modality} data to extract; import it)"
    )


def find_base(mods: dict[str, ModalityData]) -> list[str]:
    """Modalities whose rows carry every other modality's key column; those sharing the first one's key.

    Flickr8k I,T,S -> [T, S] (both keyed by caption_id, both carry image_id); CUB I,T,A,C -> [T];
    I,C -> [I]. Raises UserError when no modality links to all others.
    """
    order = list(mods)
    cands = [m for m in order if all(mods[m].carries(mods[o].key) for o in order if o != m)]
    if not cands:
        empty = [m for m, d in mods.items() if getattr(d, "rows", 1) == 0]  # streamed carriers: no rows
        if empty:  # an empty cache carries no columns to join on: say so, not that the keys do not link
            d = mods[empty[0]]
            raise UserError(
                f"cache {d.directory} has no rows ({', '.join(empty)}): this split is empty; extract a dataset "
                "whose split holds samples (synthetic CUB: --images 2 or more) or train on other splits"
            )
        keys = ", ".join(f"{m}: {d.key}" for m, d in mods.items())
        raise UserError(f"cannot join modalities {','.join(order)}: no cache's rows carry every other key ({keys})")
    first_key = mods[cands[0]].key
    return [m for m in cands if mods[m].key == first_key]


def join(split: str, mods: dict[str, ModalityData]) -> SplitData:
    """Build the sample table of `split`: one sample per distinct key value of the base modalities.

    Samples are the base rows in cache order; keys present only in another base modality (e.g. a spoken caption
    whose written caption is missing) are appended after them. Vectorised lookups (sort + searchsorted).
    """
    base = find_base(mods)
    key = mods[base[0]].key
    # Sample table: for each column another modality is keyed by, the sample's value of that column.
    needed = sorted({d.key for d in mods.values()} | {key})
    table: dict[str, list[np.ndarray]] = {c: [] for c in needed}
    seen = np.array([], dtype=str)
    for m in base:
        d = mods[m]
        keys = d.key_values()
        new = ~np.isin(keys, seen)
        for c in needed:
            table[c].append((keys if c == key else d.columns[c])[new])
        seen = np.concatenate([seen, keys[new]])
    samples = {c: np.concatenate(v) for c, v in table.items()}
    out = SplitData(split, mods, base)
    for m, d in mods.items():
        row, ok = _lookup(d.key_values(), samples[d.key])
        out.idx[m] = torch.from_numpy(row)
        out.present[m] = torch.from_numpy(ok)
    return out


def _lookup(haystack: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each needle, its row in haystack (0 if absent) and whether it was found. Keys are unique per cache."""
    if haystack.size == 0:
        return np.zeros(len(needles), dtype=np.int64), np.zeros(len(needles), dtype=bool)
    order = np.argsort(haystack, kind="stable")
    pos = np.searchsorted(haystack[order], needles)
    pos = np.clip(pos, 0, len(haystack) - 1)
    rows = order[pos]
    found = haystack[rows] == needles
    return np.where(found, rows, 0).astype(np.int64), found.astype(bool)


def load_split(
    cache_root: str | Path,
    dataset: str,
    modalities: list[str],
    split: str,
    stream_above: int | None = None,
    half: bool = False,
    views: bool = False,
) -> SplitData:
    """Load every modality of one split and join them (see module docstring); `stream_above`, `half`, `views`:
    see load_modality."""
    mods = {m: load_modality(cache_root, dataset, m, split, stream_above, half, views) for m in modalities}
    return join(split, mods)


def check_compatible(reference: Any, other: SplitData | SplitInfo) -> None:
    """Val/test features must have the train features' shapes (same backbone); otherwise the heads cannot apply.

    `reference`: a SplitData or a streamed split (pcmpipe.samples_stream), anything with `split` and `modalities`
    whose values have `shape`."""
    for m, d in reference.modalities.items():
        o = other.modalities[m]
        if o.shape != d.shape:
            raise UserError(
                f"mismatched caches for {m}: {reference.split} has features {list(d.shape)} but {other.split} has "
                f"{list(o.shape)} ({o.directory}); re-extract both splits with the same backbone"
            )
        check_same_backbone(m, (reference.split, d.directory), (other.split, o.directory))


def check_same_backbone(modality: str, a: tuple[str, str], b: tuple[str, str]) -> None:
    """Two splits (split, cache directory) of one modality must come from one encoder: equal shapes are not
    enough (features of random:1 beside random:0 train and test with no warning). Compares the manifests'
    backbone identity, not the whole fingerprint, which also holds the split and its listing."""
    from pcmpipe.cache.layout import manifest_in
    from pcmpipe.cache.manifest import load_manifest
    from pcmpipe.cache.reader import backbone_identity, source_of

    metas = [load_manifest(manifest_in(directory))["meta"] for _, directory in (a, b)]
    if backbone_identity(metas[0]) != backbone_identity(metas[1]):
        raise UserError(
            f"mismatched caches for {modality}: {a[0]} was built by {source_of(metas[0]) or 'unknown'} ({a[1]}) but "
            f"{b[0]} by {source_of(metas[1]) or 'unknown'} ({b[1]}); re-extract {b[0]} with the weights of {a[0]}"
        )
