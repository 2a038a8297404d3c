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

from pathlib import Path

import torch
from safetensors.torch import load_file

from pcmpipe.config import FinetuneConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.heads import ProjectionHead
from pcmpipe.training.evaluate import evaluate_all, mean_r1
from pcmpipe.training.events import Note, OnEvent, RunFinished
from pcmpipe.training.finetune.model import Coordinator, in_tower, optimizer_groups, save_backbone
from pcmpipe.training.optim import adamw, cosine_schedule, resolve_device
from pcmpipe.training.rundir import protocol
from pcmpipe.training.rundir.files import UNTRAINED, write_json
from pcmpipe.training.rundir.record import record_config
from pcmpipe.training.state import Resumable, TrainState, restore


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None (fp32) on CPU or with amp off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _record_config(
    cfg: FinetuneConfig,
    fp: str,
    sources,
    model: Coordinator,
    shapes: dict,
    base: list,
    sizes: dict,
    device: torch.device,
) -> dict:
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
    backbones = {
        m: {"name": sources.live[m].name, "kind": model.kinds[m], "base_weights": sources.live[m].meta.get("weights")}
        for m in model.towers
    }
    return record_config(cfg, fp, caches, shapes, base, sizes, device, stage="finetune", backbones=backbones)


def finetune(cfg: FinetuneConfig, on_event: OnEvent | None = None) -> Path:
    """Fine-tune for `cfg`, write the run directory, return its path (module docstring). Progress goes to
    `on_event` (pcmpipe.training.events); None drops it. `cfg.log_to` adds tracking (pcmpipe.training.tracking)."""
    from pcmpipe.training.tracking import tracked

    named = cfg.resolved()  # the run's name, for its lock (held from the claim to the rename)
    with protocol.run_lock(named.runs_root, str(named.name)), tracked(cfg, on_event) as emit:
        return _finetune(cfg, emit)


