"""Command line: parse flags, build a config, call one function. No pipeline logic lives here.

Every command body runs inside `_guard`, which turns a `UserError` into one red line on stderr and exit
code 2. Heavy modules (torch, transformers) are imported inside the commands so `pcmpipe --help` is fast.
"""

from __future__ import annotations

import contextlib
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
