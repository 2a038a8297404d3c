"""Stage one: `extract`, frozen backbones over a dataset into the feature cache."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.backbones.registry import DEFAULT_BACKBONES
from pcmpipe.cli.app import _csv, _guard, app, err_console
from pcmpipe.cli.options import FORMAT_METAVAR, hidden_alias


# ---- extract (stage one: backbones -> feature cache) ----
@app.command("extract")
def extract_cmd(
    dataset: str = typer.Option(..., "--dataset", help="flickr8k, cub, or a name for your own data (see --root)"),
    root: Path | None = typer.Option(
        None,
        "--root",
        help="dataset root (default data/<dataset>); your own data: its dataset.yaml or the folder of it",
    ),
    modalities: str | None = typer.Option(
        None, "--modalities", help="comma list, default all: I,T,S (flickr8k); I,T,A,C,P (cub)"
    ),
    split: str = typer.Option("train,val,test", "--split", help="comma list of train, val, test"),
    splits: str | None = hidden_alias("--splits"),
    device: str = typer.Option(
        "auto", "--device", help="auto (cuda if available), cpu, cuda, cuda:N", metavar="<auto|cpu|cuda|cuda:N>"
    ),
    fmt: str = typer.Option("parquet", "--format", help="shard format: parquet or hdf5", metavar=FORMAT_METAVAR),
    batch_size: int = typer.Option(
        64, "--batch-size", help="items per forward pass (speech: also at most 80 s of audio)"
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="decoding processes for images and audio (default: CPUs/4 on CPU, min(8, CPUs) on GPU; 0 = main process)",
    ),
    image_backbone: str = typer.Option(
        DEFAULT_BACKBONES["image"], "--image-backbone", help="backbone for image modalities (I), or open_clip:MODEL@TAG"
    ),
    text_backbone: str = typer.Option(
        DEFAULT_BACKBONES["text"],
        "--text-backbone",
        help="backbone for text (T, P): also open_clip:MODEL@TAG, hf-text:MODEL",
    ),
    audio_backbone: str = typer.Option(
        DEFAULT_BACKBONES["audio"],
        "--audio-backbone",
        help="backbone for speech (S), or hf-audio:MODEL (wav2vec2, WavLM, ...)",
    ),
    weights_image: str = typer.Option(
        "default", "--weights-image", help="default (openai) | open_clip tag | random[:SEED] | PATH"
    ),
    weights_text: str = typer.Option(
        "default", "--weights-text", help="default (openai) | open_clip tag | random[:SEED] | PATH"
    ),
    weights_audio: str = typer.Option(
        "default", "--weights-audio", help="default (facebook/hubert-base-ls960) | hf:ORG/NAME | random[:SEED] | DIR"
    ),
    cache_root: Path = typer.Option(
        Path("cache"), "--cache-root", help="where caches go: <cache-root>/<dataset>/<modality>/<split>"
    ),
    strict: bool = typer.Option(
        False, "--strict", help="stop at the first unreadable input instead of skipping and listing it"
    ),
    limit: int | None = typer.Option(None, "--limit", help="only the first N items (by id) of each modality and split"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rebuild caches that were built with other settings"),
    rows_per_shard: int = typer.Option(4096, "--rows-per-shard", help="rows per finished shard (the unit of resume)"),
    max_padding: float = typer.Option(
        0.05, "--max-padding", help="speech: at most this fraction of each batch is padding, in [0, 1)"
    ),
    lock_timeout: float | None = typer.Option(
        None,
        "--lock-timeout",
        help="seconds to wait for another job writing the same cache split, then stop (default: wait)",
    ),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="stored feature type: float32 or float16 (half the size)",
        metavar="<float32|float16>",
    ),
    views: int = typer.Option(
        0,
        "--views",
        help="train split: also K augmented views per image (timm) and caption (EDA); stage two draws one per epoch",
    ),
    views_seed: int = typer.Option(0, "--views-seed", help="seed of the augmented views (with the item id and view)"),
) -> None:
    """Encode a dataset's modalities with frozen backbones into the feature cache; resumable, skips what is done."""
    with _guard():
        from rich.console import Console

        from pcmpipe import distributed
        from pcmpipe.cli.render import ExtractBar, extract_table
        from pcmpipe.extract import extract

        with ExtractBar(Console(stderr=True)) as bar:
            summary = extract(
                dataset,
                root if root is not None else Path("data") / dataset,
                modalities=_csv(modalities),
                splits=_csv(splits or split),
                backbones={"image": image_backbone, "text": text_backbone, "audio": audio_backbone},
                weights={"image": weights_image, "text": weights_text, "audio": weights_audio},
                device=device,
                fmt=fmt,
                batch_size=batch_size,
                workers=workers,
                cache_root=cache_root,
                strict=strict,
                limit=limit,
                overwrite=overwrite,
                rows_per_shard=rows_per_shard,
                max_padding=max_padding,
                dtype=dtype,
                progress=bar,
                lock_wait=True if lock_timeout is None else lock_timeout,
                views=views,
                views_seed=views_seed,
            )
        main = distributed.is_main()
        distributed.cleanup()  # under torchrun: leave the process group extract joined
        if not main:
            return
        Console().print(extract_table(summary))
        for part in summary.parts:
            if part.reason:
                err_console.print(f"[yellow]{part.modality} {part.split} rebuilt: {part.reason}[/]", highlight=False)
        if summary.errors:
            err_console.print(
                f"[yellow]skipped {len(summary.errors)} inputs; reasons in .errors.jsonl beside each manifest[/]",
                highlight=False,
            )
