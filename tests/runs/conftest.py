"""One small real run for the tests of pcmpipe.runs: synthetic Flickr8k files, tiny random-weight CLIP towers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcmpipe.config import TrainConfig
from pcmpipe.datasets.synthetic import synth
from pcmpipe.extract import extract
from pcmpipe.training.stage2 import train

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text"}
WEIGHTS = {"image": "random:0", "text": "random:0"}


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> dict:
    """{"data", "cache", "run"}: the Flickr8k layout, its I/T caches and a finished two-epoch run on them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("use")
    data, cache = root / "flickr8k", root / "cache"
    synth("flickr8k", data, images=12, seed=3)  # 8 / 2 / 2 images, 5 captions each
    extract(
        "flickr8k", data, modalities=["I", "T"], backbones=TINY, weights=WEIGHTS, device="cpu",
        workers=0, cache_root=cache,
    )  # fmt: skip
    cfg = TrainConfig.from_dict(
        dict(
            dataset="flickr8k", modalities="I,T", cache_root=str(cache), runs_root=str(cache / "runs"),
            epochs=2, batch_size=8, dim=32, progress=False, name="walk", device="cpu",
        )
    )  # fmt: skip
    run = train(cfg)
    torch.set_num_threads(before)
    return {"data": data, "cache": cache, "run": Path(run)}
