"""What an extraction run tells its caller: progress through a callback, the errors file, the summary as data.

The CLI draws the progress bar and the summary table (pcmpipe.cli.render); the library only reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcmpipe.atomic import write_lines
from pcmpipe.cache.layout import ERRORS as ERRORS_FILE
from pcmpipe.cache.layout import errors_in
from pcmpipe.errors import UserError, file_errors

# progress(task, done, total): items of one (dataset, modality, split) done so far, out of total
ExtractProgress = Callable[[str, int, int], None]


@dataclass
class PartSummary:
    """One (modality, split) of one run. status: 'new' | 'resumed' | 'cached' (complete already: skipped) |
    'rebuilt' (same settings, but the dataset changed or a shard was damaged: `reason` says which)."""

    modality: str
    split: str
    backbone: str
    status: str
    rows: int = 0  # rows in the cache when the run ended
    new_rows: int = 0  # rows this run encoded
    skipped: int = 0  # inputs listed in .errors.jsonl
    seconds: float = 0.0
    padding: float | None = None  # audio: fraction of padded samples in the batches
    decode_fallback: int = 0  # images decoded on the CPU where the device decoded the others (extract.decode)
    directory: str = ""
    reason: str = ""

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
        return {
            "dataset": self.dataset,
            "cache_root": self.cache_root,
            "device": self.device,
            "parts": [{**asdict(p), "rate": p.rate} for p in self.parts],
            "errors": self.errors,
        }


def write_errors(directory: Path, errors: list[dict]) -> Path:
    """Replace `directory/.errors.jsonl` (one JSON object per skipped input) atomically; returns its path."""
    path = directory / ERRORS_FILE
    with file_errors(path, "write", "errors file"):  # a full disk names this file, not "a file"
        write_lines(path, errors, sort_keys=True)
    return path


def read_errors(directory: Path) -> list[dict]:
    """The errors file of a finished cache ([] when there is none)."""
    path = errors_in(directory)
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: a line nested 10^5 levels deep
        raise UserError(
            f"errors file {path} is damaged ({type(e).__name__}); rerun the extraction with --overwrite"
        ) from e
    if not all(isinstance(r, dict) for r in rows):
        raise UserError(
            f"errors file {path} is damaged (a line is not an object); rerun the extraction with --overwrite"
        )
    return rows
