"""PCMR's Eq. 7 target on real feature geometry: PCMC and PCMR test mean r@1 per target mode, per planted cache.

Planted Flickr8k-shaped caches (benchmarks/_planted.py: 1,200 images x 5 captions, I/T/S, split 900/150/150)
whose raw rows share a common component, so the mean off-diagonal raw cosine is 0.00, 0.985 and 0.9975. On each,
stage two trains PCMC and PCMR with each target mode (batch 80, 20 epochs, lr 1e-3: issue 13's protocol, the
paper's other settings; `--recipe paper`: lr 1e-4, at most 50 epochs, patience 5; `--batch-size`) and reports
the test mean r@1 over the six directions. A mode meets the target on a cache when its PCMR reaches 0.9 x PCMC
there (issue 13); the table in docs/conventions.md ("PCMR target") was written from it.

    python benchmarks/pcmr_target.py --threads 1            # the defaults (target shared, center), issue's sizes
    python benchmarks/pcmr_target.py --threads 1 --standardize none --modes shared,features,projections
    python benchmarks/pcmr_target.py --threads 1 --recipe paper      # the paper's lr 1e-4, 50 epochs, patience 5
    python benchmarks/pcmr_target.py --threads 1 --seeds 0,1,2       # the criterion on the mean of three seeds
    python benchmarks/pcmr_target.py --threads 1 --seeds 0,1,2 --rho-on norm   # Eq. 6's power on the norm
    python benchmarks/pcmr_target.py --smoke --no-write     # seconds: checks the script runs
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _planted  # noqa: E402
import _timing  # noqa: E402

COSINES = (0.0, 0.985, 0.9975)
MODES = ("shared", "features", "projections")
FULL = {"images": {"train": 900, "val": 150, "test": 150}}
SMOKE = {"images": {"train": 40, "val": 16, "test": 16}}
# issue 13's protocol (the criterion's), and the paper's Sec. 4 recipe (lr 1e-4, at most 50 epochs, patience 5)
RECIPES = {
    "issue": {"epochs": 20, "patience": 20, "lr": 1e-3},
    "paper": {"epochs": 50, "patience": 5, "lr": 1e-4},
}


def _extra(p) -> None:
    from pcmpipe.config import TrainConfig

    # the defaults are the schema's, so a plain run measures what a user gets (issue 13's criterion)
    fields = TrainConfig.model_fields
    p.add_argument(
        "--modes",
        default=fields["target"].default,
        help=f"PCMR target modes to compare, comma-separated: {', '.join(MODES)}",
    )
    p.add_argument(
        "--standardize",
        default=fields["standardize"].default,
        choices=["none", "center", "scale"],
        help="input standardisation",
    )
    p.add_argument("--rho", type=float, default=fields["rho"].default, help="PCMR power factor rho (Eq. 6)")
    p.add_argument(
        "--rho-on", default=fields["rho_on"].default, choices=["entries", "norm"], help="what 2 + rho applies to"
    )
    p.add_argument("--cosines", default=",".join(str(c) for c in COSINES), help="planted mean raw cosines")
    p.add_argument("--recipe", default="issue", choices=list(RECIPES), help="epochs, patience and lr: " + str(RECIPES))
    p.add_argument("--batch-size", type=int, default=80, help="stage-two batch (the paper's Flickr8k batch: 80)")
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds, each a freshly planted cache and run seed; the criterion is on the mean r@1",
    )
    p.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")


def run(root: Path, loss: str, target: str, standardize: str, recipe: dict, device: str, threads: int | None) -> dict:
    """One stage-two run on the planted cache under root -> its test mean r@1 and the last epoch's target shares.

    recipe: epochs, patience, lr, batch_size, rho, rho_on and seed."""
    from pcmpipe.config import TrainConfig
    from pcmpipe.training.evaluate import mean_r1
    from pcmpipe.training.rundir.files import read_metrics
    from pcmpipe.training.stage2 import train

    cfg = TrainConfig.from_dict(
        {
            "dataset": _planted.DATASET,
            "modalities": ["I", "T", "S"],
            "loss": loss,
            "target": target,
            "standardize": standardize,
            **recipe,
            "cache_root": str(root),
            "runs_root": str(root / "runs"),
            "device": device,
            "progress": False,
            "threads": threads,
        }
    )
    run_dir = train(cfg)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    history = read_metrics(run_dir)
    return {"test_mean_r1": mean_r1(test["instance"]), "target_share": history[-1].get("target_share")}


def main() -> None:
    from pcmpipe.config import TrainConfig

    fields = TrainConfig.model_fields
    args = _timing.parse_args(__doc__.splitlines()[0], _extra)
    size = SMOKE if args.smoke else FULL
    recipe = {**RECIPES[args.recipe], "batch_size": args.batch_size, "rho": args.rho, "rho_on": args.rho_on}
    seeds = [int(x) for x in args.seeds.split(",") if x]
    if args.smoke:
        recipe.update(epochs=1, patience=1)
    # smoke: the most anisotropic cache only (a few seconds)
    cosines = [COSINES[-1]] if args.smoke else [float(c) for c in args.cosines.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, dict] = {}
    where = (args.device, args.threads)
    with tempfile.TemporaryDirectory(prefix="pcmr-target-") as tmp:
        for cos in cosines:
            per_seed = []
            for seed in seeds:  # one seed's ratio moves by about 0.01: the criterion is on the seeds' mean
                root = Path(tmp) / f"cos{cos}-seed{seed}"
                measured = _planted.write_planted_cache(root, cos, images=size["images"], seed=seed)
                at = {**recipe, "seed": seed}
                one = {"raw_cosine": measured, "pcmc": run(root, "pcmc", "features", args.standardize, at, *where)}
                for mode in modes:
                    one[mode] = run(root, "pcmr", mode, args.standardize, at, *where)
                per_seed.append(one)
                line = ", ".join(f"PCMR {m} {one[m]['test_mean_r1']:.1f}" for m in modes)
                pcmc = one["pcmc"]["test_mean_r1"]
                print(f"raw cosine {cos} seed {seed} (measured {measured}): PCMC {pcmc:.1f}; {line}")
                for m in modes:
                    print(f"  {m}: target share {one[m]['target_share']}")
                shutil.rmtree(root)
            row = {k: {"test_mean_r1": _mean([r[k]["test_mean_r1"] for r in per_seed])} for k in ["pcmc", *modes]}
            results[str(cos)] = {**row, "seeds": dict(zip(map(str, seeds), per_seed, strict=True))}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    for mode in modes:
        ratios = [results[c][mode]["test_mean_r1"] / max(results[c]["pcmc"]["test_mean_r1"], 1e-9) for c in results]
        measured_text = "; ".join(
            f"cos {c}: PCMC {results[c]['pcmc']['test_mean_r1']:.1f} / PCMR {results[c][mode]['test_mean_r1']:.1f}"
            + _per_seed(results[c], mode)
            for c in results
        )
        std = "" if args.standardize == "none" else f", standardize {args.standardize}"
        if (args.rho, args.rho_on) != (fields["rho"].default, fields["rho_on"].default):
            std += f", rho {args.rho:g} on {args.rho_on}"
        if len(seeds) > 1:
            std += f", mean of seeds {args.seeds}"
        if args.recipe != "issue" or args.batch_size != 80:  # its own row beside the criterion's
            std += f", {args.recipe} recipe {RECIPES[args.recipe]}, batch {args.batch_size}"
        _timing.report(
            args,
            f"PCMR target {mode}{std} on planted caches (test mean r@1)",
            "PCMR >= 0.9 x PCMC on every cache",
            measured_text,
            "worst PCMR/PCMC " + f"{min(ratios):.2f}",
            None if args.smoke else min(ratios) >= 0.9,
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _per_seed(row: dict, mode: str) -> str:
    """' (seeds: 64.5/57.6, ...)' when there is more than one seed."""
    if len(row["seeds"]) < 2:
        return ""
    pairs = [f"{r['pcmc']['test_mean_r1']:.1f}/{r[mode]['test_mean_r1']:.1f}" for r in row["seeds"].values()]
    return f" (per seed {', '.join(pairs)})"


if __name__ == "__main__":
    main()
