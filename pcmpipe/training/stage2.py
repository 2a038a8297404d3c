"""Stage two: train one projection head per modality on cached features with PCMC or PCMR (Sec. 3-4).

Recipe (paper defaults, docs/training.md): AdamW lr 1e-4, weight decay 0.2 on weight matrices only, cosine
schedule stepped per batch over epochs * steps, at most 50 epochs, early stopping after 5 epochs without a
gain in the mean validation r@1 over all directions. Batches are index_select gathers on whole-split feature
tensors, or windows read from the cache (pcmpipe.samples); the epochs themselves are
pcmpipe.training.stage2_epochs.

The run is written into `<runs_root>/.tmp-<name>/` with a checkpoint per epoch and renamed to
`<runs_root>/<name>/` when test metrics are written (pcmpipe.training.rundir's protocol, shared with
fine-tuning). Running the same config again resumes. With `checkpoint_every` it also checkpoints every that
many steps within an epoch (pcmpipe.training.state.EpochProgress); a resume then redraws the epoch's order
from the generator state the epoch began with, skips the steps taken, and ends bit for bit where an
uninterrupted run ends (docs/reliability.md).

Under torchrun (docs/scaling.md) every rank draws the same global batch order, embeds its slice of each global
batch, and the embeddings are all-gathered so the losses see the whole global batch; gradients are averaged.
`batch_size` stays the global batch, so W processes run the same experiment as one. Rank 0 alone evaluates and
writes the run directory; the other ranks wait for it. On one process every distributed call is a no-op.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from pcmpipe import distributed
from pcmpipe.cache.lock import reading
from pcmpipe.config import TrainConfig, config_fingerprint
from pcmpipe.errors import UserError
from pcmpipe.heads import ProjectionHead
from pcmpipe.samples import (
    SplitData,
    SplitInfo,
    TrainingSplit,
    check_compatible,
    load_split,
    load_training,
    peek_split,
    resolve_stream,
    standardisation,
)
from pcmpipe.samples.views import VIEW_RULE
from pcmpipe.training.evaluate import evaluate_all, levels_available, mean_r1, non_finite
from pcmpipe.training.events import (
    Note,
    OnEvent,
    RunFinished,
    TrainingStarted,
)
from pcmpipe.training.optim import adamw, cosine_schedule, param_groups, resolve_device
from pcmpipe.training.rundir import protocol
from pcmpipe.training.rundir.files import UNTRAINED, write_json
from pcmpipe.training.rundir.record import record_config, run_config
from pcmpipe.training.stage2_epochs import run_epochs
from pcmpipe.training.state import EpochProgress, Resumable, TrainState, restore
from pcmpipe.training.tracking import tracked


def _load_data(cfg: TrainConfig, device: torch.device) -> tuple[TrainingSplit, SplitData, SplitInfo]:
    """Train (in memory or streamed: `cfg.stream`) and val in memory; the test caches only checked (loaded after
    training, `_test_split`)."""
    train = load_training(cfg)
    test = peek_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_test)
    check_compatible(train, test)
    # On CPU, large validation features are decoded from the cache at each validation (ModalityData.chunks)
    # rather than held: Flickr8k's 5,000 val HuBERT rows are 0.19 GiB of a ~2 GiB run, for about 1 CPU s of
    # Parquet decoding per epoch. On a GPU they are held in device memory and cost no host memory anyway.
    stream_above = None
    if cfg.stream_val_mb is not None and device.type == "cpu":
        stream_above = int(cfg.stream_val_mb * 2**20)
    val = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_val, stream_above=stream_above, half=True)
    check_compatible(train, val)
    return train, val, test


def _build(
    cfg: TrainConfig,
    shapes: dict[str, tuple[int, ...]],
    device: torch.device,
    stats: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None,
):
    """Heads (seeded init, modality order of the config, input standardisation `stats`) and the log logit
    scale parameter."""
    from pcmpipe.heads import build_heads

    torch.manual_seed(cfg.seed)
    heads = build_heads(shapes, dim=cfg.dim)
    for m, (mean, scale) in (stats or {}).items():
        head = heads[m]
        assert isinstance(head, ProjectionHead), "build_heads makes ProjectionHeads"
        head.set_standardisation(mean.cpu(), None if scale is None else scale.cpu())
    heads = heads.to(device)
    log_scale = nn.Parameter(
        torch.tensor(math.log(cfg.logit_scale_init), device=device),
        requires_grad=cfg.logit_scale == "learnable" and cfg.loss == "pcmc",
    )
    return heads, log_scale


def train(cfg: TrainConfig, on_event: OnEvent | None = None) -> Path:
    """Train heads for `cfg`, write the run directory, return its path (see module docstring).

    Progress goes to `on_event` (pcmpipe.training.events) from rank 0 only; None drops it."""
    before = torch.get_num_threads()
    if cfg.threads:
        # Tiny matmuls: on a busy CPU one or two threads beat many spinning ones (docs/training.md, Speed).
        torch.set_num_threads(cfg.threads)
    joined = not distributed.is_distributed()
    dist_info = distributed.init_from_env()  # one process (WORLD_SIZE unset): nothing happens
    joined = joined and distributed.is_distributed()
    try:
        named = cfg.resolved()  # the run's name, for its lock (held from the claim to the rename)
        # one rank reports (and tracks); the others would send the same events again
        # every cache split the run reads is held shared to its end: an overwrite waits, never changes data under it
        splits = (named.split_train, named.split_val, named.split_test)
        with (
            protocol.run_lock(named.runs_root, str(named.name), main=dist_info.is_main, barrier=distributed.barrier),
            reading(named.cache_root, named.dataset, named.modalities, splits),
            tracked(cfg, on_event if dist_info.is_main else None, enabled=dist_info.is_main) as emit,
        ):
            return _train(cfg, emit)
    finally:
        torch.set_num_threads(before)
        if joined:
            distributed.cleanup()  # leave the process group this call joined


def _loading_mode(cfg: TrainConfig, emit: OnEvent) -> TrainConfig:
    """The resolved config with its loading mode (`samples.resolve_stream`), part of the fingerprint; a mode the
    budget chose rather than the user is said."""
    resolved = resolve_stream(cfg.resolved())
    if cfg.stream is None and resolved.stream:
        emit(Note(f"streaming the {cfg.split_train} split (above memory_budget_mb {cfg.memory_budget_mb:g} MiB); "
                  "the run's fingerprint records stream=true"))  # fmt: skip
    return resolved


def _train(cfg: TrainConfig, emit: OnEvent) -> Path:
    cfg = _loading_mode(cfg, emit)
    assert cfg.name is not None and cfg.batch_size is not None, "resolved() fills the run name and batch size"
    fp = config_fingerprint(cfg)
    main = distributed.is_main()
    claim = protocol.claim(cfg.runs_root, cfg.name, fp, main=main, barrier=distributed.barrier)
    for note in claim.notes:
        emit(Note(note))
    if claim.status == "done":
        return claim.final

    device = resolve_device(cfg.device)
    train_d, val_d, test_info = _load_data(cfg, device)
    steps = _checked(cfg, train_d, val_d, device)
    shapes = {m: d.shape for m, d in train_d.modalities.items()}
    stats = standardisation(train_d.modalities, cfg.standardize)
    parts = _parts(cfg, shapes, device, stats, steps)
    state, progress = _begin(cfg, fp, claim, parts, steps, (train_d, val_d, test_info), device, emit)

    emit(TrainingStarted(cfg.name, cfg.epochs, steps, state.epoch + 1, steps_reported=cfg.progress))
    try:
        run_epochs(cfg, train_d, val_d, parts, steps, state, claim.tmp, emit, fp, progress)
    except UserError:
        if main:  # every rank sees the same global loss, so every rank raises
            shutil.rmtree(claim.tmp, ignore_errors=True)  # a diverged run is not worth resuming: leave nothing behind
        raise

    if not main:
        distributed.barrier()  # rank 0 writes the test metrics and renames the run directory
        return claim.final
    del train_d, val_d  # the training features go before the test split comes in (peak memory)
    return _finish(cfg, claim, parts, stats, state, test_info, shapes, device, emit)


def _checked(cfg: TrainConfig, train_d: TrainingSplit, val_d: SplitData, device: torch.device) -> int:
    """Refuse features float32 cannot train on, a match level the caches lack, or a split smaller than one
    batch; move train and val to `device` -> steps per epoch."""
    assert cfg.batch_size is not None, "resolved() fills the batch size"
    for d in (train_d, val_d):
        if bad := non_finite(d.modalities):
            raise UserError(
                f"the cached {d.split} features of {', '.join(bad)} are too large for float32 arithmetic (NaN, inf, "
                f"or a squared norm that overflows) in {d.modalities[bad[0]].directory}; re-extract or re-import "
                "them (scaled down)"
            )
    if cfg.match not in levels_available(val_d.modalities):
        raise UserError("--match class needs a class_id column in every modality's cache; use --match instance")
    for d in (train_d, val_d):
        d.to(device)
    steps = train_d.steps(cfg.batch_size)  # drop_last: every step sees a full batch
    if steps == 0:
        raise UserError(
            f"the {cfg.split_train} split has {len(train_d)} samples, fewer than --batch-size "
            f"{cfg.batch_size}; lower --batch-size"
        )
    return steps


def _parts(cfg: TrainConfig, shapes: dict[str, tuple[int, ...]], device: torch.device, stats, steps: int) -> Resumable:
    """The seeded heads, their optimizer, schedule and order generator: what a checkpoint restores."""
    heads, log_scale = _build(cfg, shapes, device, stats)
    opt = adamw(param_groups(heads, [log_scale], cfg.weight_decay), cfg.lr, fused=True)
    parts = Resumable(
        {"heads": heads},
        log_scale,
        opt,
        cosine_schedule(opt, cfg.epochs * steps),
        torch.Generator().manual_seed(cfg.seed),
    )
    for m in heads if cfg.compile else ():  # `compile: true`: the heads here, the loss arithmetic in the epochs
        heads[m].compile()
    return parts


def _begin(
    cfg: TrainConfig,
    fp: str,
    claim: protocol.Claim,
    parts: Resumable,
    steps: int,
    data: tuple[TrainingSplit, SplitData, SplitInfo],
    device: torch.device,
    emit: OnEvent,
) -> tuple[TrainState, EpochProgress | None]:
    """Resume from the claim's checkpoint, or start the temp directory with the config record -> the state to
    continue from and the partial epoch of a mid-epoch checkpoint."""
    train_d, val_d, test_info = data
    tmp, main = claim.tmp, distributed.is_main()
    state = TrainState(best_scale=float(parts.log_scale.detach().exp()))
    # A streamed run records which shards each rank reads (a collective: every rank takes part); with the seed
    # this is the whole order, as each rank's epoch order is a function of (seed, epoch, rank, its shards).
    mine = train_d.shards_read()
    shards = None if mine is None else distributed.gather_objects(mine)
    progress = None  # the partial epoch of a mid-epoch checkpoint
    distributed.barrier()  # every rank has read the checkpoint (or its absence) before rank 0 changes tmp
    views = any(d.view_count for d in train_d.modalities.values())
    if claim.checkpoint is not None:
        _check_view_rule(cfg, views, tmp)
        state = restore(claim.checkpoint, parts, tmp)
        progress = _partial_epoch(cfg, claim.checkpoint.progress, steps, tmp)
        if main:
            protocol.start_resume(tmp, state.history)
        at = f"after epoch {state.epoch}"
        if progress is not None:
            at = f"in epoch {state.epoch + 1} after step {progress.steps_done}/{steps}"
        emit(Note(f"resuming {cfg.name} {at}"))
    elif main:
        record = record_config(
            cfg,
            fp,
            _caches(train_d, val_d, test_info),
            {m: d.shape for m, d in train_d.modalities.items()},
            train_d.base,
            {d.split: len(d) for d in (train_d, val_d)},
            device,
            argv=sys.argv,
            **({"stream_shards": shards} if shards is not None else {}),
            **({"view_rule": VIEW_RULE} if cfg.stream and views else {}),
        )
        protocol.start_fresh(tmp, record)
    distributed.barrier()  # the run directory exists before any rank goes on
    return state, progress


def _caches(*splits: TrainingSplit | SplitData | SplitInfo) -> dict[str, dict[str, dict]]:
    """split -> modality -> the cache the run reads (config.json's "caches")."""
    return {
        d.split: {
            m: {
                "path": md.directory,
                "fingerprint": md.fingerprint,
                "rows": md.rows,
                # training draws one of K augmented views per epoch (`extract --views K`)
                **({"views": md.view_count} if md.view_count else {}),
            }
            for m, md in d.modalities.items()
        }
        for d in splits
    }


def _finish(
    cfg: TrainConfig,
    claim: protocol.Claim,
    parts: Resumable,
    stats,
    state: TrainState,
    test_info: SplitInfo,
    shapes: dict[str, tuple[int, ...]],
    device: torch.device,
    emit: OnEvent,
) -> Path:
    """Rank 0, once training is over: the untrained and the best epoch's test metrics, then the run
    directory's finish phase (heads, embeddings, the completion marker, files.json, the rename)."""
    heads = parts.modules["heads"]
    assert isinstance(heads, nn.ModuleDict), "_parts stores build_heads' ModuleDict under 'heads'"
    test_d = _test_split(cfg, test_info, device)
    untrained_heads, _ = _build(cfg, shapes, device, stats)  # the seeded init the run started from
    untrained, _ = evaluate_all(untrained_heads, test_d.modalities, cfg.eval_batch)
    write_json(claim.tmp / UNTRAINED, {"epoch": 0, "heads": "untrained (seeded init)", **untrained})
    if state.best_heads is not None:
        heads.load_state_dict(state.best_heads)
    metrics, emb = evaluate_all(heads, test_d.modalities, cfg.eval_batch)
    embedded = {m: (emb[m], md.key, md.columns) for m, md in test_d.modalities.items()}
    result = state.result(cfg.match, metrics)
    final = protocol.finish(claim, heads.state_dict(), shapes, cfg.dim, state.best_scale, embedded, result)
    emit(RunFinished(final, state.best_epoch, mean_r1(metrics[cfg.match]), mean_r1(untrained[cfg.match])))
    distributed.barrier()  # release the other ranks: the run directory is final
    return final


def _test_split(cfg: TrainConfig, info: SplitInfo, device: torch.device) -> SplitData:
    """The test split, loaded once training is over; it must still be the cache config.json recorded."""
    test = load_split(cfg.cache_root, cfg.dataset, cfg.modalities, cfg.split_test, half=True)
    for m, d in test.modalities.items():
        if d.fingerprint != info.modalities[m].fingerprint:
            raise UserError(
                f"test cache {d.directory} changed during training (fingerprint {d.fingerprint[:12]} vs "
                f"{info.modalities[m].fingerprint[:12]} at the start); restore it, or delete the run "
                "directory and train again"
            )
    return test.to(device)


def _check_view_rule(cfg: TrainConfig, views: bool, tmp: Path) -> None:
    """A streamed run with augmented views resumes only where it was begun under today's view rule
    (`pcmpipe.samples.views`); before it, streamed runs drew views per batch, so the rest of the run would
    differ from what it began."""
    if cfg.stream and views and run_config(tmp).get("view_rule") != VIEW_RULE:
        raise UserError(
            f"{cfg.name} was begun streamed with augmented views by an earlier pcmpipe that drew them by another "
            f"rule; it cannot resume to the same numbers: delete {tmp} and train it again"
        )


def _partial_epoch(cfg: TrainConfig, progress: EpochProgress | None, steps: int, tmp: Path) -> EpochProgress | None:
    """A mid-epoch checkpoint's partial epoch, if this launch can continue it exactly."""
    if progress is None:
        return None
    if not 0 < progress.steps_done < steps or len(progress.losses) != progress.steps_done:
        raise UserError(f"the checkpoint in {tmp} is within an epoch of {steps} steps it does not fit; delete {tmp}")
    world = distributed.get_world_size()
    # In memory every rank draws the same global order, so any number of processes continues it; streamed,
    # each rank reads its own shards, so the rest of the epoch exists only for the processes that began it.
    if cfg.stream and progress.world != world:
        raise UserError(
            f"{cfg.name} was interrupted within a streamed epoch on {progress.world} process(es); resume it on "
            f"{progress.world} (torchrun --nproc_per_node {progress.world}), not {world}"
        )
    return progress
