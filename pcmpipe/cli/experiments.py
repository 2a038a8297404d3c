"""Commands that run experiments: `run` (one paper table's pipeline), `report`, `demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app


# ---- run / report / demo (experiments) ----
@app.command("run")
def run_cmd(
    pipeline: str = typer.Argument(..., help="a shipped pipeline's name (e.g. table1_flickr8k) or a pipeline file"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (cached / missing steps) and stop"),
    root: list[str] | None = typer.Option(None, "--root", help="dataset root: PATH, or DATASET=PATH (repeatable)"),
    cache_root: str | None = typer.Option(
        None, "--cache-root", help="feature cache (default cache/); runs go under it in runs/"
    ),
    runs_root: str | None = typer.Option(
        None, "--runs-root", help="where runs are written (default <cache-root>/runs)"
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        help="override: epochs=2 (every run) or data.cub.root=/x (the file); repeatable",
        metavar="<key=value>",
    ),
    recipe: str | None = typer.Option(
        None,
        "--recipe",
        help="ours (default) or paper: every run from the paper's literal text (standardize none, target "
        "projections, rho_on norm), written under <cache-root>/runs-paper",
        metavar="<ours|paper>",
    ),
) -> None:
    """Run the experiments of one paper table or figure: only what is missing (features, runs, evaluations)."""
    with _guard():
        from rich.console import Console

        from pcmpipe.cli.render import PipelineRenderer
        from pcmpipe.pipelines.run import run_pipeline
        from pcmpipe.pipelines.spec import load_pipeline

        p = load_pipeline(
            pipeline, overrides=set_ or [], roots=root or [], cache_root=cache_root, runs_root=runs_root, recipe=recipe
        )
        renderer = PipelineRenderer(Console())
        try:
            run_pipeline(p, dry_run=dry_run, on_event=renderer)
        finally:
            renderer.close()


@app.command("report")
def report_cmd(
    runs_root: Path = typer.Option(Path("cache/runs"), "--runs-root", help="where `pcmpipe run` wrote its runs"),
    out: Path = typer.Option(Path("report"), "--out", help="directory for report.md, report.html and figures/"),
) -> None:
    """Every table in the terminal, as report.md and a self-contained report.html, beside the paper's values."""
    with _guard():
        from rich.console import Console

        from pcmpipe.report.build import build_report, write_report
        from pcmpipe.report.render.terminal import print_report

        report = build_report(runs_root)
        paths = write_report(report, out)
        print_report(report, Console())
        typer.echo(f"wrote {paths['markdown']} and {paths['html']}")


# The docstring's backslash-newline keeps the help one line: the command list prints it verbatim.
@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo"), "--out", help="directory for the synthetic data, cache, runs and report"),
    fast: bool = typer.Option(False, "--fast", help="fewer images and epochs (about a minute; for smoke tests)"),
) -> None:
    """Offline end-to-end demo: synthetic data, random-weight backbones, PCMC and PCMR, zero-shot, enrichment, \
report."""
    with _guard():
        from rich.console import Console

        from pcmpipe.cli.render import PipelineRenderer
        from pcmpipe.pipelines.demo import run_demo
        from pcmpipe.report.render.terminal import print_report

        console = Console()
        renderer = PipelineRenderer(console)
        try:
            res = run_demo(out, fast=fast, on_event=renderer)
        finally:
            renderer.close()
        print_report(res["report"], console)
        console.print(
            f"[bold green]demo done[/] in {res['wall_s']:.0f} s wall ({res['cpu_s']:.0f} s CPU): "
            f"{res['paths']['markdown']} and {res['paths']['html']}",
            highlight=False,
        )
