"""Stage two in-process: the sample join, the optimiser recipe, learning on planted structure, determinism,
divergence handling and the run directory."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_cache import write_modality, write_synthetic_cache

from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.samples import find_base, load_modality, load_split
from pcmpipe.training import rundir as runs
from pcmpipe.training.evaluate import evaluate_run, mean_r1
from pcmpipe.training.optim import cosine_lambda, param_groups
from pcmpipe.training.stage2 import train

# every test here on one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(planted_cache):
    return planted_cache(drop_speech=0.3, with_class_modality=True)


def _cfg(cache, tmp_path, **kw):
    base = dict(
        dataset="synth",
        modalities="I,T,S",
        cache_root=str(cache),
        runs_root=str(tmp_path / "runs"),
        epochs=6,
        patience=6,
        batch_size=32,
        lr=2e-3,
        dim=64,
        progress=False,
    )
    return TrainConfig.from_dict({**base, **kw})


# ---- samples ----
def test_join_base_present_masks_and_batches(cache):
    d = load_split(cache, "synth", ["I", "T", "S", "C"], "train")
    assert d.base == ["T", "S"] and len(d) == 480
    t, s, i, c = (d.modalities[m] for m in "TSIC")
    assert int(d.present["S"].sum()) == s.features.shape[0] == 336  # 30 % of the spoken captions dropped
    assert bool(d.present["T"].all() and d.present["I"].all() and d.present["C"].all())
    cap = t.columns["caption_id"][d.idx["T"].numpy()]
    ok = d.present["S"].numpy()
    assert (s.columns["caption_id"][d.idx["S"].numpy()][ok] == cap[ok]).all()
    assert set(cap[~ok]).isdisjoint(set(s.columns["caption_id"]))
    assert (i.columns["image_id"][d.idx["I"].numpy()] == t.columns["image_id"][d.idx["T"].numpy()]).all()
    assert (c.columns["class_id"][d.idx["C"].numpy()] == t.columns["class_id"][d.idx["T"].numpy()]).all()
    rows = torch.tensor([0, 5, 7])
    inputs, present = d.batch(rows)
    assert inputs["S"].shape == (3, 3, 16) and inputs["S"].dtype == torch.float32
    assert torch.equal(inputs["I"], i.features[d.idx["I"][rows]])
    assert torch.equal(present["S"], d.present["S"][rows])


def test_base_choice_and_unjoinable(cache, tmp_path):
    mods = {m: load_modality(cache, "synth", m, "val") for m in "ITC"}
    assert find_base(mods) == ["T"]
    assert find_base({"I": mods["I"], "C": mods["C"]}) == ["I"]
    write_modality(tmp_path, "synth", "X", "val", key="user_id", links={}, ids=["u1", "u2"], features=np.zeros((2, 4)))
    with pytest.raises(UserError, match="cannot join modalities I,X"):
        find_base({"I": mods["I"], "X": load_modality(tmp_path, "synth", "X", "val")})


def test_an_empty_split_is_named_not_a_join_error(tmp_path):
    """An empty val split (synthetic CUB with one image per class) says the split is empty, naming its cache."""
    write_modality(tmp_path, "synth", "I", "val", key="image_id", links={}, ids=[], features=np.zeros((0, 4)))
    # extraction takes the link columns from the first record: an empty split records none
    write_modality(tmp_path, "synth", "T", "val", key="caption_id", links={}, ids=[], features=np.zeros((0, 4)))
    mods = {m: load_modality(tmp_path, "synth", m, "val") for m in "IT"}
    with pytest.raises(UserError, match=r"synth/I/val has no rows \(I, T\): this split is empty"):
        find_base(mods)


def test_missing_cache_names_path_and_command(cache):
    with pytest.raises(UserError) as info:
        load_modality(cache, "synth", "A", "train")
    msg = str(info.value)
    assert str(cache / "synth" / "A" / "train") in msg and "pcmpipe import-features A" in msg
    with pytest.raises(UserError, match="pcmpipe extract --dataset cub --modalities A --split val"):
        load_modality(cache, "cub", "A", "val")


# ---- recipe ----
def test_no_decay_on_norms_biases_layer_weights_and_scale():
    from pcmpipe.heads import build_heads

    heads = build_heads({"I": (8,), "S": (3, 4)}, dim=16)
    scale = torch.nn.Parameter(torch.tensor(1.0))
    groups = param_groups(heads, [scale], 0.2)
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in heads.named_parameters():
        assert (id(p) in decayed) == (name.endswith("weight") and "norm" not in name), name
    assert id(heads["S"].layer_logits) not in decayed and id(scale) not in decayed
    assert groups[0]["weight_decay"] == 0.2 and groups[1]["weight_decay"] == 0.0


def test_cosine_schedule_per_step():
    f = cosine_lambda(100)
    assert f(0) == 1.0 and math.isclose(f(50), 0.5) and math.isclose(f(100), 0.0, abs_tol=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(100))


# ---- training ----
@pytest.mark.parametrize("loss", ["pcmc", "pcmr"])
def test_learns_planted_structure_with_missing_speech(cache, tmp_path, loss):
    run = train(_cfg(cache, tmp_path, loss=loss))
    test = runs.read_json(run / "test_metrics.json")
    untrained = runs.read_json(run / "untrained_metrics.json")
    trained_r1, untrained_r1 = mean_r1(test["instance"]), mean_r1(untrained["instance"])
    chance_r1 = test["chance"]["instance"]["mean"]["r@1"]
    print(
        f"\n{loss}: test mean r@1 {trained_r1:.1f}, untrained {untrained_r1:.1f}, chance {chance_r1:.1f}; "
        + ", ".join(f"{k} {v['r@1']:.1f}" for k, v in test["instance"].items() if "->" in k)
    )
    assert trained_r1 > 5 * chance_r1 and trained_r1 > untrained_r1 + 20
    assert test["instance"]["I->T"]["r@1"] > 40
    assert "class" in test and "class" in untrained  # every row carries class_id
    # T and S are both finer than the image: scored at image level too, which changes only T<->S
    assert "image" in test and "image" in test["chance"] and test["image"]["I->T"] == test["instance"]["I->T"]
    assert test["image"]["T->S"] != test["instance"]["T->S"]
    hist = runs.read_metrics(run)
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[0]["lr"] < 2e-3 and all(np.isfinite(h["loss"]) for h in hist)


def test_run_directory_contents_and_reload(cache, tmp_path):
    cfg = _cfg(cache, tmp_path, epochs=2)
    run = train(cfg)
    assert run.name == cfg.resolved().name and not (run.parent / f".tmp-{run.name}").exists()
    assert not (run / runs.CHECKPOINT).exists()
    rec = runs.run_config(run)
    assert rec["config"]["batch_size"] == 32 and rec["seed"] == 0 and len(rec["fingerprint"]) == 64
    assert set(rec["caches"]["test"]) == {"I", "T", "S"} and rec["base"] == ["T", "S"]
    assert rec["caches"]["train"]["S"]["fingerprint"] == load_modality(cache, "synth", "S", "train").fingerprint
    assert {"torch", "numpy", "python", "pcmpipe"} <= set(rec["versions"])
    embs = runs.load_embeddings(run)
    heads, scale = runs.load_heads(run)
    assert 0 < scale <= 100
    s = load_modality(cache, "synth", "S", "test")
    assert embs["S"].embedding.shape == (84, 64) and list(embs["S"].columns["id"]) == list(s.columns["id"])
    with torch.no_grad():
        torch.testing.assert_close(heads["S"](s.features), embs["S"].embedding)
    again = evaluate_run(run)
    saved = runs.read_json(run / "test_metrics.json")
    assert again["instance"] == saved["instance"] and again["class"] == saved["class"]
    assert train(cfg) == run  # the same config again: already complete, nothing retrained


def test_same_config_and_seed_give_identical_numbers(cache, tmp_path):
    a = train(_cfg(cache, tmp_path, name="a", epochs=3, loss="pcmr"))
    b = train(_cfg(cache, tmp_path, name="b", epochs=3, loss="pcmr"))
    c = train(_cfg(cache, tmp_path, name="c", epochs=3, loss="pcmr", seed=1))
    ta, tb, tc = (runs.read_json(r / "test_metrics.json") for r in (a, b, c))
    assert ta == tb and ta["instance"] != tc["instance"]
    strip = lambda h: [{k: v for k, v in e.items() if "time" not in k} for e in h]  # noqa: E731
    assert strip(runs.read_metrics(a)) == strip(runs.read_metrics(b))


def test_divergence_is_a_user_error_and_leaves_nothing(cache, tmp_path):
    with pytest.raises(UserError) as info:
        train(_cfg(cache, tmp_path, lr=1e30, epochs=2))
    msg = str(info.value)
    assert msg.startswith("loss became NaN at epoch 1 step ") and "lower --lr" in msg
    # nothing stays, not even the run's lock file (a job that ends deletes it: pcmpipe.cache.lock)
    assert list((tmp_path / "runs").iterdir()) == []


def test_mismatched_val_features_refused(cache, tmp_path):
    root = tmp_path / "c"
    write_synthetic_cache(root, images={"train": 40, "val": 10, "test": 10})
    import shutil

    shutil.rmtree(root / "synth" / "I" / "val")
    write_modality(
        root,
        "synth",
        "I",
        "val",
        key="image_id",
        links={"class_id": ["0"] * 10},
        ids=[f"val{i:05d}" for i in range(10)],
        features=np.zeros((10, 31)),
    )
    with pytest.raises(UserError, match=r"mismatched caches for I: train has features \[32\] but val has \[31\]"):
        train(_cfg(root, tmp_path))


def test_chance_matches_closed_form_and_random_rankings(cache):
    from scipy.special import comb

    from pcmpipe.evaluation.metrics import r_precision, recall_at_k
    from pcmpipe.evaluation.retrieval import positives_between
    from pcmpipe.training.evaluate import chance

    mods = {m: load_modality(cache, "synth", m, "val") for m in "ITS"}
    ch = chance(mods, "instance")
    for x, y in (("I", "T"), ("T", "I"), ("T", "S"), ("S", "T")):
        pos = positives_between(mods[x].columns, mods[y].columns, "instance", mods[x].key, mods[y].key)
        n = pos.sum(1)
        n, total = n[n > 0].astype(float), pos.shape[1]
        assert math.isclose(
            ch[f"{x}->{y}"]["r@5"], 100 * np.mean(1 - comb(total - n, 5) / comb(total, 5)), rel_tol=1e-9
        )
        assert math.isclose(ch[f"{x}->{y}"]["R-P"], 100 * np.mean(n / total), rel_tol=1e-9)
    assert math.isclose(ch["I->T"]["r@1"], 100 * 3 / 120)  # 3 captions of each image among 120
    # the expectation is what random rankings score on average (Monte Carlo, 300 draws)
    pos = torch.as_tensor(positives_between(mods["I"].columns, mods["T"].columns, "instance"))
    g = torch.Generator().manual_seed(0)
    draws = [torch.rand(pos.shape, generator=g) for _ in range(300)]
    assert abs(100 * np.mean([recall_at_k(s, pos, 5) for s in draws]) - ch["I->T"]["r@5"]) < 1.0
    assert abs(100 * np.mean([r_precision(s, pos) for s in draws]) - ch["I->T"]["R-P"]) < 0.5


def test_hdf5_and_parquet_caches_load_identically(tmp_path):
    small = {"train": 12, "val": 4, "test": 4}
    write_synthetic_cache(tmp_path / "pq", images=small, fmt="parquet")
    write_synthetic_cache(tmp_path / "h5", images=small, fmt="hdf5")
    a = load_split(tmp_path / "pq", "synth", ["I", "T", "S"], "train")
    b = load_split(tmp_path / "h5", "synth", ["I", "T", "S"], "train")
    for m in "ITS":
        assert torch.equal(a.modalities[m].features, b.modalities[m].features)
        assert a.modalities[m].features.is_contiguous() and a.modalities[m].features.dtype == torch.float32
        assert all((a.modalities[m].columns[c] == b.modalities[m].columns[c]).all() for c in a.modalities[m].columns)
        assert torch.equal(a.idx[m], b.idx[m]) and torch.equal(a.present[m], b.present[m])


def test_captions_missing_from_one_base_modality_still_form_samples(tmp_path):
    from pcmpipe.samples import join

    ids = [f"img{i}#0" for i in range(6)]
    links = {"image_id": [f"img{i}" for i in range(6)]}
    write_modality(
        tmp_path,
        "d",
        "I",
        "train",
        key="image_id",
        links={},
        ids=links["image_id"],
        features=np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2)),
    )
    # written captions lack img4 and img5, spoken ones lack img0: both are keyed by caption_id
    write_modality(
        tmp_path,
        "d",
        "T",
        "train",
        key="caption_id",
        links={"image_id": links["image_id"][:4]},
        ids=ids[:4],
        features=np.zeros((4, 3)),
    )
    write_modality(
        tmp_path,
        "d",
        "S",
        "train",
        key="caption_id",
        links={"image_id": links["image_id"][1:]},
        ids=ids[1:],
        features=np.ones((5, 2, 3)),
    )
    d = join("train", {m: load_modality(tmp_path, "d", m, "train") for m in "ITS"})
    assert d.base == ["T", "S"] and len(d) == 6
    assert d.present["T"].tolist() == [True, True, True, True, False, False]
    assert d.present["S"].tolist() == [False, True, True, True, True, True]
    assert d.present["I"].all()
    i_rows = d.modalities["I"].features[d.idx["I"], 0]
    assert i_rows.tolist() == [0, 1, 2, 3, 4, 5]  # every sample finds its image, S-only ones included


def test_float16_cache_becomes_float32_block(tmp_path):
    from pcmpipe.cache import ShardWriter, cache_dir

    x = np.random.default_rng(0).standard_normal((10, 2, 3)).astype(np.float16)
    with ShardWriter(
        cache_dir(tmp_path, "d", "S", "train"),
        features={"feat": ((2, 3), "float16")},
        key="caption_id",
        links=[],
        meta={},
        rows_per_shard=4,
    ) as w:
        w.add([f"c{i}" for i in range(10)], {}, {"feat": x})
    d = load_modality(tmp_path, "d", "S", "train")
    assert d.features.dtype == torch.float32 and d.features.is_contiguous()
    assert torch.equal(d.features, torch.from_numpy(x.astype(np.float32)))
    assert list(d.columns["id"]) == [f"c{i}" for i in range(10)]


def test_resume_from_a_kill_in_the_final_phase(cache, tmp_path, monkeypatch):
    """Interrupted after the last checkpoint while writing results: the rerun redoes only the final phase.

    The interruption is injected at a fixed point (writing embeddings) so the test is deterministic; the
    SIGKILL of a real process mid-training is tested in test_resume_mid_epoch.py.
    """
    reference = runs.read_json(train(_cfg(cache, tmp_path, epochs=2, name="late")) / "test_metrics.json")
    cfg = _cfg(cache, tmp_path, epochs=2, name="late2")
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("pcmpipe.training.rundir.protocol.save_embeddings", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    tmp = tmp_path / "runs" / ".tmp-late2"
    assert len(calls) == 1 and (tmp / runs.CHECKPOINT).exists() and not (tmp / "test_metrics.json").exists()
    (tmp / "embeddings").mkdir(exist_ok=True)
    (tmp / "embeddings" / ".I.safetensors.tmp").write_bytes(b"partial")  # a write cut short
    run = train(cfg)
    assert runs.read_json(run / "test_metrics.json") == reference
    assert not list(run.rglob(".*.tmp")) and not (run / runs.CHECKPOINT).exists()
    assert len(runs.read_metrics(run)) == 2


def test_streamed_modality_chunks_equal_resident_features(cache):
    resident = load_modality(cache, "synth", "S", "val")
    streamed = load_modality(cache, "synth", "S", "val", stream_above=0)
    assert streamed.features is None and streamed.stream is not None
    assert streamed.shape == resident.shape and streamed.rows == resident.rows
    assert {k: v.tolist() for k, v in streamed.columns.items()} == {k: v.tolist() for k, v in resident.columns.items()}
    chunks = [c.clone() for c in streamed.chunks(7)]
    assert max(len(c) for c in chunks) <= 7
    assert torch.equal(torch.cat(chunks), resident.features)
    assert torch.equal(torch.cat(list(resident.chunks(7))), resident.features)
    streamed.fingerprint = "0" * 64  # as if the cache had been rewritten since it was loaded
    with pytest.raises(UserError, match="changed while in use"):
        next(streamed.chunks(7))


def test_streamed_validation_gives_the_resident_run(cache, tmp_path):
    """On CPU a large validation cache is decoded from disk every epoch instead of held; the run is the same."""
    got = []
    for name, limit in (("resident", None), ("streamed", 0)):
        run = train(_cfg(cache, tmp_path, epochs=2, patience=2, name=name, stream_val_mb=limit))
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        got.append(([(h["loss"], h["val"]) for h in history], runs.read_json(run / runs.COMPLETE_MARKER)))
    assert got[0] == got[1]


class _Payload:
    """Unpickling this creates `marker`: what a hostile checkpoint.pt could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_leftover_pickle_checkpoint_is_never_unpickled(cache, tmp_path):
    """An interrupted run of an older pcmpipe left `.tmp-<name>/checkpoint.pt`; it is ignored, not loaded."""
    from pcmpipe.training.events import Note

    proof = tmp_path / "unpickled-proof"  # the payload works: loading it the old way runs its code
    buf = io.BytesIO()
    torch.save({"payload": _Payload(proof)}, buf)
    buf.seek(0)
    torch.load(buf, weights_only=False)
    assert proof.exists()

    marker = tmp_path / "payload-ran"
    cfg = _cfg(cache, tmp_path, epochs=1, name="legacy")
    tmp = runs.temp_dir(tmp_path / "runs", "legacy")
    tmp.mkdir(parents=True)
    torch.save({"payload": _Payload(marker)}, tmp / runs.LEGACY_CHECKPOINT)
    events = []
    run = train(cfg, on_event=events.append)
    assert not marker.exists()
    assert runs.is_complete(run) and not (run / runs.LEGACY_CHECKPOINT).exists()
    notes = [e.text for e in events if isinstance(e, Note)]
    assert len(notes) == 1 and "never loaded" in notes[0] and "\n" not in notes[0]


