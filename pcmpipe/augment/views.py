"""Augmented views for cached features (`pcmpipe extract --views K`): what each view is and how it is seeded.

The paper augments "in all cases" (timm for images, EDA for captions), but stage two trains on features cached
once. Extraction can therefore encode, beside each item's clean input (view 0), K augmented inputs (views 1..K)
with the very transforms fine-tuning draws from (`image_train_transform`, `EDA`); stage two then draws one of
the K + 1 views per sample per epoch. View v of item `id` is seeded by (seed, id, v) alone, so a re-run, a
resumed run, another batch size or another worker count encodes the same pixels and words.
Speech stays clean: the paper augments images and text only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pcmpipe.augment.image import sample_seed

VIEWS_FEATURE = "views"  # the cache feature holding views 1..K: [N, K, *shape]; `features` stays view 0
AUGMENTED_KINDS = ("image", "text")  # the backbone kinds extraction augments; speech and vectors stay clean


@dataclass(frozen=True)
class ViewSpec:
    """K augmented views per item; `seed` and `eda_alpha` (fine-tuning's default 0.1) fix them."""

    k: int
    seed: int = 0
    eda_alpha: float = 0.1

    def meta(self, kind: str) -> dict:
        """What the cache fingerprint records about the views of a `kind` backbone's items."""
        out: dict = {"views": self.k, "seed": self.seed}
        if kind == "image":
            # timm's create_transform(size, is_training=True) with CLIP's mean and std (pcmpipe.augment.image)
            out["transform"] = "timm create_transform(is_training=True), CLIP mean/std"
        else:
            out["transform"] = f"EDA, one operation per caption, alpha {self.eda_alpha:g}"
        return out


def image_view_transform(backbone_meta: dict):
    """timm's training transform at the image tower's input size (as fine-tuning builds it)."""
    from pcmpipe.augment.image import SeededImageTransform, image_train_transform

    size = backbone_meta.get("preprocess", {}).get("size", 224)
    return SeededImageTransform(image_train_transform(size[0] if isinstance(size, (list, tuple)) else int(size)))


def id_number(item_id: str) -> int:
    """A stable 63-bit number for an item id (no hash(): it changes with PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big") >> 1


def view_seed(seed: int, item_id: str, view: int) -> int:
    """The seed of view `view` (1..K) of item `item_id`."""
    return sample_seed(seed, view, id_number(item_id))
