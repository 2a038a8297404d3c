"""Stage two's epochs: the optimisation steps over the training split, the mid-epoch checkpoints, and the
validation and record that end each epoch (`run_epochs`). The recipe around it is pcmpipe.training.stage2.

Under torchrun every rank embeds its slice of each global batch and the embeddings are all-gathered, so the
losses see the whole global batch; gradients are averaged. Rank 0 alone validates and writes; every rank takes
the same early-stopping decision from rank 0's scores. The loop keeps per-step host work to a minimum (no
.item() per step on GPU): the step losses stay on the device and are read once per refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcmpipe import distributed
from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.heads import ProjectionHead
from pcmpipe.losses import LOSSES, LossBatch, LossParams, TargetShares
from pcmpipe.samples import SplitData, TrainingSplit
from pcmpipe.training.evaluate import embed_rows, mean_r1, score
from pcmpipe.training.events import OnEvent, ShareMonitor, StepDone, report_step
from pcmpipe.training.optim import clamp_logit_scale
from pcmpipe.training.state import EpochProgress, Resumable, TrainState, end_epoch, save_checkpoint


@dataclass
class _Loss:
    """The configured loss and what it reads besides the embeddings."""

    fn: Callable[..., torch.Tensor]
    params: LossParams
    shares: TargetShares | None  # PCMR's target shares of the epoch (None for PCMC)
    # the features target's view of the inputs: standardised as the heads see them
    standardise: dict[str, Callable[[torch.Tensor], torch.Tensor]]
    complete: set[str]  # modalities with a row for every sample: no mask (the losses skip its arithmetic)

    def __call__(self, heads: nn.ModuleDict, inputs: dict, local_present: dict, local_rows: dict) -> torch.Tensor:
        """One step's loss over the global batch (under torchrun: this rank's slice in, every rank's out)."""
        local_present = {m: p for m, p in local_present.items() if m not in self.complete}
        emb, present = distributed.gather_features({m: heads[m](x) for m, x in inputs.items()}, local_present)
        # The target's inputs and the global batch's cached rows are gathered only when the loss needs them
        # (PCMR), within this step.
        batch = LossBatch(
            emb,
            present,
            features=lambda: distributed.gather_features(
                {m: self.standardise[m](x) for m, x in inputs.items()}, None, with_grad=False
            )[0],
            rows=lambda: distributed.gather_features(local_rows, None, with_grad=False)[0],
        )
        return self.fn(batch, self.params, self.shares)


def _loss(cfg: TrainConfig, heads: nn.ModuleDict, log_scale: torch.Tensor, train_d: TrainingSplit) -> _Loss:
    return _Loss(
        LOSSES[cfg.loss],
        # `compile: true` fuses the loss arithmetic too (a GPU step of small kernels is bound by their launches)
        LossParams(log_scale, cfg.threshold, cfg.rho, cfg.target, cfg.rho_on, "inductor" if cfg.compile else None),
        TargetShares() if cfg.loss == "pcmr" else None,
        {m: h.standardise for m, h in heads.items() if isinstance(h, ProjectionHead)},
        train_d.complete(),
    )


def _check_finite(losses: torch.Tensor, upto: int, epoch: int, lr: float) -> None:
    """A NaN or inf among the first `upto` step losses of the epoch is one line (never checkpointed)."""
    bad = ~torch.isfinite(losses[:upto])
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise UserError(
            f"loss became NaN at epoch {epoch} step {first + 1}; lower --lr (now {lr:g}) "
            "or check the cached features for NaN/inf"
        )


def _continue(progress: EpochProgress, losses: torch.Tensor, parts: Resumable, loss: _Loss) -> int:
    """Put back the part of an epoch a mid-epoch checkpoint kept -> the steps it had done."""
    start = progress.steps_done
    losses[:start] = progress.losses.to(losses.device)
    parts.generator.set_state(progress.generator)
    if loss.shares is not None:
        loss.shares.restore(progress.extra, losses.device)
    return start


