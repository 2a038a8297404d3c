"""`extract --views K`: augmented views of the train split's images and captions, seeded per (seed, id, view),
in the fingerprint only when K > 0; stage two draws one view per sample per epoch (in memory and streamed),
seeded by the run's seed and the epoch, and validation and test see the clean rows."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from extraction import extract

from pcmpipe.augment.views import ViewSpec, view_seed
from pcmpipe.cache import ShardWriter, cache_dir, open_cache
from pcmpipe.config import TrainConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.extract.plan import split_views
from pcmpipe.pipelines.plan import extraction_state
from pcmpipe.pipelines.spec import DataSpec
from pcmpipe.report.recipe import recipe_changes
from pcmpipe.report.results import load_runs
from pcmpipe.runs import load_run
from pcmpipe.runs.embed import embed_cache_to_cache
from pcmpipe.samples import StreamedSplit, load_split, load_training, resolve_stream
from pcmpipe.training.stage2 import train

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
K = 2


@pytest.fixture(scope="module")
def flickr(synth_dataset):
    return synth_dataset("flickr8k", images=6, seed=1)


def _extract(root, cache_root, **kw):
    opts = dict(modalities=["I", "T"], splits=["train", "val"], backbones=TINY, weights=RANDOM, workers=0)
    return extract("flickr8k", root, device="cpu", cache_root=cache_root, **{**opts, **kw})


def _read(cache_root, m, split="train"):
    reader = open_cache(cache_dir(cache_root, "flickr8k", m, split))
    columns, feats = reader.read()
    order = np.argsort(columns["id"])
    return reader, {n: f[order] for n, f in feats.items()}


@pytest.mark.slow  # five extractions, with and without augmented views
def test_views_are_extracted_seeded_and_fingerprinted_only_when_asked(flickr, tmp_path):
    _extract(flickr, tmp_path / "plain")
    _extract(flickr, tmp_path / "views", views=K)
    _extract(flickr, tmp_path / "again", views=K)
    for m in ("I", "T"):
        plain, clean = _read(tmp_path / "plain", m)
        reader, got = _read(tmp_path / "views", m)
        assert "augment" not in plain.meta and plain.feature_names == ["features"]
        assert reader.meta["augment"]["views"] == K and reader.fingerprint != plain.fingerprint
        assert got["views"].shape == (*clean["features"].shape[:1], K, *clean["features"].shape[1:])
        np.testing.assert_allclose(got["features"], clean["features"], rtol=1e-5, atol=1e-5)  # view 0 is clean
        # augmented views differ from the clean row and from each other (EDA may leave a short caption as it was)
        for a, b in ((got["views"][:, 0], got["features"]), (got["views"][:, 1], got["features"]),
                     (got["views"][:, 0], got["views"][:, 1])):  # fmt: skip
            assert (np.abs(a - b).max(axis=1) > 1e-4).mean() >= (1.0 if m == "I" else 0.7)
        again, _ = _read(tmp_path / "again", m)  # a re-run writes the same bytes
        assert [s["sha256"] for s in again.manifest["shards"]] == [s["sha256"] for s in reader.manifest["shards"]]
        # val is only ever evaluated on its clean rows: no views, the plain cache's fingerprint
        val_plain, _ = _read(tmp_path / "plain", m, "val")
        val_views, _ = _read(tmp_path / "views", m, "val")
        assert val_views.fingerprint == val_plain.fingerprint and "views" not in val_views.feature_names
    # a pipeline asking for views finds the views cache its own and the plain one stale
    for m in ("I", "T"):
        spec = DataSpec("flickr8k", str(flickr), ["I", "T"], dict(TINY), dict(RANDOM), {"extract": {"views": K}})
        assert extraction_state(tmp_path / "views", spec, m, splits=("train", "val")) == ""
        assert "augmented views" in extraction_state(tmp_path / "plain", spec, m, splits=("train", "val"))
    with pytest.raises(UserError, match="built with other settings"):  # K=2 never mixes into a K=0 cache
        _extract(flickr, tmp_path / "plain", views=1, splits=["train"])
    with pytest.raises(UserError, match="--views"):
        _extract(flickr, tmp_path / "bad", views=-1)


def test_an_interrupted_extraction_resumes_to_the_same_views(flickr, tmp_path):
    _extract(flickr, tmp_path / "whole", views=K, modalities=["I"], splits=["train"], batch_size=1)

    def stop(task, done, total):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _extract(flickr, tmp_path / "cut", views=K, modalities=["I"], splits=["train"], batch_size=1,
                 rows_per_shard=1, progress=stop)  # fmt: skip
    summary = _extract(flickr, tmp_path / "cut", views=K, modalities=["I"], splits=["train"], batch_size=1)
    assert summary.parts[0].status == "resumed"
    _, whole = _read(tmp_path / "whole", "I")
    _, cut = _read(tmp_path / "cut", "I")
    for name in ("features", "views"):
        np.testing.assert_array_equal(cut[name], whole[name])  # one image per batch: the same bytes


def test_only_train_images_and_captions_get_views():
    assert split_views(2, 0, "I", "image", "train") == ViewSpec(2, 0)
    assert split_views(2, 0, "T", "text", "train") == ViewSpec(2, 0)
    assert split_views(2, 0, "mine", "text", "train") == ViewSpec(2, 0)  # a user's own caption modality
    for args in (("I", "image", "val"), ("T", "text", "test"), ("S", "audio", "train"), ("P", "text", "train"),
                 ("A", None, "train")):  # fmt: skip
        assert split_views(2, 0, *args) is None
    assert split_views(0, 0, "I", "image", "train") is None
    seeds = {view_seed(0, i, v) for i in ("a", "b") for v in (1, 2)} | {view_seed(1, "a", 1)}
    assert len(seeds) == 5 and view_seed(0, "a", 1) == view_seed(0, "a", 1)


# ---- stage two: a planted cache whose values say which row and which view a batch holds ----

N_IMAGES, CAPTIONS = 24, 2


def _write(root, m, split, key, ids, links, k):
    """Row r holds r everywhere; its view v holds r + 1000 v, so a batch value x is view x // 1000 of row x % 1000."""
    n = len(ids)
    clean = np.repeat(np.arange(n, dtype=np.float32)[:, None], 4, axis=1)
    spec = {"features": ((4,), "float32")}
    arrays = {"features": clean}
    if k:
        spec["views"] = ((k, 4), "float32")
        arrays["views"] = clean[:, None, :] + 1000.0 * np.arange(1, k + 1, dtype=np.float32)[None, :, None]
    meta = {"backbone": "planted", "dataset": "planted", "modality": m, "split": split}
    with ShardWriter(cache_dir(root, "planted", m, split), features=spec, key=key, links=list(links), meta=meta,
                     rows_per_shard=16) as w:  # fmt: skip
        w.add(ids, links, arrays)


