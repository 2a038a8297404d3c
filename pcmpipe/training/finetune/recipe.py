"""Fine-tuning stage (paper Sec. 4): unfrozen CLIP towers at lr 1e-6, heads at 1e-4, augmented raw inputs.

`finetune(cfg) -> run dir` trains end to end from the raw dataset (CUB by default): the unfrozen towers
(`cfg.unfreeze`, any subset of image, text) see augmented images (timm) and captions (EDA) every step;
every other modality comes from the feature cache, or is computed once (pcmpipe.training.finetune.data). The
recipe is stage two's (AdamW, weight decay 0.2, cosine schedule per step, early stopping on the mean
validation r@1, same run directory layout) with the backbones in two extra optimizer groups; on CUDA
the towers run under autocast (bf16, else fp16 with a GradScaler) with activation checkpointing.

The run directory is stage two's (pcmpipe.training.rundir) plus `<kind>_backbone.safetensors` per unfrozen tower
(best epoch; full open_clip state dict), which `pcmpipe extract --weights-image/--weights-text` loads.
A checkpoint per epoch (heads, towers, optimizer, scheduler, scaler, RNG) lets a killed run resume.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import load_file

from pcmpipe.training import rundir as runs
from pcmpipe.config import FinetuneConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.training.finetune.model import Coordinator, optimizer_groups, save_backbone
from pcmpipe.training.stage2 import cosine_lambda, resolve_device, software_versions
from pcmpipe.training.evaluate import evaluate_all, mean_r1


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None (fp32) on CPU or with amp off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(dtype: torch.dtype | None):
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()



def _record_config(cfg: FinetuneConfig, fp: str, sources, model: Coordinator, shapes: dict, base: list,
                   sizes: dict, device: torch.device) -> dict:
    """config.json: stage two's fields, with per-split provenance of every modality instead of plain caches.

    A live modality has no cache; its entry carries a fingerprint that names the fine-tuning, so
    `pcmpipe evaluate` refuses to score these heads on features of the original backbone.
    """
    caches = {split: {m: dict(p) for m, p in prov.items()} for split, prov in sources.provenance.items()}
    for prov in caches.values():
        for m, p in prov.items():
            if p.get("live"):
                p["fingerprint"] = f"finetuned:{cfg.name}:{m}"
                p["path"] = None
    return {"config": cfg.to_dict(), "seed": cfg.seed, "fingerprint": fp, "caches": caches, "stage": "finetune",
            "shapes": {m: list(s) for m, s in shapes.items()}, "base": base, "samples": sizes,
            "backbones": {m: {"name": sources.live[m].name, "kind": model.kinds[m],
                              "base_weights": sources.live[m].meta.get("weights")} for m in model.towers},
            "device": str(device), "versions": software_versions()}


def finetune(cfg: FinetuneConfig, console: Console | None = None) -> Path:
    """Fine-tune for `cfg`, write the run directory, return its path (module docstring)."""
    from pcmpipe.backbones import create_backbone
    from pcmpipe.datasets import open_dataset
    from pcmpipe.training.finetune.data import Sources

    console = console or Console()
    cfg = cfg.resolved()
    fp = config_fingerprint(cfg)
    final, tmp = runs.final_dir(cfg.runs_root, cfg.name), runs.temp_dir(cfg.runs_root, cfg.name)
    if final.exists():
        if runs.is_complete(final) and runs.run_config(final).get("fingerprint") == fp:
            console.print(f"run {final} is already complete (same config); nothing to do", highlight=False)
            return final
        raise UserError(f"run directory {final} exists with another config; pass another --name or delete it")
    if runs.is_complete(tmp):  # killed between the completion marker and the rename
        (tmp / runs.CHECKPOINT).unlink(missing_ok=True)
        os.replace(tmp, final)
        return final

    ds = open_dataset(cfg.dataset, cfg.data_root)  # a wrong --data-root fails here, before any weights load
    device = resolve_device(cfg.device)
    live = {m: create_backbone(*cfg.backbone_spec(kind), device=device) for m, kind in cfg.live().items()}
    sources = Sources(cfg, ds, live, device, console)
    splits = {s: sources.split(s) for s in (cfg.split_train, cfg.split_val, cfg.split_test)}
    train_d, train_recs = splits[cfg.split_train]
    for d, _ in splits.values():
        d.to(device)
    steps = len(train_d) // cfg.batch_size
    if steps == 0:
        raise UserError(f"the {cfg.split_train} split has {len(train_d)} samples, fewer than --batch-size "
                        f"{cfg.batch_size}; lower --batch-size")
    shapes = {m: (live[m].feature_shape if m in live else d.shape) for m, d in train_d.modalities.items()}
    torch.manual_seed(cfg.seed)  # head init, as in stage two
    model = Coordinator(live, set(live), shapes, cfg.dim, cfg.logit_scale_init,
                        learnable_scale=cfg.logit_scale == "learnable" and cfg.loss == "pcmc").to(device)
    model.set_grad_checkpointing(cfg.grad_checkpointing and bool(live))
    opt = torch.optim.AdamW(optimizer_groups(model, cfg.lr, cfg.backbone_lr, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.epochs * steps))
    amp = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)  # bf16 needs no loss scaling
    gen = torch.Generator().manual_seed(cfg.seed)

    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_heads": None,
             "best_scale": float(model.log_scale.detach().exp())}
    ckpt = runs.load_checkpoint(tmp) if tmp.is_dir() else None
    if ckpt is not None:
        if ckpt["fingerprint"] != fp:
            raise UserError(f"{tmp} holds an interrupted run of another config; delete it or pass another --name")
        state = _restore(ckpt, model, opt, sched, scaler, gen, tmp)
        runs.write_metrics(tmp, state["history"])
        console.print(f"resuming {cfg.name} after epoch {state['epoch']}", highlight=False)
    else:
        if tmp.exists():
            shutil.rmtree(tmp)  # died before its first checkpoint: nothing worth keeping
        tmp.mkdir(parents=True)
        sizes = {s: len(d) for s, (d, _) in splits.items()}
        runs.write_json(tmp / "config.json", _record_config(cfg, fp, sources, model, shapes, train_d.base, sizes, device))
        test_d, test_recs = splits[cfg.split_test]
        from pcmpipe.training.finetune.data import eval_modalities

        untrained, _ = evaluate_all(model.heads, eval_modalities(model, live, test_d, test_recs, cfg, device),
                                    cfg.eval_batch)
        runs.write_json(tmp / "untrained_metrics.json", {"epoch": 0, "heads": "untrained (seeded init)", **untrained})

    from pcmpipe.training.finetune.loop import run_epochs

    run_epochs(cfg, fp, model, live, splits, opt, sched, scaler, amp, gen, steps, state, tmp, console)
    return _finish(cfg, model, live, splits, state, tmp, final, shapes, console, device)


def _restore(ckpt: dict, model: Coordinator, opt, sched, scaler, gen, tmp: Path) -> dict:
    """Load a checkpoint's heads, trainable tower tensors, optimizer, scheduler, scaler and RNGs -> run state."""
    model.heads.load_state_dict(ckpt["heads"])
    for m, tower_state in ckpt["towers"].items():
        missing, unexpected = model.towers[m].load_state_dict(tower_state, strict=False)
        if unexpected or any(p.requires_grad for k, p in model.towers[m].named_parameters() if k in missing):
            raise UserError(f"checkpoint in {tmp} does not fit the {m} backbone; delete {tmp} to start over")
    with torch.no_grad():
        model.log_scale.copy_(ckpt["log_scale"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["state"]


def _finish(cfg, model, live, splits, state, tmp, final, shapes, console, device) -> Path:
    """Best epoch -> test metrics, embeddings, heads, backbones; the completion marker last, then the rename."""
    from pcmpipe.training.finetune.data import eval_modalities

    if state["best_heads"] is not None:
        model.heads.load_state_dict(state["best_heads"])
    for m in model.towers:
        best = tmp / f"{model.kinds[m]}_backbone.safetensors"
        if best.is_file():  # written at every improvement; absent only if no epoch ever improved
            model.towers[m].load_state_dict(load_file(str(best), device=str(device)))
    test_d, test_recs = splits[cfg.split_test]
    mods = eval_modalities(model, live, test_d, test_recs, cfg, device)
    metrics, emb = evaluate_all(model.heads, mods, cfg.eval_batch)
    runs.save_heads(tmp / "heads.safetensors", model.heads.state_dict(), shapes, cfg.dim, state["best_scale"])
    for m, d in mods.items():
        runs.save_embeddings(tmp, m, emb[m], d.key, d.columns)
    _save_best_backbones(cfg, model, live, tmp)
    runs.write_json(tmp / runs.COMPLETE_MARKER, {"epoch": state["best_epoch"], "match": cfg.match,
                                                 "val_mean_r@1": state["best"], **metrics})
    # the checkpoint goes only after the marker: a kill in between still resumes, never restarts
    (tmp / runs.CHECKPOINT).unlink(missing_ok=True)
    os.replace(tmp, final)
    console.print(f"done: {final} (best epoch {state['best_epoch']}, test mean r@1 {mean_r1(metrics[cfg.match]):.2f})",
                  highlight=False)
    return final


def _save_best_backbones(cfg, model: Coordinator, live: dict, tmp: Path) -> None:
    """Make sure every unfrozen tower has its safetensors file (the best epoch's, already loaded)."""
    for m in model.towers:
        path = tmp / f"{model.kinds[m]}_backbone.safetensors"
        if not path.is_file():
            save_backbone(path, model.backbone_state(m), live[m], model.kinds[m], cfg.name)
