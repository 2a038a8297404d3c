"""Memory of a training run's set-up: standardisation moments and the finiteness check go chunk by chunk, and
the training modules do not import the encoders' libraries (docs/performance.md, stage-two memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmpipe.samples import CacheInfo, ModalityData, moments
from pcmpipe.training.evaluate import non_finite
from tests.fresh_imports import loaded_after


def _modality(x: torch.Tensor) -> ModalityData:
    return ModalityData("S", "caption_id", {}, x, "fp", "dir")


def test_moments_equal_the_float64_formula_from_bounded_chunks(one_thread):
    torch.manual_seed(0)
    x = (torch.randn(3000, 13, 40) * 3 + 1).half()
    d = _modality(x)
    asked: list[int] = []
    chunks = d.chunks

    def spy(rows: int):
        asked.append(rows)
        return chunks(rows)

    d.chunks = spy  # type: ignore[method-assign]
    mean, std = moments(d, with_scale=True)
    full = x.double()
    assert torch.equal(mean, full.mean(dim=0).float())
    assert std is not None and torch.equal(std, full.std(dim=0).clamp_min(1e-6).float())
    # about 32 MB of float64 at a time, not the whole split: 2**22 values a chunk
    assert asked and all(rows * 13 * 40 <= 1 << 22 for rows in asked)
    assert moments(d, with_scale=False)[1] is None


def test_streamed_moments_read_bounded_chunks_and_equal_the_in_memory_ones(tmp_path, monkeypatch, one_thread):
    """A streamed split's moments: the same function over chunks decoded from the cache (65,536-row chunks were its
    largest transient at 3 x 10^6 rows), cut where the in-memory tensor is sliced, so both modes give the same bits."""
    from pcmpipe.cache import ShardWriter, open_cache
    from pcmpipe.cache.reader import CacheReader

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 13, 40)) * 3 + 1).astype(np.float16)
    meta = {"backbone": "random", "dataset": "d", "split": "train"}
    with ShardWriter(
        tmp_path, features={"feat": ((13, 40), "float16")}, key="id", links=[], meta=meta, rows_per_shard=1000
    ) as w:
        w.add([f"r{i}" for i in range(len(x))], {}, {"feat": x})
    asked: list[int] = []
    iter_feature = CacheReader.iter_feature

    def spy(self, name: str, rows: int):
        asked.append(rows)
        return iter_feature(self, name, rows)

    monkeypatch.setattr(CacheReader, "iter_feature", spy)
    fp = open_cache(tmp_path).fingerprint
    streamed = moments(CacheInfo("S", (13, 40), 3000, fp, str(tmp_path), feature="feat"), with_scale=True)
    held = moments(_modality(torch.from_numpy(x)), with_scale=True)
    assert torch.equal(streamed[0], held[0]) and streamed[1] is not None and torch.equal(streamed[1], held[1])
    full = torch.from_numpy(x).double()
    assert torch.equal(streamed[0], full.mean(dim=0).float())
    assert asked and all(rows * 13 * 40 <= 1 << 22 for rows in asked)  # about 16 MB of float32 at a time


def test_moments_of_features_on_a_gpu_stay_there(one_thread):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    x = torch.randn(500, 7, dtype=torch.float16)
    mean, std = moments(_modality(x.cuda()), with_scale=True)
    assert mean.device.type == "cuda" and std is not None
    assert torch.equal(mean.cpu(), moments(_modality(x), with_scale=True)[0])


def test_finiteness_check_reads_bounded_chunks(monkeypatch, one_thread):
    width = 13 * 768
    x = torch.zeros(1200, width, dtype=torch.float16)
    seen: list[int] = []
    isfinite = torch.isfinite

    def spy(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[0])
        return isfinite(t)

    monkeypatch.setattr(torch, "isfinite", spy)
    assert non_finite({"S": _modality(x)}) == []
    assert max(seen) <= (1 << 22) // width < 4096  # rows of at most ~16 MB of float32, not 4,096 rows
    x[700, 3] = float("inf")
    assert non_finite({"S": _modality(x)}) == ["S"]


def test_training_does_not_import_the_encoder_stack():
    """open_clip and transformers cost a training run 0.25 GiB resident: only extraction needs them."""
    modules = "pcmpipe.training.stage2, pcmpipe.training.state, pcmpipe.training.rundir"
    assert loaded_after(modules, ("open_clip", "transformers", "torchvision")) == []
