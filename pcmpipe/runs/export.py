"""`pcmpipe export RUN DIR`: a finished run as a folder that follows the Hugging Face Hub's conventions.

    DIR/heads.safetensors     the trained heads (same file as the run's: shapes and dim in its metadata)
    DIR/config.json           kind "pcmpipe-heads", modalities, shapes, dim, backbones (name, weights, sha256),
                              the run's fingerprint and resolved training settings, pcmpipe version
    DIR/README.md             model card: YAML front matter (library_name, tags, datasets, metrics) and
                              the test metrics and provenance in prose
    DIR/test_metrics.json     as the run wrote it
    DIR/embeddings/           the run's test embeddings (a gallery to search without any cache)
    DIR/<kind>_backbone.safetensors   fine-tuned towers, when the run unfroze any

`load_run(DIR)` reads it back, so `pcmpipe embed DIR ...` and `pcmpipe search DIR ...` work on it with no cache
and no network (the backbones are rebuilt from their names and weights strings).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pcmpipe import atomic
from pcmpipe.errors import UserError
from pcmpipe.runs.loaded import EXPORT_KIND, load_run
from pcmpipe.training import rundir
from pcmpipe.version import __version__


def _metric_rows(metrics: dict, level: str) -> list[tuple[str, str, float]]:
    """(direction, metric, percent) of one match level's block, directions only."""
    block = metrics.get(level, {})
    return [
        (d, name, float(v))
        for d, vals in block.items()
        if "->" in d and isinstance(vals, dict)
        for name, v in vals.items()
    ]


def model_card(config: dict, metrics: dict) -> str:
    """README.md text: YAML front matter the Hub reads, then what the heads are and where they came from."""
    train = config["training_config"]
    mods = config["modalities"]
    front = {
        "library_name": "pcmpipe",
        "tags": [
            "pcmpipe",
            "cross-modal-retrieval",
            "multimodal",
            f"loss-{train['loss']}",
            *[f"modality-{m}" for m in mods],
        ],
        "datasets": [train["dataset"]],
        "metrics": ["recall"],
        "model-index": [
            {
                "name": config["run"],
                "results": [
                    {
                        "task": {"type": "cross-modal-retrieval"},
                        "dataset": {"name": train["dataset"], "type": train["dataset"], "split": train["split_test"]},
                        "metrics": [
                            {"type": metric, "name": f"{d} {metric}", "value": round(v, 3)}
                            for d, metric, v in _metric_rows(metrics, "instance")
                        ],
                    }
                ],
            }
        ],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines += [
        f"# {config['run']}",
        "",
        f"Projection heads trained with pcmpipe ({train['loss'].upper()}) that coordinate the modalities "
        f"{', '.join(mods)} of {train['dataset']} in one {config['dim']}-d space (cosine similarity).",
        "",
        "```python",
        "import pcmpipe",
        'run = pcmpipe.load_run("<this folder>")',
        f'run.embed("{mods[0]}", [...])',
        "```",
        "",
        f"## Test metrics ({train['split_test']} split, percent)",
        "",
    ]
    for level in ("instance", "class"):
        rows = _metric_rows(metrics, level)
        if not rows:
            continue
        lines += [f"{level}-level match:", "", "| direction | metric | value |", "| --- | --- | --- |"]
        lines += [f"| {d} | {m} | {v:.1f} |" for d, m, v in rows]
        lines.append("")
    lines += [
        "## Provenance",
        "",
        "| modality | feature shape | backbone | weights | weights sha256 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in mods:
        bb = config["backbones"].get(m) or {}
        lines.append(
            f"| {m} | {tuple(config['shapes'][m])} | {bb.get('backbone', '- (vectors)')} | {bb.get('weights', '-')} | "
            f"{str(bb.get('weights_sha256') or '-')[:16]} |"
        )
    lines += ["", "Caches the heads were trained on (fingerprints):"]
    for split, caches in config["caches"].items():
        for m, c in caches.items():
            lines.append(f"- {split} {m}: `{c.get('fingerprint')}`")
    lines += [
        "",
        f"Run config fingerprint: `{config['fingerprint']}`. Written by pcmpipe {config['pcmpipe_version']}.",
        "",
    ]
    return "\n".join(lines)


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the export folder `out` (new or empty) for the finished run `run_dir`; returns `out`."""
    run_dir, out = Path(run_dir), Path(out)
    run = load_run(run_dir)
    if run.record.get("kind") == EXPORT_KIND:
        raise UserError(f"{run_dir} is already an exported run; copy the folder instead")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; export into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    backbones = {}
    for m, bb in run.backbones.items():
        if bb is not None and Path(str(bb["weights"])).is_file() and Path(bb["weights"]).parent == run_dir:
            # a fine-tuned tower: ship its weights and name them relative to the folder
            shutil.copy2(bb["weights"], out / Path(bb["weights"]).name)
            bb = {**bb, "weights": Path(bb["weights"]).name}
        backbones[m] = bb
    config = {
        "kind": EXPORT_KIND,
        "run": run_dir.name,
        "modalities": run.modalities,
        "shapes": {m: list(s) for m, s in run.shapes.items()},
        "dim": run.dim,
        "logit_scale": run.logit_scale,
        "backbones": backbones,
        "fingerprint": run.fingerprint,
        "training_config": run.config,
        "caches": {
            split: {m: {"fingerprint": c.get("fingerprint"), "rows": c.get("rows")} for m, c in caches.items()}
            for split, caches in run.record.get("caches", {}).items()
        },
        "pcmpipe_version": __version__,
    }
    shutil.copy2(run_dir / "heads.safetensors", out / "heads.safetensors")
    metrics = rundir.read_json(run_dir / rundir.COMPLETE_MARKER)
    atomic.write_json(out / rundir.COMPLETE_MARKER, metrics)
    if (run_dir / "embeddings").is_dir():
        shutil.copytree(run_dir / "embeddings", out / "embeddings")
    atomic.write_text(out / "README.md", model_card(config, metrics))
    atomic.write_json(out / "config.json", config)  # last: a folder with config.json is a whole export
    return out