def test_checkpoint_is_safetensors_with_json_and_restores_exactly(cache, tmp_path, monkeypatch):
    """The resume state holds no pickle: a safetensors file whose metadata carries the JSON part; restoring
    it into fresh objects gives back the same optimizer, schedule, RNG and training state."""
    from safetensors import safe_open

    from pcmpipe.training.state import CHECKPOINT, load_checkpoint

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = _cfg(cache, tmp_path, epochs=3, name="ckpt")
    with monkeypatch.context() as m:
        m.setattr("pcmpipe.training.state.write_metrics", stop)  # right after the first epoch's checkpoint
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    tmp = runs.temp_dir(tmp_path / "runs", "ckpt")
    with open(tmp / CHECKPOINT, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))  # the safetensors layout, read by hand
    meta = json.loads(header["__metadata__"]["pcmpipe"])
    assert meta["state"]["epoch"] == 1 and meta["state"]["step"] > 0 and len(meta["state"]["history"]) == 1
    # an epoch's checkpoint keeps the format epoch checkpoints always had (no partial epoch in it)
    assert meta["format"] == "pcmpipe-checkpoint/1" and "progress" not in meta
    with safe_open(str(tmp / CHECKPOINT), framework="pt") as f:
        keys = set(f.keys())
    assert {"log_scale", "rng.generator", "rng.torch"} <= keys
    assert any(k.startswith("model.heads.I.") for k in keys) and any(k.startswith("optimizer.0.exp_avg") for k in keys)
    ckpt = load_checkpoint(tmp)
    assert ckpt.epoch == 1 and ckpt.fingerprint == runs.run_config(tmp)["fingerprint"]
    # the resumed run ends where an uninterrupted one does
    whole = train(_cfg(cache, tmp_path, epochs=3, name="ckpt-whole"))
    resumed = train(cfg)
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert strip(runs.read_metrics(resumed)) == strip(runs.read_metrics(whole))


