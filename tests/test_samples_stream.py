"""Streamed training samples (pcmpipe.samples.stream) against the in-memory join, the seeded order and its resume,
shards per rank, the automatic choice by the memory budget, and fp16 features kept in half precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic_cache import write_modality, write_synthetic_cache

from pcmpipe.cache import ShardWriter, open_cache
from pcmpipe.cache.layout import manifests_under
from pcmpipe.config import TrainConfig, config_fingerprint
from pcmpipe.samples import StreamedSplit, load_split, resolve_stream
from pcmpipe.training.stage2 import train

pytestmark = pytest.mark.usefixtures("one_thread")
MODS = ["I", "T", "S", "C"]


def to_float16(root, dataset: str = "synth") -> None:
    """Rewrite every cache under root/dataset as float16 through the real writer (same ids, rows, shards)."""
    for manifest in manifests_under(root / dataset):
        directory = manifest.parent
        reader = open_cache(directory)
        columns, feats = reader.read()
        out = directory.with_name(directory.name + "16")
        spec = {n: (reader.shapes[n], "float16") for n in feats}
        with ShardWriter(out, features=spec, key=reader.key, links=reader.links, meta=reader.meta) as w:
            w.add(list(columns["id"]), {c: list(columns[c]) for c in reader.links}, feats)
        directory.rename(directory.with_name(directory.name + ".fp32"))
        out.rename(directory)


@pytest.fixture(scope="module")
def cache(planted_cache):
    return planted_cache(drop_speech=0.3, with_class_modality=True)


@pytest.fixture(scope="module")
def hdf5_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_synthetic_cache(root, drop_speech=0.3, with_class_modality=True, fmt="hdf5")
    return root


def _epoch(split, epoch=1, batch=32, start=0):
    return list(split.epoch_batches(epoch, split.steps(batch), batch, None, start_step=start))


def _same(a, b) -> bool:
    """The same inputs and masks, and the same samples sharing a cached row (what PCMR's shared target sees)."""
    return len(a) == len(b) and all(
        torch.equal(xa[m], xb[m])
        and torch.equal(pa[m], pb[m])
        and torch.equal(_shares(ra[m], pa[m]), _shares(rb[m], pb[m]))
        for (xa, pa, ra), (xb, pb, rb) in zip(a, b)
        for m in xa
    )


def _shares(rows, present):
    both = present[:, None] & present[None, :]
    return (rows[:, None] == rows[None, :]) & both


@pytest.mark.parametrize(
    ("fmt", "resident"), [("parquet", 0), ("parquet", 1 << 30), ("hdf5", 0)]
)  # looked-up modalities spilled to a file, or in memory
def test_unshuffled_stream_gives_the_in_memory_batches(cache, hdf5_cache, fmt, resident):
    cache = hdf5_cache if fmt == "hdf5" else cache
    memory = load_split(cache, "synth", MODS, "train")
    memory.shuffle = False
    stream = StreamedSplit(cache, "synth", MODS, "train", shuffle=False, buffer_rows=100, resident_bytes=resident)
    assert (len(stream), stream.base, stream.complete()) == (len(memory), memory.base, memory.complete())
    assert (stream.stores["I"]._mem is None) == (resident == 0)
    assert _same(_epoch(memory), _epoch(stream))


def test_samples_only_in_a_second_base_modality_are_streamed_too(tmp_path):
    ids = [f"img{i}#0" for i in range(6)]
    imgs = [f"img{i}" for i in range(6)]
    feats = np.arange(6, dtype=np.float32)[:, None]
    write_modality(tmp_path, "d", "I", "train", key="image_id", links={}, ids=imgs, features=feats * np.ones((1, 2)))
    # written captions lack img4 and img5, spoken ones lack img0: both keyed by caption_id, 2 rows a shard
    t_links, s_links = {"image_id": imgs[:4]}, {"image_id": imgs[1:]}
    write_modality(tmp_path, "d", "T", "train", key="caption_id", links=t_links, ids=ids[:4], features=feats[:4] + 10,
                   rows_per_shard=2)  # fmt: skip
    write_modality(tmp_path, "d", "S", "train", key="caption_id", links=s_links, ids=ids[1:],
                   features=(feats[1:] + 20) * np.ones((1, 2)), rows_per_shard=2)  # fmt: skip
    memory = load_split(tmp_path, "d", ["I", "T", "S"], "train")
    memory.shuffle = False
    stream = StreamedSplit(tmp_path, "d", ["I", "T", "S"], "train", shuffle=False, buffer_rows=1)
    assert len(stream) == len(memory) == 6
    got = _epoch(stream, batch=2)
    assert _same(_epoch(memory, batch=2), got)
    assert torch.cat([p["T"] for _, p, _ in got]).tolist() == [True] * 4 + [False] * 2
    assert torch.cat([x["I"][:, 0] for x, _, _ in got]).tolist() == [0, 1, 2, 3, 4, 5]


def test_seeded_order_covers_each_sample_once_and_resumes_mid_epoch(cache):
    stream = StreamedSplit(cache, "synth", MODS, "train", seed=3, buffer_rows=100)
    first = _epoch(stream, epoch=1, batch=20)
    seen = torch.cat([x["T"].flatten(1) for x, _, _ in first])
    assert seen.shape[0] == len(stream) == 480 and torch.unique(seen, dim=0).shape[0] == 480  # every sample once
    plain = torch.cat([x["T"].flatten(1) for x, _, _ in _epoch(StreamedSplit(cache, "synth", MODS, "train",
                                                                           shuffle=False), batch=20)])  # fmt: skip
    assert not torch.equal(seen, plain)  # shuffled
    assert _same(first, _epoch(StreamedSplit(cache, "synth", MODS, "train", seed=3, buffer_rows=100), batch=20))
    assert not _same(first, _epoch(stream, epoch=2, batch=20))  # another order each epoch
    for start in (5, 13):  # inside the second window, and inside the last one
        assert _same(first[start:], _epoch(stream, epoch=1, batch=20, start=start))


def test_each_rank_reads_its_own_shards(cache):
    ranks = [StreamedSplit(cache, "synth", MODS, "train", rank=r, world=2, buffer_rows=100) for r in (0, 1)]
    files = [{u.shard.file for u in s.mine} for s in ranks]
    assert files[0] and files[1] and not files[0] & files[1]
    steps = ranks[0].steps(32)
    assert steps == ranks[1].steps(32) == min(sum(u.rows for u in s.mine) // 16 for s in ranks)
    rows = [torch.cat([x["T"].flatten(1) for x, _, _ in s.epoch_batches(1, steps, 32)]) for s in ranks]
    assert rows[0].shape[0] == rows[1].shape[0] == steps * 16
    assert torch.unique(torch.cat(rows), dim=0).shape[0] == 2 * steps * 16  # no sample on both ranks


def _cfg(cache, tmp_path, **kw):
    base = dict(dataset="synth", modalities="I,T,S,C", cache_root=str(cache), runs_root=str(tmp_path / "runs"),
                epochs=2, patience=2, batch_size=32, lr=2e-3, dim=32, progress=False, shuffle=False)  # fmt: skip
    return TrainConfig.from_dict({**base, **kw})


def _results(run):
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r["val"]) for r in lines], json.loads((run / "test_metrics.json").read_text())


