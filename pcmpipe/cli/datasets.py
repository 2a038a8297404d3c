"""Commands that make or fetch raw datasets: `synth` (offline layouts) and `download` (the real archives)."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.datasets.archive import UnpackLimits
from pcmpipe.errors import UserError

UNPACK_DEFAULTS = UnpackLimits()

# Synthetic sets stand in for the real ones in tests and demos: ten times the real size is room enough, and a
# slip such as --images 1000000000 would otherwise write images until the disk is full.
MAX_SYNTH_IMAGES = {"flickr8k": 80_910, "cub": 600}
MAX_SYNTH_WHY = {"flickr8k": "10x the 8,091 images of Flickr8k", "cub": "images per class; CUB has about 60"}


# ---- synth (datasets) ----
@app.command("synth")
def synth_cmd(
    dataset: str = typer.Argument(..., help="flickr8k or cub"),
    out: Path = typer.Option(..., "--out", help="new (or empty) directory to write the dataset into"),
    images: int | None = typer.Option(
        None, "--images", help="flickr8k: images in all (default 60, split 4:1:1); cub: images per class (default 3)"
    ),
    seed: int = typer.Option(0, "--seed", help="same seed and flags -> same files"),
    text_subdir: bool = typer.Option(
        False, "--text-subdir", help="flickr8k: text files under Flickr8k_text/; cub: captions under cub_text/text_c10"
    ),
    speech: str = typer.Option(
        "tones",
        "--speech",
        help="flickr8k spoken captions: tones (deterministic), espeak, or auto (espeak-ng if installed)",
        metavar="<tones|espeak|auto>",
    ),
) -> None:
    """Write a small synthetic dataset in the exact on-disk layout of the real one."""
    with _guard():
        from pcmpipe.datasets.synthetic import synth

        most = MAX_SYNTH_IMAGES.get(dataset)
        if most is not None and images is not None and images > most:
            raise UserError(f"--images for {dataset} must be <= {most} ({MAX_SYNTH_WHY[dataset]}), got {images}")
        summary = synth(dataset, out, images=images, seed=seed, text_subdir=text_subdir, speech=speech)
        typer.echo(f"wrote synthetic {dataset} to {out}: {summary}")


# ---- download (datasets) ----
@app.command("download")
def download_cmd(
    dataset: str = typer.Argument(..., help="flickr8k (images, text, audio corpus) or cub"),
    root: Path = typer.Option(
        ..., "--root", help="dataset root: archives go to ROOT/downloads, contents unpack into ROOT"
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="fetch every archive from this folder URL instead (mirror); also $PCMPIPE_DOWNLOAD_BASE",
    ),
    retries: int = typer.Option(5, "--retries", help="resume attempts per file when the connection drops"),
    max_unpack_gb: float = typer.Option(
        UNPACK_DEFAULTS.max_bytes / (1 << 30), "--max-unpack-gb", help="refuse an archive that unpacks to more"
    ),
    max_ratio: float = typer.Option(
        UNPACK_DEFAULTS.max_ratio, "--max-ratio", help="refuse an archive (zip: a member) that expands more (x)"
    ),
) -> None:
    """Download the official archives (resumable), verify their checksums, unpack them safely."""
    with _guard():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TransferSpeedColumn,
        )

        from pcmpipe.datasets.archive import UnpackLimits
        from pcmpipe.datasets.download import download

        if not (max_unpack_gb > 0 and max_ratio >= 1):
            raise UserError(f"--max-unpack-gb must be > 0 and --max-ratio >= 1, got {max_unpack_gb}, {max_ratio}")
        limits = UnpackLimits(max_bytes=int(max_unpack_gb * (1 << 30)), max_ratio=max_ratio)
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

            summary = download(dataset, root, base_url=base_url, retries=retries, progress=progress, limits=limits)
        for fname, entry in summary["files"].items():
            typer.echo(f"{fname}: {entry['bytes']} bytes, sha256 {entry['sha256']}, verified: {entry['verified']}")
        typer.echo(f"unpacked into {summary['root']}")
        if summary["manual"]:
            err_console.print(f"[yellow]manual step:[/] {summary['manual']}", highlight=False, soft_wrap=True)
