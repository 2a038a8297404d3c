"""Stage two: train one projection head per modality on cached features with PCMC or PCMR (Sec. 3-4).

Recipe (paper defaults, docs/training.md): AdamW lr 1e-4, weight decay 0.2 on weight matrices only, cosine
schedule stepped per batch over epochs * steps, at most 50 epochs, early stopping after 5 epochs without a
gain in the mean validation r@1 over all directions. Batches are index_select gathers on whole-split feature
tensors (pcmpipe.samples); the loop keeps per-step host work to a minimum (no .item() per step on GPU).

The run is written into `<runs_root>/.tmp-<name>/` with a checkpoint per epoch and renamed to
`<runs_root>/<name>/` when test metrics are written (pcmpipe.training.rundir). Running the same config again resumes.

Under torchrun (docs/scaling.md) every rank draws the same global batch order, embeds its slice of each global
batch, and the embeddings are all-gathered so the losses see the whole global batch; gradients are averaged.
`batch_size` stays the global batch, so W processes run the same experiment as one. Rank 0 alone evaluates and
writes the run directory; the other ranks wait for it. On one process every distributed call is a no-op.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from pcmpipe import distributed
from pcmpipe.training import rundir as runs
from pcmpipe.config import TrainConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.samples import SplitData, SplitInfo, check_compatible, load_split, peek_split
from pcmpipe.training.evaluate import embed_rows, evaluate_all, levels_available, mean_r1, score


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available; use --device cpu")
    return torch.device(name)


def param_groups(heads: nn.ModuleDict, extra_no_decay: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Decay only weight matrices (ndim >= 2); biases, LayerNorm, softmax layer weights and the logit scale are
    exempt (as in CLIP / open_clip: decaying a scale or a norm gain shrinks it towards 0 for no reason)."""
    decay = [p for p in heads.parameters() if p.ndim >= 2]
    no_decay = [p for p in heads.parameters() if p.ndim < 2] + list(extra_no_decay)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_lambda(total_steps: int):
    """LR multiplier at step s: 0.5 (1 + cos(pi s / total)), no warm-up (the paper names none)."""
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))


def software_versions() -> dict:
    import pcmpipe

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pcmpipe": pcmpipe.__version__}


class _Reporter:
    """Rich progress bar on a terminal; otherwise one plain log line per epoch."""

    def __init__(self, console: Console, enabled: bool, epochs: int, steps: int):
        self.console, self.bar, self.task = console, None, None
        self.val = ""  # the last validation result, shown beside the running loss
        if enabled and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("train", total=steps, epoch=1, info="")

    def step(self, epoch: int, done: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, epoch=epoch, info=f"{info}{self.val}")

    def log(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _load_data(cfg: TrainConfig, device: torch.device) -> tuple[SplitData, SplitData, SplitInfo]:
    """Train (and val, unless streamed) in memory; the test caches only checked (loaded after training, `_test_split`)."""
    train = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_train)
    test = peek_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_test)
    check_compatible(train, test)
    # On CPU, large validation features are decoded from the cache at each validation (ModalityData.chunks)
    # rather than held: Flickr8k's 5,000 val HuBERT rows are 0.19 GiB of a ~2 GiB run, for about 1 CPU s of
    # Parquet decoding per epoch. On a GPU they are held in device memory and cost no host memory anyway.
    stream = cfg.stream_val_mb is not None and device.type == "cpu"
    val = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_val,
                     stream_above=int(cfg.stream_val_mb * 2**20) if stream else None)
    check_compatible(train, val)
    return train, val, test


def _build(cfg: TrainConfig, shapes: dict[str, tuple[int, ...]], device: torch.device):
    """Heads (seeded init, modality order of the config) and the log logit scale parameter."""
    from pcmpipe.heads import build_heads

    torch.manual_seed(cfg.seed)
    heads = build_heads(shapes, dim=cfg.dim).to(device)
    log_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init), device=device),
                             requires_grad=cfg.logit_scale == "learnable" and cfg.loss == "pcmc")
    return heads, log_scale


