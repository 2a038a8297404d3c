"""What a report's runs are: how their recorded settings differ from the paper's recipe, their seeds, and the
report's own date, version and commit.

The paper's recipe is the schema's defaults (pcmpipe.config: "Defaults follow the paper's recipe"), with
the batch size per dataset (80 Flickr8k, 128 CUB). A run's settings come from its config.json as the trainer
recorded them, so the list is never kept by hand: a run that changes a setting shows it.
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path
from typing import Any

from pcmpipe.report.results import RunResult

# What a run is rather than how it is trained (its data, modalities, loss, where it lives, how fast it runs):
# never a departure from the recipe.
IDENTITY = {
    "dataset", "modalities", "loss", "match", "split_train", "split_val", "split_test", "cache_root",
    "runs_root", "name", "device", "num_workers", "eval_batch", "stream_val_mb", "compile", "progress",
    "threads", "data_root", "encode_batch", "grad_checkpointing", "amp",
}  # fmt: skip


def _schema(config: dict[str, Any]):
    from pcmpipe.config import FinetuneConfig, TrainConfig

    return FinetuneConfig if "unfreeze" in config or "data_root" in config else TrainConfig


def paper_value(config: dict[str, Any], key: str) -> Any:
    """The recipe's value of `key` for this run's kind of config (the batch size by dataset)."""
    from pcmpipe.config import DATASET_BATCH_SIZE, DEFAULT_BATCH_SIZE

    if key == "batch_size":
        return DATASET_BATCH_SIZE.get(str(config.get("dataset")), DEFAULT_BATCH_SIZE)
    field = _schema(config).model_fields[key]
    return field.get_default(call_default_factory=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    return str(v)


def recipe_changes(runs: list[RunResult]) -> dict[str, dict[str, list[str]]]:
    """{setting: {"value (paper P)": [run names]}} for every recorded setting that differs from the recipe,
    plus "augmentation" for runs on cached features (the paper augments in all cases)."""
    out: dict[str, dict[str, list[str]]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        fields = _schema(run.config).model_fields
        for key, value in sorted(run.config.items()):
            if key in IDENTITY or key not in fields:
                continue
            paper = paper_value(run.config, key)
            if not _same(value, paper):
                out.setdefault(key, {}).setdefault(f"{_show(value)} (paper {_show(paper)})", []).append(run.name)
        if not run.config.get("unfreeze"):
            out.setdefault("augmentation", {}).setdefault(_cached_augmentation(run), []).append(run.name)
    return out


def _cached_augmentation(run: RunResult) -> str:
    """What a run on cached features had for augmentation: the views its train caches hold (`extract --views K`,
    recorded per cache in config.json), or none."""
    caches = (run.meta.get("caches") or {}).get(str(run.config.get("split_train", "train"))) or {}
    k = max([int(c.get("views", 0)) for c in caches.values() if isinstance(c, dict)], default=0)
    if k:
        return (
            f"{k} augmented views per train image and caption, cached once, one drawn per sample per epoch "
            "(paper: fresh timm / EDA augmentation every step)"
        )
    return "none: features cached once, unaugmented (paper: timm images, EDA captions)"


def recipe_lines(runs: list[RunResult]) -> list[str]:
    """One line per changed setting: 'settings changed from the paper's recipe: lr 0.001 (paper 0.0001) in ...'."""
    lines = []
    for key, values in recipe_changes(runs).items():
        parts = [f"{v} in {', '.join(names)}" if len(values) > 1 else v for v, names in values.items()]
        where = "" if len(values) > 1 else f" ({len(next(iter(values.values())))} of {len(runs)} runs)"
        lines.append(f"changed from the paper's recipe: {key} = " + "; ".join(parts) + where)
    return lines


def seed_line(runs: list[RunResult]) -> str:
    """How many seeds each result rests on: runs that differ only in their seed are one setting."""
    groups: dict[str, set] = {}
    for r in runs:
        setting = {k: v for k, v in r.config.items() if k not in ("seed", "name", "runs_root")}
        groups.setdefault(repr(sorted(setting.items(), key=lambda kv: kv[0])), set()).add(r.config.get("seed"))
    counts = sorted({len(s) for s in groups.values()})
    seeds = sorted({str(s) for g in groups.values() for s in g})
    if not runs:
        return "seeds: no finished run"
    per = counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return (
        f"seeds: {per} per setting ({len(groups)} settings, {len(runs)} runs; seed values {', '.join(seeds)}); "
        "no result is a mean over seeds unless a table says so"
    )


def git_commit(where: Path) -> str | None:
    """The commit of the checkout `where` lies in, '+dirty' when it has changes; None outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def build_line(now: datetime.datetime | None = None) -> str:
    """'generated 2026-12-02 01:50 UTC by pcmpipe 0.1.0 (commit abc123, or: not a git checkout)'."""
    import pcmpipe

    now = now or datetime.datetime.now(datetime.timezone.utc)
    commit = git_commit(Path(pcmpipe.__file__).resolve().parent)
    where = f"commit {commit}" if commit else "no git checkout, commit unknown"
    return f"generated {now:%Y-%m-%d %H:%M} UTC by pcmpipe {pcmpipe.__version__} ({where})"
