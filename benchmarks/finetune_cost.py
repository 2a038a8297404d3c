"""One fine-tuning step with activation checkpointing (pcmpipe's default) vs without, same run.

Both towers of CLIP (ViT-B/32 image, text; seeded random weights: timing does not depend on the values) are
unfrozen, with PCMC heads on I and T and AdamW over the two learning-rate groups; a step is forward +
backward + optimiser step. Each setting runs in its own subprocess, so its peak RSS (VmHWM) is its own;
the settings alternate (off, on, off, on, ...) `--repeats` times so load from other jobs hits both, and the
medians count. A step at the paper's batch 128 is extrapolated linearly from the measured batch.
* ours: `Coordinator.set_grad_checkpointing(True)`, which stores one activation per residual block;
* baseline: the same step without checkpointing (every activation kept).
The target is the trade checkpointing promises: less peak memory for at most 1.5 x the step time.
docs/finetuning.md "Memory and speed" discusses the figures.

    python benchmarks/finetune_cost.py --batch 8 --clock cpu --threads 1
    python benchmarks/finetune_cost.py --smoke --no-write      # tiny towers, batch 2, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

CAPTION = "this bird has a white belly with grey wings and a short pointed orange beak and black eyes."


def one_setting(names: tuple[str, str], batch: int, steps: int, checkpointing: bool, device: str) -> dict:
    """Time `steps` fine-tuning steps (after one warm-up step) in this process -> seconds per step, peak RSS."""
    from PIL import Image

    from pcmpipe.backbones import create_backbone
    from pcmpipe.losses import pcmc_loss
    from pcmpipe.training.finetune.model import Coordinator, optimizer_groups

    torch.manual_seed(0)
    image = create_backbone(names[0], weights="random:0", device=device)
    text = create_backbone(names[1], weights="random:0", device=device)
    model = Coordinator(
        {"I": image, "T": text},
        unfrozen=["I", "T"],
        shapes={"I": image.feature_shape, "T": text.feature_shape},
        dim=256,
        logit_scale_init=1 / 0.07,
        learnable_scale=True,
    ).to(device)
    model.set_grad_checkpointing(checkpointing)
    opt = torch.optim.AdamW(optimizer_groups(model, head_lr=1e-4, backbone_lr=1e-6, weight_decay=0.2))
    one_image = image.preprocess(Image.new("RGB", (500, 375), (120, 90, 60)))  # [3, S, S] at the tower's size
    inputs = {
        "I": (one_image[None] + 0.1 * torch.randn(batch, *one_image.shape)).to(device),
        "T": text.preprocess([CAPTION] * batch).to(device),
    }

    def step() -> None:
        loss = pcmc_loss(model(inputs), None, logit_scale=model.log_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # the first step allocates the optimizer state and warms the kernels
    seconds = [_timing.timed(step, device)[0] for _ in range(steps)]
    return {
        "step_s": statistics.median(seconds),
        "peak_rss_gib": _timing.own_peak_rss() / 2**30,
    }


def _child(args, setting: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        setting,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--clock",
        args.clock,
        "--no-write",
    ]
    cmd += ["--smoke"] * args.smoke + ["--threads", str(args.threads)] * bool(args.threads)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "measurement failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    def extra(p):
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--steps", type=int, default=2, help="measured steps per setting, after one warm-up step")
        p.add_argument("--repeats", type=int, default=1, help="subprocesses per setting, alternating")
        p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)  # one setting, in a subprocess

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    names = ("clip-tiny-image", "clip-tiny-text") if args.smoke else ("clip-vit-b32-image", "clip-vit-b32-text")
    if args.smoke:
        args.batch, args.steps = 2, 1
    if args.child:
        print(json.dumps(one_setting(names, args.batch, args.steps, args.child == "on", args.device)), flush=True)
        return
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for setting in ("off", "on"):
            runs[setting].append(_child(args, setting))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
    ours, base = med["on"], med["off"]
    time_ratio, mem_ratio = ours["step_s"] / base["step_s"], ours["peak_rss_gib"] / base["peak_rss_gib"]
    at_128 = lambda s: s / args.batch * 128  # noqa: E731
    print(json.dumps(runs))
    what = (
        f"fine-tuning step, activation checkpointing vs none ({names[0]} + {names[1]} unfrozen, PCMC, "
        f"batch {args.batch}, {args.device})"
    )
    _timing.report(
        args,
        what,
        "peak memory < without; <= 1.5 x its step time",
        f"ours {ours['step_s']:.2f} {_timing.clock_name()}/step ({at_128(ours['step_s']):.0f} at batch 128), "
        f"peak RSS {ours['peak_rss_gib']:.2f} GiB; without {base['step_s']:.2f} "
        f"({at_128(base['step_s']):.0f} at batch 128), {base['peak_rss_gib']:.2f} GiB",
        f"{time_ratio:.2f} x time, {mem_ratio:.2f} x memory",
        mem_ratio < 1.0 and time_ratio <= 1.5,
    )


if __name__ == "__main__":
    main()
