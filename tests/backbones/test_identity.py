"""`same_encoder`: the one answer to "same backbone and weights" (pcmpipe/backbones/README.md, Same encoder)."""

from __future__ import annotations

from pcmpipe.backbones.identity import same_encoder

CACHE = {
    "backbone": "clip-tiny-image",
    "architecture": {"name": "clip-tiny"},
    "weights": "random:0",
    "weights_sha256": "a" * 64,
    "preprocess": {"size": 64},
    "split": "train",
}


def test_same_encoder_decides_by_checksum_then_by_label():
    assert same_encoder(CACHE, {**CACHE, "split": "val"})  # the split is the cache's, not the encoder's
    # the same tensors loaded from a checkpoint file: the checksum decides, not the label
    assert same_encoder(CACHE, {**CACHE, "weights": "checkpoint"})
    assert not same_encoder(CACHE, {**CACHE, "weights_sha256": "b" * 64})
    assert not same_encoder(CACHE, {**CACHE, "backbone": "clip-vit-b32-image"})
    assert not same_encoder(CACHE, {**CACHE, "preprocess": {"size": 224}})
    # a run's record and a plan name no architecture or preprocessing; a plan has no checksum: the label decides
    run = {"backbone": "clip-tiny-image", "weights": "random:5", "weights_sha256": "a" * 64}
    assert same_encoder(run, CACHE)
    plan = {"backbone": "clip-tiny-image", "weights": "random:0"}
    assert same_encoder(plan, CACHE) and not same_encoder({**plan, "weights": "random:1"}, CACHE)
    # features no backbone made (imported vectors) match each other, never an encoder's
    assert same_encoder({"source": "import-features"}, {"source": "import-features", "split": "val"})
    assert not same_encoder({"source": "import-features"}, CACHE)
