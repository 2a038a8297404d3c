"""The epoch loop of fine-tuning: raw live inputs + cached features -> loss -> two-rate AdamW step.

Per epoch: a seeded permutation of the training samples (drop_last, like stage two), raw inputs of the
live modalities decoded and augmented by DataLoader workers, towers under autocast on CUDA (GradScaler
for fp16), PCMC or PCMR exactly as stage two computes them, the cosine schedule stepped per batch; then
validation (live modalities re-encoded without augmentation), early-stopping bookkeeping, the best
epoch's towers written to `<kind>_backbone.safetensors`, and an atomic checkpoint of everything a
resume needs (heads, trainable tower tensors, optimizer, scheduler, scaler, generators, history).
"""

from __future__ import annotations

import math
import time

import torch

from pcmpipe.training import rundir as runs
from pcmpipe.errors import UserError
from pcmpipe.training.finetune.data import LiveInputs, eval_modalities, live_loader, live_transform
from pcmpipe.training.finetune.model import Coordinator, save_backbone, in_tower
from pcmpipe.training.evaluate import embed_rows, mean_r1, score


def _loss(cfg, emb, inputs, present, model: Coordinator):
    from pcmpipe.losses import pcmc_loss, pcmr_loss, pcmr_target

    if cfg.loss == "pcmc":
        return pcmc_loss(emb, present, logit_scale=model.log_scale.exp())
    # PCMR's target compares same-view inputs (Eq. 7); a live modality's "input" is its backbone feature
    target = pcmr_target({m: x.float() for m, x in inputs.items()}, threshold=cfg.threshold, present=present)
    return pcmr_loss(emb, target=target, present=present, rho=cfg.rho)


def run_epochs(cfg, fp, model: Coordinator, live, splits, opt, sched, scaler, amp, gen, steps, state, tmp,
               console) -> None:
    """Epochs from state['epoch'] + 1 until cfg.epochs or early stop; checkpoint after each epoch."""
    from pcmpipe.augment import EDA

    train_d, train_recs = splits[cfg.split_train]
    val_d, val_recs = splits[cfg.split_val]
    device = model.log_scale.device
    transforms = {m: live_transform(bb, cfg.augment) for m, bb in live.items() if bb.modality_kind == "image"}
    image_tf = next(iter(transforms.values()), None)
    inputs_ds = LiveInputs(train_recs, {m: bb.modality_kind for m, bb in live.items()}, train_d.idx, image_tf,
                           cfg.augment, EDA(alpha=cfg.eda_alpha), cfg.seed, len(train_d))
    tokenizers = {m: bb.preprocess for m, bb in live.items() if bb.modality_kind == "text"}
    n, bs = len(train_d), cfg.batch_size
    max_log = math.log(cfg.logit_scale_max)
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen)[: steps * bs].view(steps, bs)
        inputs_ds.epoch = epoch
        loader = live_loader(inputs_ds, order.tolist(), cfg.num_workers, device.type == "cuda")
        losses = torch.zeros(steps)
        lr_start = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
        for s, (samples, raw) in enumerate(loader):
            samples = samples.to(device)
            inputs, present = {}, {}
            for m, d in train_d.modalities.items():
                present[m] = train_d.present[m].index_select(0, samples)
                if m in tokenizers:
                    inputs[m] = tokenizers[m](raw[m]).to(device)
                elif m in live:
                    inputs[m] = torch.stack(raw[m]).to(device, non_blocking=True)
                else:
                    inputs[m] = d.features.index_select(0, train_d.idx[m].index_select(0, samples))
            with torch.autocast("cuda", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False):
                feats = {m: (model.features(m, x) if m in live else x) for m, x in inputs.items()}
            emb = {m: model.heads[m](f.float()) for m, f in feats.items()}
            loss = _loss(cfg, emb, feats, present, model)
            if not torch.isfinite(loss):
                raise UserError(f"loss became NaN at epoch {epoch} step {s + 1}; lower --lr/--backbone-lr "
                                f"(now {cfg.lr:g}/{cfg.backbone_lr:g}) or check the inputs")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if model.log_scale.requires_grad:
                with torch.no_grad():
                    model.log_scale.clamp_(max=max_log)  # CLIP's clamp of the scale at 100
            losses[s] = loss.detach().float().cpu()
        train_time = time.perf_counter() - t0

        val_mods = eval_modalities(model, live, val_d, val_recs, cfg, device)
        val = score(embed_rows(model.heads, val_mods, cfg.eval_batch), val_mods, cfg.match)
        val_r1 = mean_r1(val)
        improved = val_r1 > state["best"]
        if improved:
            state.update(best=val_r1, best_epoch=epoch, bad_epochs=0, best_scale=float(model.log_scale.detach().exp()),
                         best_heads={k: v.detach().clone().cpu() for k, v in model.heads.state_dict().items()})
            for m in model.towers:
                save_backbone(tmp / f"{model.kinds[m]}_backbone.safetensors", model.backbone_state(m), live[m],
                              model.kinds[m], cfg.name)
        else:
            state["bad_epochs"] += 1
        rec = {"epoch": epoch, "loss": float(losses.mean()), "lr_start": lr_start,
               "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)},
               "logit_scale": float(model.log_scale.detach().exp()), "val_mean_r@1": val_r1, "best": improved, "val": val,
               "train_time_s": train_time, "time_s": time.perf_counter() - t0}
        state["history"].append(rec)
        state["epoch"] = epoch
        towers = {m: {k: v.detach().cpu() for k, v in t.state_dict().items() if in_tower(model.kinds[m], k)}
                  for m, t in model.towers.items()}
        runs.save_checkpoint(tmp, {"fingerprint": fp, "heads": model.heads.state_dict(), "towers": towers,
                                   "log_scale": model.log_scale.detach(), "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                   "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "state": state})
        runs.write_metrics(tmp, state["history"])
        console.print(f"epoch {epoch}/{cfg.epochs} loss {rec['loss']:.4f} val mean r@1 {val_r1:.2f} "
                      f"(best {state['best']:.2f} @ {state['best_epoch']}) {rec['time_s']:.1f}s"
                      + ("" if state["bad_epochs"] < cfg.patience else " - early stop"), highlight=False)
