"""A pipeline document over the synthetic cache of tests/synthetic_cache.py: two-modality runs (I, T), a
directions table with one row per run, tiny training settings. Used where a test needs `pcmpipe run` on real
files without the paper's sizes (the corruption and fault sweeps)."""

from __future__ import annotations

from pathlib import Path


def tiny_pipeline(cache: Path, name: str, runs: dict[str, str], evaluations: list[dict] | None = None) -> dict:
    """`runs`: run name -> loss. Every run trains I and T on the `synth` dataset for 2 epochs."""
    return {
        "name": name,
        "title": f"{name} check",
        "data": {"synth": {"root": str(cache / "raw-not-needed"), "modalities": ["I", "T"], "synthetic": True}},
        "defaults": {"dataset": "synth", "epochs": 2, "patience": 2, "batch_size": 16, "lr": 1e-3, "progress": False},
        "runs": {run: {"loss": loss, "modalities": ["I", "T"]} for run, loss in runs.items()},
        "evaluations": evaluations or [],
        "tables": [
            {
                "kind": "directions",
                "title": "t",
                "metrics": ["r@1"],
                "columns": ["I->T", "T->I"],
                "rows": [{"label": loss.upper(), "run": run} for run, loss in runs.items()],
            }
        ],
    }
