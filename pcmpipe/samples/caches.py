"""A split's caches as training opens them: found (or the command that makes them named), checked complete and
intact, and loaded into memory (`load_modality`) or only described (`peek_split`); val and test checked to come
from the train split's encoders (`check_compatible`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmpipe.augment.views import VIEWS_FEATURE
from pcmpipe.errors import UserError
from pcmpipe.modalities import MODALITIES
from pcmpipe.samples.modality import CacheInfo, FeatureStream, ModalityData, SplitInfo, feature_name


def open_modality(cache_root: str | Path, dataset: str, modality: str, split: str):
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


def cache_info(reader, name: str, path: Path, modality: str) -> CacheInfo:
    """What an opened cache's manifest says about its training feature `name`."""
    shape = tuple(reader.shapes[name])
    return CacheInfo(modality, shape, int(reader.num_rows), reader.fingerprint, str(path), feature=name)


def peek_split(cache_root: str | Path, dataset: str, modalities: list[str], split: str) -> SplitInfo:
    """Check a split's caches (complete, shards intact) and read their shapes, without loading features.

    The trainer uses it for the test split, which it loads only after training: a bad test cache still
    fails the run before the first epoch, and its features are not resident while training.
    """
    info = {}
    for m in modalities:
        reader, name, path = open_modality(cache_root, dataset, m, split)
        info[m] = cache_info(reader, name, path, m)
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
    reader, name, path = open_modality(cache_root, dataset, modality, split)
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


def check_compatible(reference: Any, other: Any) -> None:
    """Val/test features must have the train features' shapes (same backbone); otherwise the heads cannot apply.

    `reference`, `other`: training splits or `SplitInfo`s, anything with `split` and `modalities` whose values
    have `shape` and `directory`."""
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
    encoders (`same_encoder`), not the whole fingerprint, which also holds the split and its listing."""
    from pcmpipe.backbones.identity import same_encoder
    from pcmpipe.cache.layout import manifest_in
    from pcmpipe.cache.manifest import load_manifest
    from pcmpipe.cache.reader import source_of

    metas = [load_manifest(manifest_in(directory))["meta"] for _, directory in (a, b)]
    if not same_encoder(metas[0], metas[1]):
        raise UserError(
            f"mismatched caches for {modality}: {a[0]} was built by {source_of(metas[0]) or 'unknown'} ({a[1]}) but "
            f"{b[0]} by {source_of(metas[1]) or 'unknown'} ({b[1]}); re-extract {b[0]} with the weights of {a[0]}"
        )
