"""torch.distributed for pcmpipe: start from torchrun's environment, rank/world helpers, global-batch gathering.

Everything here is a no-op on one process, so the same training and extraction code runs unchanged with
`python -m pcmpipe ...` and with `torchrun --nproc_per_node N -m pcmpipe ...`.

Two ideas carry the multi-process runs:

* **Extraction** splits the *samples* in blocks: the records (or each streamed shard's records) are cut into
  blocks of `rows_per_shard` by global position and rank r takes blocks r, r + W, ... (`rank_blocks`); each
  block is batched on its own and written as one shard (`part-rNNN-*`, so ranks never write the same file), and
  rank 0 merges the manifests after a barrier. The blocks are those of one process, so the merged cache's shards
  are byte for byte the single-process ones.
* **Training** splits the *batch*: each rank embeds its local B rows, `gather_features` all-gathers the
  embeddings so PCMC and PCMR see the global W*B batch (the contrastive negatives and the PCMR target matrix
  of a W*B batch), and DDP averages the gradients.

Gradient bookkeeping (why `gather_features` gathers *with* gradients by default): every rank computes the same
global loss L from the gathered embeddings. `torch.distributed.nn.functional.all_gather` sends the gradient of
every gathered slice back to the rank that owns it and sums, so rank r ends with W * dL/d(emb_r), and DDP's
average over W ranks leaves exactly dL/d(theta) -- the single-process gradient of a W*B batch, for the heads
*and* for a learnable logit scale. Gathering without gradients (open_clip's default `gather_with_grad=False`)
gives the heads only dL/d(theta) / W after DDP's average while a shared logit scale still gets its full
gradient, so no single loss scaling makes both exact; it is available as `with_grad=False` for memory-tight
cases, with that caveat.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pcmpipe.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, number of processes, rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK without starting anything (1 process if unset)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UserError(f"torchrun environment is malformed ({e}); start multi-process runs with torchrun") from e
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"torchrun environment is inconsistent: RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes; returns this process's `DistInfo`.

    One process (no WORLD_SIZE, or WORLD_SIZE=1) initialises nothing. Backend: NCCL when CUDA is available,
    else gloo (CPU). Each rank binds `cuda:LOCAL_RANK` so one node's GPUs are used one per process.
    Calling it again in an initialised process returns the live group's info.
    """
    if is_distributed():
        return info()
    env = env_info()
    if env.world_size == 1:
        return env
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE={env.world_size} but {', '.join(missing)} unset; launch with torchrun")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return info()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """The live group's `DistInfo` (or one process's, outside a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def get_rank() -> int:
    return info().rank


def get_world_size() -> int:
    return info().world_size


def is_main() -> bool:
    """True on rank 0 (and on a single process): the rank that merges manifests and writes run files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(info_: DistInfo) -> torch.device:
    """`cuda:LOCAL_RANK` when CUDA is available, else CPU."""
    return torch.device(f"cuda:{info_.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


# ---- extraction: a deterministic, disjoint part of the samples per rank ----


def partition(ids: Sequence[str], rank: int, world_size: int) -> list[str]:
    """This rank's part of `ids`: sorted, then every `world_size`-th starting at `rank`.

    Parts are disjoint, their union is `set(ids)`, and they depend only on the set of ids (not on the
    order the reader lists them), so a restarted rank picks exactly the same part and can resume it.
    Round-robin over the sorted ids also spreads any length ordering evenly across ranks.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    return sorted(ids)[rank::world_size]


def rank_records(records: Sequence[T], id_of: Callable[[T], str] = attrgetter("id")) -> list[T]:
    """This process's part of `records` (see `partition`), in their given order; all of them on one process."""
    if not is_distributed():
        return list(records)
    mine = set(partition([id_of(r) for r in records], get_rank(), get_world_size()))
    return [r for r in records if id_of(r) in mine]


