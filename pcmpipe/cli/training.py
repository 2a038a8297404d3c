"""Stage-two commands: `train` (heads on cached features), `evaluate`, and `finetune` (towers unfrozen)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from pcmpipe import atomic
from pcmpipe.cli.app import _csv, _guard, app
from pcmpipe.cli.options import CONFIG_HELP, hidden_alias, metavar, set_option, setting
from pcmpipe.config import MATCH_LEVELS, FinetuneConfig
from pcmpipe.config.schema import Device, MatchLevel
from pcmpipe.errors import UserError


# ---- train / evaluate (stage two) ----
@app.command("train")
def train_cmd(
    loss: str | None = setting("loss"),
    dataset: str | None = setting("dataset"),
    modalities: str | None = setting("modalities"),
    split_train: str | None = setting("split_train"),
    split_val: str | None = setting("split_val"),
    split_test: str | None = setting("split_test"),
    epochs: str | None = setting("epochs"),
    patience: str | None = setting("patience"),
    batch_size: str | None = setting("batch_size"),
    lr: str | None = setting("lr"),
    weight_decay: str | None = setting("weight_decay"),
    rho: str | None = setting("rho"),
    rho_on: str | None = setting("rho_on"),
    threshold: str | None = setting("threshold"),
    target: str | None = setting("target"),
    standardize: str | None = setting("standardize"),
    logit_scale: str | None = setting("logit_scale"),
    seed: str | None = setting("seed"),
    match: str | None = setting("match"),
    cache_root: str | None = setting("cache_root"),
    runs_root: str | None = setting("runs_root"),
    name: str | None = setting("name"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    device: str | None = setting("device"),
    threads: str | None = setting("threads"),
    log_to: str | None = setting("log_to"),
    set_: list[str] | None = set_option(),
) -> None:
    """Train PCMC/PCMR projection heads on cached features; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.cli.training_progress import TrainingRenderer
        from pcmpipe.config import TrainConfig, merge_settings
        from pcmpipe.training.stage2 import train

        flags = dict(
            loss=loss,
            dataset=dataset,
            modalities=modalities,
            split_train=split_train,
            split_val=split_val,
            split_test=split_test,
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            rho=rho,
            rho_on=rho_on,
            threshold=threshold,
            target=target,
            standardize=standardize,
            logit_scale=logit_scale,
            seed=seed,
            match=match,
            cache_root=cache_root,
            runs_root=runs_root,
            name=name,
            device=device,
            threads=threads,
            log_to=log_to,
        )
        cfg = TrainConfig.from_dict(merge_settings(config, flags, set_))
        renderer = TrainingRenderer()
        try:
            run_dir = train(cfg, on_event=renderer)
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
def evaluate_cmd(
    run_dir: Path = typer.Argument(
        ..., help="a finished run directory, e.g. cache/runs/<name>, or a folder written by `pcmpipe export`"
    ),
    match: str | None = typer.Option(
        None, "--match", help="instance or class (default: every level available)", metavar=metavar(MatchLevel)
    ),
    split: str | None = typer.Option(None, "--split", help="cached split to score (default: the run's test split)"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="score another cached dataset extracted with the run's backbones (default: the run's)"
    ),
    cache_root: Path | None = typer.Option(None, "--cache-root", help="cache root of --dataset (default: the run's)"),
    recall_k: str = typer.Option("1,5", "--recall-k", help="comma-separated k of recall@k, e.g. 1,5,10"),
    out: Path | None = typer.Option(None, "--out", help="also write the metrics as JSON here"),
    csv_out: Path | None = typer.Option(None, "--csv", help="also write the metrics as CSV here (one row per value)"),
    device: str = typer.Option(
        "auto", "--device", help="auto (cuda if available), cpu or cuda", metavar=metavar(Device)
    ),
) -> None:
    """Score a trained run's heads on every retrieval direction and print the table."""
    with _guard():
        from rich.console import Console

        from pcmpipe.backbones import resolve_device
        from pcmpipe.training.evaluate import evaluate_run
        from pcmpipe.training.rundir.files import write_json

        if match is not None and match not in MATCH_LEVELS:
            raise UserError(f"unknown match {match!r}; valid choices: {', '.join(MATCH_LEVELS)}")
        try:
            ks = [int(k) for k in _csv(recall_k) or []]
        except ValueError:
            raise UserError(f"--recall-k {recall_k!r}: give comma-separated integers, e.g. 1,5,10") from None
        result = evaluate_run(
            run_dir,
            match=match,
            split=split,
            device=str(resolve_device(device)),
            ks=ks,
            dataset=dataset,
            cache_root=None if cache_root is None else str(cache_root),
        )
        console = Console()
        for level in ("instance", "class"):
            if level in result:
                _print_level(console, run_dir.name, result, level)
        if out is not None:
            write_json(out, result)
            typer.echo(f"wrote {out}")
        if csv_out is not None:
            from pcmpipe.evaluation.metrics import metrics_csv

            atomic.write_text(csv_out, metrics_csv(result))
            typer.echo(f"wrote {csv_out}")


