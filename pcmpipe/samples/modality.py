"""One cached modality of one split, as training and evaluation hold it: `ModalityData` (ids in memory, features
in memory or decoded from the cache whenever used) and `CacheInfo` (what a manifest says; a streamed training
split's modalities and the test split before it is loaded). Both give their features chunk by chunk (`chunks`),
which is all `pcmpipe.samples.moments` needs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.errors import UserError
from pcmpipe.samples.moments import exact_chunks


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
        # Decoded 64 rows at a time whatever `rows` is (2.5 MB of HuBERT features): pyarrow's decoding buffers
        # grow with the batch (measured peak above the start on Flickr8k-sized val HuBERT features: 9 MB at 64
        # rows, 70 MB at 256, 0.3 GiB at 4,096) for no gain in speed, and memory is what streaming is for.
        stream = self.streamed()
        for chunk in cached_feature(self.directory, self.fingerprint, stream.name, min(rows, 64)):
            yield torch.from_numpy(chunk).to(stream.device)

    def carries(self, column: str) -> bool:
        return column == self.key or column in self.columns

    def key_values(self) -> np.ndarray:
        return self.columns[self.key] if self.key in self.columns else self.columns["id"]


@dataclass
class CacheInfo:
    """What the manifest says about one cache, without reading its features (see `peek_split`)."""

    name: str
    shape: tuple[int, ...]
    rows: int
    fingerprint: str
    directory: str
    view_count: int = 0  # augmented views per row a streamed training split draws from
    feature: str = "features"  # the training feature inside the cache

    def chunks(self, rows: int) -> Iterator[torch.Tensor]:
        """The features in row order, decoded from the cache in chunks of exactly `rows` rows (the last may be
        shorter), float32 on the CPU; each valid until the next is produced."""
        return exact_chunks(cached_feature(self.directory, self.fingerprint, self.feature, rows), rows, self.shape)


@dataclass
class SplitInfo:
    """The caches of one split, checked complete and intact but not loaded."""

    split: str
    modalities: dict[str, CacheInfo]


def cached_feature(directory: str, fingerprint: str, name: str, rows: int) -> Iterator[np.ndarray]:
    """Feature `name` of a cache opened before, float32 in pieces of at most `rows` rows (one reused buffer);
    refused in one line when the cache changed since (another fingerprint)."""
    from pcmpipe.cache import open_cache

    reader = open_cache(directory, verify=False)  # row counts only: the hashes were checked when it was opened
    now = reader.fingerprint
    if now != fingerprint:
        raise UserError(
            f"cache {directory} changed while in use (fingerprint {now[:12]} vs {fingerprint[:12]}); restore "
            "it, or delete the run directory and train again"
        )
    return reader.iter_feature(name, rows)


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
