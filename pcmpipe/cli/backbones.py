"""`backbones`: the encoders `extract` and `finetune` can build, from the registry (pcmpipe/backbones/README.md)."""

from __future__ import annotations

import typer

from pcmpipe.cli.app import _guard, app


# ---- backbones (stage one's encoders) ----
@app.command("backbones")
def backbones_cmd(
    tags: bool = typer.Option(
        True, "--tags/--no-tags", help="also list open_clip's pretrained tags per model (its own table, no network)"
    ),
) -> None:
    """List the registered backbones, the families of any encoder, and open_clip's pretrained tags."""
    with _guard():
        from rich.console import Console

        from pcmpipe.backbones.registry import list_backbones
        from pcmpipe.cli.render import backbones_table, pretrained_table

        rows = list_backbones(with_tags=tags)
        console = Console()
        console.print(backbones_table(rows))
        for row in rows:
            if row.pretrained:
                console.print(pretrained_table(row))