def _planted(root, k, splits=("train",)):
    for split in splits:
        images = [f"{split}{i:03d}" for i in range(N_IMAGES)]
        captions = [f"{i}#{c}" for i in images for c in range(CAPTIONS)]
        views = k if split == "train" else 0
        _write(root, "I", split, "image_id", images, {}, views)
        _write(root, "T", split, "caption_id", captions, {"image_id": [c.split("#")[0] for c in captions]}, views)
    return root


def _decode(batches, m):
    x = torch.cat([b[0][m][:, 0] for b in batches])
    return (x % 1000).long(), (x // 1000).long()


def test_stage_two_draws_one_view_per_sample_per_epoch(tmp_path):
    root = _planted(tmp_path, K)
    split = load_split(root, "planted", ["I", "T"], "train", views=True)
    split.view_seed = 7
    gen = torch.Generator().manual_seed(0)
    first = list(split.epoch_batches(1, 4, 12, gen))
    second = list(split.epoch_batches(2, 4, 12, gen))
    for m in ("I", "T"):
        rows, views = _decode(first, m)
        assert set(views.tolist()) == {0, 1, 2}  # the clean view and both augmented ones are drawn
        # the row is the sample's own row of m: the draw replaces features, never samples
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:48]
        assert torch.equal(rows, split.idx[m][order])
        assert not torch.equal(views, _decode(second, m)[1])  # another draw in another epoch
    again = load_split(root, "planted", ["I", "T"], "train", views=True)
    again.view_seed = 7
    redo = list(again.epoch_batches(1, 4, 12, torch.Generator().manual_seed(0)))  # a resumed epoch: the same draw
    assert all(torch.equal(a[0][m], b[0][m]) for a, b in zip(first, redo) for m in ("I", "T"))
    # loaded without views (validation, test, evaluation) or from a cache without them: clean rows, same order
    clean = load_split(root, "planted", ["I", "T"], "train")
    plain = list(clean.epoch_batches(1, 4, 12, torch.Generator().manual_seed(0)))
    assert all(_decode(plain, m)[1].eq(0).all() for m in ("I", "T"))
    assert all(torch.equal(_decode(plain, m)[0], _decode(first, m)[0]) for m in ("I", "T"))


