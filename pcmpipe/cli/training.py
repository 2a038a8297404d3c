"""Stage-two commands: `train` (heads on cached features), `evaluate`, and `finetune` (towers unfrozen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from pcmpipe.cli.app import _csv, _guard, app
from pcmpipe.errors import UserError


# ---- train / evaluate (stage two) ----
@app.command("train")
def train_cmd(
    loss: Optional[str] = typer.Option(None, "--loss", help="pcmc (contrastive) or pcmr (regression); default pcmc"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="flickr8k, cub, or any dataset cached under --cache-root"),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="comma-separated, e.g. I,T,S"),
    split_train: Optional[str] = typer.Option(None, "--split-train", help="cached split to train on (default train)"),
    split_val: Optional[str] = typer.Option(None, "--split-val", help="split for early stopping (default val)"),
    split_test: Optional[str] = typer.Option(None, "--split-test", help="split for the final metrics (default test)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="at most this many epochs (default 50)"),
    patience: Optional[int] = typer.Option(None, "--patience", help="stop after this many epochs without gain (default 5)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="default: flickr8k 80, cub 128, else 128"),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate (default 1e-4)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="decoupled weight decay (default 0.2)"),
    rho: Optional[float] = typer.Option(None, "--rho", help="PCMR power factor rho (default 1.0)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="PCMR target threshold t (default 0.99)"),
    logit_scale: Optional[str] = typer.Option(None, "--logit-scale", help="PCMC temperature: learnable or fixed"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of head init and shuffling (default 0)"),
    match: Optional[str] = typer.Option(None, "--match", help="instance or class: level of the early-stopping metric"),
    cache_root: Optional[str] = typer.Option(None, "--cache-root", help="feature cache root (default cache)"),
    runs_root: Optional[str] = typer.Option(None, "--runs-root", help="where runs are written (default cache/runs)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (default derived from the config)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of settings; flags override it"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for training (default: torch's choice)"),
) -> None:
    """Train PCMC/PCMR projection heads on cached features; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.cli.training_progress import TrainingRenderer
        from pcmpipe.config import TrainConfig, read_yaml
        from pcmpipe.training.stage2 import train

        flags = dict(loss=loss, dataset=dataset, modalities=_csv(modalities), split_train=split_train,
                     split_val=split_val, split_test=split_test, epochs=epochs, patience=patience,
                     batch_size=batch_size, lr=lr, weight_decay=weight_decay, rho=rho, threshold=threshold,
                     logit_scale=logit_scale, seed=seed, match=match, cache_root=cache_root, runs_root=runs_root,
                     name=name, device=device, threads=threads)
        settings = read_yaml(config) if config is not None else {}
        settings.update({k: v for k, v in flags.items() if v is not None})
        if cache_root is not None and "runs_root" not in settings:
            settings["runs_root"] = str(Path(cache_root) / "runs")  # runs live beside the cache they came from
        cfg = TrainConfig.from_dict(settings)
        renderer = TrainingRenderer()
        try:
            run_dir = train(cfg, on_event=renderer)
        finally:
            renderer.close()
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns here; one line is enough
            typer.echo(f"run written to {run_dir}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory, e.g. cache/runs/<name>"),
    match: Optional[str] = typer.Option(None, "--match", help="instance or class (default: every level available)"),
    split: Optional[str] = typer.Option(None, "--split", help="cached split to score (default: the run's test split)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the metrics as JSON here"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Score a trained run's heads on every retrieval direction and print the table."""
    with _guard():
        from rich.console import Console
        from rich.table import Table

        from pcmpipe.training.evaluate import evaluate_run
        from pcmpipe.training.rundir import write_json

        if match is not None and match not in ("instance", "class"):
            raise UserError(f"unknown match {match!r}; valid choices: instance, class")
        result = evaluate_run(run_dir, match=match, split=split, device=device)
        console = Console()
        for level in ("instance", "class"):
            if level not in result:
                continue
            console.print(f"{run_dir.name}: {result['split']} split, {level}-level match (percent)", highlight=False,
                          soft_wrap=True)
            table = Table()
            rows = {k: v for k, v in result[level].items() if "->" in k and isinstance(v, dict)}
            metrics = sorted({m for v in rows.values() for m in v}, key=lambda m: (m[0] != "r", m))
            table.add_column("direction")
            for m in metrics:
                table.add_column(m, justify="right")
            for direction, vals in rows.items():
                table.add_row(direction, *[f"{vals[m]:.1f}" if m in vals else "-" for m in metrics])
            console.print(table)
        if out is not None:
            write_json(out, result)
            typer.echo(f"wrote {out}")

# ---- finetune (end-to-end: unfrozen CLIP towers at lr 1e-6 with augmentation) ----
@app.command("finetune")
def finetune_cmd(
    data_root: Optional[str] = typer.Option(None, "--data-root", help="the raw dataset, e.g. data/cub (required)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="dataset name (default cub)"),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="comma-separated (default I,T,A,C)"),
    unfreeze: Optional[str] = typer.Option(None, "--unfreeze", help="towers to train: image,text (default), image, text or none"),
    loss: Optional[str] = typer.Option(None, "--loss", help="pcmc (default) or pcmr"),
    lr: Optional[float] = typer.Option(None, "--lr", help="heads' learning rate (default 1e-4)"),
    backbone_lr: Optional[float] = typer.Option(None, "--backbone-lr", help="unfrozen towers' learning rate (default 1e-6)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (default 0.2)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="at most this many epochs (default 50)"),
    patience: Optional[int] = typer.Option(None, "--patience", help="early stop after this many epochs without gain (default 5)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="default: cub 128, flickr8k 80"),
    image_backbone: Optional[str] = typer.Option(None, "--image-backbone", help="default clip-vit-b32-image"),
    text_backbone: Optional[str] = typer.Option(None, "--text-backbone", help="default clip-vit-b32-text"),
    weights_image: Optional[str] = typer.Option(None, "--weights-image", help="default (openai) | open_clip tag | random[:SEED] | PATH"),
    weights_text: Optional[str] = typer.Option(None, "--weights-text", help="default (openai) | open_clip tag | random[:SEED] | PATH"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="timm images + EDA captions (default on)"),
    eda_alpha: Optional[float] = typer.Option(None, "--eda-alpha", help="EDA alpha (default 0.1)"),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing", help="activation checkpointing in the towers (default on)"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="autocast bf16/fp16 on CUDA (default on)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="image decoding/augmentation processes (default 0)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of heads, shuffling and augmentation (default 0)"),
    match: Optional[str] = typer.Option(None, "--match", help="instance or class: level of the early-stopping metric"),
    cache_root: Optional[str] = typer.Option(None, "--cache-root", help="feature cache of the frozen modalities (default cache)"),
    runs_root: Optional[str] = typer.Option(None, "--runs-root", help="where runs are written (default <cache-root>/runs)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (default derived from the config)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of settings; flags override it"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda"),
) -> None:
    """Fine-tune CLIP towers and heads end to end from raw data; resumes an interrupted run of the same config."""
    with _guard():
        from pcmpipe.cli.training_progress import TrainingRenderer
        from pcmpipe.config import read_yaml
        from pcmpipe.training.finetune import FinetuneConfig, finetune

        flags = dict(data_root=data_root, dataset=dataset, modalities=_csv(modalities), unfreeze=unfreeze, loss=loss,
                     lr=lr, backbone_lr=backbone_lr, weight_decay=weight_decay, epochs=epochs, patience=patience,
                     batch_size=batch_size, image_backbone=image_backbone, text_backbone=text_backbone,
                     weights_image=weights_image, weights_text=weights_text, augment=augment, eda_alpha=eda_alpha,
                     grad_checkpointing=grad_checkpointing, amp=amp, num_workers=workers, seed=seed, match=match,
                     cache_root=cache_root, runs_root=runs_root, name=name, device=device)
        settings = {"dataset": "cub", "modalities": ["I", "T", "A", "C"]}
        settings.update(read_yaml(config) if config is not None else {})
        settings.update({k: v for k, v in flags.items() if v is not None})
        if "cache_root" in settings and "runs_root" not in settings:
            settings["runs_root"] = str(Path(settings["cache_root"]) / "runs")  # runs live beside their cache
        renderer = TrainingRenderer()
        try:
            run_dir = finetune(FinetuneConfig.from_dict(settings), on_event=renderer)
        finally:
            renderer.close()
        typer.echo(f"run written to {run_dir}")
