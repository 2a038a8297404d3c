"""`TrainingSplit`: what the stage-two trainer asks of its training samples, whichever way they are loaded.

Two implementations: `pcmpipe.samples.memory.SplitData` (features held whole, batches gathered by index) and
`pcmpipe.samples.stream.StreamedSplit` (features read from the cache window by window). Both give the samples of
one join (`pcmpipe.samples.table`) with the views of one rule (`pcmpipe.samples.views`); with shuffling off they
give the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import torch

# One epoch's batches, one per step: (inputs m -> float32 [B, *shape_m], present m -> bool [B], rows m -> int64
# [B]); rows say which cached row of m each sample uses (equal values: the same image, class, ...), for PCMR's
# `shared` target
Batches = Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]]


class ModalityFeatures(Protocol):
    """One modality of a training split as the trainer reads it (`ModalityData` or `CacheInfo`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...  # one row's feature shape

    @property
    def rows(self) -> int: ...  # rows in its cache

    @property
    def fingerprint(self) -> str: ...  # its cache manifest's fingerprint

    @property
    def directory(self) -> str: ...  # its cache directory

    @property
    def view_count(self) -> int: ...  # augmented views per row training draws from (0: none)

    def chunks(self, rows: int) -> Iterator[torch.Tensor]: ...  # its features in row order (moments)


class TrainingSplit(Protocol):
    """A split's training samples: their count, modalities and base, and each epoch's batches."""

    @property
    def split(self) -> str: ...

    @property
    def base(self) -> list[str]: ...  # the modalities whose rows are the samples

    @property
    def modalities(self) -> Mapping[str, ModalityFeatures]: ...

    def __len__(self) -> int: ...  # samples

    def complete(self) -> set[str]:
        """Modalities every sample has (the losses then need no mask)."""
        ...

    def steps(self, batch_size: int) -> int:
        """Full global batches per epoch (drop_last)."""
        ...

    def buffers(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Preallocated batch tensors for `epoch_batches(out=...)` ({} when batches are assembled otherwise)."""
        ...

    def to(self, device: torch.device | str) -> TrainingSplit:
        """Where batches are delivered; returns the split."""
        ...

    def epoch_batches(self, epoch: int, steps: int, batch_size: int, generator=None, out=None, start_step=0) -> Batches:
        """This rank's slice of each global batch of `epoch`, from step `start_step` on; a resumed epoch gives
        the batches the uninterrupted one gave. `generator` (torch.Generator): the in-memory order's; `out`
        (`buffers()`): tensors a batch may be written into."""
        ...

    def shards_read(self) -> list[str] | None:
        """The shards this rank reads, in the order assigned (`<modality>/<file>`), for the run's record; None
        where every rank holds the whole split."""
        ...
