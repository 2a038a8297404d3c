"""Commands over the feature cache: `import-features` (a user's own vectors) and `cache-info`."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.commands import CacheInfoConfig, ImportConfig


# ---- import-features / cache-info (cache) ----
@app.command("import-features")
@settings_command(ImportConfig, shown_defaults=True)
def import_features_cmd(given: GivenSettings) -> None:
    """Write your own per-sample or per-class vectors as a cached modality (validated; all or nothing)."""
    with _guard():
        from pcmpipe.cache.importer import Inputs, import_features
        from pcmpipe.limits import check_positive

        cfg = given.load()
        wait = True if cfg.lock_timeout is None else check_positive("--lock-timeout", cfg.lock_timeout, allow_zero=True)
        source = Inputs(
            npy=_path(cfg.npy), ids=_path(cfg.ids), parquet=_path(cfg.parquet), id_column=cfg.id_column,
            vector_column=cfg.vector_column, key=cfg.key, links=cfg.links or [],
        )  # fmt: skip
        r = import_features(
            cfg.name,
            dataset=cfg.dataset,
            split=cfg.split,
            source=source,
            fmt=cfg.fmt,
            cache_root=Path(cfg.cache_root),
            overwrite=cfg.overwrite,
            lock_wait=wait,
        )
        what = "already imported, nothing to do" if r.skipped else f"wrote {r.rows} rows"
        typer.echo(f"{r.path}: {what} ({list(r.shape)} {r.dtype}, fingerprint {r.fingerprint[:12]})")


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


@app.command("cache-info")
@settings_command(CacheInfoConfig, shown_defaults=True)
def cache_info_cmd(given: GivenSettings) -> None:
    """List the feature caches under ROOT: dataset, modality, split, rows, shapes, completeness, fingerprint.

    Also the backbone and weights behind each cache, and damaged shards (missing, truncated or, with --verify,
    any changed byte); exits 1 when a cache is damaged."""
    with _guard():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from pcmpipe.cache import list_caches

        cfg = given.load()
        caches = list_caches(Path(cfg.root), verify=cfg.verify)
        if not caches:
            typer.echo(f"no caches under {cfg.root}")
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
