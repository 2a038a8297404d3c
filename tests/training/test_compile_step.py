"""`compile: true`: the training step (heads and loss arithmetic) under torch.compile gives exactly the eager loss
and gradients. The graph is captured as training captures it and run with torch's own kernels (backend
aot_eager), so any difference would be the capture's; inductor's code generation takes minutes on a 2-core
machine and sums in another order, so it is measured (benchmarks/loss_step.py --compile), not tested here."""

from __future__ import annotations

import math

import pytest
import torch

from pcmpipe.heads import build_heads
from pcmpipe.losses import LOSSES, LossBatch, LossParams


@pytest.mark.parametrize("loss", ["pcmr", "pcmc"])
@pytest.mark.parametrize("masked", [False, True])
def test_compiled_step_equals_eager_exactly(loss, masked, one_thread):
    torch.manual_seed(0)
    heads = build_heads({"I": (12,), "T": (10,), "S": (3, 8)}, dim=16)
    x = {"I": torch.randn(6, 12), "T": torch.randn(6, 10), "S": torch.randn(6, 3, 8)}
    present = {"T": torch.tensor([True, True, False, True, True, True])} if masked else None
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    results = []
    for backend in (None, "aot_eager"):
        for p in [*heads.parameters(), log_scale]:
            p.grad = None
        forward = {m: torch.compile(h, backend=backend) if backend else h for m, h in heads.items()}
        emb = {m: forward[m](v) for m, v in x.items()}
        out = LOSSES[loss](LossBatch(emb, present, lambda: x), LossParams(log_scale, threshold=0.5, compile=backend))
        out.backward()
        grads = [p.grad.clone() for p in heads.parameters()] + ([log_scale.grad.clone()] if loss == "pcmc" else [])
        results.append((out.detach(), grads))
    (eager, eager_grads), (comp, comp_grads) = results
    assert torch.equal(eager, comp), (float(eager), float(comp))
    assert len(eager_grads) == len(comp_grads) and all(torch.equal(a, b) for a, b in zip(eager_grads, comp_grads))
