"""The training state both recipes share, and its checkpoint: safetensors for the tensors, JSON for the rest.

A checkpoint is ONE file, `.tmp-<name>/checkpoint.safetensors`, written atomically (pcmpipe.atomic): every
tensor (heads, logit scale, towers, the best epoch's heads, optimizer moments, RNG states) under a stable
flat key, and everything else (epoch, best, patience counter, history, optimizer hyper-parameters,
scheduler and scaler state) as JSON in the file's metadata. One file means the tensors and the JSON can
never come from two different epochs. Nothing is unpickled on the way back: safetensors stores raw arrays.

Tensor keys: `model.<module>.<param>` (the recipe's trainable modules, e.g. `model.heads.I.proj.weight`),
`best_heads.<param>`, `optimizer.<index>.<slot>` (the optimizer's own parameter index, which follows the
parameter order of the groups, itself fixed by the config's modality order), `rng.generator`, `rng.torch`.

A checkpoint written within an epoch (stage two's `checkpoint_every`) adds the partial epoch (`EpochProgress`):
JSON `progress` (steps done, processes, seconds) and tensors `progress.losses` (the steps' losses),
`progress.generator` (the order generator's state when the epoch began: the epoch's order is drawn again
from it) and `progress.extra.<key>` (a recipe's per-epoch accumulators). Such a checkpoint is format /2, so
a pcmpipe that knows only epoch checkpoints refuses it instead of resuming as if the epoch had ended.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from pcmpipe.checksums import check_tensors, save_tensors
from pcmpipe.errors import UserError
from pcmpipe.training.events import EpochDone, OnEvent
from pcmpipe.training.rundir.files import write_metrics

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "pcmpipe-checkpoint/1"
FORMAT_PARTIAL = "pcmpipe-checkpoint/2"  # with a partial epoch (module docstring)
# safetensors checks its header but not the data: a flipped byte in a tensor would load as a silently wrong
# weight, so the files pcmpipe writes carry `state_sha256` of their tensors and a digest of the whole content in
# the metadata (pcmpipe.checksums), and the readers compare them


@dataclass
class TrainState:
    """Progress of a run: what early stopping and the final phase need, and what a resume restores."""

    epoch: int = 0  # the last finished epoch
    step: int = 0  # optimizer steps taken
    best: float = -math.inf  # best mean validation r@1 so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last gain (patience counter)
    best_scale: float = 1 / 0.07  # the logit scale at the best epoch
    history: list[dict] = field(default_factory=list)  # one record per epoch (metrics.jsonl)
    best_heads: dict[str, torch.Tensor] | None = None  # the heads at the best epoch, on the CPU

    def running(self, epochs: int, patience: int) -> bool:
        """Another epoch? Stops at `epochs` or after `patience` epochs without a gain."""
        return self.epoch < epochs and self.bad_epochs < patience

    def stopped_early(self, patience: int) -> bool:
        return self.bad_epochs >= patience

    def record(self, val_r1: float, heads: nn.Module, log_scale: torch.Tensor) -> bool:
        """Early-stopping bookkeeping after the epoch `self.epoch + 1`; returns whether it improved."""
        improved = val_r1 > self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = val_r1, self.epoch + 1, 0
            self.best_scale = float(log_scale.detach().exp())
            self.best_heads = {k: v.detach().clone().cpu() for k, v in heads.state_dict().items()}
        else:
            self.bad_epochs += 1
        return improved

    def result(self, match: str, metrics: dict[str, Any]) -> dict[str, Any]:
        """The completion marker's content (test_metrics.json): the best epoch and its test metrics."""
        return {"epoch": self.best_epoch, "match": match, "val_mean_r@1": self.best, **metrics}

    def finish_epoch(self, rec: dict, steps: int) -> None:
        self.history.append(rec)
        self.epoch += 1
        self.step += steps


@dataclass
class Resumable:
    """Everything a checkpoint restores besides the TrainState: modules, optimizer, schedule, scaler, RNGs."""

    modules: dict[str, nn.Module]  # name -> module whose state_dict is saved (e.g. heads, towers.I)
    log_scale: nn.Parameter
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    scaler: Any = None  # torch.amp.GradScaler (fine-tuning) or None
    # module name -> predicate on its state_dict keys: only these are saved (a tower's frozen half is not)
    select: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpochProgress:
    """The part of epoch `TrainState.epoch + 1` already trained, as a mid-epoch checkpoint keeps it."""

    steps_done: int  # optimizer steps of this epoch taken (the next batch is step steps_done + 1)
    losses: torch.Tensor  # float32 [steps_done], their losses (the epoch's mean loss needs them)
    generator: torch.Tensor  # the order generator's state at the epoch's start
    world: int  # processes that trained it (a streamed order depends on it)
    train_s: float = 0.0  # training seconds of the epoch so far
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per-epoch accumulators (PCMR's target shares)


@dataclass
class Checkpoint:
    """A checkpoint as read back: its config fingerprint, tensors by flat key, and the JSON part."""

    fingerprint: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["state"]["epoch"])

    @property
    def progress(self) -> EpochProgress | None:
        """The partial epoch of a mid-epoch checkpoint; None for one written at the end of an epoch."""
        rec = self.meta.get("progress")
        if rec is None:
            return None
        extra = {k[len("progress.extra.") :]: v for k, v in self.tensors.items() if k.startswith("progress.extra.")}
        return EpochProgress(
            int(rec["steps_done"]),
            self.tensors["progress.losses"],
            self.tensors["progress.generator"],
            int(rec["world"]),
            float(rec["train_s"]),
            extra,
        )