def _record_config(cfg: TrainConfig, fp: str, train: SplitData, val: SplitData, test: SplitInfo,
                   device: torch.device) -> dict:
    caches = {d.split: {m: {"path": md.directory, "fingerprint": md.fingerprint, "rows": md.rows}
                        for m, md in d.modalities.items()} for d in (train, val, test)}
    return {"config": cfg.to_dict(), "seed": cfg.seed, "fingerprint": fp, "caches": caches,
            "shapes": {m: list(d.shape) for m, d in train.modalities.items()},
            "base": train.base, "samples": {d.split: len(d) for d in (train, val)},
            "device": str(device), "versions": software_versions(), "argv": sys.argv}


def train(cfg: TrainConfig, console: Console | None = None) -> Path:
    """Train heads for `cfg`, write the run directory, return its path (see module docstring)."""
    before = torch.get_num_threads()
    if cfg.threads:
        # Tiny matmuls: on a busy CPU one or two threads beat many spinning ones (docs/training.md, Speed).
        torch.set_num_threads(cfg.threads)
    joined = not distributed.is_distributed()
    dist_info = distributed.init_from_env()  # one process (WORLD_SIZE unset): nothing happens
    joined = joined and distributed.is_distributed()
    if not dist_info.is_main:
        console = Console(quiet=True)  # one rank reports; the others would print the same lines again
    try:
        return _train(cfg, console or Console())
    finally:
        torch.set_num_threads(before)
        if joined:
            distributed.cleanup()  # leave the process group this call joined


