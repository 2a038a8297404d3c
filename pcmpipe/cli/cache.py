"""Commands over the feature cache: `import-features` (a user's own vectors) and `cache-info`."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _csv, _guard, app
from pcmpipe.cli.options import FORMAT_METAVAR


# ---- import-features / cache-info (cache) ----
@app.command("import-features")
def import_features_cmd(
    name: str = typer.Argument(..., help="modality name for the new features ([A-Za-z0-9_-]+), e.g. MYEMB"),
    dataset: str = typer.Option(..., "--dataset", help="dataset the ids belong to, e.g. flickr8k or cub"),
    split: str = typer.Option(..., "--split", help="train, val or test"),
    npy: Path | None = typer.Option(None, "--npy", help="array [N, D] (or [N, *shape]) saved with numpy.save"),
    ids: Path | None = typer.Option(
        None, "--ids", help="with --npy: one id per line, or a .tsv with a header (id + link columns)"
    ),
    parquet: Path | None = typer.Option(
        None, "--parquet", help="table with an id column and a list-of-numbers vector column"
    ),
    id_column: str = typer.Option("id", "--id-column", help="id column of --parquet or of a TSV --ids file"),
    vector_column: str | None = typer.Option(None, "--vector-column", help="vector column of --parquet"),
    key: str = typer.Option("image_id", "--key", help="what an id is: image_id, caption_id, class_id or your own"),
    links: str | None = typer.Option(None, "--links", help="comma-separated link columns to keep, e.g. class_id"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or hdf5", metavar=FORMAT_METAVAR),
    cache_root: Path = typer.Option(Path("cache"), "--cache-root", help="cache root (default cache/)"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace an existing cache of this name with other contents"
    ),
    lock_timeout: float | None = typer.Option(
        None,
        "--lock-timeout",
        help="seconds to wait for another job writing or training on the same cache split, then stop (default: wait)",
    ),
) -> None:
    """Write your own per-sample or per-class vectors as a cached modality (validated; all or nothing)."""
    with _guard():
        from pcmpipe.cache.importer import Inputs, import_features
        from pcmpipe.limits import check_positive

        wait = True if lock_timeout is None else check_positive("--lock-timeout", lock_timeout, allow_zero=True)
        source = Inputs(
            npy=npy, ids=ids, parquet=parquet, id_column=id_column, vector_column=vector_column, key=key,
            links=_csv(links) or [],
        )  # fmt: skip
        r = import_features(
            name,
            dataset=dataset,
            split=split,
            source=source,
            fmt=fmt,
            cache_root=cache_root,
            overwrite=overwrite,
            lock_wait=wait,
        )
        what = "already imported, nothing to do" if r.skipped else f"wrote {r.rows} rows"
        typer.echo(f"{r.path}: {what} ({list(r.shape)} {r.dtype}, fingerprint {r.fingerprint[:12]})")


@app.command("cache-info")
def cache_info_cmd(
    root: Path = typer.Argument(Path("cache"), help="cache root (or one cache directory)"),
    verify: bool = typer.Option(
        False, "--verify", help="also check every shard's sha256 (reads all bytes; sizes are always checked)"
    ),
) -> None:
    """List the feature caches under ROOT: dataset, modality, split, rows, shapes, completeness, fingerprint.

    Also the backbone and weights behind each cache, and damaged shards (missing, truncated or, with --verify,
    any changed byte); exits 1 when a cache is damaged."""
    with _guard():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from pcmpipe.cache import list_caches

        caches = list_caches(root, verify=verify)
        if not caches:
            typer.echo(f"no caches under {root}")
            return
        table = Table("dataset", "modality", "split", "rows", "features", "source", "format", "complete", "fingerprint")
        bad = 0
        for c in caches:
            if "error" in c:
                bad += 1
                row = ["-", f"[red]{escape(c['error'])}[/]", "-", "-", "[red]damaged[/]", "-"]
                table.add_row(c["dataset"], c["modality"], c["split"], *row)
                continue
            shapes = ", ".join(f"{n} {list(s)} {d}" for n, (s, d) in c["features"].items())
            if c["damaged"]:
                bad += 1
                state = "[red]damaged: " + escape("; ".join(f"{f} {why}" for f, why in c["damaged"])) + "[/]"
            else:
                state = "[green]yes[/]" if c["complete"] else "[yellow]no[/]"
            table.add_row(
                c["dataset"],
                c["modality"],
                c["split"],
                str(c["rows"]),
                shapes,
                escape(c["source"]),
                c["format"],
                state,
                c["fingerprint"][:12],
            )
        Console(width=max(160, Console().width)).print(table)
        if bad:
            raise typer.Exit(1)
