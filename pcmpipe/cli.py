"""Command line: parse flags, build a config, call one function. No pipeline logic lives here.

Every command body runs inside `_guard`, which turns a `UserError` into one red line on stderr and exit
code 2. Heavy modules (torch, transformers) are imported inside the commands so `pcmpipe --help` is fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pcmpipe.errors import UserError

app = typer.Typer(
    name="pcmpipe",
    help="Cross-modal coordination across many modalities: extract features, train PCMC/PCMR heads, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@contextlib.contextmanager
def _guard():
    """User errors end in one line and exit 2; KeyboardInterrupt exits 130 without a traceback."""
    try:
        yield
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    """'I,T,S' -> ['I', 'T', 'S']; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


# ---- commands are added below, one block per command, each calling one library function ----


# ---- synth (datasets) ----
@app.command("synth")
def synth_cmd(
    dataset: str = typer.Argument(..., help="flickr8k or cub"),
    out: Path = typer.Option(..., "--out", help="new (or empty) directory to write the dataset into"),
    images: Optional[int] = typer.Option(None, "--images", help="flickr8k: images in all (default 60, split 4:1:1); cub: images per class (default 3)"),
    seed: int = typer.Option(0, "--seed", help="same seed and flags -> same files"),
    text_subdir: bool = typer.Option(False, "--text-subdir", help="flickr8k: text files under Flickr8k_text/; cub: captions under cub_text/text_c10"),
    speech: str = typer.Option("tones", "--speech", help="flickr8k spoken captions: tones (deterministic), espeak, or auto (espeak-ng if installed)"),
) -> None:
    """Write a small synthetic dataset in the exact on-disk layout of the real one."""
    with _guard():
        from pcmpipe.datasets.synth import synth

        summary = synth(dataset, out, images=images, seed=seed, text_subdir=text_subdir, speech=speech)
        typer.echo(f"wrote synthetic {dataset} to {out}: {summary}")


# ---- run / report / demo (experiments) ----
@app.command("run")
def run_cmd(
    pipeline: Path = typer.Argument(..., help="a pipeline file, e.g. pipelines/table1_flickr8k.yaml"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (cached / missing steps) and stop"),
    root: Optional[list[str]] = typer.Option(None, "--root", help="dataset root: PATH, or DATASET=PATH (repeatable)"),
    cache_root: Optional[str] = typer.Option(None, "--cache-root", help="feature cache (default cache/); runs go under it in runs/"),
    runs_root: Optional[str] = typer.Option(None, "--runs-root", help="where runs are written (default <cache-root>/runs)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override: epochs=2 (every run) or data.cub.root=/x (the file); repeatable"),
) -> None:
    """Run the experiments of one paper table or figure: only what is missing (features, runs, evaluations)."""
    with _guard():
        from rich.console import Console

        from pcmpipe.pipeline import load_pipeline
        from pcmpipe.pipeline_run import run_pipeline

        p = load_pipeline(pipeline, overrides=set_ or [], roots=root or [], cache_root=cache_root, runs_root=runs_root)
        run_pipeline(p, dry_run=dry_run, console=Console())


@app.command("report")
def report_cmd(
    runs_root: Path = typer.Option(Path("cache/runs"), "--runs-root", help="where `pcmpipe run` wrote its runs"),
    out: Path = typer.Option(Path("report"), "--out", help="directory for report.md, report.html and figures/"),
) -> None:
    """Every table in the terminal, as report.md and a self-contained report.html, beside the paper's values."""
    with _guard():
        from rich.console import Console

        from pcmpipe.report.build import write_report

        paths = write_report(runs_root, out, console=Console())
        typer.echo(f"wrote {paths['markdown']} and {paths['html']}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo"), "--out", help="directory for the synthetic data, cache, runs and report"),
    fast: bool = typer.Option(False, "--fast", help="fewer images and epochs (about a minute; for smoke tests)"),
) -> None:
    """Offline end-to-end demo: synthetic data, random-weight backbones, PCMC and PCMR, zero-shot, enrichment, report."""
    with _guard():
        from rich.console import Console

        from pcmpipe.demo import run_demo

        run_demo(out, fast=fast, console=Console())


