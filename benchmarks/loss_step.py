"""Stage-two step with the PCMR pair similarities stacked (one product for all pairs) vs pair by pair, same run.

One training step at Flickr8k's shapes (I 512, T 512, S 13 x 768, batch 80, D 256): the heads of
`pcmpipe.heads.build_heads`, the features target (`pcmr_target`), `pcmr_loss`, backward and AdamW, on random
features. The two variants differ only in `pcmr_loss(stacked=...)`: pair by pair (today's step, the CPU
default) or all pairs' residuals from one product (`pcmpipe.losses._stacked_squares`, the CUDA default). They
alternate in bursts of `--steps` steps (`_timing.compare`); ratio = pair-by-pair time / stacked time (> 1: the
stacked form is faster). `--compile` also times the step with `compile: true`'s loss (inductor), after its
compilation, against the eager pair-by-pair step.

    python benchmarks/loss_step.py --clock cpu --threads 1
    python benchmarks/loss_step.py --device cuda --compile
    python benchmarks/loss_step.py --smoke --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def make_step(device: str, batch: int, stacked: bool, backend: str | None = None):
    """A closure running one training step with the given loss form; fixed random inputs on `device`."""
    from pcmpipe.heads import build_heads
    from pcmpipe.losses import compiled, pcmr_loss, pcmr_target

    torch.manual_seed(0)
    shapes = {"I": (512,), "T": (512,), "S": (13, 768)}
    heads = build_heads(shapes, dim=256).to(device)
    x = {m: torch.randn(batch, *s, device=device) for m, s in shapes.items()}
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-4, weight_decay=0.2)
    loss_fn = compiled(pcmr_loss, backend) if backend else pcmr_loss

    def step() -> None:
        emb = {m: heads[m](v) for m, v in x.items()}
        loss = loss_fn(emb, target=pcmr_target(x, threshold=0.99), rho=1.0, stacked=stacked)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    def extra(p):
        p.add_argument("--steps", type=int, default=50, help="steps per timed burst")
        p.add_argument("--repeats", type=int, default=5)
        p.add_argument("--batch", type=int, default=80)
        p.add_argument("--compile", action="store_true", help="also time the inductor-compiled loss")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    if args.smoke:
        args.steps, args.repeats, args.batch, args.compile = 2, 1, 16, False
    one = {form: make_step(args.device, args.batch, form == "stacked") for form in ("pairs", "stacked")}

    def burst(form: str):
        return lambda: [one[form]() for _ in range(args.steps)]

    res = _timing.compare(burst("stacked"), burst("pairs"), repeats=args.repeats, warmup=1, device=args.device)
    ms = {k: 1e3 * res[f"{k}_s"] / args.steps for k in ("ours", "baseline")}
    measured = f"stacked {ms['ours']:.2f} ms, pair by pair {ms['baseline']:.2f} ms per step"
    if args.compile:
        comp = make_step(args.device, args.batch, args.device.startswith("cuda"), "inductor")
        run = lambda: [comp() for _ in range(args.steps)]  # noqa: E731
        cres = _timing.compare(run, burst("pairs"), repeats=args.repeats, warmup=1, device=args.device)
        measured += f"; compiled loss {1e3 * cres['ours_s'] / args.steps:.2f} ms ({cres['speedup']:.2f} x)"
    print(f"stacked {res['ours_all']} s, pairs {res['baseline_all']} s per {args.steps} steps")
    _timing.report(
        args,
        f"stage-two step, PCMR pair similarities stacked vs pair by pair (I 512 + T 512 + S 13x768, batch "
        f"{args.batch}, D 256, {args.device})",
        "none on CPU (stacked is the CUDA default; measured to choose it)",
        measured,
        f"{res['speedup']:.2f} x pair by pair",
        None,
    )


if __name__ == "__main__":
    main()
