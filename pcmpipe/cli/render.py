"""How the CLI shows what the library returns or reports: the extraction bar and summary table, the pipeline
plan and its steps. The library hands over data and events; everything rich lives here."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pcmpipe.backbones.registry import BackboneListing
from pcmpipe.cli.training_progress import TrainingRenderer
from pcmpipe.extract.summary import ExtractSummary
from pcmpipe.pipelines.events import Note, PlanReady, StepFinished, StepProgress, StepStarted


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "-/s", style="progress.data.speed")


class ExtractBar:
    """A rich bar per (dataset, modality, split), fed by extract's `progress(task, done, total)` callback."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ExtractBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, task: str, done: int, total: int) -> None:
        if task not in self.tasks:
            self.tasks[task] = self.progress.add_task(task, total=total)
        self.progress.update(self.tasks[task], completed=done, total=total)


def extract_table(summary: ExtractSummary) -> Table:
    """One row per (modality, split): rows in the cache, rows new this run, inputs skipped, speed."""
    t = Table(
        title=f"extract {summary.dataset} -> {summary.cache_root} ({summary.device})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
    )
    audio = any(p.padding is not None for p in summary.parts)
    fallback = any(p.decode_fallback for p in summary.parts)  # images the GPU decoder left to the CPU path
    names = ("mod", "split", "backbone", "status", "rows", "new", "skip", "items/s", "time") + ("pad",) * audio
    names += ("cpu-decoded",) * fallback
    for name in names:
        t.add_column(name, justify="left" if name in ("mod", "split", "backbone", "status") else "right")
    for p in summary.parts:
        cells: list[str | Text] = [
            p.modality,
            p.split,
            p.backbone,
            p.status,
            str(p.rows),
            str(p.new_rows),
            Text(str(p.skipped), style="yellow" if p.skipped else ""),
            f"{p.rate:.1f}" if p.rate else "-",
            f"{p.seconds:.1f}s",
        ]
        if audio:
            cells.append(f"{100 * p.padding:.0f}%" if p.padding is not None else "-")
        if fallback:
            cells.append(str(p.decode_fallback))
        t.add_row(*cells)
    return t


def backbones_table(rows: list[BackboneListing]) -> Table:
    """`pcmpipe backbones`: one row per registered name or family pattern, with the kinds it is the default of."""
    t = Table(title="backbones (--image-backbone, --text-backbone, --audio-backbone)", title_justify="left")
    for col in ("name", "kind", "default for", "what"):
        t.add_column(col, overflow="fold")
    for r in rows:
        # Text, not markup: a family's pattern has brackets ('open_clip:MODEL[@TAG]') that rich would eat
        t.add_row(Text(r.name), ", ".join(r.kinds), ", ".join(r.default_for) or "-", Text(r.description))
    return t


def pretrained_table(row: BackboneListing) -> Table:
    """A family's pretrained tags, one row per model: `PREFIX:MODEL@TAG` loads one."""
    by_model: dict[str, list[str]] = {}
    for model, tag in row.pretrained:
        by_model.setdefault(model, []).append(tag)
    prefix = row.name.partition(":")[0]
    t = Table(title=f"{prefix} pretrained tags ({prefix}:MODEL@TAG)", title_justify="left")
    t.add_column("model", no_wrap=True)
    t.add_column("tags", overflow="fold")
    for model, tags in by_model.items():
        t.add_row(Text(model), Text(", ".join(tags)))
    return t


def plan_table(event: PlanReady) -> Table:
    """The pipeline's steps with their status and the equivalent command."""
    t = Table(title=f"{event.name}: {event.title}", title_justify="left")
    for col in ("step", "target", "status", "command"):
        t.add_column(col, overflow="fold")
    colour = {"cached": "green", "missing": "yellow", "blocked": "red"}
    for s in event.steps:
        t.add_row(s.kind, s.target, f"[{colour.get(s.status, 'white')}]{s.status}[/]", s.command)
    return t


class PipelineRenderer:
    """The `on_event` of `run_pipeline` for a terminal: the plan table, one line per step, extraction bars."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: ExtractBar | None = None
        self.training = TrainingRenderer(console)  # the events of the runs the pipeline trains

    def __call__(self, event) -> None:
        if isinstance(event, PlanReady):
            self.console.print(plan_table(event))
        elif isinstance(event, StepStarted):
            self.console.print(f"[bold]{event.step.kind}[/] {event.step.target}", highlight=False)
        elif isinstance(event, StepProgress):
            if self.bar is None:
                self.bar = ExtractBar(self.console).__enter__()
            self.bar(event.task, event.done, event.total)
        elif isinstance(event, StepFinished):
            self.close()
            self.console.print(
                f"[green]done[/] {event.step.kind} {event.step.target} in {event.seconds:.1f} s", highlight=False
            )
        elif isinstance(event, Note):
            self.console.print(event.text, highlight=False)
        else:
            self.training(event)

    def close(self) -> None:
        self.training.close()
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