# ---- download (datasets) ----
@app.command("download")
def download_cmd(
    dataset: str = typer.Argument(..., help="flickr8k (images, text, audio corpus) or cub"),
    root: Path = typer.Option(..., "--root", help="dataset root: archives go to ROOT/downloads, contents unpack into ROOT"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="fetch every archive from this folder URL instead (mirror); also $PCMPIPE_DOWNLOAD_BASE"),
    retries: int = typer.Option(5, "--retries", help="resume attempts per file when the connection drops"),
) -> None:
    """Download the official archives (resumable), verify their checksums, unpack them safely."""
    with _guard():
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        from pcmpipe.datasets.download import download

        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err_console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(name: str, done: int, total: Optional[int]) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            summary = download(dataset, root, base_url=base_url, retries=retries, progress=progress)
        for fname, entry in summary["files"].items():
            typer.echo(f"{fname}: {entry['bytes']} bytes, sha256 {entry['sha256']}, verified: {entry['verified']}")
        typer.echo(f"unpacked into {summary['root']}")
        if summary["manual"]:
            err_console.print(f"[yellow]manual step:[/] {summary['manual']}", highlight=False, soft_wrap=True)


# ---- import-features / cache-info (cache) ----
@app.command("import-features")
def import_features_cmd(
    name: str = typer.Argument(..., help="modality name for the new features ([A-Za-z0-9_-]+), e.g. MYEMB"),
    dataset: str = typer.Option(..., "--dataset", help="dataset the ids belong to, e.g. flickr8k or cub"),
    split: str = typer.Option(..., "--split", help="train, val or test"),
    npy: Optional[Path] = typer.Option(None, "--npy", help="array [N, D] (or [N, *shape]) saved with numpy.save"),
    ids: Optional[Path] = typer.Option(None, "--ids", help="with --npy: one id per line, or a .tsv with a header (id + link columns)"),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="table with an id column and a list-of-numbers vector column"),
    id_column: str = typer.Option("id", "--id-column", help="id column of --parquet or of a TSV --ids file"),
    vector_column: Optional[str] = typer.Option(None, "--vector-column", help="vector column of --parquet"),
    key: str = typer.Option("image_id", "--key", help="what an id is: image_id, caption_id, class_id or your own"),
    links: Optional[str] = typer.Option(None, "--links", help="comma-separated link columns to keep, e.g. class_id"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or hdf5"),
    cache_root: Path = typer.Option(Path("cache"), "--cache-root", help="cache root (default cache/)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing cache of this name with other contents"),
) -> None:
    """Write your own per-sample or per-class vectors as a cached modality (validated; all or nothing)."""
    with _guard():
        from pcmpipe.import_features import import_features

        r = import_features(name, dataset=dataset, split=split, npy=npy, ids=ids, parquet=parquet,
                            id_column=id_column, vector_column=vector_column, key=key, links=_csv(links) or [],
                            fmt=fmt, cache_root=cache_root, overwrite=overwrite)
        what = "already imported, nothing to do" if r.skipped else f"wrote {r.rows} rows"
        typer.echo(f"{r.path}: {what} ({list(r.shape)} {r.dtype}, fingerprint {r.fingerprint[:12]})")


@app.command("cache-info")
def cache_info_cmd(
    root: Path = typer.Argument(Path("cache"), help="cache root (or one cache directory)"),
) -> None:
    """List the feature caches under ROOT: dataset, modality, split, rows, shapes, completeness, fingerprint."""
    with _guard():
        from rich.console import Console
        from rich.table import Table

        from pcmpipe.cache import list_caches

        caches = list_caches(root)
        if not caches:
            typer.echo(f"no caches under {root}")
            return
        table = Table("dataset", "modality", "split", "rows", "features", "format", "complete", "fingerprint")
        for c in caches:
            if "error" in c:
                table.add_row(c["dataset"], c["modality"], c["split"], "-", f"[red]{c['error']}[/]", "-", "-", "-")
                continue
            shapes = ", ".join(f"{n} {list(s)} {d}" for n, (s, d) in c["features"].items())
            done = "[green]yes[/]" if c["complete"] else "[yellow]no[/]"
            table.add_row(c["dataset"], c["modality"], c["split"], str(c["rows"]), shapes, c["format"], done,
                          c["fingerprint"][:12])
        Console(width=max(120, Console().width)).print(table)


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
        from pcmpipe.config import TrainConfig, read_yaml
        from pcmpipe.train import train

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
        run_dir = train(cfg)
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

        from pcmpipe.runs import write_json
        from pcmpipe.train_eval import evaluate_run

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


