"""Planted Flickr8k-shaped caches (I per image, T and S per caption) whose raw features share a common direction.

The PCMR target of Eq. 7 is sensitive to the geometry of the raw features: real backbone features (mean-pooled
HuBERT layers above all) are anisotropic, so distinct samples have cosines close to 1. These caches plant that
geometry on purpose, with retrieval structure the heads can learn:

- each image has a latent z (16-d); each of its captions the latent z + a caption-specific perturbation;
- every modality sees its latents through its OWN fixed random nonlinear map plus noise (I 32-d, T 24-d,
  S 3 x 16 with an uninformative first layer), so raw features do not align across modalities;
- each row is then L2-normalised and a component `b * c_m` shared by every row of modality m is added, with
  b^2 = rho / (1 - rho): the mean off-diagonal raw cosine is then about `rho` (0.00, 0.985, 0.9975 below).

Used by benchmarks/pcmr_target.py (the issue's sizes) and tests/training/test_planted_geometry.py (small ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATASET = "planted"
SHAPES = {"I": (32,), "T": (24,), "S": (3, 16)}


def _view(rng: np.random.Generator, latent: int, out: int):
    a = rng.standard_normal((latent, 2 * out)) / np.sqrt(latent)
    b = rng.standard_normal((2 * out, out)) / np.sqrt(2 * out)
    return lambda x: np.tanh(2.0 * x @ a) @ b


def _shared(x: np.ndarray, direction: np.ndarray, cosine: float) -> np.ndarray:
    """Rows of x normalised, plus the common `direction` scaled so off-diagonal cosines average about `cosine`."""
    flat = x.reshape(x.shape[0], -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    weight = np.sqrt(cosine / (1.0 - cosine))
    return (flat + weight * direction[None, :]).reshape(x.shape).astype(np.float32)


def write_planted_cache(
    root: str | Path,
    cosine: float,
    *,
    images: dict[str, int],
    captions: int = 5,
    latent: int = 16,
    noise: float = 0.15,
    seed: int = 0,
) -> dict[str, float]:
    """Write I, T, S caches for every split of `images` under root/planted; return the measured mean
    off-diagonal raw cosine per modality on the train split."""
    from pcmpipe.cache import ShardWriter, cache_dir

    rng = np.random.default_rng(seed)
    views = {"I": _view(rng, latent, 32), "T": _view(rng, latent, 24)}
    views.update({f"S{k}": _view(rng, latent, 16) for k in (1, 2)})
    directions = {}
    for m, shape in SHAPES.items():
        d = rng.standard_normal(int(np.prod(shape)))
        directions[m] = d / np.linalg.norm(d)
    measured: dict[str, float] = {}
    for split, n_img in images.items():
        z = rng.standard_normal((n_img, latent))
        img_ids = [f"{split}{i:05d}" for i in range(n_img)]
        owner = np.repeat(np.arange(n_img), captions)
        z_cap = z[owner] + 0.35 * rng.standard_normal((len(owner), latent))
        cap_ids = [f"{img_ids[o]}#{k}" for o, k in zip(owner, np.tile(np.arange(captions), n_img))]
        n_cap = len(cap_ids)
        raw = {
            "I": views["I"](z) + noise * rng.standard_normal((n_img, 32)),
            "T": views["T"](z_cap) + noise * rng.standard_normal((n_cap, 24)),
            "S": np.stack(
                [
                    rng.standard_normal((n_cap, 16)),
                    views["S1"](z_cap) + noise * rng.standard_normal((n_cap, 16)),
                    views["S2"](z_cap) + noise * rng.standard_normal((n_cap, 16)),
                ],
                axis=1,
            ),
        }
        for m, x in raw.items():
            feats = _shared(x, directions[m], cosine)
            ids, key, links = (
                (img_ids, "image_id", {})
                if m == "I"
                else (cap_ids, "caption_id", {"image_id": [img_ids[o] for o in owner]})
            )
            with ShardWriter(
                cache_dir(root, DATASET, m, split),
                features={"feat": (SHAPES[m], "float32")},
                key=key,
                links=list(links),
                meta={"backbone": "planted", "dataset": DATASET, "split": split, "cosine": cosine},
            ) as w:
                w.add(ids, links, {"feat": feats})
            if split == "train":
                flat = feats.reshape(len(ids), -1)[:1000].astype(np.float64)
                flat /= np.linalg.norm(flat, axis=1, keepdims=True)
                cos = flat @ flat.T
                n = cos.shape[0]
                measured[m] = float((cos.sum() - np.trace(cos)) / (n * (n - 1)))
    return measured