def test_streamed_training_equals_in_memory_training_without_shuffling(cache, tmp_path):
    memory = train(_cfg(cache, tmp_path, name="memory"))
    streamed = train(_cfg(cache, tmp_path, name="streamed", stream=True, shuffle_buffer=64, memory_budget_mb=1e-4))
    assert _results(memory) == _results(streamed)
    recorded = [json.loads((r / "config.json").read_text()) for r in (memory, streamed)]
    assert recorded[0]["config"]["stream"] is None and recorded[1]["config"]["stream"] is True
    assert recorded[0]["fingerprint"] != recorded[1]["fingerprint"]  # the order of a shuffled run would differ


def test_the_memory_budget_picks_streaming_and_leaves_in_memory_fingerprints_alone(cache, tmp_path):
    cfg = _cfg(cache, tmp_path, shuffle=True)
    assert resolve_stream(cfg).stream is None  # the split fits in the default budget
    assert config_fingerprint(resolve_stream(cfg)) == config_fingerprint(cfg)
    small = resolve_stream(cfg.model_copy(update={"memory_budget_mb": 0.01}))
    assert small.stream is True and config_fingerprint(small) != config_fingerprint(cfg)
    assert resolve_stream(cfg.model_copy(update={"memory_budget_mb": 0.01, "stream": False})).stream is None


def test_fp16_cache_stays_half_in_memory_and_batches_are_float32(tmp_path):
    write_synthetic_cache(tmp_path, drop_speech=0.3, with_class_modality=True)
    to_float16(tmp_path)
    half = load_split(tmp_path, "synth", MODS, "train", half=True)
    full = load_split(tmp_path, "synth", MODS, "train")
    assert {d.resident().dtype for d in half.modalities.values()} == {torch.float16}
    assert {d.resident().dtype for d in full.modalities.values()} == {torch.float32}
    rows = torch.arange(0, 480, 7)
    (xh, ph), (xf, pf) = half.batch(rows, out=half.buffers(len(rows))), full.batch(rows)
    assert all(torch.equal(ph[m], pf[m]) for m in MODS)
    assert all(xh[m].dtype == torch.float32 and torch.equal(xh[m], xf[m]) for m in MODS)
    assert all(torch.equal(c, f) for c, f in zip(half.modalities["S"].chunks(50), full.modalities["S"].chunks(50)))
    stream = StreamedSplit(tmp_path, "synth", MODS, "train", shuffle=False, buffer_rows=64)
    half.shuffle = False
    assert _same(_epoch(half), _epoch(stream))


@pytest.mark.parametrize("mode", [{"stream": False}, {"memory_budget_mb": 0.01}])  # forced in memory; auto-streamed
def test_a_pipeline_finds_its_run_done_whatever_the_loading_mode(cache, tmp_path, mode):
    """The planner's fingerprint of a run is the one the trainer records: with `stream` resolved as training
    resolves it, so neither `stream: false` nor a mode the budget chose makes a finished run look missing."""
    from pcmpipe.pipelines.plan import run_is_done
    from pcmpipe.pipelines.spec import RunSpec

    cfg = _cfg(cache, tmp_path, name="r", epochs=1, **mode)
    spec = RunSpec("r", cfg)
    assert not run_is_done(spec)
    train(cfg)
    assert run_is_done(spec)