# ---- extract (stage one: backbones -> feature cache) ----
@app.command("extract")
def extract_cmd(
    dataset: str = typer.Option(..., "--dataset", help="flickr8k or cub"),
    root: Optional[Path] = typer.Option(None, "--root", help="dataset root (default data/<dataset>)"),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="comma list, default all: I,T,S (flickr8k); I,T,A,C,P (cub)"),
    splits: str = typer.Option("train,val,test", "--splits", help="comma list of train, val, test"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda, cuda:N"),
    fmt: str = typer.Option("parquet", "--format", help="shard format: parquet or hdf5"),
    batch_size: int = typer.Option(64, "--batch-size", help="items per forward pass (speech: also at most 80 s of audio)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="decoding processes for images and audio (default: CPUs/4 on CPU, min(8, CPUs) on GPU; 0 = main process)"),
    image_backbone: str = typer.Option("clip-vit-b32-image", "--image-backbone", help="backbone for I"),
    text_backbone: str = typer.Option("clip-vit-b32-text", "--text-backbone", help="backbone for T and P"),
    audio_backbone: str = typer.Option("hubert-base", "--audio-backbone", help="backbone for S"),
    weights_image: str = typer.Option("default", "--weights-image", help="default (openai) | open_clip tag | random[:SEED] | PATH"),
    weights_text: str = typer.Option("default", "--weights-text", help="default (openai) | open_clip tag | random[:SEED] | PATH"),
    weights_audio: str = typer.Option("default", "--weights-audio", help="default (facebook/hubert-base-ls960) | hf:ORG/NAME | random[:SEED] | DIR"),
    cache_root: Path = typer.Option(Path("cache"), "--cache-root", help="where caches go: <cache-root>/<dataset>/<modality>/<split>"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first unreadable input instead of skipping and listing it"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N items (by id) of each modality and split"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rebuild caches that were built with other settings"),
    rows_per_shard: int = typer.Option(4096, "--rows-per-shard", help="rows per finished shard (the unit of resume)"),
    max_padding: float = typer.Option(0.05, "--max-padding", help="speech: at most this fraction of each batch is padding, in [0, 1)"),
) -> None:
    """Encode a dataset's modalities with frozen backbones into the feature cache; resumable, skips what is done."""
    with _guard():
        from rich.console import Console

        from pcmpipe import distributed
        from pcmpipe.extract import extract

        console = Console(stderr=True)
        summary = extract(
            dataset, root if root is not None else Path("data") / dataset, modalities=_csv(modalities),
            splits=_csv(splits), backbones={"image": image_backbone, "text": text_backbone, "audio": audio_backbone},
            weights={"image": weights_image, "text": weights_text, "audio": weights_audio}, device=device, fmt=fmt,
            batch_size=batch_size, workers=workers, cache_root=cache_root, strict=strict, limit=limit,
            overwrite=overwrite, rows_per_shard=rows_per_shard, max_padding=max_padding, console=console)
        main = distributed.is_main()
        distributed.cleanup()  # under torchrun: leave the process group extract joined
        if not main:
            return
        Console().print(summary.table())
        if summary.errors:
            err_console.print(f"[yellow]skipped {len(summary.errors)} inputs; reasons in errors.jsonl beside each "
                              "manifest[/]", highlight=False)


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
        from pcmpipe.config import read_yaml
        from pcmpipe.finetune import FinetuneConfig, finetune

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
        run_dir = finetune(FinetuneConfig.from_dict(settings))
        typer.echo(f"run written to {run_dir}")
