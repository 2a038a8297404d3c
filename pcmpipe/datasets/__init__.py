"""Dataset readers over the real on-disk layouts, synthetic data in those layouts, and the downloader.

    ds = open_dataset("flickr8k", "data/flickr8k")      # or "cub"
    ds.modalities                                         # ('I', 'T', 'S')
    ds.records("T", "train")                              # list[Record], sorted by id

A `Record` has `id`, `links` (its key column and the coarser ones: caption_id, image_id, class_id) and one
payload: `path` (image / wav file), `text` (caption / prompt) or `vector` (np.ndarray float32, A and C).
Speech files are decoded with `load_audio(path)` -> float32 [num_samples], 16 kHz mono.
"""

from __future__ import annotations

from pathlib import Path

from pcmpipe.datasets.audio import load_audio
from pcmpipe.datasets.base import MODALITY_KEYS, SPLITS, Dataset, Record
from pcmpipe.datasets.cub import CUB
from pcmpipe.datasets.flickr8k import Flickr8k
from pcmpipe.datasets.generic import GenericDataset, open_generic
from pcmpipe.errors import UserError

DATASETS: dict[str, type[Dataset]] = {
    "flickr8k": Flickr8k,
    "cub": CUB,
}


def open_dataset(name: str, root: Path | str, **options) -> Dataset:
    """The reader of dataset `name` over the files under `root` (options: CUB's `class_vectors`). Any other name
    is the user's own data, described by `root`/dataset.yaml (or `root` itself, a spec file)."""
    if name not in DATASETS:
        if options:
            raise UserError(f"dataset options {', '.join(options)} apply to {', '.join(DATASETS)} only")
        return open_generic(name, root)
    return DATASETS[name](root, **options)


__all__ = [
    "CUB",
    "DATASETS",
    "Dataset",
    "Flickr8k",
    "GenericDataset",
    "MODALITY_KEYS",
    "Record",
    "SPLITS",
    "load_audio",
    "open_dataset",
]
