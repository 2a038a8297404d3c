"""A run directory's file names and its JSON files: strict reads (a damaged file is one line naming it) and
tolerant ones (the report's: a damaged file is a problem noted and a missing value). docs/run-directory.md.

Imports no torch: the CLI and `runs/outdir.py` ask it about a folder before any heavy import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from pcmpipe import atomic, readback
from pcmpipe.errors import UserError
from pcmpipe.training.rundir.manifest import verify

M = TypeVar("M", bound=BaseModel)
CONFIG = "config.json"
HEADS = "heads.safetensors"
METRICS = "metrics.jsonl"
UNTRAINED = "untrained_metrics.json"
COMPLETE_MARKER = "test_metrics.json"
EMBEDDINGS = "embeddings"


def is_run_folder(path: Path) -> bool:
    """A run directory or an exported run: what `load_run` opens."""
    return (path / CONFIG).is_file() and (path / HEADS).is_file()


def is_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / COMPLETE_MARKER).is_file()


def result_ok(run_dir: str | Path) -> bool:
    """The completion marker exists AND reads as a JSON object: a truncated or bit-flipped test_metrics.json is
    not a result (the report shows it missing, and the planner and `train` redo the run)."""
    try:
        verify(run_dir, COMPLETE_MARKER)
        return isinstance(read_json(Path(run_dir) / COMPLETE_MARKER), dict)
    except (OSError, UserError):
        return False


def write_json(path: str | Path, obj: Any) -> None:
    atomic.write_json(path, obj)


# Run files are written by pcmpipe and a few MB at most (an embeddings/<m>.json of 10^6 ids is ~50 MB); one of
# gigabytes is not a run file, and is refused from its size before it is read.
MAX_RUN_FILE = 256 << 20
_DAMAGED = "delete the run directory to train it again"


def read_json(path: str | Path, what: str = "run file") -> Any:
    """A run file's JSON, read through pcmpipe.readback (bounded size and nesting): a damaged one (truncated,
    not JSON, not UTF-8, 10^5 nested brackets) is one UserError naming it. FileNotFoundError when absent."""
    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        return readback.read_json(path, what, max_bytes=MAX_RUN_FILE)
    except UserError as e:
        raise UserError(f"{e}; {_DAMAGED}") from None


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl from the epoch records (one JSON object per line); atomic, so after a resume the
    file always agrees with the checkpoint it came from."""
    atomic.write_lines(run_dir / METRICS, history)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epoch records of metrics.jsonl ([] when absent); a damaged line is one UserError naming the file."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    curve = "the run's training curve cannot be read"
    verify(run_dir, METRICS)
    try:
        text = readback.read_bytes(path, "training curve", max_bytes=MAX_RUN_FILE).decode("utf-8")
        lines = enumerate(text.splitlines(), 1)
        rows = [readback.parse_json(line, f"its line {i}") for i, line in lines if line.strip()]
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); {curve}") from None
    except UserError as e:
        raise UserError(f"{path} is damaged ({e}); {curve}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path} is damaged (a line is not a JSON object); the run's training curve cannot be read")
    return rows


def read_tolerant(path: Path, problems: list[str] | None = None, run_dir: Path | None = None) -> Any | None:
    """A JSON file, or None when absent or unreadable; an unreadable one that exists is noted in `problems`
    (one line naming it), so a reader that shows what it can (the report) says why a value is missing instead
    of dropping it silently. Bounded as `read_json`. With `run_dir` (a file the run wrote itself, not one added
    later such as zeroshot.json), a file that differs from the run's files.json counts as unreadable too."""
    if not path.is_file():
        return None
    try:
        if run_dir is not None:
            verify(run_dir, path.relative_to(run_dir).as_posix())
        return readback.read_json(path, "file", max_bytes=MAX_RUN_FILE)
    except OSError as e:
        if problems is not None:
            problems.append(f"{path} is damaged ({type(e).__name__}); its values are shown as missing")
    except UserError as e:
        if problems is not None:
            problems.append(f"{e}; its values are shown as missing")
    return None


def read_object(path: Path, problems: list[str], run_dir: Path | None = None) -> dict | None:
    """`read_tolerant` of a JSON object file (a result); valid JSON that is not an object counts as damaged."""
    value = read_tolerant(path, problems, run_dir)
    if value is not None and not isinstance(value, dict):
        problems.append(f"{path} is damaged (not a JSON object); its values are shown as missing")
        return None
    return value


def validated(model: type[M], value: Any, where: str) -> M:
    try:
        return readback.validate(model, value, where)
    except UserError as e:
        raise UserError(f"{e}; {_DAMAGED}") from None
