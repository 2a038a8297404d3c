"""Commands that make or fetch raw datasets: `synth` (offline layouts) and `download` (the real archives)."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.commands import DownloadConfig, SynthConfig
from pcmpipe.errors import UserError

# Synthetic sets stand in for the real ones in tests and demos: ten times the real size is room enough, and a
# slip such as --images 1000000000 would otherwise write images until the disk is full.
MAX_SYNTH_IMAGES = {"flickr8k": 80_910, "cub": 600}
MAX_SYNTH_WHY = {"flickr8k": "10x the 8,091 images of Flickr8k", "cub": "images per class; CUB has about 60"}


# ---- synth (datasets) ----
@app.command("synth")
@settings_command(SynthConfig, shown_defaults=True)
def synth_cmd(given: GivenSettings) -> None:
    """Write a small synthetic dataset in the exact on-disk layout of the real one."""
    with _guard():
        from pcmpipe.datasets.synthetic import synth

        cfg = given.load()
        most = MAX_SYNTH_IMAGES.get(cfg.dataset)
        if most is not None and cfg.images is not None and cfg.images > most:
            why = MAX_SYNTH_WHY[cfg.dataset]
            raise UserError(f"--images for {cfg.dataset} must be <= {most} ({why}), got {cfg.images}")
        summary = synth(
            cfg.dataset, Path(cfg.out), images=cfg.images, seed=cfg.seed, text_subdir=cfg.text_subdir, speech=cfg.speech
        )
        typer.echo(f"wrote synthetic {cfg.dataset} to {cfg.out}: {summary}")


# ---- download (datasets) ----
@app.command("download")
@settings_command(DownloadConfig, shown_defaults=True)
def download_cmd(given: GivenSettings) -> None:
    """Download the official archives (resumable), verify their checksums, unpack them safely."""
    with _guard():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TransferSpeedColumn,
        )

        from pcmpipe.datasets.download import download

        cfg = given.load()
        with Progress(
            "{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(name: str, done: int, total: int | None) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            summary = download(
                cfg.dataset,
                Path(cfg.root),
                base_url=cfg.base_url,
                retries=cfg.retries,
                progress=progress,
                limits=cfg.unpack_limits(),
            )
        for fname, entry in summary["files"].items():
            typer.echo(f"{fname}: {entry['bytes']} bytes, sha256 {entry['sha256']}, verified: {entry['verified']}")
        typer.echo(f"unpacked into {summary['root']}")
        if summary["manual"]:
            err_console.print(f"[yellow]manual step:[/] {summary['manual']}", highlight=False, soft_wrap=True)
