"""What a report's runs are: how their recorded settings stand against the paper's text, their seeds, and the
report's own date, version and commit.

The paper's text is `pcmpipe.config.paper_recipe` (Sec. 4's values, and every reading or departure of
pcmpipe's defaults with its reason). A run's settings come from its config.json as the trainer recorded them,
so the lists are never kept by hand: a run that changes a setting shows it. `recipe_lines` gives, in order:
the settings every run takes from the paper's text ("the paper's recipe"), the readings, the departures, and
any other setting a run changed.
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path
from typing import Any

from pcmpipe.config.paper_recipe import CHOICES, PAPER_TEXT, Choice, paper_literal
from pcmpipe.report.results import RunResult

# What a run is rather than how it is trained (its data, modalities, loss, where it lives, how fast it runs):
# never a departure from the recipe.
IDENTITY = {
    "dataset", "modalities", "loss", "match", "split_train", "split_val", "split_test", "cache_root",
    "runs_root", "name", "device", "num_workers", "eval_batch", "stream_val_mb", "compile", "progress",
    "threads", "data_root", "encode_batch", "grad_checkpointing", "amp",
}  # fmt: skip
PCMR_ONLY = {"rho", "rho_on", "target", "threshold"}  # a PCMC run never reads them: not listed for it
# Settings another line states, never "changed from the paper's recipe": the seed (the paper gives none, so
# seed 1 departs from nothing; `seed_line` says which seeds the runs used) and cached_views (the augmentation
# departure names what each run drew from).
STATED_ELSEWHERE = {"seed", "cached_views"}
LEGEND = (
    "recipe lines: the paper's recipe = as the paper's text says; reading = our interpretation of a passage the "
    "paper leaves ambiguous; departure = where pcmpipe does other than the text; changed = a setting a run changed"
)


def _schema(config: dict[str, Any]):
    from pcmpipe.config import FinetuneConfig, TrainConfig

    return FinetuneConfig if "unfreeze" in config or "data_root" in config else TrainConfig


def paper_value(config: dict[str, Any], key: str) -> Any:
    """The paper's value of `key` for this run's kind of config: its text's where it gives one (the batch size by
    dataset), else the schema's default."""
    from pcmpipe.config import DATASET_BATCH_SIZE, DEFAULT_BATCH_SIZE

    if key == "batch_size":
        return DATASET_BATCH_SIZE.get(str(config.get("dataset")), DEFAULT_BATCH_SIZE)
    literal = paper_literal(key)
    if literal is not None:
        return literal
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


def _applies(run: RunResult, key: str) -> bool:
    return key in _schema(run.config).model_fields and (key not in PCMR_ONLY or run.config.get("loss") == "pcmr")


def recipe_changes(runs: list[RunResult]) -> dict[str, dict[str, list[str]]]:
    """{setting: {"value (paper P)": [run names]}} for every recorded setting that differs from the paper's value
    (its text's, else the schema default), plus "augmentation" for runs on cached features (the paper augments
    in all cases). Settings a run never reads (PCMR's for a PCMC run) are left out."""
    out: dict[str, dict[str, list[str]]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        for key, value in sorted(run.config.items()):
            if key in IDENTITY or key in STATED_ELSEWHERE or not _applies(run, key):
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
        return f"{k} augmented views per train image and caption, cached once, one drawn per sample per epoch"
    return "none: features cached once, unaugmented"


def _speech_level(run: RunResult) -> str | None:
    """A Flickr8k run with T and S: its match level, where T<->S is its own caption (instance) or the image."""
    if run.config.get("dataset") != "flickr8k" or not {"T", "S"} <= set(run.modalities):
        return None
    return str(run.config.get("match", "instance"))


def _choice_values(choice: Choice, runs: list[RunResult], evaluations: list[dict]) -> dict[str, list[str]]:
    """{what the runs do: [run names]} for one choice; {} when no run of the list is concerned."""
    out: dict[str, list[str]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        cfg = run.config
        if choice.literal is not None:
            value = cfg.get(choice.name)
            shown = None if value is None or not _applies(run, choice.name) else _show(value)
        elif choice.name == "zero-shot T":
            per = [
                str(e.get("per", "caption"))
                for e in evaluations
                if e.get("kind") == "zeroshot" and e.get("run") == run.name
            ]
            shown = f"per {per[0]}" if per else None
        elif choice.name == "CUB match level":
            shown = str(cfg.get("match")) if cfg.get("dataset") == "cub" else None
        elif choice.name == "Flickr8k T<->S match level":
            shown = _speech_level(run)
        elif choice.name == "augmentation":
            shown = None if cfg.get("unfreeze") else _cached_augmentation(run)
        elif choice.name == "optimiser":
            shown = "AdamW"
        else:  # logit_scale: PCMC's temperature
            shown = str(cfg.get("logit_scale")) if cfg.get("loss") == "pcmc" else None
        if shown is not None and not (choice.literal is not None and _same(cfg.get(choice.name), choice.literal)):
            out.setdefault(shown, []).append(run.name)
    return out


def _where(values: dict[str, list[str]], total: int) -> str:
    if len(values) == 1:
        ((value, names),) = values.items()
        return f"{value} ({len(names)} of {total} runs)"
    return "; ".join(f"{v} in {', '.join(names)}" for v, names in values.items())


def paper_recipe_line(runs: list[RunResult]) -> str | None:
    """The settings of the paper's text that every run concerned keeps: 'the paper's recipe: lr 0.0001, ...'."""
    kept = []
    for key in [*PAPER_TEXT, "batch_size", *(c.name for c in CHOICES if c.literal is not None)]:
        concerned = [r for r in runs if key in r.config and _applies(r, key)]
        if concerned and all(_same(r.config[key], paper_value(r.config, key)) for r in concerned):
            kept.append(f"{key} {_show(concerned[0].config[key]) if key != 'batch_size' else 'as the paper'}")
    return "the paper's recipe (its text, Sec. 4) in every run: " + ", ".join(kept) if kept else None


def recipe_lines(runs: list[RunResult], evaluations: list[dict] | None = None) -> list[str]:
    """The recipe section of a report (module docstring): one line per reading, departure and changed setting."""
    lines = [line for line in (paper_recipe_line(runs),) if line]
    for choice in sorted(CHOICES, key=lambda c: c.kind != "reading"):
        values = _choice_values(choice, runs, evaluations or [])
        if values:
            lines.append(
                f"{choice.kind}: {choice.name} = {_where(values, len(runs))}: {choice.reason} "
                f"(paper: {choice.paper}; {choice.see})"
            )
    choice_names = {c.name for c in CHOICES}
    for key, values in recipe_changes(runs).items():
        if key in choice_names:  # listed above, with its reason
            continue
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
