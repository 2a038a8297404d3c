"""pcmpipe.distributed: real torchrun (gloo, 2 CPU processes) against single-process references.

This file is also the worker script the tests launch: `python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/test_distributed.py <scenario> <outdir>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]

# ---- shared problem definitions: the same seeded data and heads in the workers and the references ----

GLOBAL_BATCH = 80
DIMS = {"I": 48, "T": 40}


def _make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(GLOBAL_BATCH, d, generator=g, dtype=torch.float64) for m, d in DIMS.items()}


class _LinearHeads(torch.nn.Module):
    """Two linear heads and a learnable logit scale (log-parametrised as in CLIP)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.heads = torch.nn.ModuleDict({m: torch.nn.Linear(d, 16) for m, d in DIMS.items()})
        self.log_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.heads[m](x[m]) for m in x}


def _clip_loss(emb: dict[str, torch.Tensor], log_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy on the normalised global batch (workers; open_clip imports too slowly)."""
    a, b = F.normalize(emb["I"], dim=-1), F.normalize(emb["T"], dim=-1)
    logits = log_scale.exp() * a @ b.T
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _open_clip_loss(emb: dict[str, torch.Tensor], log_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's own ClipLoss (world 1): the single-process reference."""
    from open_clip.loss import ClipLoss

    return ClipLoss()(F.normalize(emb["I"], dim=-1), F.normalize(emb["T"], dim=-1), log_scale.exp())


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _rows(rank: int, world: int, split: list[int]) -> slice:
    start = sum(split[:rank])
    return slice(start, start + split[rank])


CLIP_CONFIGS = {"grad-even": (True, [40, 40]), "grad-uneven": (True, [45, 35]), "nograd-even": (False, [40, 40])}


def _worker_clip(outdir: Path) -> None:
    """Per config: forward/backward of the linear heads under DDP on this rank's rows; saves loss and grads."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pcmpipe import distributed as D

    info = D.init_from_env()
    torch.set_num_threads(1)
    for name, (with_grad, split) in CLIP_CONFIGS.items():
        model = _LinearHeads().double()
        ddp = DDP(model)
        batch = {m: x[_rows(info.rank, info.world_size, split)] for m, x in _make_batch().items()}
        emb, _ = D.gather_features(ddp(batch), None, with_grad=with_grad)
        assert emb["I"].shape[0] == GLOBAL_BATCH
        loss = _clip_loss(emb, model.log_scale)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": _grads(model)}, outdir / f"{name}-r{info.rank}.pt")
    D.cleanup()


def _run_torchrun(scenario: str, outdir: Path, nproc: int = 2, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE), scenario, str(outdir), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _single_process_clip() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = _LinearHeads().double()
    loss = _open_clip_loss(model(_make_batch()), model.log_scale)
    loss.backward()
    return loss.detach(), _grads(model)


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-process torchrun launch covering every CLIP_CONFIGS entry (process start-up dominates)."""
    out = tmp_path_factory.mktemp("clip")
    _run_torchrun("clip", out, 2)
    return out


@pytest.mark.parametrize("config", ["grad-even", "grad-uneven"])
def test_gather_with_grad_matches_single_process(clip_runs: Path, config: str) -> None:
    """2 ranks x 40 rows (or 45 + 35) == 1 process x 80 rows: same loss, same DDP-averaged grads, heads and
    logit scale alike, against open_clip's ClipLoss on the whole batch."""
    ref_loss, ref_grads = _single_process_clip()
    for r in range(2):
        got = torch.load(clip_runs / f"{config}-r{r}.pt")
        torch.testing.assert_close(got["loss"], ref_loss, atol=1e-10, rtol=1e-10)
        for name, g in ref_grads.items():
            torch.testing.assert_close(got["grads"][name], g, atol=1e-10, rtol=1e-9, msg=name)


def test_gather_without_grad_scales_head_grads_by_world(clip_runs: Path) -> None:
    """open_clip's default (no-grad gather): heads get dL/dtheta / W after DDP, the logit scale its full grad."""
    ref_loss, ref_grads = _single_process_clip()
    got = torch.load(clip_runs / "nograd-even-r0.pt")
    torch.testing.assert_close(got["loss"], ref_loss, atol=1e-10, rtol=1e-10)
    for name, g in ref_grads.items():
        expected = g if name == "log_scale" else g / 2
        torch.testing.assert_close(got["grads"][name], expected, atol=1e-10, rtol=1e-9, msg=name)


# ---- single-process helpers (no group): identities ----


def test_single_process_is_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcmpipe import distributed as D

    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    info = D.init_from_env()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    emb = {"I": torch.randn(3, 4)}
    pres = {"I": torch.tensor([True, False, True])}
    out, p = D.gather_features(emb, pres)
    assert out["I"] is emb["I"] and p["I"] is pres["I"]
    D.barrier()


def test_partition_is_disjoint_complete_and_order_free() -> None:
    from pcmpipe import distributed as D

    ids = [f"img{i:04d}#{j}" for i in range(37) for j in range(5)]
    shuffled = list(reversed(ids))
    parts = [D.partition(shuffled, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert sum(len(p) for p in parts) == len(ids)
    assert parts == [D.partition(ids, r, 3) for r in range(3)]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert D.rank_shard_prefix(7) == "part-r007"
    with pytest.raises(ValueError):
        D.partition(ids, 3, 3)


def test_bad_torchrun_env_is_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcmpipe import distributed as D
    from pcmpipe.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="torchrun"):
        D.init_from_env()
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(UserError, match="inconsistent"):
        D.init_from_env()


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "clip":
        _worker_clip(out)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