def _finetune(cfg: FinetuneConfig, emit: OnEvent) -> Path:
    from pcmpipe.backbones import create_backbone
    from pcmpipe.datasets import open_dataset
    from pcmpipe.training.finetune.data import Sources, eval_modalities
    from pcmpipe.training.finetune.loop import run_epochs

    cfg = cfg.resolved()
    # resolved() fills the name and batch size; the schema refuses a config without data_root
    assert cfg.name is not None and cfg.batch_size is not None and cfg.data_root is not None
    fp = config_fingerprint(cfg)
    claim = protocol.claim(cfg.runs_root, cfg.name, fp)
    for note in claim.notes:
        emit(Note(note))
    if claim.status == "done":
        return claim.final
    tmp = claim.tmp

    ds = open_dataset(cfg.dataset, cfg.data_root)  # a wrong --data-root fails here, before any weights load
    device = resolve_device(cfg.device)
    live = {m: create_backbone(*cfg.backbone_spec(kind), device=device) for m, kind in cfg.live().items()}
    sources = Sources(cfg, ds, live, device, emit)
    splits = {s: sources.split(s) for s in (cfg.split_train, cfg.split_val, cfg.split_test)}
    train_d, train_recs = splits[cfg.split_train]
    for d, _ in splits.values():
        d.to(device)
    steps = len(train_d) // cfg.batch_size
    if steps == 0:
        raise UserError(
            f"the {cfg.split_train} split has {len(train_d)} samples, fewer than --batch-size "
            f"{cfg.batch_size}; lower --batch-size"
        )
    shapes = {m: (live[m].feature_shape if m in live else d.shape) for m, d in train_d.modalities.items()}
    # stage two's input standardisation, from the train split's frozen features (a live tower's: its initial
    # weights'), fixed for the run (docs/conventions.md, "Input standardisation when a tower is unfrozen")
    stats = sources.standardisation(cfg.split_train, train_d, cfg.standardize)
    torch.manual_seed(cfg.seed)  # head init, as in stage two
    # `live` follows the config's --unfreeze order: towers, optimizer groups and checkpoint keys never depend on
    # set or str-hash order (PYTHONHASHSEED), so a resumed run lines its optimizer state up with the same tensors
    model = Coordinator(
        live,
        list(live),
        shapes,
        cfg.dim,
        cfg.logit_scale_init,
        learnable_scale=cfg.logit_scale == "learnable" and cfg.loss == "pcmc",
    ).to(device)
    for m, (mean, scale) in stats.items():
        head = model.heads[m]
        assert isinstance(head, ProjectionHead), "build_heads makes ProjectionHeads"
        head.set_standardisation(mean, scale)  # copied into the head's buffers, on the head's device
    model.set_grad_checkpointing(cfg.grad_checkpointing and bool(live))
    opt = adamw(optimizer_groups(model, cfg.lr, cfg.backbone_lr, cfg.weight_decay), cfg.lr, fused=False)
    amp = autocast_dtype(device, cfg.amp)
    parts = Resumable(
        {"heads": model.heads, **{f"towers.{m}": t for m, t in model.towers.items()}},
        model.log_scale,
        opt,
        cosine_schedule(opt, cfg.epochs * steps),
        torch.Generator().manual_seed(cfg.seed),
        scaler=torch.amp.GradScaler("cuda", enabled=amp == torch.float16),  # bf16 needs no scaling
        select={f"towers.{m}": (lambda k, kind=model.kinds[m]: in_tower(kind, k)) for m in model.towers},
    )

    state = TrainState(best_scale=float(model.log_scale.detach().exp()))
    if claim.checkpoint is not None:
        state = restore(claim.checkpoint, parts, tmp)
        protocol.start_resume(tmp, state.history)
        emit(Note(f"resuming {cfg.name} after epoch {state.epoch}"))
    else:
        sizes = {s: len(d) for s, (d, _) in splits.items()}
        protocol.start_fresh(tmp, _record_config(cfg, fp, sources, model, shapes, train_d.base, sizes, device))
        test_d, test_recs = splits[cfg.split_test]
        untrained, _ = evaluate_all(
            model.heads, eval_modalities(model, live, test_d, test_recs, cfg, device), cfg.eval_batch
        )
        write_json(tmp / UNTRAINED, {"epoch": 0, "heads": "untrained (seeded init)", **untrained})

    run_epochs(cfg, fp, model, live, splits, parts, amp, steps, state, tmp, emit)
    return _finish(cfg, model, live, splits, state, claim, shapes, emit, device)


def _finish(cfg, model, live, splits, state: TrainState, claim, shapes, emit: OnEvent, device) -> Path:
    """Best epoch -> test metrics, embeddings, heads, backbones; the completion marker last, then the rename."""
    from pcmpipe.training.finetune.data import eval_modalities

    tmp = claim.tmp
    if state.best_heads is not None:
        model.heads.load_state_dict(state.best_heads)
    for m in model.towers:
        best = tmp / f"{model.kinds[m]}_backbone.safetensors"
        if best.is_file():  # written at every improvement; absent only if no epoch ever improved
            model.towers[m].load_state_dict(load_file(str(best), device=str(device)))
    test_d, test_recs = splits[cfg.split_test]
    mods = eval_modalities(model, live, test_d, test_recs, cfg, device)
    metrics, emb = evaluate_all(model.heads, mods, cfg.eval_batch)
    embedded = {m: (emb[m], d.key, d.columns) for m, d in mods.items()}
    protocol.finish(
        claim,
        model.heads.state_dict(),
        shapes,
        cfg.dim,
        state.best_scale,
        embedded,
        state.result(cfg.match, metrics),
        more=lambda tmp: _save_best_backbones(cfg, model, live, tmp),
    )
    emit(RunFinished(claim.final, state.best_epoch, mean_r1(metrics[cfg.match])))
    return claim.final


def _save_best_backbones(cfg, model: Coordinator, live: dict, tmp: Path) -> None:
    """Make sure every unfrozen tower has its safetensors file (the best epoch's, already loaded)."""
    for m in model.towers:
        path = tmp / f"{model.kinds[m]}_backbone.safetensors"
        if not path.is_file():
            save_backbone(path, model.backbone_state(m), live[m], model.kinds[m], cfg.name)