def rank_blocks(items: Sequence[T], block: int) -> list[list[T]]:
    """This process's blocks of `items`: consecutive blocks of `block` items by global position, then blocks
    r, r + W, r + 2W, ... (every block on one process). Extraction encodes and writes each block as one cache
    shard, so every block is batched alike whatever the number of processes, and the shards are byte for byte
    those of one process (only their file names say which rank wrote them)."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return rank_shards([list(items[i : i + block]) for i in range(0, len(items), block)])


def rank_shards(shards: Sequence[T]) -> list[T]:
    """This process's shards of a streamed input: shards r, r + W, r + 2W, ... in the given order (all on one
    process). Fixed by the order alone, so a restarted rank reads the same shards; no listing of records."""
    if not is_distributed():
        return list(shards)
    return list(shards[get_rank() :: get_world_size()])


def writer_rank() -> int | None:
    """The `rank=` argument of `ShardWriter`: this rank under torchrun (per-rank shards and manifest), else None."""
    return get_rank() if is_distributed() else None


def finish_part(directory: str | Path) -> None:
    """After every rank closed its writer for `directory`: rank 0 merges the rank manifests into .manifest.json.

    Barriers on both sides: the merge must see every rank's final manifest, and no rank may go on (and, say,
    open the same directory again expecting a complete cache) before the merged manifest exists.
    """
    if not is_distributed():
        return
    from pcmpipe.cache import merge_manifests

    dist.barrier()
    error = None
    if is_main():
        try:
            merge_manifests(directory)
        except UserError as e:  # tell the other ranks instead of leaving them waiting at a barrier
            error = str(e)
    errors = gather_objects(error)  # doubles as the closing barrier
    if errors[0] is not None:
        raise UserError(errors[0])


def gather_objects(obj: T) -> list[T]:
    """Every rank's picklable `obj`, in rank order (e.g. per-rank error lists); [obj] on one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()  # all_gather_object fills every slot
    dist.all_gather_object(out, obj)
    return out


# ---- training: the global batch on every rank ----


def _gather_padded(x: torch.Tensor, with_grad: bool) -> list[torch.Tensor]:
    """All-gather `x` [b_r, *rest] from every rank, where b_r may differ per rank -> list of W tensors.

    Collectives need one shape, so each rank pads its rows to the largest b and the padding is cut off
    after the gather. Bool tensors travel as uint8 (gloo has no bool all_gather).
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    is_bool = x.dtype == torch.bool
    y = x.to(torch.uint8) if is_bool else x
    if y.shape[0] < longest:
        pad = y.new_zeros((longest - y.shape[0], *y.shape[1:]))
        y = torch.cat([y, pad], dim=0)
    y = y.contiguous()
    if with_grad:
        # `import torch` does not load torch.distributed.nn; it was only there when DDP or open_clip had
        # imported it first, so a process with neither failed here with an AttributeError.
        import torch.distributed.nn.functional as dist_nn

        parts = list(dist_nn.all_gather(y))
    else:
        parts = [torch.empty_like(y) for _ in range(world)]
        dist.all_gather(parts, y.detach())
        parts[rank] = y  # the local slice keeps its autograd graph (open_clip, local_loss=False)
    parts = [p[:n] for p, n in zip(parts, counts)]
    if is_bool:
        parts = [p.bool() for p in parts]
    return parts


def local_rows(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of sample indices [B] -> [~B / W] (all of it on one process).

    Every rank draws the same global order (same seed), takes its slice, and `gather_features` puts the
    slices back together in rank order: the global batch, row for row, equals the single-process batch, so
    a W-process run follows the single-process run step for step. Slices differ by at most one row.
    """
    if not is_distributed():
        return rows
    return rows.tensor_split(get_world_size())[get_rank()]


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce and average `.grad` over ranks in place (what DDP does, as one flat buffer; no-op alone).

    For modules not wrapped in DistributedDataParallel (the stage-two heads are a ModuleDict called per
    modality). Parameters without a gradient are skipped; every rank must pass the same parameters.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_tensor(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """[b_r, *rest] on each rank -> [sum_r b_r, *rest], rank order; identity on one process."""
    if not is_distributed():
        return x
    return torch.cat(_gather_padded(x, with_grad), dim=0)


def gather_features(
    emb: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor] | None = None,
    *,
    with_grad: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """All-gather per-modality embeddings (and presence masks) into the global batch.

    emb: modality -> [B_r, D] (heads' outputs; any trailing shape works, e.g. raw inputs [B_r, L, D] for
    `pcmr_target`). present: modality -> bool [B_r] or None. Returns the same dicts with [sum_r B_r, ...]
    rows in rank order (rank 0's rows first), so row i of every modality is still one sample. Modality keys
    are processed in sorted order, which every rank shares, so the collectives line up.
    With `with_grad=True` the returned tensors backpropagate into every rank's heads (see the module
    docstring for why that makes DDP gradients equal to the single-process ones). On one process both dicts
    are returned as they are.
    """
    if not is_distributed():
        return emb, present
    out = {m: gather_tensor(emb[m], with_grad) for m in sorted(emb)}
    out = {m: out[m] for m in emb}
    if present is None:
        return out, None
    pres = {m: gather_tensor(present[m], with_grad=False) for m in sorted(present)}
    return out, {m: pres[m] for m in present}
