"""The baseline of benchmarks/train_epoch.py: stage two as a user would write it in plain PyTorch.

Same model and loss as pcmpipe (the paper's head: Linear -> residual Linear-GELU-Linear -> LayerNorm, softmax
layer weights for HuBERT's 13 layers; PCMR with the Eq. 7 target, rho = 1) and the same optimiser (AdamW, lr
1e-4, weight decay 0.2, cosine schedule), fed the textbook way: a Dataset whose `__getitem__` returns one
sample and a shuffling DataLoader that collates batches of 80. Nothing here is tuned; that is the point.
Also holds `step_flops`, the matmul FLOP count of one training step used for the FLOP floor.
"""

from __future__ import annotations

import math
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

DIM_I, DIM_T, SHAPE_S, D, BATCH = 512, 512, (13, 768), 256, 80


class Head(nn.Module):
    def __init__(self, d_in: int, layers: int | None = None) -> None:
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(layers)) if layers else None
        self.proj = nn.Linear(d_in, D)
        self.ff = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
        self.norm = nn.LayerNorm(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_logits is not None:
            x = (x * F.softmax(self.layer_logits, 0)[None, :, None]).sum(1)
        h = self.proj(x)
        return self.norm(h + self.ff(h))


class Flickr(Dataset):
    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data["T"])

    def __getitem__(self, i: int):
        return self.data["I"][self.data["image_of"][i]], self.data["T"][i], self.data["S"][i]


def pcmr(emb: list[torch.Tensor], raw: list[torch.Tensor], t: float = 0.99, rho: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        target = torch.stack([F.normalize(r.flatten(1), dim=1) @ F.normalize(r.flatten(1), dim=1).T for r in raw]).amax(
            0
        )
        target = (target > t).float()
        target.fill_diagonal_(1.0)
    z = [F.normalize(e, dim=1) for e in emb]
    # Eq. 6's power on each residual entry, pcmpipe's default reading (docs/conventions.md "PCMR power factor")
    return sum(((a @ b.T - target).abs() ** (2 + rho)).sum() for a, b in combinations(z, 2))


def load(cache: Path, dataset: str) -> dict[str, torch.Tensor]:
    """The train split as tensors: I [N_img, 512], T [N, 512], S [N, 13, 768], image_of [N] (caption -> image row)."""
    from pcmpipe.cache import cache_dir, open_cache

    out, cols = {}, {}
    for m in ("I", "T", "S"):
        c, f = open_cache(cache_dir(cache, dataset, m, "train")).read()
        out[m], cols[m] = torch.from_numpy(np.ascontiguousarray(f["feat"])), c
    row_of = {v: i for i, v in enumerate(cols["I"]["id"])}
    out["image_of"] = torch.tensor([row_of[v] for v in cols["T"]["image_id"]])
    assert list(cols["T"]["id"]) == list(cols["S"]["id"])
    return out


def run(
    data: dict[str, torch.Tensor], epochs: int, seed: int = 0, clock=time.perf_counter, device: str = "cpu"
) -> list[float]:
    """Train `epochs` epochs on `device` (batches copied there as a user would); returns seconds per epoch
    (measured with `clock`; on CUDA the epoch ends with a synchronisation, as `loss.item()` does every step)."""
    torch.manual_seed(seed)
    heads = nn.ModuleList([Head(DIM_I), Head(DIM_T), Head(SHAPE_S[1], SHAPE_S[0])]).to(device)
    loader = DataLoader(Flickr(data), batch_size=BATCH, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-4, weight_decay=0.2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    times = []
    for _ in range(epochs):
        t0 = clock()
        for img, txt, sp in loader:
            raw = [x.to(device, non_blocking=True) for x in (img, txt, sp)]
            loss = pcmr([h(x) for h, x in zip(heads, raw)], raw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if not math.isfinite(loss.item()):
                raise RuntimeError("loss is not finite")
        times.append(clock() - t0)
    return times


def step_gemms(b: int = BATCH) -> list[tuple[int, int, int]]:
    """The matrix products (m, k, n) of one PCMR training step, forward + backward.

    Per head: the input projection needs its weight gradient (the input is data) and, for HuBERT only, its
    input gradient too (the softmax layer weights sit below it); the two D x D layers need both gradients
    (fc1's input gradient flows into the projection). Loss: 3 pairs of b x b x D similarities, forward and
    two backward products. Target (no gradient): one b x b cosine matrix per modality over the raw features.
    """
    layers, d_s = SHAPE_S
    out: list[tuple[int, int, int]] = []
    for d_in in (DIM_I, DIM_T, d_s):
        out += [(b, d_in, D), (D, b, d_in)]  # projection: forward, weight gradient
        if d_in == d_s:
            out.append((b, D, d_s))  # projection input gradient, for the layer weights
        out += [(b, D, D)] * 2 + [(D, b, D)] * 2 + [(b, D, D)] * 2  # fc1, fc2: forward, weight and input gradients
    out += [(b, D, b), (b, b, D), (b, b, D)] * 3  # similarities of the 3 pairs: forward, both gradients
    out += [(b, d, b) for d in (DIM_I, DIM_T, layers * d_s)]  # target cosines
    return out


def step_flops(b: int = BATCH) -> int:
    """Matmul FLOPs of one PCMR training step (multiply-add = 2), forward + backward: `step_gemms` plus
    HuBERT's layer weighting (a [b, 13, 768] contraction, forward and weight gradient). Elementwise work
    (GELU, LayerNorm, AdamW) is left out: it is memory-bound, so the floor is a lower bound."""
    layers, d_s = SHAPE_S
    return sum(2 * m * k * n for m, k, n in step_gemms(b)) + 2 * (2 * b * layers * d_s)
