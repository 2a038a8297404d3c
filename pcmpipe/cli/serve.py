"""`pcmpipe serve RUN [RUN ...]`: the search service and web explorer over trained runs (pcmpipe.serve)."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app, err_console


@app.command("serve")
def serve_cmd(
    runs: list[Path] = typer.Argument(..., help="finished run directories (or `pcmpipe export` folders) to serve"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (other than loopback: --token)"),
    port: int = typer.Option(8765, "--port", help="TCP port (0: any free one, printed)"),
    token: str | None = typer.Option(
        None, "--token", help="bearer token every request must carry (needed to listen beyond this machine)"
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="listen beyond this machine without a token (warns)"),
    gallery: list[str] | None = typer.Option(
        None, "--gallery", help="[RUN:]M=DIR: search modality M of RUN in an embeddings cache or index folder"
    ),
    max_upload_mb: int = typer.Option(20, "--max-upload-mb", help="largest uploaded query file, MB (1 to 200)"),
) -> None:
    """Serve runs over HTTP: a JSON search API and a web explorer (search any modality from any other)."""
    with _guard():
        from pcmpipe.limits import check_int
        from pcmpipe.serve.auth import bind_policy

        check_int("--port", port, low=0, high=65535, why="a TCP port")
        check_int("--max-upload-mb", max_upload_mb, low=1, high=200, why="megabytes per uploaded file")
        warning = bind_policy(host, token, no_auth)
        from pcmpipe.runs.gallery import read_run_record

        for run in runs:
            read_run_record(run)  # a wrong path is one line before torch loads
        if warning:
            err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        from pcmpipe.serve.server import prepare, run_until_stopped

        service = prepare(
            runs, host=host, port=port, token=token, galleries=gallery or [], max_upload=max_upload_mb << 20
        )
        typer.echo(f"serving {service.summary()}")
        typer.echo(f"open {service.url}")
    run_until_stopped(service)
