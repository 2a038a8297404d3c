"""`pcmpipe export RUN DIR`: a finished run as a folder that follows the Hugging Face Hub's conventions.

    DIR/heads.safetensors     the trained heads (same file as the run's: shapes and dim in its metadata)
    DIR/config.json           kind "pcmpipe-heads", modalities, shapes, dim, backbones (name, weights, sha256),
                              the run's fingerprint and resolved training settings, pcmpipe version
    DIR/README.md             model card: YAML front matter (library_name, tags, datasets, metrics) and
                              the test metrics and provenance in prose
    DIR/test_metrics.json     as the run wrote it
    DIR/embeddings/           the run's test embeddings (a gallery to search without any cache)
    DIR/<kind>_backbone.safetensors   fine-tuned towers, when the run unfroze any

The folder is built beside DIR and renamed into place when whole: a kill or a full disk never leaves half an
export, and rerunning the command finishes it. `load_run(DIR)` reads it back, so `pcmpipe embed DIR ...` and
`pcmpipe search DIR ...` work on it with no cache and no network (the backbones are rebuilt from their names
and weights strings, which name only known weights or files inside DIR).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from pcmpipe import atomic, folderswap
from pcmpipe.cache.lock import exclusive
from pcmpipe.errors import UserError, file_errors
from pcmpipe.runs.loaded import load_run
from pcmpipe.runs.outdir import check_out, is_empty_dir, remove, temp_for
from pcmpipe.training.rundir.files import COMPLETE_MARKER, CONFIG, EMBEDDINGS, HEADS, read_json
from pcmpipe.training.rundir.manifest import verify
from pcmpipe.training.rundir.record import EXPORT_KIND, ExportRecord, read_record
from pcmpipe.training.rundir.tensors import load_embeddings
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
    from pcmpipe.evaluation.retrieval import LEVELS

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
    for level in LEVELS:
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


@dataclass(frozen=True)
class Exported:
    """What `export_run` did: the folder, and whether it already held this export (nothing written)."""

    out: Path
    reused: bool = False


def _holds_this_export(out: Path, config: dict) -> bool:
    """True when `out` is a whole export with this `config`: its config.json is the one this export writes,
    and its heads and embeddings match their checksums. Any other non-empty folder is refused; an export of the
    same run that was edited or damaged is rebuilt."""
    if not out.is_dir() or is_empty_dir(out):
        return False
    try:
        rec = read_record(out)
    except UserError:
        rec = None
    if not isinstance(rec, ExportRecord) or rec.fingerprint != config["fingerprint"]:
        raise UserError(f"{out} is not empty; export into a new or empty directory")
    try:
        if read_json(out / CONFIG) != json.loads(json.dumps(config)):
            return False
        load_run(out)
        if (out / EMBEDDINGS).is_dir():
            load_embeddings(out)
        return True
    except UserError:
        return False


def _copy(src: Path, dest: Path, final: Path) -> None:
    """Copy one file (or a flat folder's files) into the export being built; a failed write names the file's
    final place, not the temp folder (shutil names both ends of a failed copy)."""
    if src.is_dir():
        dest.mkdir()
        for f in sorted(src.iterdir()):
            _copy(f, dest / f.name, final / f.name)
        return
    try:
        shutil.copy2(src, dest)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(final)) from None


def _config(run, run_dir: Path) -> dict:
    towers = _towers(run, run_dir)
    # a fine-tuned tower's weights are named relative to the folder
    backbones = {m: {**bb, "weights": towers[m].name} if m in towers else bb for m, bb in run.backbones.items()}
    return {
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


def _towers(run, run_dir: Path) -> dict[str, Path]:
    """modality -> weights file of each tower fine-tuning unfroze (shipped in the export)."""
    return {
        m: Path(bb["weights"])
        for m, bb in run.backbones.items()
        if bb is not None and Path(str(bb["weights"])).is_file() and Path(bb["weights"]).parent == run_dir
    }


def _write(run, run_dir: Path, out: Path, tmp: Path, config: dict) -> None:
    """Every file of the export into `tmp` (which becomes `out`), each first compared with the run's files.json
    (a damaged run is not exported); config.json last."""
    towers = _towers(run, run_dir).values()
    embeddings = sorted((run_dir / EMBEDDINGS).glob("*")) if (run_dir / EMBEDDINGS).is_dir() else []
    for rel in (
        *(t.name for t in towers),
        HEADS,
        COMPLETE_MARKER,
        *(f"{EMBEDDINGS}/{p.name}" for p in embeddings),
    ):
        verify(run_dir, rel)
    for src in towers:
        _copy(src, tmp / src.name, out / src.name)
    _copy(run_dir / HEADS, tmp / HEADS, out / HEADS)
    metrics = read_json(run_dir / COMPLETE_MARKER)
    if embeddings:
        _copy(run_dir / EMBEDDINGS, tmp / EMBEDDINGS, out / EMBEDDINGS)
    for name, write in (
        (COMPLETE_MARKER, lambda path: atomic.write_json(path, metrics)),
        ("README.md", lambda path: atomic.write_text(path, model_card(config, metrics))),
        (CONFIG, lambda path: atomic.write_json(path, config)),
    ):
        with file_errors(out / name, "write", "export file"):
            write(tmp / name)


def export_run(run_dir: str | Path, out: str | Path) -> Exported:
    """Write the export folder `out` (new or empty) for the finished run `run_dir`.

    The folder is built in `.<out>.export-tmp` beside it and renamed into place at the end (runs/outdir), under
    a lock on `out`: a full disk or a kill leaves `out` as it was, and the rerun starts the export again. A
    rerun onto a whole export of the same run writes nothing (`reused`)."""
    run_dir, out = Path(run_dir), Path(out)
    run = load_run(run_dir)
    if run.record.get("kind") == EXPORT_KIND:
        raise UserError(f"{run_dir} is already an exported run; copy the folder instead")
    check_out(out, "export folder", "export")
    config = _config(run, run_dir)
    with exclusive(out, f"export {out}", wait=True):
        check_out(out, "export folder", "export")
        folderswap.finish_dead_swaps(out)
        tmp = temp_for(out, "export")
        if tmp.exists() or tmp.is_symlink():
            # a killed export's, or the old folder an exchange left there when a kill beat its removal: nothing
            # in it is trusted, and a reused export must not keep it either
            remove(tmp)
        if _holds_this_export(out, config):
            return Exported(out, reused=True)
        tmp.mkdir(parents=True)
        try:
            _write(run, run_dir, out, tmp, config)
            folderswap.swap_in(tmp, out)
        finally:
            if tmp.exists():
                remove(tmp)
    return Exported(out)
