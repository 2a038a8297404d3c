"""`extract --precision`: fp32 keeps the fingerprint every CPU cache had, other precisions are other caches, a bad
value is one line; bf16 autocast leaves retrieval on planted near-duplicate images unchanged (within 0.2 points)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import sys
from pathlib import Path

import pytest

from pcmpipe.backbones import create_backbone
from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError
from pcmpipe.extract import precision as arithmetic

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import precision as precision_bench  # noqa: E402
from extraction import extract  # noqa: E402

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}


def test_precision_is_in_the_fingerprint_and_fp32_is_the_old_one(tmp_path, one_thread):
    root = tmp_path / "flickr"
    synth("flickr8k", root, images=3, seed=1)
    kw = dict(modalities=["T"], splits=["train"], backbones=TINY, weights=RANDOM, workers=0, device="cpu")
    first = extract("flickr8k", root, cache_root=tmp_path / "c", **kw)  # the default on CPU
    reader = open_cache(cache_dir(tmp_path / "c", "flickr8k", "T", "train"))
    assert reader.meta["precision"] == "float32"  # what caches recorded before --precision existed
    assert first.parts[0].status == "new"
    again = extract("flickr8k", root, cache_root=tmp_path / "c", precision="fp32", **kw)
    assert again.parts[0].status == "cached"  # fp32 is the default's fingerprint
    with pytest.raises(UserError, match="built with other settings|--overwrite"):
        extract("flickr8k", root, cache_root=tmp_path / "c", precision="bf16", **kw)
    bf16 = extract("flickr8k", root, cache_root=tmp_path / "b", precision="bf16", **kw)
    assert bf16.parts[0].status == "new"
    assert open_cache(cache_dir(tmp_path / "b", "flickr8k", "T", "train")).meta["precision"] == "autocast-bf16"
    with pytest.raises(UserError, match="precision .fp8.; valid choices|--precision must be one of") as e:
        extract("flickr8k", root, cache_root=tmp_path / "x", precision="fp8", **kw)
    assert "\n" not in str(e.value)


def test_defaults_per_device():
    cpu = create_backbone("clip-tiny-text", weights="random:0")
    assert arithmetic.of(cpu) == "fp32" and arithmetic.label(cpu) == "float32"
    import torch

    assert arithmetic.resolve(None, torch.device("cuda")) == "fp16"
    assert arithmetic.resolve("auto", torch.device("cpu")) == "fp32"


def test_bf16_autocast_keeps_retrieval_on_planted_pairs(tmp_path, one_thread):
    bb = create_backbone("clip-tiny-image", weights="random:0")
    res = precision_bench.compare_precisions(bb, precision_bench.planted_pairs(tmp_path, 24))
    assert res["min_cosine"] > 0.999, res  # bf16 keeps 8 mantissa bits; the features stay within 0.1 % in angle
    assert 20.0 < res["r1_fp32"] < 100.0, res  # the planted task is neither trivial nor hopeless here
    assert abs(res["r1_bf16"] - res["r1_fp32"]) <= 0.2, res


@pytest.mark.parametrize("name", ["clip-tiny-image", "clip-tiny-text", "hubert-tiny"])
def test_every_backbone_encodes_in_every_precision(name, one_thread):
    import numpy as np
    import torch

    from pcmpipe.extract.sources import encode

    bb = create_backbone(name, weights="random:0")
    rng = np.random.default_rng(0)
    if bb.modality_kind == "audio":
        x = bb.preprocess([(0.1 * rng.standard_normal(32_000)).astype(np.float32) for _ in range(3)])
    elif bb.modality_kind == "text":
        x = bb.preprocess(["a dog runs on the grass", "two people sit on a bench"])
    else:
        x = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    ref = None
    for p in ("fp32", "bf16", "fp16"):
        arithmetic.prepare(bb, p)
        f = encode(bb, x)
        assert f.dtype == np.float32 and np.isfinite(f).all()
        ref = f if ref is None else ref
        assert np.abs(f - ref).max() <= 0.02 * np.abs(ref).max(), (p, np.abs(f - ref).max())