def test_streamed_stage_two_draws_views_too(tmp_path):
    root = _planted(tmp_path, K)
    stream = StreamedSplit(root, "planted", ["I", "T"], "train", seed=5, buffer_rows=16, resident_bytes=0)
    assert set(stream.view_stores) == {"I", "T"}
    first = list(stream.epoch_batches(1, 4, 12))
    for m in ("I", "T"):
        rows, views = _decode(first, m)
        assert set(views.tolist()) == {0, 1, 2}
        assert not torch.equal(views, _decode(list(stream.epoch_batches(2, 4, 12)), m)[1])
    # a caption's image is its own image (the views come from the right row), in memory or spilled
    images, _ = _decode(first, "I")
    captions, _ = _decode(first, "T")
    assert torch.equal(images, captions // CAPTIONS)
    resident = StreamedSplit(root, "planted", ["I", "T"], "train", seed=5, buffer_rows=16, resident_bytes=1 << 30)
    assert all(torch.equal(a[0][m], b[0][m]) for a, b in zip(first, resident.epoch_batches(1, 4, 12)) for m in "IT")
    for start in (1, 3):  # a resumed epoch draws what the uninterrupted one drew
        resumed = stream.epoch_batches(1, 4, 12, start_step=start)
        assert all(torch.equal(a[0]["T"], b[0]["T"]) for a, b in zip(first[start:], resumed))


def _planted_two_bases(root, k):
    """The planted I and T, plus S (keyed by caption, with views too) holding the captions T lacks: T drops every
    fifth caption, S every third, so the sample table ends with S-only samples (T absent)."""
    images = [f"train{i:03d}" for i in range(N_IMAGES)]
    captions = [f"{i}#{c}" for i in images for c in range(CAPTIONS)]
    _write(root, "I", "train", "image_id", images, {}, k)
    for m, drop in (("T", 5), ("S", 3)):
        ids = [c for n, c in enumerate(captions) if n % drop != 1]
        _write(root, m, "train", "caption_id", ids, {"image_id": [c.split("#")[0] for c in ids]}, k)
    return root


@pytest.mark.parametrize("resident", [0, 1 << 30])  # looked-up rows and views spilled to a file, or held
def test_streamed_and_in_memory_batches_are_the_same_with_views(tmp_path, resident):
    """One view rule: unshuffled, both modes give the same batches, augmented views included, epoch after epoch
    and from a mid-epoch resume."""
    root = _planted_two_bases(tmp_path, K)
    mods = ["I", "T", "S"]
    memory = load_split(root, "planted", mods, "train", views=True)
    memory.shuffle, memory.view_seed = False, 5
    stream = StreamedSplit(root, "planted", mods, "train", seed=5, shuffle=False, buffer_rows=16,
                           resident_bytes=resident)  # fmt: skip
    assert (len(stream), stream.base, stream.complete()) == (len(memory), ["T", "S"], memory.complete())
    assert not bool(memory.present["T"].all())  # S-only samples: T absent, its placeholder row drawn too
    steps = stream.steps(12)
    for epoch in (1, 2):
        a, b = list(memory.epoch_batches(epoch, steps, 12)), list(stream.epoch_batches(epoch, steps, 12))
        assert len(a) == len(b) == steps
        for (xa, pa, _), (xb, pb, _) in zip(a, b):
            assert all(torch.equal(xa[m], xb[m]) and torch.equal(pa[m], pb[m]) for m in mods)
        assert all(set(_decode(b, m)[1].tolist()) == {0, 1, 2} for m in mods)
    resumed = list(stream.epoch_batches(2, steps, 12, start_step=3))
    assert all(torch.equal(x[0]["T"], y[0]["T"]) for x, y in zip(b[3:], resumed))


def _train_views(root, runs_root, **kw):
    base = dict(dataset="planted", modalities="I,T,S", epochs=2, patience=2, batch_size=12, dim=8, progress=False,
                device="cpu", threads=1, shuffle=False, name="v")  # fmt: skip
    return TrainConfig.from_dict({**base, "cache_root": str(root), "runs_root": str(runs_root), **kw})


def _results(run):
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r["val"]) for r in lines], json.loads((run / "test_metrics.json").read_text())


