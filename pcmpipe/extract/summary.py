"""What an extraction run tells its user: live progress, the errors file, the final summary table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcmpipe.atomic import write_lines
from rich import box
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

ERRORS_FILE = "errors.jsonl"


@dataclass
class PartSummary:
    """One (modality, split) of one run. status: 'new' | 'resumed' | 'cached' (complete already: skipped)."""

    modality: str
    split: str
    backbone: str
    status: str
    rows: int = 0          # rows in the cache when the run ended
    new_rows: int = 0      # rows this run encoded
    skipped: int = 0       # inputs listed in errors.jsonl
    seconds: float = 0.0
    padding: float | None = None  # audio: fraction of padded samples in the batches
    directory: str = ""

    @property
    def rate(self) -> float | None:
        """Rows encoded per second of this run (None when nothing was encoded)."""
        return self.new_rows / self.seconds if self.new_rows and self.seconds > 0 else None


@dataclass
class ExtractSummary:
    dataset: str
    cache_root: str
    device: str
    parts: list[PartSummary] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # every skipped input of this run: modality, split, id, reason

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "cache_root": self.cache_root, "device": self.device,
                "parts": [{**asdict(p), "rate": p.rate} for p in self.parts], "errors": self.errors}

    def table(self) -> Table:
        """One row per (modality, split): rows in the cache, rows new this run, inputs skipped, speed."""
        t = Table(title=f"extract {self.dataset} -> {self.cache_root} ({self.device})", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False)
        audio = any(p.padding is not None for p in self.parts)
        names = ("mod", "split", "backbone", "status", "rows", "new", "skip", "items/s", "time") + ("pad",) * audio
        for name in names:
            t.add_column(name, justify="left" if name in ("mod", "split", "backbone", "status") else "right")
        for p in self.parts:
            cells = [p.modality, p.split, p.backbone, p.status, str(p.rows), str(p.new_rows),
                     Text(str(p.skipped), style="yellow" if p.skipped else ""),
                     f"{p.rate:.1f}" if p.rate else "-", f"{p.seconds:.1f}s"]
            if audio:
                cells.append(f"{100 * p.padding:.0f}%" if p.padding is not None else "-")
            t.add_row(*cells)
        return t


def write_errors(directory: Path, errors: list[dict]) -> Path:
    """Replace `directory/errors.jsonl` (one JSON object per skipped input) atomically; returns its path."""
    path = directory / ERRORS_FILE
    write_lines(path, errors, sort_keys=True)
    return path


def read_errors(directory: Path) -> list[dict]:
    """The errors file of a finished cache ([] when there is none)."""
    path = directory / ERRORS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "-/s", style="progress.data.speed")


def make_progress(console=None, enabled: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    disable=not enabled, transient=False)