def test_a_damaged_checkpoint_is_one_line_error(cache, tmp_path):
    from pcmpipe.training.state import CHECKPOINT

    tmp = runs.temp_dir(tmp_path / "runs", "broken")
    tmp.mkdir(parents=True)
    (tmp / CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(UserError, match="unreadable"):
        train(_cfg(cache, tmp_path, epochs=1, name="broken"))


def test_train_reports_through_the_callback_and_prints_nothing(cache, tmp_path, capfd):
    from pcmpipe.training.events import EpochDone, RunFinished, TrainingStarted

    events = []
    run = train(_cfg(cache, tmp_path, epochs=2, patience=5, name="quiet"), on_event=events.append)
    assert capfd.readouterr() == ("", "")
    kinds = [type(e) for e in events]
    assert kinds[0] is TrainingStarted and kinds[-1] is RunFinished and kinds.count(EpochDone) == 2
    done = [e for e in events if isinstance(e, EpochDone)]
    assert [e.epoch for e in done] == [1, 2] and all(e.loss == r["loss"] for e, r in zip(done, runs.read_metrics(run)))
    assert events[-1].run_dir == run
    train(_cfg(cache, tmp_path, epochs=2, patience=5, name="quiet"))  # already complete, and still silent
    assert capfd.readouterr() == ("", "")


def test_the_cli_renders_the_epoch_line_from_the_events(tmp_path):
    from rich.console import Console

    from pcmpipe.cli.training_progress import TrainingRenderer
    from pcmpipe.training.events import EpochDone, Note, RunFinished

    out = io.StringIO()
    render = TrainingRenderer(Console(file=out, width=200))
    render(Note("resuming x after epoch 2"))
    render(EpochDone(3, 50, 1.23456, 4.5, 5.25, 2, 9.5e-5, 1.04, early_stop=True))
    render(EpochDone(1, 5, 2.0, 1.0, 1.0, 1, {"heads": 1e-4, "heads_no_decay": 1e-4, "backbone": 1e-6}, 3.0, False))
    render(RunFinished(tmp_path / "run", 2, 6.0, 0.5))
    assert out.getvalue().splitlines() == [
        "resuming x after epoch 2",
        "epoch 3/50 loss 1.2346 val mean r@1 4.50 (best 5.25 @ 2) lr 9.50e-05 1.0s - early stop",
        "epoch 1/5 loss 2.0000 val mean r@1 1.00 (best 1.00 @ 1) lr heads 1.00e-04 lr backbone 1.00e-06 3.0s",
        f"done: {tmp_path / 'run'} (best epoch 2, test mean r@1 6.00 vs untrained 0.50)",
    ]


def test_a_damaged_run_file_is_one_line_naming_it(tmp_path):
    for name, data in (("config.json", b'{"config": {"data'), ("latin1.json", b'{"x": "caf\xe9"}')):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError, match=str(path)):
            runs.read_json(path)


