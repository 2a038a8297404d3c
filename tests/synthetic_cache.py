"""Write a feature cache with PLANTED cross-modal structure, through the real ShardWriter.

Layout mirrors Flickr8k (I per image, T and S per caption) plus classes (CUB-like `class_id` links and an
optional per-class modality C), so trainers, evaluation, report and zero-shot code can be tested end to end.

Generative story (seeded):
- each class has a centre in a latent space of size `latent`; an image latent is its class centre plus an
  individual part, so retrieval works at both instance and class level;
- a caption latent is its image latent plus a caption-specific perturbation (captions of one image differ);
- every modality sees its latent through its OWN random nonlinear map plus noise:
  I: 32-d, T: 24-d, S: [3, 16] (layer 0 is pure noise, layers 1-2 carry the caption latent, so learned layer
  weights matter), C: 20-d view of the class centre.
Raw features therefore do not align across modalities (different maps, different sizes): untrained heads are
near chance and only learned heads can coordinate them.

Use: `write_synthetic_cache(tmp_path / "cache")` -> dict with the dataset name, modalities, counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcmpipe.cache import ShardWriter, cache_dir

SPLITS = {"train": 160, "val": 40, "test": 40}  # images per split


def _view(rng: np.random.Generator, latent: int, out: int):
    """A fixed random nonlinear map latent -> out: tanh(x A) B."""
    a = rng.standard_normal((latent, 2 * out)) / np.sqrt(latent)
    b = rng.standard_normal((2 * out, out)) / np.sqrt(2 * out)
    return lambda x: np.tanh(2.0 * x @ a) @ b


def write_modality(
    root: Path,
    dataset: str,
    modality: str,
    split: str,
    *,
    key: str,
    links: dict[str, list[str]],
    ids: list[str],
    features: np.ndarray,
    fmt: str = "parquet",
    meta: dict | None = None,
    rows_per_shard: int = 256,
) -> Path:
    """Write one (dataset, modality, split) cache with the real writer; returns its directory."""
    directory = cache_dir(root, dataset, modality, split)
    spec = {"feat": (tuple(features.shape[1:]), "float32")}
    meta = {"backbone": "synthetic", "dataset": dataset, "split": split, "modality": modality, **(meta or {})}
    with ShardWriter(
        directory, features=spec, key=key, links=list(links), meta=meta, fmt=fmt, rows_per_shard=rows_per_shard
    ) as w:
        w.add(ids, links, {"feat": features.astype(np.float32)})
    return directory


def write_synthetic_cache(
    root: str | Path,
    dataset: str = "synth",
    *,
    seed: int = 0,
    images: dict[str, int] | None = None,
    captions_per_image: int = 3,
    classes: int = 8,
    latent: int = 8,
    noise: float = 0.15,
    drop_speech: float = 0.0,
    with_class_modality: bool = False,
    fmt: str = "parquet",
    rows_per_shard: int = 256,
) -> dict:
    """Write I, T, S (and C) caches for train/val/test under root/dataset; return a summary dict.

    drop_speech: fraction of spoken captions left out of S (missing-modality training).
    rows_per_shard: shard size of every cache (streamed training reads and assigns whole shards).
    """
    root = Path(root)
    shard = {"fmt": fmt, "rows_per_shard": rows_per_shard}
    images = images or SPLITS
    rng = np.random.default_rng(seed)
    views = {
        "I": _view(rng, latent, 32),
        "T": _view(rng, latent, 24),
        "C": _view(rng, latent, 20),
        "S1": _view(rng, latent, 16),
        "S2": _view(rng, latent, 16),
    }
    centres = rng.standard_normal((classes, latent))
    summary = {"dataset": dataset, "modalities": ["I", "T", "S"] + (["C"] if with_class_modality else []), "rows": {}}
    for split, n_img in images.items():
        # Disjoint ids per split; classes shared across splits (class-level eval still meaningful per split).
        cls = rng.integers(0, classes, size=n_img)
        z_img = 0.8 * centres[cls] + 0.6 * rng.standard_normal((n_img, latent))
        img_ids = [f"{split}{i:05d}" for i in range(n_img)]
        cls_ids = [str(c) for c in cls]
        x_i = views["I"](z_img) + noise * rng.standard_normal((n_img, 32))
        write_modality(
            root, dataset, "I", split, key="image_id", links={"class_id": cls_ids}, ids=img_ids, features=x_i, **shard
        )

        n_cap = n_img * captions_per_image
        owner = np.repeat(np.arange(n_img), captions_per_image)
        z_cap = z_img[owner] + 0.35 * rng.standard_normal((n_cap, latent))
        cap_ids = [f"{img_ids[o]}#{k}" for o, k in zip(owner, np.tile(np.arange(captions_per_image), n_img))]
        cap_links = {"image_id": [img_ids[o] for o in owner], "class_id": [cls_ids[o] for o in owner]}
        x_t = views["T"](z_cap) + noise * rng.standard_normal((n_cap, 24))
        write_modality(root, dataset, "T", split, key="caption_id", links=cap_links, ids=cap_ids, features=x_t, **shard)

        x_s = np.stack(
            [
                rng.standard_normal((n_cap, 16)),  # an uninformative layer
                views["S1"](z_cap) + noise * rng.standard_normal((n_cap, 16)),
                views["S2"](z_cap) + noise * rng.standard_normal((n_cap, 16)),
            ],
            axis=1,
        )
        keep = np.ones(n_cap, dtype=bool)
        if drop_speech > 0:
            keep[rng.permutation(n_cap)[: int(round(drop_speech * n_cap))]] = False
        write_modality(
            root,
            dataset,
            "S",
            split,
            key="caption_id",
            links={k: [v for v, ok in zip(vals, keep) if ok] for k, vals in cap_links.items()},
            ids=[c for c, ok in zip(cap_ids, keep) if ok],
            features=x_s[keep],
            **shard,
        )
        summary["rows"][split] = {"I": n_img, "T": n_cap, "S": int(keep.sum())}

        if with_class_modality:
            present = sorted(set(cls.tolist()))
            x_c = views["C"](centres[present]) + noise * rng.standard_normal((len(present), 20))
            write_modality(
                root,
                dataset,
                "C",
                split,
                key="class_id",
                links={},
                ids=[str(c) for c in present],
                features=x_c,
                **shard,
            )
            summary["rows"][split]["C"] = len(present)
    return summary
