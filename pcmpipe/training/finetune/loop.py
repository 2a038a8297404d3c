"""The epoch loop of fine-tuning: raw live inputs + cached features -> loss -> two-rate AdamW step.

Per epoch: a seeded permutation of the training samples (drop_last, like stage two), raw inputs of the
live modalities decoded and augmented by DataLoader workers, towers under autocast on CUDA (GradScaler
for fp16), PCMC or PCMR exactly as stage two computes them, the cosine schedule stepped per batch; then
validation (live modalities re-encoded without augmentation), early-stopping bookkeeping, the best
epoch's towers written to `<kind>_backbone.safetensors`, and an atomic checkpoint of everything a
resume needs (heads, trainable tower tensors, optimizer, scheduler, scaler, generators, history).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pcmpipe.errors import UserError
from pcmpipe.losses import LOSSES, LossBatch, LossParams, TargetShares
from pcmpipe.training.evaluate import embed_rows, mean_r1, score
from pcmpipe.training.events import OnEvent, ShareMonitor, StepDone, TrainingStarted, report_step
from pcmpipe.training.finetune.data import LiveInputs, eval_modalities, live_loader, live_transform
from pcmpipe.training.finetune.model import Coordinator, save_backbone
from pcmpipe.training.optim import clamp_logit_scale
from pcmpipe.training.state import Resumable, TrainState, end_epoch


def _group_lrs(opt) -> dict[str, float]:
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}


def _inputs(cfg, live: dict, train_d, train_recs) -> LiveInputs:
    """The training split's raw inputs of the live modalities, augmented (images and EDA captions)."""
    from pcmpipe.augment import EDA

    transforms = {m: live_transform(bb, cfg.augment) for m, bb in live.items() if bb.modality_kind == "image"}
    image_tf = next(iter(transforms.values()), None)
    return LiveInputs(
        train_recs,
        {m: bb.modality_kind for m, bb in live.items()},
        train_d.idx,
        image_tf,
        cfg.augment,
        EDA(alpha=cfg.eda_alpha),
        cfg.seed,
        len(train_d),
    )


def _batch(samples: torch.Tensor, raw: dict, train_d, live: dict, tokenizers: dict) -> tuple[dict, dict]:
    """A step's inputs per modality (tokens, pixels, or cached features gathered) and presence masks."""
    inputs, present = {}, {}
    for m, d in train_d.modalities.items():
        present[m] = train_d.present[m].index_select(0, samples)
        if m in tokenizers:
            inputs[m] = tokenizers[m](raw[m]).to(samples.device)
        elif m in live:
            inputs[m] = torch.stack(raw[m]).to(samples.device, non_blocking=True)
        else:
            inputs[m] = d.features.index_select(0, train_d.idx[m].index_select(0, samples))
    return inputs, present


def _validate(cfg, model: Coordinator, live: dict, val_split, state: TrainState, tmp, device) -> tuple[dict, bool]:
    """Score the validation split and record the epoch for early stopping; an improvement writes each unfrozen
    tower's weights (the best epoch's) -> (scores, improved)."""
    val_d, val_recs = val_split
    val_mods = eval_modalities(model, live, val_d, val_recs, cfg, device)
    val = score(embed_rows(model.heads, val_mods, cfg.eval_batch), val_mods, cfg.match)
    improved = state.record(mean_r1(val), model.heads, model.log_scale)
    if improved:
        for m in model.towers:
            path = tmp / f"{model.kinds[m]}_backbone.safetensors"
            save_backbone(path, model.backbone_state(m), live[m], model.kinds[m], cfg.name)
    return val, improved


def _loss_batch(emb: dict, present: dict, feats: dict, samples: torch.Tensor, idx: dict) -> LossBatch:
    """The step's loss inputs. PCMR's target compares same-view inputs (Eq. 7): a live modality's "input" is its
    backbone feature; `rows` are the samples' cached rows of each modality (`idx[m]`: sample -> row)."""
    return LossBatch(
        emb,
        present,
        features=lambda: {m: x.float() for m, x in feats.items()},
        rows=lambda: {m: i.index_select(0, samples) for m, i in idx.items()},
    )


def run_epochs(
    cfg, fp, model: Coordinator, live, splits, parts: Resumable, amp, steps, state: TrainState, tmp, emit: OnEvent
) -> None:
    """Epochs from state.epoch + 1 until cfg.epochs or early stop; checkpoint after each epoch."""
    opt, scaler = parts.optimizer, parts.scaler
    train_d, train_recs = splits[cfg.split_train]
    device = model.log_scale.device
    inputs_ds = _inputs(cfg, live, train_d, train_recs)
    tokenizers = {m: bb.preprocess for m, bb in live.items() if bb.modality_kind == "text"}
    n, bs = len(train_d), cfg.batch_size
    loss_fn, loss_params = LOSSES[cfg.loss], LossParams(model.log_scale, cfg.threshold, cfg.rho, cfg.target, cfg.rho_on)
    shares = TargetShares() if cfg.loss == "pcmr" else None
    monitor = ShareMonitor(cfg.target, cfg.threshold, emit)
    emit(TrainingStarted(cfg.name, cfg.epochs, steps, state.epoch + 1, steps_reported=cfg.progress))
    while state.running(cfg.epochs, cfg.patience):
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=parts.generator)[: steps * bs].view(steps, bs)
        inputs_ds.epoch = epoch
        loader = live_loader(inputs_ds, order.tolist(), cfg.num_workers, device.type == "cuda")
        losses = torch.zeros(steps)
        lr_start = _group_lrs(opt)
        for s, (samples, raw) in enumerate(loader):
            samples = samples.to(device)
            inputs, present = _batch(samples, raw, train_d, live, tokenizers)
            with torch.autocast("cuda", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False):
                feats = {m: (model.features(m, x) if m in live else x) for m, x in inputs.items()}
            emb = {m: model.heads[m](f.float()) for m, f in feats.items()}
            loss = loss_fn(_loss_batch(emb, present, feats, samples, train_d.idx), loss_params, shares)
            if not torch.isfinite(loss):
                raise UserError(
                    f"loss became NaN at epoch {epoch} step {s + 1}; lower --lr/--backbone-lr "
                    f"(now {cfg.lr:g}/{cfg.backbone_lr:g}) or check the inputs"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            parts.scheduler.step()
            clamp_logit_scale(model.log_scale, cfg.logit_scale_max)
            losses[s] = loss.detach().float().cpu()
            if cfg.progress and report_step(s + 1, steps):
                emit(StepDone(epoch, s + 1, steps, float(losses[s])))
        train_time = time.perf_counter() - t0

        val, improved = _validate(cfg, model, live, splits[cfg.split_val], state, tmp, device)
        rec: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(losses.mean()),
            "lr_start": lr_start,
            "lr": _group_lrs(opt),
            "logit_scale": float(model.log_scale.detach().exp()),
            "val_mean_r@1": mean_r1(val),
            "best": improved,
            "val": val,
            **({"target_share": monitor.epoch(epoch, shares.shares())} if shares is not None else {}),
            "train_time_s": train_time,
            "time_s": time.perf_counter() - t0,
        }
        end_epoch(tmp, fp, state, parts, rec, steps, epochs=cfg.epochs, patience=cfg.patience, emit=emit)
