"""`backbones`: the encoders `extract` and `finetune` can build, from the registry (pcmpipe/backbones/README.md)."""

from __future__ import annotations

from pcmpipe.cli.app import _guard, app
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.commands import BackbonesConfig


# ---- backbones (stage one's encoders) ----
@app.command("backbones")
@settings_command(BackbonesConfig, shown_defaults=True)
def backbones_cmd(given: GivenSettings) -> None:
    """List the registered backbones, the families of any encoder, and open_clip's pretrained tags."""
    with _guard():
        from rich.console import Console

        from pcmpipe.backbones.registry import list_backbones
        from pcmpipe.cli.render import backbones_table, pretrained_table

        rows = list_backbones(with_tags=given.load().tags)
        console = Console()
        console.print(backbones_table(rows))
        for row in rows:
            if row.pretrained:
                console.print(pretrained_table(row))