def _optimizer_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    slots: dict[str, dict[str, Any]] = {}
    for idx, slot in sd["state"].items():
        slots[str(idx)] = {}
        for k, v in slot.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{k}"] = v
            else:
                slots[str(idx)][k] = v
    return tensors, {"groups": sd["param_groups"], "slots": slots}


def _optimizer_state(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["slots"].items()}
    for key, t in tensors.items():
        if key.startswith("optimizer."):
            _, idx, slot = key.split(".", 2)
            state.setdefault(int(idx), {})[slot] = t
    # JSON turned tuples (AdamW's betas) into lists; the optimizer unpacks them either way, but keep its types
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()} for g in meta["groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path, fingerprint: str, state: TrainState, parts: Resumable, progress: EpochProgress | None = None
) -> None:
    """Write `run_dir/checkpoint.safetensors` atomically (module docstring); `progress` within an epoch."""
    tensors: dict[str, torch.Tensor] = {"log_scale": parts.log_scale.detach()}
    for name, module in parts.modules.items():
        keep = parts.select.get(name, lambda _k: True)
        tensors.update({f"model.{name}.{k}": v for k, v in module.state_dict().items() if keep(k)})
    for k, v in (state.best_heads or {}).items():
        tensors[f"best_heads.{k}"] = v
    opt_tensors, opt_meta = _optimizer_flat(parts.optimizer)
    tensors.update(opt_tensors)
    tensors["rng.generator"] = parts.generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    record = {k: v for k, v in asdict(state).items() if k != "best_heads"}
    record["has_best_heads"] = state.best_heads is not None
    if progress is not None:
        tensors["progress.losses"] = progress.losses
        tensors["progress.generator"] = progress.generator
        tensors.update({f"progress.extra.{k}": v for k, v in progress.extra.items()})
    meta = {
        "format": FORMAT if progress is None else FORMAT_PARTIAL,
        "fingerprint": fingerprint,
        "state": record,
        "optimizer": opt_meta,
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
    }
    if progress is not None:
        meta["progress"] = {"steps_done": progress.steps_done, "world": progress.world, "train_s": progress.train_s}
    # safetensors refuses tensors that share memory or are not contiguous: give it plain CPU copies
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_tensors(run_dir / CHECKPOINT, flat, {"pcmpipe": json.dumps(meta)}, "checkpoint")


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint in `run_dir`, or None when there is none. Never unpickles anything."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            meta = json.loads(header["pcmpipe"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") not in (FORMAT, FORMAT_PARTIAL):
            raise ValueError(f"format {meta.get('format')!r}")
        # checkpoints written before a digest carry none; every later one must match: the tensors' sha256, and
        # the content digest over them and the JSON (state, optimizer groups, scheduler) that resumes the run
        check_tensors(tensors, header)
        ckpt = Checkpoint(meta["fingerprint"], tensors, meta)
        ckpt.progress  # noqa: B018 -- a partial epoch's record must be whole too (KeyError here, not mid-resume)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:  # written atomically: damage from outside
        raise UserError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); delete {run_dir} to start over"
        ) from None
    return ckpt


def restore(ckpt: Checkpoint, parts: Resumable, where: Path) -> TrainState:
    """Load a checkpoint into the recipe's objects (in place) -> the TrainState to continue from."""
    for name, module in parts.modules.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(sd, strict=False)
        keep = parts.select.get(name, lambda _k: True)
        if unexpected or any(keep(k) for k in missing):
            raise UserError(f"checkpoint in {where} does not fit this run's {name}; delete {where} to start over")
    with torch.no_grad():
        parts.log_scale.copy_(ckpt.tensors["log_scale"])
    parts.optimizer.load_state_dict(_optimizer_state(ckpt.meta["optimizer"], ckpt.tensors))
    parts.scheduler.load_state_dict(ckpt.meta["scheduler"])
    if parts.scaler is not None and ckpt.meta["scaler"] is not None:
        parts.scaler.load_state_dict(ckpt.meta["scaler"])
    parts.generator.set_state(ckpt.tensors["rng.generator"])
    torch.set_rng_state(ckpt.tensors["rng.torch"])
    record = dict(ckpt.meta["state"])
    has_best = record.pop("has_best_heads")
    best = {k[len("best_heads.") :]: v for k, v in ckpt.tensors.items() if k.startswith("best_heads.")}
    return TrainState(**record, best_heads=best if has_best else None)


def end_epoch(
    tmp: Path,
    fingerprint: str,
    state: TrainState,
    parts: Resumable,
    record: dict[str, Any],
    steps: int,
    *,
    epochs: int,
    patience: int,
    emit: OnEvent,
    write: bool = True,
) -> None:
    """The end of an epoch in both recipes: record it in the state, make it durable (checkpoint, then
    metrics.jsonl; `write` is False on the ranks that do not write under torchrun), then report it."""
    state.finish_epoch(record, steps)
    if write:
        save_checkpoint(tmp, fingerprint, state, parts)
        write_metrics(tmp, state.history)
    emit(
        EpochDone(
            state.epoch,
            epochs,
            record["loss"],
            record["val_mean_r@1"],
            state.best,
            state.best_epoch,
            record["lr"],
            record["time_s"],
            state.stopped_early(patience),
        )
    )