def run_epochs(
    cfg: TrainConfig,
    train_d: TrainingSplit,
    val_d: SplitData,
    parts: Resumable,
    steps: int,
    state: TrainState,
    tmp: Path,
    emit: OnEvent,
    fp: str,
    progress: EpochProgress | None = None,
) -> None:
    """Epochs from state.epoch + 1 until cfg.epochs or early stop; checkpoint after each epoch, and every
    `cfg.checkpoint_every` steps within one. `progress`: the partial epoch to finish first."""
    heads, log_scale, opt = parts.modules["heads"], parts.log_scale, parts.optimizer
    assert isinstance(heads, nn.ModuleDict), "_train stores build_heads' ModuleDict under 'heads'"
    assert cfg.batch_size is not None, "resolved() fills the batch size"
    device = log_scale.device
    bs = cfg.batch_size
    main = distributed.is_main()
    params = [*heads.parameters(), log_scale]
    loss = _loss(cfg, heads, log_scale, train_d)
    monitor = ShareMonitor(cfg.target, cfg.threshold, emit)
    losses = torch.zeros(steps, device=device)  # per-step losses, read once per refresh, not per step
    buffers = train_d.buffers(len(distributed.local_rows(torch.arange(bs))))  # this rank's rows, reused every step
    refresh = max(1, steps // 20)
    check_every = 1 if device.type == "cpu" else refresh  # a NaN check syncs the GPU; on CPU it is free
    every = cfg.checkpoint_every
    while state.running(cfg.epochs, cfg.patience):
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        start = 0
        if progress is not None:  # the epoch a mid-epoch checkpoint interrupted: its first steps are done
            start = _continue(progress, losses, parts, loss)
            t0 -= progress.train_s
            progress = None
        # the epoch's order is drawn from this state; a mid-epoch checkpoint keeps it to draw the order again
        epoch_generator = parts.generator.get_state()
        heads.train()
        batches = train_d.epoch_batches(epoch, steps, bs, parts.generator, out=buffers, start_step=start)
        for s, (inputs, local_present, local_rows) in enumerate(batches, start):
            step_loss = loss(heads, inputs, local_present, local_rows)
            opt.zero_grad(set_to_none=True)
            step_loss.backward()
            distributed.average_gradients(params)
            opt.step()
            parts.scheduler.step()
            clamp_logit_scale(log_scale, cfg.logit_scale_max)
            losses[s] = step_loss.detach()
            due = every is not None and (s + 1) % every == 0 and s + 1 < steps  # the epoch's end checkpoints anyway
            if due or (s + 1) % check_every == 0 or s + 1 == steps:  # never checkpoint a diverged run
                _check_finite(losses, s + 1, epoch, cfg.lr)
            if due and main:
                shares = loss.shares.counts() if loss.shares is not None else {}
                elapsed = time.perf_counter() - t0
                world = distributed.get_world_size()
                partial = EpochProgress(s + 1, losses[: s + 1].clone(), epoch_generator, world, elapsed, shares)
                save_checkpoint(tmp, fp, state, parts, partial)
            if cfg.progress and report_step(s + 1, steps):
                emit(StepDone(epoch, s + 1, steps, float(losses[s])))
        rec = _validate(cfg, val_d, parts, state, epoch, losses, monitor, loss.shares, t0)
        end_epoch(tmp, fp, state, parts, rec, steps, epochs=cfg.epochs, patience=cfg.patience, emit=emit, write=main)


def _validate(
    cfg: TrainConfig,
    val_d: SplitData,
    parts: Resumable,
    state: TrainState,
    epoch: int,
    losses: torch.Tensor,
    monitor: ShareMonitor,
    shares: TargetShares | None,
    t0: float,
) -> dict[str, Any]:
    """The end of an epoch's training: rank 0 scores the validation split, every rank records the same
    early-stopping decision -> the epoch's metrics.jsonl record."""
    heads, log_scale = parts.modules["heads"], parts.log_scale
    assert isinstance(heads, nn.ModuleDict), "_train stores build_heads' ModuleDict under 'heads'"
    train_time = time.perf_counter() - t0
    mine = None
    if distributed.is_main():  # the other ranks hold the same heads; they wait here for rank 0's scores
        mine = score(embed_rows(heads, val_d.modalities, cfg.eval_batch), val_d.modalities, cfg.match)
    val = distributed.gather_objects(mine)[0]  # every rank takes the same early-stopping decision
    assert isinstance(val, dict), "rank 0's scores"
    val_r1 = mean_r1(val)
    improved = state.record(val_r1, heads, log_scale)
    return {
        "epoch": epoch,
        "loss": float(losses.mean()),
        "lr": parts.optimizer.param_groups[0]["lr"],
        "logit_scale": float(log_scale.detach().exp()),
        "val_mean_r@1": val_r1,
        "best": improved,
        "val": val,
        **({"target_share": monitor.epoch(epoch, shares.shares())} if shares is not None else {}),
        "train_time_s": train_time,
        "time_s": time.perf_counter() - t0,
    }
