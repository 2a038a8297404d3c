"""The cache tree, known here and nowhere else.

    <cache_root>/<dataset>/<modality>/<split>/part-NNNNN.{parquet,h5}  (rank r of a torchrun: part-rNNN-*)
                                             /manifest.json, errors.jsonl
    <cache_root>/runs/<run name>/...                                    (runs live beside the cache they read)

Other code asks this module for a path or a listing instead of joining the parts itself, so the tree can change
in one place. Directories whose name starts with "." are an unfinished import's temp directories: never listed.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"  # the inputs extraction skipped, beside the manifest
RUNS = "runs"


def cache_dir(root: str | Path, dataset: str, modality: str, split: str) -> Path:
    """root/dataset/modality/split."""
    return Path(root) / dataset / modality / split


def manifest_path(root: str | Path, dataset: str, modality: str, split: str) -> Path:
    """The manifest of one (dataset, modality, split); it exists once the cache has been started."""
    return cache_dir(root, dataset, modality, split) / MANIFEST


def manifest_in(directory: str | Path) -> Path:
    """The manifest of the cache in `directory`."""
    return Path(directory) / MANIFEST


def runs_root(cache_root: str | Path) -> Path:
    """Where runs trained on `cache_root` go by default."""
    return Path(cache_root) / RUNS


def _subdirs(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def cached_datasets(cache_root: str | Path) -> list[str]:
    """Dataset directories under the cache root (runs/ excluded)."""
    return [name for name in _subdirs(Path(cache_root)) if name != RUNS]


def cached_modalities(cache_root: str | Path, dataset: str) -> list[str]:
    """Modality directories cached for one dataset."""
    return _subdirs(Path(cache_root) / dataset)


def parts_of(directory: str | Path) -> tuple[str, str, str]:
    """(dataset, modality, split) a cache directory stands for, read from its last three path parts."""
    return tuple((["", "", ""] + list(Path(directory).resolve().parts))[-3:])  # type: ignore[return-value]