def _train(cfg: TrainConfig, console: Console) -> Path:
    cfg = cfg.resolved()
    fp = config_fingerprint(cfg)
    final, tmp = runs.final_dir(cfg.runs_root, cfg.name), runs.temp_dir(cfg.runs_root, cfg.name)
    main = distributed.is_main()
    if final.exists():
        if runs.is_complete(final) and runs.run_config(final).get("fingerprint") == fp:
            console.print(f"run {final} is already complete (same config); nothing to do", highlight=False, soft_wrap=True)
            return final
        raise UserError(f"run directory {final} exists with another config; pass another --name or delete it")
    if runs.is_complete(tmp):  # killed between the completion marker and the rename
        distributed.barrier()  # every rank has looked before rank 0 renames
        if main:
            (tmp / runs.CHECKPOINT).unlink(missing_ok=True)
            os.replace(tmp, final)
        distributed.barrier()
        return final

    device = resolve_device(cfg.device)
    train_d, val_d, test_info = _load_data(cfg, device)
    if cfg.match not in levels_available(val_d.modalities):
        raise UserError("--match class needs a class_id column in every modality's cache; use --match instance")
    for d in (train_d, val_d):
        d.to(device)
    steps = len(train_d) // cfg.batch_size  # drop_last: every step sees a full batch
    if steps == 0:
        raise UserError(f"the {cfg.split_train} split has {len(train_d)} samples, fewer than --batch-size "
                        f"{cfg.batch_size}; lower --batch-size")
    shapes = {m: d.shape for m, d in train_d.modalities.items()}
    heads, log_scale = _build(cfg, shapes, device)
    # fused AdamW: one kernel over all parameters instead of a Python loop over ~25 tensors (3-4x faster steps
    # on CPU for heads this small; CPU support since torch 2.4).
    try:
        opt = torch.optim.AdamW(param_groups(heads, [log_scale], cfg.weight_decay), lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):  # older torch: no fused kernel for this device
        opt = torch.optim.AdamW(param_groups(heads, [log_scale], cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.epochs * steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.compile:
        for m in heads:
            heads[m].compile()

    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "best_heads": None, "best_scale": float(log_scale.detach().exp())}
    ckpt = runs.load_checkpoint(tmp) if tmp.is_dir() else None
    distributed.barrier()  # every rank has read the checkpoint (or its absence) before rank 0 changes tmp
    if ckpt is not None:
        if ckpt["fingerprint"] != fp:
            raise UserError(f"{tmp} holds an interrupted run of another config; delete it or pass another --name")
        heads.load_state_dict(ckpt["heads"])
        with torch.no_grad():
            log_scale.copy_(ckpt["log_scale"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
        if main:
            for stray in tmp.rglob(".*.tmp"):  # a write cut short by the kill; it is redone from the checkpoint
                stray.unlink()
            runs.write_metrics(tmp, state["history"])
        console.print(f"resuming {cfg.name} after epoch {state['epoch']}", highlight=False, soft_wrap=True)
    elif main:
        if tmp.exists():
            shutil.rmtree(tmp)  # a start that died before its first checkpoint: nothing worth keeping
        tmp.mkdir(parents=True)
        runs.write_json(tmp / "config.json", _record_config(cfg, fp, train_d, val_d, test_info, device))
    distributed.barrier()  # the run directory exists before any rank goes on

    reporter = _Reporter(console, cfg.progress, cfg.epochs, steps)
    try:
        _loop(cfg, train_d, val_d, heads, log_scale, opt, sched, gen, steps, state, tmp, reporter, fp)
    except UserError:
        if main:  # every rank sees the same global loss, so every rank raises
            shutil.rmtree(tmp, ignore_errors=True)  # a diverged run is not worth resuming: leave nothing behind
        raise
    finally:
        reporter.close()  # also on Ctrl-C, which keeps the temp dir for a resume

    if not main:
        distributed.barrier()  # rank 0 writes the test metrics and renames the run directory
        return final
    # Best epoch -> test metrics, embeddings, heads; the completion marker last, then the rename.
    del train_d, val_d  # the training features go before the test split comes in (peak memory)
    test_d = _test_split(cfg, test_info, device)
    untrained_heads, _ = _build(cfg, shapes, device)  # the seeded init the run started from
    untrained, _ = evaluate_all(untrained_heads, test_d.modalities, cfg.eval_batch)
    runs.write_json(tmp / "untrained_metrics.json", {"epoch": 0, "heads": "untrained (seeded init)", **untrained})
    if state["best_heads"] is not None:
        heads.load_state_dict(state["best_heads"])
    metrics, emb = evaluate_all(heads, test_d.modalities, cfg.eval_batch)
    runs.save_heads(tmp / "heads.safetensors", heads.state_dict(), shapes, cfg.dim, state["best_scale"])
    for m, d in test_d.modalities.items():
        runs.save_embeddings(tmp, m, emb[m], d.key, d.columns)
    runs.write_json(tmp / runs.COMPLETE_MARKER, {"epoch": state["best_epoch"], "match": cfg.match,
                                                 "val_mean_r@1": state["best"], **metrics})
    # The checkpoint goes only after the marker: a kill before this point resumes, one after it just renames.
    (tmp / runs.CHECKPOINT).unlink(missing_ok=True)
    os.replace(tmp, final)
    reporter.log(f"done: {final} (best epoch {state['best_epoch']}, test mean r@1 "
                 f"{mean_r1(metrics[cfg.match]):.2f} vs untrained "
                 f"{mean_r1(runs.read_json(final / 'untrained_metrics.json')[cfg.match]):.2f})")
    distributed.barrier()  # release the other ranks: the run directory is final
    return final


def _test_split(cfg: TrainConfig, info: SplitInfo, device: torch.device) -> SplitData:
    """The test split, loaded once training is over; it must still be the cache config.json recorded."""
    test = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_test)
    for m, d in test.modalities.items():
        if d.fingerprint != info.modalities[m].fingerprint:
            raise UserError(f"test cache {d.directory} changed during training (fingerprint {d.fingerprint[:12]} vs "
                            f"{info.modalities[m].fingerprint[:12]} at the start); restore it, or delete the run "
                            "directory and train again")
    return test.to(device)


def _loop(cfg, train_d, val_d, heads, log_scale, opt, sched, gen, steps, state, tmp, reporter, fp) -> None:
    """Epochs from state['epoch'] + 1 until cfg.epochs or early stop; checkpoint after each epoch."""
    from pcmpipe.losses import pcmc_loss, pcmr_loss, pcmr_target

    device = log_scale.device
    n, bs = len(train_d), cfg.batch_size
    main = distributed.is_main()
    params = [*heads.parameters(), log_scale]
    max_log = math.log(cfg.logit_scale_max)
    losses = torch.zeros(steps, device=device)  # per-step losses, read once per refresh, not per step
    buffers = train_d.buffers(len(distributed.local_rows(torch.arange(bs))))  # this rank's rows, reused every step
    # Modalities with a row for every sample need no mask: the losses then skip the mask arithmetic.
    complete = {m for m, p in train_d.present.items() if bool(p.all())}
    refresh = max(1, steps // 20)
    check_every = 1 if device.type == "cpu" else refresh  # a NaN check syncs the GPU; on CPU it is free
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        heads.train()
        order = torch.randperm(n, generator=gen)[: steps * bs].view(steps, bs).to(device)
        for s in range(steps):
            # Under torchrun: this rank's slice of the global batch in, the global batch's embeddings out.
            inputs, local_present = train_d.batch(distributed.local_rows(order[s]), out=buffers)
            local_present = {m: p for m, p in local_present.items() if m not in complete}
            emb, present = distributed.gather_features({m: heads[m](x) for m, x in inputs.items()}, local_present)
            if cfg.loss == "pcmc":
                loss = pcmc_loss(emb, present, logit_scale=log_scale.exp())
            else:
                raw, _ = distributed.gather_features(inputs, None, with_grad=False)
                target = pcmr_target(raw, threshold=cfg.threshold, present=present)
                loss = pcmr_loss(emb, target=target, present=present, rho=cfg.rho)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(params)
            opt.step()
            sched.step()
            if log_scale.requires_grad:
                with torch.no_grad():
                    log_scale.clamp_(max=max_log)  # CLIP's clamp of the scale at 100
            losses[s] = loss.detach()
            if (s + 1) % check_every == 0 or s + 1 == steps:
                bad = ~torch.isfinite(losses[: s + 1])
                if bool(bad.any()):
                    first = int(bad.nonzero()[0])
                    raise UserError(f"loss became NaN at epoch {epoch} step {first + 1}; lower --lr (now {cfg.lr:g}) "
                                    "or check the cached features for NaN/inf")
            if (s + 1) % refresh == 0:
                reporter.step(epoch, s + 1, f"loss {float(losses[s]):.4f}")
        train_time = time.perf_counter() - t0
        val = None
        if main:  # the other ranks hold the same heads; they wait here for rank 0's scores
            val = score(embed_rows(heads, val_d.modalities, cfg.eval_batch), val_d.modalities, cfg.match)
        val = distributed.gather_objects(val)[0]  # every rank takes the same early-stopping decision
        val_r1 = mean_r1(val)
        improved = val_r1 > state["best"]
        if improved:
            state.update(best=val_r1, best_epoch=epoch, bad_epochs=0, best_scale=float(log_scale.detach().exp()),
                         best_heads={k: v.detach().clone().cpu() for k, v in heads.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        rec = {"epoch": epoch, "loss": float(losses.mean()), "lr": opt.param_groups[0]["lr"],
               "logit_scale": float(log_scale.detach().exp()), "val_mean_r@1": val_r1, "best": improved,
               "val": val, "train_time_s": train_time, "time_s": time.perf_counter() - t0}
        state["history"].append(rec)
        state["epoch"] = epoch
        if main:
            runs.save_checkpoint(tmp, {"fingerprint": fp, "heads": heads.state_dict(), "log_scale": log_scale.detach(),
                                       "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                       "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                                       "state": state})
            runs.write_metrics(tmp, state["history"])
        reporter.val = f"  val mean r@1 {val_r1:.2f} (best {state['best']:.2f})"
        reporter.log(f"epoch {epoch}/{cfg.epochs} loss {rec['loss']:.4f} val mean r@1 {val_r1:.2f} "
                     f"(best {state['best']:.2f} @ {state['best_epoch']}) lr {rec['lr']:.2e} "
                     f"{rec['time_s']:.1f}s" + ("" if state["bad_epochs"] < cfg.patience else " - early stop"))
