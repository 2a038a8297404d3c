"""`pcmpipe demo`: the whole pipeline offline, on synthetic data, in minutes on a CPU.

1. `pcmpipe synth` writes a synthetic Flickr8k (I, T, S) and CUB (I, T, A, C) in the real on-disk layouts;
2. features are extracted with small random-weight backbones (clip-tiny-image, clip-tiny-text, hubert-tiny,
   weights random:0), so nothing is downloaded;
3. PCMC and PCMR heads are trained on both datasets, zero-shot (Table 4 layout) and enrichment (Table 5
   layout) run on the trained heads;
4. the report is written to <out>/report (report.md, report.html).

The demo is a pipeline like the paper's (built in here, so an installed package needs no pipelines/ folder),
run through the same `run_pipeline`, and every data spec is marked `synthetic: true`, which the report prints
at the top of each section. Everything is resumable: a second call reuses the data, features and runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcmpipe.cache.layout import runs_root
from pcmpipe.errors import UserError
from pcmpipe.pipelines.run import Note, OnEvent

TINY_BACKBONES = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM_WEIGHTS = {"image": "random:0", "text": "random:0", "audio": "random:0"}
# No augmented views (the paper pipelines extract 4): the synthetic captions name exactly what timm and EDA
# change (colours, left/right, sizes, the words EDA swaps), so views cost the demo about a quarter of its test
# r@1 on every seed (benchmarks/views.py, docs/performance.md). The report's recipe list says "none".
DEMO_VIEWS = 0  # augmented views per train image and caption (`extract --views`)
# images: Flickr8k images in all (split 4:1:1) / CUB images per class (200 classes)


@dataclass(frozen=True)
class DemoSize:
    images: dict[str, int]  # dataset -> the `images` argument of its synthetic generator
    epochs: dict[str, int]  # dataset -> training epochs of its runs


SIZES = {
    "full": DemoSize(images={"flickr8k": 600, "cub": 3}, epochs={"flickr8k": 30, "cub": 12}),
    "fast": DemoSize(images={"flickr8k": 60, "cub": 2}, epochs={"flickr8k": 6, "cub": 4}),
}
FLICKR_DIRS = ["I->T", "T->I", "I->S", "S->I", "T->S", "S->T"]
CUB_DIRS = ["I->T", "T->I", "I->C", "C->I", "I->A", "A->I", "T->C", "C->T", "T->A", "A->T", "C->A", "A->C"]
CUB_BLOCKS = {
    "{}->T": ["I", "I+A", "I+C", "I+A+C"],
    "{}->I": ["T", "T+A", "T+C", "T+A+C"],
    "T->{}": ["I", "I+A", "I+C", "I+A+C"],
    "I->{}": ["T", "T+A", "T+C", "T+A+C"],
}
# the two CUB runs as rows of a table (Tables 2 and 7 layouts)
CUB_ROWS = [
    {"label": "PCMC frozen", "run": "demo-cub-pcmc-ITAC", "paper_row": "PCMC frozen"},
    {"label": "PCMR frozen", "run": "demo-cub-pcmr-ITAC", "paper_row": "PCMR frozen"},
]
FLICKR_BLOCKS = {"{}->T": ["I", "I+S"], "{}->I": ["T", "T+S"], "T->{}": ["I", "I+S"], "I->{}": ["T", "T+S"]}


def demo_pipeline(data_root: Path, cache_root: Path, fast: bool = False) -> dict[str, Any]:
    """The demo's pipeline document (the same schema as pipelines/*.yaml)."""
    size = SIZES["fast" if fast else "full"]

    def data(ds: str, mods: list[str]) -> dict:
        return {
            "root": str(data_root / ds),
            "modalities": mods,
            "backbones": dict(TINY_BACKBONES),
            "weights": dict(RANDOM_WEIGHTS),
            "synthetic": True,
            "extract": {"workers": 0, "batch_size": 64, "views": DEMO_VIEWS},
        }

    flickr = {
        "dataset": "flickr8k",
        "modalities": ["I", "T", "S"],
        "batch_size": 80,
        "epochs": size.epochs["flickr8k"],
    }
    cub = {
        "dataset": "cub",
        "modalities": ["I", "T", "A", "C"],
        "batch_size": 128,
        "match": "class",
        "epochs": size.epochs["cub"],
    }
    return {
        "name": "demo",
        "title": "Demo: synthetic Flickr8k and CUB, random-weight tiny backbones (not a reproduction)",
        "data": {"flickr8k": data("flickr8k", ["I", "T", "S"]), "cub": data("cub", ["I", "T", "A", "C", "P"])},
        # the paper's recipe except a short schedule and a larger learning rate for the small synthetic sets.
        # PCMR's target is the default `shared` one (the same cached row, no threshold): random-weight backbones
        # map distinct inputs to nearly parallel features (64 % of the demo's Flickr8k batch pairs have raw
        # cosine > 0.99), which a cosine threshold would take for shared views (docs/conventions.md).
        "defaults": {
            "patience": 6,
            "lr": 1e-3,
            "weight_decay": 0.2,
            "seed": 0,
            "cache_root": str(cache_root),
            "runs_root": str(runs_root(cache_root)),
        },
        "runs": {
            "demo-flickr8k-pcmc-ITS": {**flickr, "loss": "pcmc"},
            "demo-flickr8k-pcmr-ITS": {**flickr, "loss": "pcmr"},
            "demo-cub-pcmc-ITAC": {**cub, "loss": "pcmc"},
            "demo-cub-pcmr-ITAC": {**cub, "loss": "pcmr"},
        },
        "evaluations": [
            {
                "kind": "zeroshot",
                "run": "demo-cub-pcmc-ITAC",
                "inputs": ["I", "A", "T", "I+A", "I+A+T"],
                "outputs": ["C", "P"],
            },
            {"kind": "enrichment", "run": "demo-cub-pcmc-ITAC", "blocks": CUB_BLOCKS},
            {"kind": "enrichment", "run": "demo-flickr8k-pcmr-ITS", "blocks": FLICKR_BLOCKS},
        ],
        "tables": [
            {
                "kind": "learning",
                "title": "Trained vs untrained heads vs chance (test split)",
                "runs": [
                    "demo-flickr8k-pcmc-ITS",
                    "demo-flickr8k-pcmr-ITS",
                    "demo-cub-pcmc-ITAC",
                    "demo-cub-pcmr-ITAC",
                ],
            },
            {
                "kind": "directions",
                "title": "Table 1 layout: synthetic Flickr8k retrieval (instance match)",
                "paper": "table1_flickr8k",
                "metrics": ["r@1", "r@5"],
                "columns": FLICKR_DIRS,
                "rows": [
                    {"label": "PCMC", "run": "demo-flickr8k-pcmc-ITS", "paper_row": "PCMC"},
                    {"label": "PCMR", "run": "demo-flickr8k-pcmr-ITS", "paper_row": "PCMR"},
                ],
            },
            {
                "kind": "pair_average",
                "title": "Table 2 layout: synthetic CUB, pair averages (class match)",
                "paper": "table2_cub_pair_average",
                "metrics": ["R-P", "r@1"],
                "columns": ["I+T", "I+C", "I+A", "T+C", "T+A", "C+A"],
                "rows": CUB_ROWS,
            },
            {
                "kind": "directions",
                "title": "Table 7 layout: synthetic CUB r@1 per direction (class match)",
                "paper": "table7_cub_r@1",
                "paper_path": "rows",
                "metrics": ["r@1"],
                "columns": CUB_DIRS,
                "rows": CUB_ROWS,
            },
            {
                "kind": "zeroshot",
                "title": "Table 4 layout: zero-shot T1 on the 50 unseen synthetic CUB classes (PCMC)",
                "paper": "table4_cub_zero_shot",
                "run": "demo-cub-pcmc-ITAC",
                "inputs": ["I", "A", "T", "I+A", "I+A+T"],
                "outputs": ["C", "P"],
            },
            {
                "kind": "enrichment",
                "title": "Table 5 layout: enrichment on synthetic CUB (PCMC, class match)",
                "paper": "table5_enrichment_r@1/CUB",
                "run": "demo-cub-pcmc-ITAC",
                "blocks": CUB_BLOCKS,
            },
            {
                "kind": "enrichment",
                "title": "Table 5 layout: enrichment on synthetic Flickr8k (PCMR, instance match)",
                "paper": "table5_enrichment_r@1/Flickr8k",
                "run": "demo-flickr8k-pcmr-ITS",
                "blocks": FLICKR_BLOCKS,
            },
            {
                "kind": "examples",
                "title": "Figure 2 layout: text -> image retrieval before / after class enrichment (synthetic CUB)",
                "run": "demo-cub-pcmc-ITAC",
                "enrich": ["C"],
            },
            {
                "kind": "tsne",
                "title": "Figure 3 layout: t-SNE of T, I, C test embeddings (synthetic CUB, PCMC)",
                "run": "demo-cub-pcmc-ITAC",
                "modalities": ["T", "I", "C"],
                "max_points": 600,
            },
        ],
    }


