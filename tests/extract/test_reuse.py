"""Reuse is fingerprint- and listing-checked: `extract` says "cached" only for the cache it would write now.

Items added to the dataset, a bit-flipped shard or a deleted .errors.jsonl make a split stale (rebuilt, never
"cached"); other weights are refused; `plan_split` answers the same question for planners; a run refuses splits
of one modality made by different weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import numpy as np
import pytest
from extraction import extract
from synthetic_cache import write_modality, write_synthetic_cache

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import errors_in
from pcmpipe.config import ExtractConfig, TrainConfig
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError
from pcmpipe.extract import plan_split

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text"}
KW = dict(backbones=TINY, weights={"image": "random:0", "text": "random:0"}, workers=0, batch_size=4, device="cpu")


def _extract(root, cache, **kw):
    return extract("flickr8k", root, modalities=["I"], splits=["train"], cache_root=cache, **{**KW, **kw})


def _plan(root, cache, weights="random:0"):
    settings = {"dataset": "flickr8k", "root": root, "cache_root": cache, "device": "cpu"}
    cfg = ExtractConfig.from_dict({**settings, "backbones": {"I": "clip-tiny-image"}, "weights": {"I": weights}})
    return plan_split(cfg, "I", "train")


def test_added_items_damage_and_other_weights_are_never_cached(tmp_path):
    root, cache = tmp_path / "flickr8k", tmp_path / "cache"
    synth("flickr8k", root, images=6, seed=1)  # 4 train images
    listing = root / "Flickr_8k.trainImages.txt"
    full = listing.read_text()
    listing.write_text("".join(full.splitlines(keepends=True)[:3]))  # the dataset before one image was added
    assert _plan(root, cache).status == "new"
    assert _extract(root, cache).parts[0].rows == 3
    assert _plan(root, cache).status == "cached"
    assert _extract(root, cache).parts[0].status == "cached"

    listing.write_text(full)  # an image added: the old cache covers 3 of the 4
    plan = _plan(root, cache)
    assert (plan.status, plan.action) == ("stale", "rebuild") and "dataset changed" in plan.reason
    part = _extract(root, cache).parts[0]
    assert (part.status, part.rows, part.new_rows) == ("rebuilt", 4, 4) and "dataset changed" in part.reason
    reference = open_cache(cache_dir(cache, "flickr8k", "I", "train")).read()

    shard = next(cache_dir(cache, "flickr8k", "I", "train").glob("part-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit flipped inside a feature page: same size, same row count
    shard.write_bytes(bytes(data))
    plan = _plan(root, cache)
    assert (plan.status, plan.action) == ("stale", "rebuild") and shard.name in plan.reason and "sha256" in plan.reason
    part = _extract(root, cache).parts[0]
    assert part.status == "rebuilt" and shard.name in part.reason
    cols, feats = open_cache(cache_dir(cache, "flickr8k", "I", "train")).read()
    assert cols["id"].tolist() == reference[0]["id"].tolist()
    np.testing.assert_array_equal(feats["features"], reference[1]["features"])

    errors_in(cache_dir(cache, "flickr8k", "I", "train")).unlink()  # its skip count would read 0
    assert ".errors.jsonl" in _plan(root, cache).reason
    assert _extract(root, cache).parts[0].status == "rebuilt"

    plan = _plan(root, cache, weights="random:1")
    assert (plan.status, plan.action) == ("stale", "refuse") and "meta.weights" in plan.reason
    with pytest.raises(UserError, match="--overwrite"):
        _extract(root, cache, weights={"image": "random:1"})


def test_a_run_refuses_splits_of_one_modality_from_different_weights(tmp_path):
    write_synthetic_cache(tmp_path, images={"train": 12, "val": 4, "test": 4})
    val = cache_dir(tmp_path, "synth", "I", "val")
    cols, feats = open_cache(val).read()
    shutil.rmtree(val)  # the same features, recorded as made by other weights
    write_modality(
        tmp_path,
        "synth",
        "I",
        "val",
        key="image_id",
        links={"class_id": cols["class_id"].tolist()},
        ids=cols["id"].tolist(),
        features=feats["feat"],
        meta={"weights": "random:1"},
    )
    from pcmpipe.training.stage2 import train

    cfg = TrainConfig.from_dict(
        {"dataset": "synth", "modalities": "I,T", "cache_root": str(tmp_path), "epochs": 1, "progress": False}
    )
    with pytest.raises(UserError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "train was built by synthetic" in msg and "val by synthetic random:1" in msg
    assert str(Path(val)) in msg