def test_streamed_training_with_views_equals_in_memory_training(tmp_path):
    root = _planted_two_bases(tmp_path / "c", K)
    for split in ("val", "test"):
        _planted(tmp_path / "c", 0, splits=(split,))
        _write(root, "S", split, "caption_id", *_captions(split), 0)
    memory = train(_train_views(root, tmp_path / "memory"))
    streamed = train(_train_views(root, tmp_path / "streamed", stream=True, memory_budget_mb=1e-4))
    assert _results(memory) == _results(streamed)
    recorded = [json.loads((r / "config.json").read_text()) for r in (memory, streamed)]
    assert "view_rule" not in recorded[0] and recorded[1]["view_rule"] == "sample-table"


def _captions(split):
    captions = [f"{split}{i:03d}#{c}" for i in range(N_IMAGES) for c in range(CAPTIONS)]
    return captions, {"image_id": [c.split("#")[0] for c in captions]}


def test_a_streamed_run_with_views_begun_under_the_earlier_rule_is_refused(tmp_path, monkeypatch):
    """Streamed runs once drew views per batch: one interrupted under that rule cannot resume to its numbers, so
    it is refused in one line (its record lacks "view_rule"); one begun under today's rule resumes."""
    from pcmpipe.training import rundir as runs
    from pcmpipe.training.state import save_checkpoint

    root = _planted_two_bases(tmp_path / "c", K)
    for split in ("val", "test"):
        _planted(tmp_path / "c", 0, splits=(split,))
        _write(root, "S", split, "caption_id", *_captions(split), 0)
    cfg = _train_views(root, tmp_path / "runs", stream=True, memory_budget_mb=1e-4, shuffle=True, checkpoint_every=1)

    def save_then_stop(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # right after the first mid-epoch checkpoint

    with monkeypatch.context() as m:
        m.setattr("pcmpipe.training.stage2_epochs.save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    tmp = runs.temp_dir(tmp_path / "runs", "v")
    record = json.loads((tmp / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps({k: v for k, v in record.items() if k != "view_rule"}))
    with pytest.raises(UserError, match="begun streamed with augmented views by an earlier pcmpipe"):
        train(cfg)
    (tmp / "config.json").write_text(json.dumps(record))
    resumed = train(cfg)
    assert _results(resumed) == _results(train(cfg.model_copy(update={"runs_root": str(tmp_path / "ref")})))


def test_training_uses_views_and_records_them(tmp_path):
    root = _planted(tmp_path / "views", K, splits=("train", "val", "test"))
    plain = _planted(tmp_path / "plain", 0, splits=("train", "val", "test"))
    base = dict(dataset="planted", modalities="I,T", epochs=1, patience=1, batch_size=12, dim=8, progress=False,
                device="cpu", threads=1)  # fmt: skip
    cfgs = [TrainConfig.from_dict({**base, "cache_root": str(r), "runs_root": str(r / "runs")}) for r in (root, plain)]
    tr = load_training(resolve_stream(cfgs[0].resolved()))
    assert all(d.views is not None for d in tr.modalities.values()) and tr.view_seed == cfgs[0].seed
    runs = [train(c) for c in cfgs]
    recorded = [json.loads((r / "config.json").read_text()) for r in runs]
    assert recorded[0]["caches"]["train"]["I"]["views"] == K and "views" not in recorded[1]["caches"]["train"]["I"]
    assert "views" not in recorded[0]["caches"]["val"]["I"]
    losses = [json.loads((r / "metrics.jsonl").read_text().splitlines()[0])["loss"] for r in runs]
    assert losses[0] != losses[1]  # the augmented rows were trained on
    # embedding the train cache with the run embeds each row's clean view
    run = load_run(runs[0])
    embed_cache_to_cache(run, "I", cache_dir(root, "planted", "I", "train"), tmp_path / "emb")
    _, got = open_cache(tmp_path / "emb").read()
    _, held = open_cache(cache_dir(root, "planted", "I", "train")).read()
    np.testing.assert_allclose(got["embedding"], run.project("I", held["features"]), rtol=1e-6)
    # the report's list of departures from the paper's recipe says what augmentation each run had
    for r, want in ((root, f"{K} augmented views"), (plain, "none")):
        (line,) = recipe_changes(list(load_runs(r / "runs").values()))["augmentation"]
        assert line.startswith(want), line


def test_a_run_can_leave_the_cached_views_out(tmp_path):
    """`cached_views: false` (the readings grid's views 0 vs 4 on one cache): in memory or streamed, training reads
    the clean rows only, so the run trains to the numbers of the same run on a cache without views."""
    root = _planted(tmp_path / "views", K, splits=("train", "val", "test"))
    plain = _planted(tmp_path / "plain", 0, splits=("train", "val", "test"))
    base = dict(dataset="planted", modalities="I,T", epochs=2, patience=2, batch_size=12, dim=8, progress=False,
                device="cpu", threads=1)  # fmt: skip
    off = TrainConfig.from_dict({**base, "cached_views": False, "cache_root": str(root), "runs_root": str(root / "r")})
    assert config_fingerprint(off) != config_fingerprint(off.model_copy(update={"cached_views": True}))
    assert all(d.views is None for d in load_training(resolve_stream(off.resolved())).modalities.values())
    streamed = load_training(resolve_stream(off.model_copy(update={"stream": True}).resolved()))
    assert streamed.view_stores == {} and all(m.view_count == 0 for m in streamed.modalities.values())
    ref = TrainConfig.from_dict({**base, "cache_root": str(plain), "runs_root": str(plain / "r")})
    runs = [train(c) for c in (off, ref)]
    assert _results(runs[0]) == _results(runs[1])
    assert "views" not in json.loads((runs[0] / "config.json").read_text())["caches"]["train"]["I"]
    (line,) = recipe_changes(list(load_runs(root / "r").values()))["augmentation"]
    assert line.startswith("none"), line


def test_the_paper_pipelines_extract_views_and_the_demo_fewer():
    from pathlib import Path

    from pcmpipe.pipelines.demo import demo_pipeline
    from pcmpipe.pipelines.spec import load_pipeline

    specs = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))
    assert specs
    for path in specs:
        for data in load_pipeline(path).data.values():
            assert data.options["extract"]["views"] == 4, (path.name, data.dataset)
    doc = demo_pipeline(Path("data"), Path("cache"))
    assert all(d["extract"]["views"] == 0 for d in doc["data"].values())  # demo.yaml says why


@pytest.mark.slow  # two `pcmpipe extract` processes
def test_cli_extract_views(flickr, tmp_path):
    import subprocess
    import sys

    def cli(*extra):
        cmd = [sys.executable, "-m", "pcmpipe", "extract", "--dataset", "flickr8k", "--root", str(flickr),
               "--modalities", "I", "--split", "train", "--image-backbone", "clip-tiny-image", "--weights-image",
               "random:0", "--workers", "0", "--device", "cpu", "--cache-root", str(tmp_path), *extra]  # fmt: skip
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )

    done = cli("--views", "1", "--views-seed", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    reader = open_cache(cache_dir(tmp_path, "flickr8k", "I", "train"))
    assert reader.shapes["views"][0] == 1 and reader.meta["augment"]["seed"] == 3
    bad = cli("--views", "-1")
    assert bad.returncode == 2 and "--views must be between 0 and" in bad.stderr and "Traceback" not in bad.stderr
