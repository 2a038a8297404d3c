"""`pcmpipe serve RUN [RUN ...]`: the search service and web explorer over trained runs (pcmpipe.serve)."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console
from pcmpipe.cli.options import GivenSettings, settings_command
from pcmpipe.config.use import ServeConfig


@app.command("serve")
@settings_command(ServeConfig, shown_defaults=True)
def serve_cmd(given: GivenSettings) -> None:
    """Serve runs over HTTP: a JSON search API and a web explorer (search any modality from any other)."""
    with _guard():
        from pcmpipe.serve.auth import bind_policy

        cfg = given.load()  # the port and upload bounds are the schema's
        warning = bind_policy(cfg.host, cfg.token, cfg.no_auth)
        from pcmpipe.runs.gallery import read_run_record

        runs = [Path(run) for run in cfg.runs]
        for run in runs:
            read_run_record(run)  # a wrong path is one line before torch loads
        if warning:
            err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        from pcmpipe.serve.server import prepare, run_until_stopped

        service = prepare(
            runs, host=cfg.host, port=cfg.port, token=cfg.token, galleries=cfg.gallery,
            max_upload=cfg.max_upload_bytes(),
        )  # fmt: skip
        typer.echo(f"serving {service.summary()}")
        typer.echo(f"open {service.url}")
    run_until_stopped(service)
