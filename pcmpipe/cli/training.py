"""Stage-two commands: `train` (heads on cached features), `evaluate`, and `finetune` (towers unfrozen)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer

from pcmpipe import atomic
from pcmpipe.cli.app import _guard, app
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config import FinetuneConfig, TrainConfig
from pcmpipe.config.commands import EvaluateConfig


# ---- train / evaluate (stage two) ----
@app.command("train")
@settings_command(TrainConfig)
def train_cmd(given: GivenSettings) -> None:
    """Train PCMC/PCMR projection heads on cached features; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.training.stage2 import train

        _run_recipe(train, given.load())


def _run_recipe(recipe: Callable[..., Path], cfg: TrainConfig | FinetuneConfig) -> None:
    """Run a training recipe with the terminal's progress display, then say where the run was written."""
    from pcmpipe.cli.training_progress import TrainingRenderer

    renderer = TrainingRenderer()
    try:
        run_dir = recipe(cfg, on_event=renderer)
    finally:
        renderer.close()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns here; one line is enough
        typer.echo(f"run written to {run_dir}")


def _metric_order(name: str) -> tuple:
    """r@1, r@5, r@10 (by k), then the others (R-P)."""
    return (0, int(name[2:]), "") if name.startswith("r@") and name[2:].isdigit() else (1, 0, name)


def _print_level(console, run_name: str, result: dict, level: str) -> None:
    """One match level's table: each direction X->Y with the size of Y's gallery, and under it the score a
    random ranking gets from that gallery (chance), so a small gallery's high recall reads as what it is."""
    from rich.table import Table

    console.print(
        f"{run_name}: {result['dataset']} {result['split']} split, {level}-level match (percent)",
        highlight=False,
        soft_wrap=True,
    )
    rows = {k: v for k, v in result[level].items() if "->" in k and isinstance(v, dict)}
    chance = result.get("chance", {}).get(level, {})
    metrics = sorted({m for v in rows.values() for m in v}, key=_metric_order)
    table = Table()
    table.add_column("direction")
    table.add_column("gallery", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for direction, vals in rows.items():
        size = result.get("gallery", {}).get(direction.split("->")[1])
        table.add_row(direction, "-" if size is None else str(size), *[_cell(vals, m) for m in metrics])
        if direction in chance:
            table.add_row("  chance", "", *[_cell(chance[direction], m) for m in metrics], style="dim")
    console.print(table)


def _cell(values: dict, metric: str) -> str:
    return f"{values[metric]:.1f}" if metric in values else "-"


@app.command("evaluate")
@settings_command(EvaluateConfig, shown_defaults=True)
def evaluate_cmd(given: GivenSettings) -> None:
    """Score a trained run's heads on every retrieval direction and print the table."""
    with _guard():
        from rich.console import Console

        from pcmpipe.backbones import resolve_device
        from pcmpipe.evaluation.retrieval import LEVELS
        from pcmpipe.training.evaluate import evaluate_run
        from pcmpipe.training.rundir.files import write_json

        cfg = given.load()
        run_dir = Path(cfg.run_dir)
        result = evaluate_run(
            run_dir,
            match=cfg.match,
            split=cfg.split,
            device=str(resolve_device(cfg.device)),
            ks=cfg.recall_k,
            dataset=cfg.dataset,
            cache_root=cfg.cache_root,
        )
        console = Console()
        for level in LEVELS:
            if level in result:
                _print_level(console, run_dir.name, result, level)
        if cfg.out is not None:
            write_json(Path(cfg.out), result)
            typer.echo(f"wrote {cfg.out}")
        if cfg.csv is not None:
            from pcmpipe.evaluation.metrics import metrics_csv

            atomic.write_text(Path(cfg.csv), metrics_csv(result, LEVELS))
            typer.echo(f"wrote {cfg.csv}")


# ---- finetune (end-to-end: unfrozen CLIP towers at lr 1e-6 with augmentation) ----
# where fine-tuning reads a setting otherwise than stage two does
FINETUNE_HELP = {
    "lr": "heads' learning rate",
    "num_workers": "image decoding/augmentation processes",
    "seed": "seed of heads, shuffling and augmentation",
    "cache_root": "feature cache of the frozen modalities",
}


@app.command("finetune")
@settings_command(FinetuneConfig, help=FINETUNE_HELP, aliases={"data_root": "--data-root"})
def finetune_cmd(given: GivenSettings) -> None:
    """Fine-tune CLIP towers and heads end to end from raw data; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.training.finetune import finetune

        _run_recipe(finetune, given.load())
