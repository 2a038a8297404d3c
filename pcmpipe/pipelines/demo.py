"""`pcmpipe demo`: the whole pipeline offline, on synthetic data, in minutes on a CPU.

1. `pcmpipe synth` writes a synthetic Flickr8k (I, T, S) and CUB (I, T, A, C) in the real on-disk layouts;
2. features are extracted with small random-weight backbones (clip-tiny-image, clip-tiny-text, hubert-tiny,
   weights random:0), so nothing is downloaded;
3. PCMC and PCMR heads are trained on both datasets, zero-shot (Table 4 layout) and enrichment (Table 5
   layout) run on the trained heads;
4. the report is written to <out>/report (report.md, report.html).

The demo is a pipeline file like the paper's (demo.yaml beside this module, shipped in the package, so an
installed package needs no pipelines/ folder), run through the same `run_pipeline`; this module fills in the
roots and the size, and every data spec is marked `synthetic: true`, which the report prints at the top of
each section. Everything is resumable: a second call reuses the data, features and runs.
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
from pcmpipe.pipelines.events import Note, OnEvent

# the demo's pipeline document, in the schema of pipelines/*.yaml; shipped inside the package
DEMO_SPEC = Path(__file__).with_name("demo.yaml")


@dataclass(frozen=True)
class DemoSize:
    images: dict[str, int]  # dataset -> the `images` argument of its synthetic generator
    epochs: dict[str, int]  # dataset -> training epochs of its runs, where they differ from demo.yaml's


# images: Flickr8k images in all (split 4:1:1) / CUB images per class (200 classes)
SIZES = {
    "full": DemoSize(images={"flickr8k": 600, "cub": 3}, epochs={}),
    "fast": DemoSize(images={"flickr8k": 60, "cub": 2}, epochs={"flickr8k": 6, "cub": 4}),
}


def demo_pipeline(data_root: Path, cache_root: Path, fast: bool = False) -> dict[str, Any]:
    """The demo's pipeline document (demo.yaml) with this call's data, cache and runs roots and size."""
    from pcmpipe.pipelines.spec import MAX_PIPELINE_BYTES, MAX_PIPELINE_VALUES
    from pcmpipe.readback import read_yaml

    doc = read_yaml(DEMO_SPEC, "pipeline file", max_bytes=MAX_PIPELINE_BYTES, max_nodes=MAX_PIPELINE_VALUES)
    for ds, data in doc["data"].items():
        data["root"] = str(data_root / ds)
    doc["defaults"].update(cache_root=str(cache_root), runs_root=str(runs_root(cache_root)))
    epochs = SIZES["fast" if fast else "full"].epochs
    for run in doc["runs"].values():
        run["epochs"] = epochs.get(run["dataset"], run["epochs"])
    return doc


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
