"""A row of the run by its id, in whichever split the run has it: the stored embedding of its test split, or the
cached features of another split (train, val) through the modality's head.

A run stores embeddings for its test split only, so `pcmpipe search --query-id` with a training caption's id
used to say "no row". The caches the run was trained on (config.json `caches[split][modality]`) hold every
split's backbone features: the row is read from there and projected by the head, which gives exactly the
embedding the run would have stored for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURE = "features"  # the feature extraction writes (pcmpipe.extract.plan.FEATURE)


def splits_of(run_dir: str | Path, modality: str) -> dict[str, Path]:
    """split -> cache directory the run read for `modality` (recorded, existing); none for an export."""
    from pcmpipe.training.rundir.record import ExportRecord, read_record

    record = read_record(run_dir)
    if isinstance(record, ExportRecord):
        return {}
    out = {}
    for split, caches in record.caches.items():
        entry = caches.get(modality)
        if entry is not None and entry.path and Path(entry.path).is_dir():
            out[split] = Path(entry.path)
    return out


def cached_row(run_dir: str | Path, modality: str, row_id: str, skip: str) -> tuple[str, np.ndarray] | None:
    """(split, backbone features [1, *shape]) of `row_id` in a cached split of the run other than `skip`."""
    from pcmpipe.cache import open_cache

    for split, directory in sorted(splits_of(run_dir, modality).items()):
        if split == skip:
            continue
        reader = open_cache(directory)
        if FEATURE not in reader.feature_names:
            continue
        cols, feats = reader.read([FEATURE])
        hit = np.flatnonzero(np.asarray(cols["id"], dtype=str) == str(row_id))
        if hit.size:
            return split, feats[FEATURE][hit[:1]].astype(np.float32)
    return None


def row_embedding(run_dir: str | Path, modality: str, row_id: str, test_split: str) -> tuple[str, np.ndarray] | None:
    """(split, embedding [1, dim]) of a row the run has in a cached split other than its stored test one, or
    None when no split has it."""
    found = cached_row(run_dir, modality, row_id, test_split)
    if found is None:
        return None
    from pcmpipe.runs import load_run

    split, features = found
    return split, load_run(run_dir).project(modality, features)
