"""One small real run for the tests of pcmpipe.runs: synthetic Flickr8k files, tiny random-weight CLIP towers."""

from __future__ import annotations

import pytest
from trained_run import TINY, extract_and_train

from pcmpipe.datasets.synthetic import synth

__all__ = ["TINY", "extract_and_train"]


@pytest.fixture(scope="package")
def make_run():
    """`extract_and_train`, for the test modules that need a run of other modalities."""
    return extract_and_train


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> dict:
    """{"data", "cache", "run"}: the Flickr8k layout, its I/T caches and a finished two-epoch run on them."""
    root = tmp_path_factory.mktemp("use")
    data, cache = root / "flickr8k", root / "cache"
    synth("flickr8k", data, images=12, seed=3)  # 8 / 2 / 2 images, 5 captions each
    run = extract_and_train(data, cache, ["I", "T"], TINY, epochs=2, name="walk")
    return {"data": data, "cache": cache, "run": run}
