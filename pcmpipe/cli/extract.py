"""Stage one: `extract`, frozen backbones over a dataset into the feature cache."""

from __future__ import annotations

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.extract import ExtractConfig


# ---- extract (stage one: backbones -> feature cache) ----
@app.command("extract")
@settings_command(ExtractConfig, aliases={"splits": "--splits"}, shown_defaults=True)
def extract_cmd(given: GivenSettings) -> None:
    """Encode a dataset's modalities with frozen backbones into the feature cache; resumable, skips what is done."""
    with _guard():
        from rich.console import Console

        from pcmpipe import distributed
        from pcmpipe.cli.render import ExtractBar, extract_table
        from pcmpipe.extract import extract

        cfg = given.load()
        with ExtractBar(Console(stderr=True)) as bar:
            summary = extract(cfg, progress=bar)
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
