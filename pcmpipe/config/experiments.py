"""The settings of the commands that run experiments: `run` (`RunConfig`), `report` (`ReportConfig`) and `demo`
(`DemoConfig`).

As in commands.py, each field is a setting once (flag, help, choices, default) and the command takes
`--config FILE` (pcmpipe.cli.options.settings_command). `run` alone has no generic `--set key=value`: its
`--set` has always meant an override of the pipeline (`epochs=2` for every run, `data.cub.root=/x` in the file,
pcmpipe.pipelines.overrides), and that meaning stays; here it is the setting `overrides`, so a settings file
lists them as `overrides: [epochs=2]`.
"""

from __future__ import annotations

from pydantic import Field

from pcmpipe.config.base import CommandLine, Settings
from pcmpipe.config.paper_recipe import Recipe

RUN_CONFIG_HELP = (
    "YAML file of these settings (root, cache_root, overrides as a list of key=value, ...); flags override it"
)


class RunConfig(Settings):
    """Which pipeline `pcmpipe run` runs, on which data, and where its features and runs go."""

    # no "set": `--set` is the pipeline's overrides (see the module's docstring)
    cli = CommandLine(
        kind="run setting",
        arguments=("pipeline",),
        repeated=("root", "overrides"),
        flags={"overrides": "--set"},
        metavars={"overrides": "<key=value>"},
        cli_order=("dry_run", "root", "cache_root", "runs_root", "overrides", "recipe", "config"),
    )

    pipeline: str = Field(description="a shipped pipeline's name (e.g. table1_flickr8k) or a pipeline file")
    dry_run: bool = Field(False, description="print the plan (cached / missing steps) and stop")
    root: list[str] = Field(default_factory=list, description="dataset root: PATH, or DATASET=PATH (repeatable)")
    cache_root: str | None = Field(None, description="feature cache (default cache/); runs go under it in runs/")
    runs_root: str | None = Field(None, description="where runs are written (default <cache-root>/runs)")
    overrides: list[str] = Field(
        default_factory=list, description="override: epochs=2 (every run) or data.cub.root=/x (the file); repeatable"
    )
    recipe: Recipe | None = Field(
        None,
        description="ours (default) or paper: every run from the paper's literal text (standardize none, target "
        "projections, rho_on norm), written under <cache-root>/runs-paper",
    )


class ReportConfig(Settings):
    """Where `pcmpipe report` reads the runs and writes the report."""

    cli = CommandLine(
        kind="report setting",
        metavars={"runs_root": "<path>", "out": "<path>"},
        set_example="runs_root=cache/runs-paper",
    )

    runs_root: str = Field("cache/runs", description="where `pcmpipe run` wrote its runs")
    out: str = Field("report", description="directory for report.md, report.html and figures/")


class DemoConfig(Settings):
    """Where `pcmpipe demo` writes everything, and whether it runs the short version."""

    cli = CommandLine(kind="demo setting", metavars={"out": "<path>"}, set_example="fast=true")

    out: str = Field("demo", description="directory for the synthetic data, cache, runs and report")
    fast: bool = Field(False, description="fewer images and epochs (about a minute; for smoke tests)")
