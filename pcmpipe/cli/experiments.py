"""Commands that run experiments: `run` (one paper table's pipeline), `report`, `demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from pcmpipe.cli.app import _guard, app
from pcmpipe.cli.options import CONFIG, GivenSettings, settings_command
from pcmpipe.config.experiments import RUN_CONFIG_HELP, DemoConfig, ReportConfig, RunConfig


# ---- run / report / demo (experiments) ----
@app.command("run")
@settings_command(RunConfig, help={CONFIG: RUN_CONFIG_HELP}, shown_defaults=True)
def run_cmd(given: GivenSettings) -> None:
    """Run the experiments of one paper table or figure: only what is missing (features, runs, evaluations)."""
    with _guard():
        from rich.console import Console

        from pcmpipe.cli.render import PipelineRenderer
        from pcmpipe.pipelines.run import run_pipeline
        from pcmpipe.pipelines.spec import load_pipeline

        cfg = given.load()
        p = load_pipeline(
            cfg.pipeline,
            overrides=cfg.overrides,
            roots=cfg.root,
            cache_root=cfg.cache_root,
            runs_root=cfg.runs_root,
            recipe=cfg.recipe,
        )
        renderer = PipelineRenderer(Console())
        try:
            run_pipeline(p, dry_run=cfg.dry_run, on_event=renderer)
        finally:
            renderer.close()


@app.command("report")
@settings_command(ReportConfig, shown_defaults=True)
def report_cmd(given: GivenSettings) -> None:
    """Every table in the terminal, as report.md and a self-contained report.html, beside the paper's values."""
    with _guard():
        from rich.console import Console

        from pcmpipe.report.build import build_report, write_report
        from pcmpipe.report.render.terminal import print_report

        cfg = given.load()
        report = build_report(Path(cfg.runs_root))
        paths = write_report(report, Path(cfg.out))
        print_report(report, Console())
        typer.echo(f"wrote {paths['markdown']} and {paths['html']}")


# The docstring's backslash-newline keeps the help one line: the command list prints it verbatim.
@app.command("demo")
@settings_command(DemoConfig, shown_defaults=True)
def demo_cmd(given: GivenSettings) -> None:
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
            cfg = given.load()
            res = run_demo(Path(cfg.out), fast=cfg.fast, on_event=renderer)
        finally:
            renderer.close()
        print_report(res["report"], console)
        console.print(
            f"[bold green]demo done[/] in {res['wall_s']:.0f} s wall ({res['cpu_s']:.0f} s CPU): "
            f"{res['paths']['markdown']} and {res['paths']['html']}",
            highlight=False,
        )
