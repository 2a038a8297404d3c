"""Measure one fine-tuning step of the paper-size backbones on this machine (docs/finetuning.md "Cost").

    python benchmarks/finetune_cost.py --batch 8 --steps 3            # prints one JSON line per setting

Each setting runs in its own subprocess so its peak RSS (ru_maxrss) is its own: ViT-B/32 image tower and
CLIP text tower with seeded random weights (timing does not depend on the values), PCMC heads on I and T,
AdamW with the two learning rates, forward + backward + step, with and without gradient checkpointing.
The time of a step at the paper's batch 128 is extrapolated linearly from the measured batch. Wall time
depends on what else runs on the machine; CPU time (process_time, all threads) much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CAPTION = "this bird has a white belly with grey wings and a short pointed orange beak and black eyes."


def one(batch: int, steps: int, checkpointing: bool, threads: int) -> dict:
    """Time `steps` fine-tuning steps (after one warm-up) in this process -> measurements."""
    import torch

    from pcmpipe.backbones import create_backbone
    from pcmpipe.training.finetune.model import Coordinator, optimizer_groups

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    image = create_backbone("clip-vit-b32-image", weights="random:0")
    text = create_backbone("clip-vit-b32-text", weights="random:0")
    model = Coordinator({"I": image, "T": text}, unfrozen={"I", "T"}, shapes={"I": (512,), "T": (512,)}, dim=256,
                        logit_scale_init=1 / 0.07, learnable_scale=True)
    model.set_grad_checkpointing(checkpointing)
    opt = torch.optim.AdamW(optimizer_groups(model, head_lr=1e-4, backbone_lr=1e-6, weight_decay=0.2))
    from pcmpipe.losses import pcmc_loss

    pixels = torch.randn(batch, 3, 224, 224)
    tokens = text.preprocess([CAPTION] * batch)
    times, cpu = [], []
    for s in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        emb = model({"I": pixels, "T": tokens})
        loss = pcmc_loss(emb, None, logit_scale=model.log_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:  # the first step allocates optimizer state and warms kernels
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    step = sum(times) / len(times)
    # CPU seconds do not grow when other processes share the cores (wall time does): the robust cost figure
    cpu_step = sum(cpu) / len(cpu)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"batch": batch, "checkpointing": checkpointing, "threads": threads, "step_s": round(step, 3),
            "per_sample_s": round(step / batch, 4), "step_s_at_128": round(step / batch * 128, 1),
            "cpu_s": round(cpu_step, 3), "cpu_s_at_128": round(cpu_step / batch * 128, 1),
            "peak_rss_gib": round(rss_kib / 2**20, 2), "torch": torch.__version__,
            # a busy machine slows every step: the 1-minute load average says how busy it was
            "loadavg_1m": round(os.getloadavg()[0], 1), "cores": os.cpu_count()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(one(a.batch, a.steps, a.child == "on", a.threads)), flush=True)
        return
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, "--batch", str(a.batch), "--steps",
                              str(a.steps), "--threads", str(a.threads), "--child", mode],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "measurement failed")
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
