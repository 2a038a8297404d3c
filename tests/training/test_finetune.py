"""Fine-tuning stage on synthetic CUB with the tiny CLIP towers: two learning rates, what moves and what
stays bit-identical, the saved towers through the normal extract path, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import pytest
import torch
from safetensors.torch import load_file

from pcmpipe.backbones import create_backbone
from pcmpipe.cache.layout import manifest_in
from pcmpipe.errors import UserError
from pcmpipe.training.finetune import FinetuneConfig, finetune
from pcmpipe.training.finetune.model import Coordinator, optimizer_groups, tower_sha256

torch.set_num_threads(1)  # tiny models: one thread is fastest, and the machine is shared

TINY = dict(
    image_backbone="clip-tiny-image", text_backbone="clip-tiny-text", weights_image="random:0", weights_text="random:0"
)


@pytest.fixture(scope="module")
def cub(synth_dataset) -> Path:
    return synth_dataset("cub", images=2, seed=0)  # 150 train / 150 val / 100 test images


def _cfg(cub: Path, tmp: Path, **kw) -> FinetuneConfig:
    settings = dict(
        dataset="cub",
        modalities="I,C",
        data_root=str(cub),
        cache_root=str(tmp / "cache"),
        runs_root=str(tmp / "runs"),
        unfreeze="image",
        batch_size=50,
        epochs=1,
        progress=False,
        **TINY,
    )
    settings.update(kw)
    return FinetuneConfig.from_dict(settings)


def _tiny_model(unfrozen: list[str]):
    torch.manual_seed(0)
    bbs = {"I": create_backbone("clip-tiny-image", "random:0"), "T": create_backbone("clip-tiny-text", "random:0")}
    model = Coordinator(
        bbs, unfrozen, {"I": (32,), "T": (32,)}, dim=16, logit_scale_init=1 / 0.07, learnable_scale=True
    )
    return bbs, model


def test_optimizer_groups_apply_the_two_learning_rates():
    from pcmpipe.losses import pcmc_loss

    bbs, model = _tiny_model(["I", "T"])
    opt = torch.optim.AdamW(optimizer_groups(model, head_lr=1e-4, backbone_lr=1e-6, weight_decay=0.2))
    groups = {g["name"]: g for g in opt.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {
        "heads": 1e-4,
        "heads_no_decay": 1e-4,
        "backbone": 1e-6,
        "backbone_no_decay": 1e-6,
    }
    assert groups["heads"]["weight_decay"] == 0.2 and groups["backbone_no_decay"]["weight_decay"] == 0.0
    # the image tower's own text half and both logit scales of the CLIP instances are not trained
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    image_clip = model.towers["I"]
    assert not any(id(p) in trained for n, p in image_clip.named_parameters() if not n.startswith("visual."))
    assert all(id(p) in trained for p in image_clip.visual.parameters())

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pixels = torch.randn(6, 3, 64, 64)
    tokens = bbs["T"].preprocess([f"a bird with {c} wings" for c in ("red", "blue", "green", "grey", "black", "white")])
    loss = pcmc_loss(model({"I": pixels, "T": tokens}), None, logit_scale=model.log_scale.exp())
    opt.zero_grad()
    loss.backward()
    opt.step()
    # AdamW's first step moves every parameter with a gradient by ~lr (m / sqrt(v) = +-1), plus lr * wd * p
    steps = {n: (p.detach() - before[n]).abs() for n, p in model.named_parameters()}
    head = torch.cat([steps[n].flatten() for n in steps if n.startswith("heads.") and steps[n].ndim >= 2])
    tower = torch.cat([steps[n].flatten() for n in steps if n.startswith("towers.I.visual.") and steps[n].ndim >= 2])
    text = torch.cat([steps[n].flatten() for n in steps if n.startswith("towers.T.transformer.")])
    assert head.median().item() == pytest.approx(1e-4, rel=0.05)
    assert tower.median().item() == pytest.approx(1e-6, rel=0.05)
    assert text.median().item() == pytest.approx(1e-6, rel=0.05)
    frozen = [n for n in steps if n.startswith("towers.I.") and not n.startswith("towers.I.visual.")]
    assert frozen and all(torch.equal(model.get_parameter(n), before[n]) for n in frozen)


def test_grad_checkpointing_gives_the_same_gradients():
    bbs, model = _tiny_model(["I"])
    x = torch.randn(3, 3, 64, 64)
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(on)
        model({"I": x})["I"].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.backbone_parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_config_validation(cub, tmp_path):
    with pytest.raises(UserError, match="pass --root"):
        _cfg(cub, tmp_path, data_root=None)
    with pytest.raises(UserError, match="unknown unfreeze .audio.; valid choices: image, text"):
        _cfg(cub, tmp_path, unfreeze="audio")
    with pytest.raises(UserError, match="needs modality T"):
        _cfg(cub, tmp_path, unfreeze="text")
    cfg = _cfg(cub, tmp_path, unfreeze="none")
    assert cfg.unfreeze == [] and cfg.resolved().name.startswith("ft-cub-I+C-pcmc-frozen-s0-")
    assert _cfg(cub, tmp_path).resolved().name != _cfg(cub, tmp_path, backbone_lr=2e-6).resolved().name


def test_image_finetune_moves_the_image_tower_only_and_recaches(cub, tmp_path):
    """I live and trained, C from the cache; the saved tower re-extracts through the normal extract path."""
    from extraction import extract

    from pcmpipe.samples import load_modality
    from pcmpipe.training.rundir import load_heads

    cfg = _cfg(cub, tmp_path)
    run = finetune(cfg)
    assert (run / "test_metrics.json").is_file() and not (run / "checkpoint.safetensors").exists()
    assert not (run / "text_backbone.safetensors").exists()
    rec = json.loads((run / "config.json").read_text())
    assert rec["caches"]["train"]["I"]["live"] and rec["caches"]["train"]["C"]["path"].endswith("cub/C/train")
    history = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["lr_start"] == {
        "heads": 1e-4,
        "heads_no_decay": 1e-4,
        "backbone": 1e-6,
        "backbone_no_decay": 1e-6,
    }

    init = create_backbone("clip-tiny-image", "random:0").model.state_dict()
    tuned = load_file(str(run / "image_backbone.safetensors"))
    assert set(tuned) == set(init)
    moved = [k for k in init if k.startswith("visual.") and not torch.equal(init[k], tuned[k])]
    assert len(moved) > 10
    assert all(torch.equal(init[k], tuned[k]) for k in init if not k.startswith("visual."))  # text half untouched

    # --weights-image <run>/image_backbone.safetensors: same tower, and the run's heads on those features
    # reproduce the test embeddings the run stored
    bb = create_backbone("clip-tiny-image", str(run / "image_backbone.safetensors"))
    assert bb.meta["weights_sha256"] == tower_sha256(tuned, "image")
    recache = tmp_path / "recache"
    extract(
        "cub",
        cub,
        modalities=["I"],
        splits=["test"],
        backbones={"image": "clip-tiny-image"},
        weights={"image": str(run / "image_backbone.safetensors")},
        device="cpu",
        cache_root=recache,
        workers=0,
    )
    ft = load_modality(recache, "cub", "I", "test")
    emb = load_file(str(run / "embeddings" / "I.safetensors"))["embedding"]
    ids = json.loads((run / "embeddings" / "I.json").read_text())["columns"]["id"]
    heads, _ = load_heads(run)
    row = {i: k for k, i in enumerate(ft.columns["id"])}
    with torch.no_grad():
        again = heads["I"](ft.features[[row[i] for i in ids]])
    assert torch.allclose(again, emb, atol=1e-5)


@pytest.mark.slow
def test_text_finetune_keeps_the_frozen_image_cache(cub, tmp_path):
    """T live (EDA) and trained; I frozen: extracted once into the cache and never touched again."""
    from pcmpipe.samples import load_modality

    cfg = _cfg(cub, tmp_path, modalities="I,T,C", unfreeze="text", batch_size=100)
    run = finetune(cfg)
    tuned = load_file(str(run / "text_backbone.safetensors"))
    init = create_backbone("clip-tiny-text", "random:0").model.state_dict()
    assert any(not torch.equal(init[k], tuned[k]) for k in init if k.startswith("transformer."))
    assert all(torch.equal(init[k], tuned[k]) for k in init if k.startswith("visual."))
    assert not (run / "image_backbone.safetensors").exists()
    # the frozen image cache is the frozen tower's: same fingerprint (weights checksum) as a fresh extraction
    cached = load_modality(cfg.cache_root, "cub", "I", "val")
    frozen = create_backbone("clip-tiny-image", "random:0")
    rec = json.loads((run / "config.json").read_text())
    assert rec["caches"]["val"]["I"]["fingerprint"] == cached.fingerprint
    manifest = json.loads(manifest_in(Path(cached.directory)).read_text())
    assert manifest["meta"]["weights_sha256"] == frozen.meta["weights_sha256"]
    # a second run reuses that cache as it is (no re-extraction: same shard files, same mtimes)
    shards = {p: p.stat().st_mtime_ns for p in Path(cached.directory).glob("part-*")}
    finetune(cfg.replace(seed=1))
    assert {p: p.stat().st_mtime_ns for p in Path(cached.directory).glob("part-*")} == shards


def _command(
    cub: Path, tmp: Path, name: str, epochs: int, modalities: str = "I,C", unfreeze: str = "image"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pcmpipe",
        "finetune",
        "--data-root",
        str(cub),
        "--modalities",
        modalities,
        "--unfreeze",
        unfreeze,
        "--batch-size",
        "50",
        "--epochs",
        str(epochs),
        "--patience",
        "9",
        "--cache-root",
        str(tmp / "cache"),
        "--name",
        name,
        "--image-backbone",
        "clip-tiny-image",
        "--weights-image",
        "random:0",
        "--text-backbone",
        "clip-tiny-text",
        "--weights-text",
        "random:0",
    ]


def _losses(run: Path) -> list[float]:
    return [json.loads(row)["loss"] for row in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_after_first_checkpoint(cmd: list[str], env: dict, tmp_run: Path) -> None:
    """Start `cmd`, SIGKILL its process group once the epoch-1 checkpoint exists (during epoch 2)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_run / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    try:
        while not ckpt.is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_set_order_of_towers_depends_on_the_hash_seed():
    """The premise of the next test: under these two seeds a set of {I, T} iterates in different orders."""
    orders = {
        subprocess.run(
            [sys.executable, "-c", "print(list({'I', 'T'}))"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("0", "3")
    }
    assert len(orders) == 2
    with pytest.raises(TypeError, match="not a set"):
        _tiny_model({"I", "T"})


@pytest.mark.slow
def test_resume_under_another_hash_seed_equals_uninterrupted(cub, tmp_path):
    """Both towers unfrozen: SIGKILLed during epoch 2 with its checkpoint written under PYTHONHASHSEED=0, resumed
    under PYTHONHASHSEED=3, it ends where the uninterrupted run ends: losses, towers and test metrics. Tower,
    optimizer-group and checkpoint-key order follow the config, never str hashing, so the runs agree. (Kills at
    any other point: the fault sweep of tests/integration/test_run_faults.py.)"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "cache" / "runs"
    both = dict(modalities="I,T,C", unfreeze="image,text")
    done = subprocess.run(
        _command(cub, tmp_path, "straight", 3, **both),
        env={**env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _kill_after_first_checkpoint(
        _command(cub, tmp_path, "seeded", 3, **both), {**env, "PYTHONHASHSEED": "0"}, runs / ".tmp-seeded"
    )
    assert not (runs / "seeded").exists()
    resumed = subprocess.run(
        _command(cub, tmp_path, "seeded", 3, **both), env={**env, "PYTHONHASHSEED": "3"}, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming seeded after epoch" in resumed.stdout
    assert len(_losses(runs / "seeded")) == 3 and _losses(runs / "seeded") == _losses(runs / "straight")
    for kind in ("image", "text"):
        a, b = (load_file(str(runs / r / f"{kind}_backbone.safetensors")) for r in ("straight", "seeded"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = (json.loads((runs / r / "test_metrics.json").read_text()) for r in ("straight", "seeded"))
    assert ta["instance"] == tb["instance"]


def test_cli_errors_are_one_line(cub, tmp_path):
    from typer.testing import CliRunner

    from pcmpipe.cli import app

    for args, words in (
        (["--data-root", str(tmp_path / "nope")], "missing"),
        (["--data-root", str(cub), "--unfreeze", "text", "--modalities", "I,C"], "needs modality T"),
        (["--data-root", str(cub), "--backbone-lr", "0"], "--backbone-lr"),
    ):
        out = CliRunner().invoke(app, ["finetune", *args, "--cache-root", str(tmp_path / "c")])
        assert out.exit_code == 2 and words in out.output and "Traceback" not in out.output, out.output


def test_all_frozen_trains_heads_only(cub, tmp_path):
    run = finetune(_cfg(cub, tmp_path, unfreeze="none", modalities="A,C"))
    assert (run / "test_metrics.json").is_file() and not list(run.glob("*_backbone.safetensors"))
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["lr_start"] == {
        "heads": 1e-4,
        "heads_no_decay": 1e-4,
    }


@pytest.mark.slow  # a text fine-tuning run, then zero-shot through its tower
def test_prompts_of_a_text_finetuned_run_go_through_its_own_tower(cub, tmp_path):
    """Zero-shot's P output of a run that fine-tuned T: the prompts are encoded by the run's tower (the one its
    T head was trained on), not the frozen one. The run also trains PCMR with the shared target and logs the
    target's shares per epoch."""
    from pcmpipe.datasets import open_dataset
    from pcmpipe.evaluation.zeroshot import run_prompt_vectors
    from pcmpipe.training.rundir import load_heads, read_metrics, run_config

    cfg = _cfg(cub, tmp_path, modalities="I,T,C", unfreeze="text", batch_size=100, loss="pcmr", target="shared")
    run = finetune(cfg)
    shares = read_metrics(run)[-1]["target_share"]
    assert shares["target"] == shares["ids"] and shares["target"]["C"] > 0  # captions of one class share C
    heads, _ = load_heads(run)
    ids, vecs = run_prompt_vectors(run, run_config(run), heads["T"], cfg.cache_root, "cub", "test")
    records = open_dataset("cub", cub).records("P", "test")
    assert ids.tolist() == [r.links.get("class_id", r.id) for r in records]
    texts = [r.text for r in records]

    def through(backbone):
        with torch.no_grad():
            return heads["T"](backbone.encode(backbone.preprocess(texts)).float())

    tuned = create_backbone("clip-tiny-text", str(run / "text_backbone.safetensors"))
    torch.testing.assert_close(vecs, through(tuned), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(vecs, through(create_backbone("clip-tiny-text", "random:0")), atol=1e-4)


def test_fine_tuning_centres_as_stage_two_with_the_initial_towers_train_mean(cub, tmp_path):
    """One preprocessing per comparison: fine-tuning centres by default, as stage two does. A frozen modality's
    mean is its cached train rows'; the live tower's is that of its initial weights' train cache (extracted once),
    the mean a frozen run of the same table centres with, kept fixed while the tower moves."""
    from pcmpipe.samples import load_modality
    from pcmpipe.samples.moments import moments
    from pcmpipe.training.rundir import load_heads

    assert FinetuneConfig.model_fields["standardize"].default == "center"
    cfg = _cfg(cub, tmp_path, modalities="I,C")
    run = finetune(cfg)
    heads, _ = load_heads(run)
    rec = json.loads((run / "config.json").read_text())
    for m in ("I", "C"):
        train = load_modality(cfg.cache_root, "cub", m, "train")
        torch.testing.assert_close(heads[m].input_mean, moments(train, False)[0])
        assert heads[m].standardised
    initial = load_modality(cfg.cache_root, "cub", "I", "train")
    assert (
        rec["caches"]["train"]["I"]["live"] and rec["caches"]["train"]["I"]["standardised_from"] == initial.fingerprint
    )
    manifest = json.loads(manifest_in(Path(initial.directory)).read_text())
    assert manifest["meta"]["weights_sha256"] == create_backbone("clip-tiny-image", "random:0").meta["weights_sha256"]
    plain, _ = load_heads(finetune(_cfg(cub, tmp_path, modalities="I,C", standardize="none", epochs=1)))
    assert not plain["I"].standardised and not plain["C"].input_mean.any()


@pytest.mark.slow  # a fine-tuning run of several epochs
def test_the_finetune_bar_reaches_the_last_step_of_every_epoch(cub, tmp_path):
    """Fine-tuning reports its steps as stage two does: the CLI's bar (tests/bar_trace.py) moves to the last step
    of every epoch (it stood at 0 for the whole run: the loop sent no step events)."""
    from bar_trace import BarTrace, terminal

    from pcmpipe.cli.training_progress import TrainingRenderer

    renderer = TrainingRenderer(terminal())
    trace = BarTrace(renderer, renderer)
    try:
        finetune(_cfg(cub, tmp_path, progress=True, epochs=2, patience=2, batch_size=25), on_event=trace)
    finally:
        renderer.close()
    assert trace.epochs == [(1, 1), (1, 2)] and trace.reached_the_end_of_every_epoch(), trace.shown