# ---- finetune (end-to-end: unfrozen CLIP towers at lr 1e-6 with augmentation) ----
@app.command("finetune")
def finetune_cmd(
    root: str | None = setting("data_root", "--root", model=FinetuneConfig),
    data_root: str | None = hidden_alias("--data-root"),
    dataset: str | None = setting("dataset", model=FinetuneConfig),
    modalities: str | None = setting("modalities", model=FinetuneConfig),
    unfreeze: str | None = setting("unfreeze", model=FinetuneConfig),
    loss: str | None = setting("loss", model=FinetuneConfig),
    lr: str | None = setting("lr", model=FinetuneConfig, help="heads' learning rate"),
    backbone_lr: str | None = setting("backbone_lr", model=FinetuneConfig),
    weight_decay: str | None = setting("weight_decay", model=FinetuneConfig),
    epochs: str | None = setting("epochs", model=FinetuneConfig),
    patience: str | None = setting("patience", model=FinetuneConfig),
    batch_size: str | None = setting("batch_size", model=FinetuneConfig),
    image_backbone: str | None = setting("image_backbone", model=FinetuneConfig),
    text_backbone: str | None = setting("text_backbone", model=FinetuneConfig),
    weights_image: str | None = setting("weights_image", model=FinetuneConfig),
    weights_text: str | None = setting("weights_text", model=FinetuneConfig),
    augment: bool | None = setting("augment", model=FinetuneConfig),
    eda_alpha: str | None = setting("eda_alpha", model=FinetuneConfig),
    grad_checkpointing: bool | None = setting("grad_checkpointing", model=FinetuneConfig),
    amp: bool | None = setting("amp", model=FinetuneConfig),
    workers: str | None = setting(
        "num_workers", "--workers", model=FinetuneConfig, help="image decoding/augmentation processes"
    ),
    seed: str | None = setting("seed", model=FinetuneConfig, help="seed of heads, shuffling and augmentation"),
    match: str | None = setting("match", model=FinetuneConfig),
    cache_root: str | None = setting("cache_root", model=FinetuneConfig, help="feature cache of the frozen modalities"),
    runs_root: str | None = setting("runs_root", model=FinetuneConfig),
    name: str | None = setting("name", model=FinetuneConfig),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    device: str | None = setting("device", model=FinetuneConfig),
    log_to: str | None = setting("log_to", model=FinetuneConfig),
    set_: list[str] | None = set_option(),
) -> None:
    """Fine-tune CLIP towers and heads end to end from raw data; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.cli.training_progress import TrainingRenderer
        from pcmpipe.config import merge_settings
        from pcmpipe.training.finetune import finetune

        flags = dict(
            data_root=root or data_root,
            dataset=dataset,
            modalities=modalities,
            unfreeze=unfreeze,
            loss=loss,
            lr=lr,
            backbone_lr=backbone_lr,
            weight_decay=weight_decay,
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            image_backbone=image_backbone,
            text_backbone=text_backbone,
            weights_image=weights_image,
            weights_text=weights_text,
            augment=augment,
            eda_alpha=eda_alpha,
            grad_checkpointing=grad_checkpointing,
            amp=amp,
            num_workers=workers,
            seed=seed,
            match=match,
            cache_root=cache_root,
            runs_root=runs_root,
            name=name,
            device=device,
            log_to=log_to,
        )
        renderer = TrainingRenderer()
        try:
            run_dir = finetune(FinetuneConfig.from_dict(merge_settings(config, flags, set_)), on_event=renderer)
        finally:
            renderer.close()
        typer.echo(f"run written to {run_dir}")