def test_evaluate_finds_a_relative_cache_root_from_another_directory(tmp_path, monkeypatch):
    """Trained with `--cache-root cache` in one directory, evaluated from another: the run recorded the
    resolved root. A run from before that record is found beside its runs root (`<cache_root>/runs`)."""
    write_synthetic_cache(tmp_path / "cache", images={"train": 32, "val": 8, "test": 8})
    monkeypatch.chdir(tmp_path)
    run = train(_cfg("cache", tmp_path, runs_root="cache/runs", epochs=1, name="rel")).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    want = runs.read_json(run / runs.COMPLETE_MARKER)["instance"]
    assert evaluate_run(run, match="instance")["instance"] == want
    rec = runs.run_config(run)
    del rec["cache_root_resolved"]  # as an older pcmpipe wrote it, without files.json
    runs.write_json(run / "config.json", rec)
    (run / "files.json").unlink()
    assert evaluate_run(run, match="instance")["instance"] == want
    (tmp_path / "cache" / "synth").rename(tmp_path / "cache" / "moved")  # the message says where it looked
    with pytest.raises(UserError, match=f"evaluate looked under {tmp_path / 'cache'};"):
        evaluate_run(run)


def test_non_finite_cached_features_are_named_not_blamed_on_the_learning_rate(tmp_path):
    import shutil

    write_synthetic_cache(tmp_path / "good", images={"train": 32, "val": 8, "test": 8})
    d = load_modality(tmp_path / "good", "synth", "I", "train")
    x = d.features.numpy().copy()
    x[3, 1] = np.float32(1e20)  # finite, so the cache takes it; its square overflows float32
    shutil.copytree(tmp_path / "good", tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "synth" / "I" / "train")
    write_modality(
        tmp_path,
        "synth",
        "I",
        "train",
        key="image_id",
        links={"class_id": list(d.columns["class_id"])},
        ids=list(d.columns["id"]),
        features=x,
    )
    with pytest.raises(UserError, match=r"train features of I are too large for float32") as info:
        train(_cfg(tmp_path, tmp_path, modalities="I,T", epochs=1))
    assert "--lr" not in str(info.value)


@pytest.mark.parametrize("device", ["foo", "cuda"])
def test_evaluate_with_an_unusable_device_is_one_line(device, tmp_path):
    from typer.testing import CliRunner

    from pcmpipe.cli import app

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--device", device])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and device in lines[0] and "Traceback" not in res.output