def ensure_synthetic(data_root: Path, fast: bool, on_event: OnEvent | None = None) -> None:
    """Write the synthetic datasets once; a marker file says a dataset was written completely."""
    from pcmpipe.datasets.synthetic import synth

    size = SIZES["fast" if fast else "full"]
    for ds in ("flickr8k", "cub"):
        target, marker = data_root / ds, data_root / f"{ds}.synth.json"
        want = {"dataset": ds, "images": size.images[ds], "seed": 0}
        if marker.is_file():
            if json.loads(marker.read_text()).get("request") == want:
                continue
            raise UserError(f"{data_root} holds a demo of another size; use another --out or delete {data_root.parent}")
        if target.exists():  # an interrupted synth of this demo: start that dataset again
            shutil.rmtree(target)
        if on_event is not None:
            on_event(Note(f"synth {ds} -> {target}"))
        summary = synth(ds, target, images=size.images[ds], seed=0)
        marker.write_text(json.dumps({"request": want, "summary": summary}, indent=2))


def run_demo(out: str | Path = "demo", fast: bool = False, on_event: OnEvent | None = None) -> dict[str, Any]:
    """Run the demo under `out` (data/, cache/, cache/runs/, report/).

    Returns {"report": the built Report, "paths": report.md and report.html, "wall_s", "cpu_s", "runs_root"};
    progress goes to `on_event` (the pipeline runner's events).
    """
    from pcmpipe.pipelines.run import run_pipeline
    from pcmpipe.pipelines.spec import pipeline_from_dict
    from pcmpipe.report.build import build_report, write_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    start, cpu_start = time.time(), sum(os.times()[:4])
    data_root, cache_root = out / "data", out / "cache"
    ensure_synthetic(data_root, fast, on_event)
    pipeline = pipeline_from_dict(demo_pipeline(data_root, cache_root, fast), path=None)
    pipeline.command = f"pcmpipe demo --out {out}" + (" --fast" if fast else "")  # what the plan advertises
    run_pipeline(pipeline, on_event=on_event)
    report = build_report(runs_root(cache_root))
    paths = write_report(report, out / "report")
    wall = time.time() - start
    cpu = sum(os.times()[:4]) - cpu_start  # user + system, this process and its children
    return {"report": report, "paths": paths, "wall_s": wall, "cpu_s": cpu, "runs_root": runs_root(cache_root)}
