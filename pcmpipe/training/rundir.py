"""Run directory I/O (docs/design.md "Runs", docs/training.md "Run directory").

A run is written into `<runs_root>/.tmp-<name>/` and renamed to `<runs_root>/<name>/` only when
`test_metrics.json` (the completion marker) is written, so a directory without the `.tmp-` prefix is always a
finished run. The temp directory holds `checkpoint.safetensors` between epochs (pcmpipe.training.state);
`pcmpipe train` with the same config resumes from it.

Both recipes go through one protocol: `claim` decides fresh | resume | done, `start_fresh` / `start_resume`
prepare the temp directory, `finalise` renames it once the completion marker is written.

Files: config.json, metrics.jsonl, untrained_metrics.json, heads.safetensors, test_metrics.json,
embeddings/<m>.safetensors (tensor "embedding" [N, dim], raw head outputs of the test rows) and
embeddings/<m>.json ({"key": ..., "columns": {"id": [...], <link>: [...]}}, rows aligned with the tensor).
Every structured file is read back bounded and validated (pcmpipe.readback): config.json as a `RunRecord`,
embeddings/<m>.json as `EmbeddingRows` (pcmpipe.training.run_record, re-exported here). A finished run also
holds files.json, the sha256 of each of those files, and every strict reader here compares its file with it
(pcmpipe.training.run_files).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file

from pcmpipe import atomic, readback
from pcmpipe.checksums import check_tensors, save_tensors
from pcmpipe.config.schema import run_name_problem
from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.training.events import EpochDone, OnEvent
from pcmpipe.training.run_files import verify, write_manifest
from pcmpipe.training.run_record import EmbeddingRows as EmbeddingRows
from pcmpipe.training.run_record import RecordedCache as RecordedCache
from pcmpipe.training.run_record import RecordedSettings as RecordedSettings
from pcmpipe.training.run_record import RunRecord as RunRecord
from pcmpipe.training.run_record import record_config as record_config
from pcmpipe.training.run_record import software_versions as software_versions
from pcmpipe.training.state import (
    CHECKPOINT,
    Checkpoint,
    Resumable,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)

M = TypeVar("M", bound=BaseModel)
COMPLETE_MARKER = "test_metrics.json"
# Written by pcmpipe before 0.x as a torch pickle; unpickling runs arbitrary code, so it is never loaded.
LEGACY_CHECKPOINT = "checkpoint.pt"


def final_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / name


def temp_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / f".tmp-{name}"


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
    atomic.write_lines(run_dir / "metrics.jsonl", history)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epoch records of metrics.jsonl ([] when absent); a damaged line is one UserError naming the file."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    curve = "the run's training curve cannot be read"
    verify(run_dir, "metrics.jsonl")
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


# ---- heads ----
def save_heads(
    path: Path, state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], dim: int, logit_scale: float
) -> None:
    """heads.safetensors: head parameters as '<modality>.<param>', the logit scale, and the input shapes in the
    metadata so the file alone rebuilds the heads."""
    tensors = dict(state)
    tensors["logit_scale"] = torch.tensor(float(logit_scale), dtype=torch.float32)
    meta = {"shapes": json.dumps({m: list(s) for m, s in shapes.items()}), "dim": str(dim)}
    save_tensors(path, tensors, meta, "heads file")


def _load_verified(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file pcmpipe wrote, checked against the sha256 its metadata
    records (files written before the checksum carry none and are taken as they are). Raises ValueError on
    a mismatch, SafetensorError / OSError on a damaged file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path), device=str(device))
    check_tensors(tensors, meta)
    return tensors, meta


def load_heads(run_dir: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the trained heads of a run -> (nn.ModuleDict of ProjectionHead, logit_scale float). eval() mode."""
    from pcmpipe.heads import build_heads

    path = Path(run_dir) / "heads.safetensors"
    if not path.is_file():
        raise UserError(f"{run_dir} has no heads.safetensors; is it a finished run? (see `pcmpipe train`)")
    # Written atomically, so damage comes from outside: a truncated file, flipped bytes, or a file written by
    # another tool without the metadata that rebuilds the heads. Each is one line naming the file.
    verify(run_dir, "heads.safetensors")
    try:
        tensors, meta = _load_verified(path)
        shapes = {m: tuple(s) for m, s in json.loads(meta["shapes"]).items()}
        heads = build_heads(shapes, dim=int(meta["dim"]))
        scale = float(tensors.pop("logit_scale"))
        heads.load_state_dict(tensors)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise UserError(
            f"{path} is damaged or not pcmpipe's heads file ({type(e).__name__}); delete the run directory "
            "and train it again"
        ) from None
    return heads.to(device).eval(), scale


# ---- embeddings ----
def save_embeddings(run_dir: Path, modality: str, emb: torch.Tensor, key: str, columns: dict[str, np.ndarray]) -> None:
    out = run_dir / "embeddings"
    out.mkdir(exist_ok=True)
    save_tensors(out / f"{modality}.safetensors", {"embedding": emb.float()}, {}, "embeddings file")
    write_json(out / f"{modality}.json", {"key": key, "columns": {k: [str(x) for x in v] for k, v in columns.items()}})


def load_embeddings(run_dir: str | Path) -> dict[str, RunEmbeddings]:
    """modality -> RunEmbeddings for every modality of the run (test rows, with ids and links)."""
    out = {}
    folder = Path(run_dir) / "embeddings"
    if not folder.is_dir():
        raise UserError(f"{run_dir} has no embeddings/; is it a finished run? (see `pcmpipe train`)")
    # a modality is its pair of files: one without the other is damage, not a run with fewer modalities
    for m in sorted({p.stem for p in folder.glob("*.safetensors")} | {p.stem for p in folder.glob("*.json")}):
        st = folder / f"{m}.safetensors"
        if not st.is_file() or not (folder / f"{m}.json").is_file():
            raise UserError(f"{st} or {m}.json beside it is missing; delete the run directory and train it again")
        rows = folder / f"{m}.json"
        verify(run_dir, f"embeddings/{m}.safetensors")
        verify(run_dir, f"embeddings/{m}.json")
        meta = _validated(EmbeddingRows, read_json(rows), str(rows))
        try:
            cols = {k: np.asarray(v, dtype=str) for k, v in meta.columns.items()}
            out[m] = RunEmbeddings(_load_verified(st)[0]["embedding"], meta.key, cols)
        except (OSError, SafetensorError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise UserError(
                f"{st} (or {m}.json beside it) is damaged ({type(e).__name__}); delete the run directory and "
                "train it again"
            ) from None
    return out


# ---- the run-directory protocol ----
@dataclass
class Claim:
    """What `claim` found: status "fresh" (start over), "resume" (from `checkpoint`) or "done" (at `final`)."""

    status: str
    final: Path
    tmp: Path
    checkpoint: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)  # one-line warnings for the caller to show


def _no_barrier() -> None:
    pass


def claim(
    runs_root: str | Path, name: str, fingerprint: str, main: bool = True, barrier: Callable[[], None] = _no_barrier
) -> Claim:
    """Decide what a run of config `fingerprint` named `name` has to do. Under torchrun every rank calls this;
    only rank 0 (`main`) renames, and `barrier` keeps the others from looking while it does. The caller holds
    the run's lock (`run_lock`) around the whole claim -> finalise span."""
    _check_name(name)
    final, tmp = final_dir(runs_root, name), temp_dir(runs_root, name)
    _refuse_link(tmp)
    notes: list[str] = []
    if final.exists():
        if run_record(final).fingerprint != fingerprint:
            raise UserError(f"run directory {final} exists with another config; pass another --name or delete it")
        if result_ok(final):
            return Claim("done", final, tmp, notes=[f"run {final} is already complete (same config); nothing to do"])
        # Same config but the completion marker is damaged (or gone): the result is not usable, so the run is
        # trained again. Its files move aside rather than being deleted (a user may want to look at them).
        aside = Path(runs_root) / f".damaged-{name}"
        barrier()
        if main:
            remove_tree(aside)
            atomic.replace(final, aside)
        barrier()
        notes.append(f"{final / COMPLETE_MARKER} is damaged or missing; moved the run to {aside} and training it again")
    if result_ok(tmp):  # killed between the completion marker and the rename
        # adopted only when it is this config's run: a finished run of another config under this name (another
        # loss, modalities, epochs) would otherwise be reported as this one
        if (found := run_record(tmp).fingerprint) != fingerprint:
            raise UserError(
                f"{tmp} holds a finished run of another config (fingerprint {found[:12]}, this config "
                f"{fingerprint[:12]}), left by a job stopped before its last rename; move it to "
                f"{Path(runs_root) / '<another name>'} to keep it, or delete it, or pass another --name"
            )
        barrier()  # every rank has looked before rank 0 renames
        if main:
            finalise(tmp, final)
        barrier()
        return Claim("done", final, tmp, notes=notes)
    # A damaged checkpoint (written atomically, so damaged from outside) is refused in one line naming it,
    # not silently replaced: the user decides whether to delete it (docs/reliability.md).
    ckpt = load_checkpoint(tmp) if tmp.is_dir() else None
    if ckpt is not None:
        if ckpt.fingerprint != fingerprint:
            raise UserError(f"{tmp} holds an interrupted run of another config; delete it or pass another --name")
        return Claim("resume", final, tmp, ckpt, notes=notes)
    if (tmp / LEGACY_CHECKPOINT).is_file():
        notes.append(
            f"ignoring {tmp / LEGACY_CHECKPOINT}: an old pickle checkpoint is never loaded (unpickling "
            "can run code); starting the run over"
        )
    return Claim("fresh", final, tmp, notes=notes)


@contextmanager
def run_lock(
    runs_root: str | Path, name: str, main: bool = True, barrier: Callable[[], None] = _no_barrier
) -> Iterator[None]:
    """Hold run `name`'s exclusive lock for the whole claim -> finalise span, so a second `train --name X` can
    neither resume from the first's live checkpoint nor rename its temp directory away. Rank 0 alone takes it
    under torchrun; the barrier keeps the other ranks from claiming before it holds it. A second process
    refuses in one line (pcmpipe.cache.lock: `<runs_root>/.<name>.lock`, an OS file lock, so one left by a
    killed process is free again the moment the process is gone; a job that ends deletes it)."""
    from pcmpipe.cache.lock import exclusive

    _check_name(name)  # before its lock file is named after it
    if not main:
        barrier()
        yield
        return
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)  # an OSError: the CLI guard names the path (cli/app.py)
    # refuse rather than wait: a second `train --name X` is far more often a mistake than a queue
    what = f"run {name} ({final_dir(root, name)})"
    with exclusive(final_dir(root, name), what, wait=False, hint="let it finish, or train under another --name"):
        barrier()
        yield


def _check_name(name: str) -> None:
    """The schema refuses reserved run names; a caller that builds a config without validation meets them here."""
    if problem := run_name_problem(name):
        raise UserError(problem)


def _refuse_link(tmp: Path) -> None:
    """A run's temp directory that is a symbolic link is refused, never followed: resuming from it or writing
    into it would change files outside the runs root, and deleting it would delete what it points to."""
    if tmp.is_symlink():
        raise UserError(
            f"{tmp} is a symbolic link (to {os.readlink(tmp)}), where pcmpipe keeps a run in progress; it never "
            "follows links there: remove the link (what it points to is left alone) and rerun"
        )


def remove_tree(path: Path) -> None:
    """Delete a folder pcmpipe owns (a temp or set-aside run). A symbolic link in its place goes itself, and
    what it points to is left alone (shutil.rmtree refuses links, and following one would delete elsewhere)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def start_fresh(tmp: Path, record: dict[str, Any]) -> None:
    """An empty temp directory with the run's config.json (a start that died before its first checkpoint, or
    a legacy one, has nothing worth keeping)."""
    remove_tree(tmp)
    tmp.mkdir(parents=True)
    write_json(tmp / "config.json", record)


def start_resume(tmp: Path, history: list[dict]) -> None:
    """Drop writes the kill cut short (they are redone from the checkpoint) and realign metrics.jsonl with it."""
    for stray in tmp.rglob(".*.tmp"):
        stray.unlink()
    write_metrics(tmp, history)


def finalise(tmp: Path, final: Path) -> None:
    """The completion marker is written: drop the checkpoint, record every file's sha256 (files.json,
    pcmpipe.training.run_files) and rename the temp directory to its final name. The checkpoint goes only after
    the marker: a kill before this point resumes, one after it finishes here again (the manifest is rewritten)."""
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        (tmp / name).unlink(missing_ok=True)
    write_manifest(tmp)
    atomic.replace(tmp, final)


def _read_record(run_dir: str | Path) -> tuple[dict[str, Any], RunRecord]:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    verify(run_dir, "config.json")
    value = read_json(path, "run config")
    return value, _validated(RunRecord, value, f"run config {path}")


def run_record(run_dir: str | Path) -> RunRecord:
    """The config.json of a run, validated (`RunRecord`); one UserError line when absent, damaged or crafted."""
    return _read_record(run_dir)[1]


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.json of a run as plain data (resolved settings under "config"), checked to be a `RunRecord`."""
    return _read_record(run_dir)[0]


def _validated(model: type[M], value: Any, where: str) -> M:
    try:
        return readback.validate(model, value, where)
    except UserError as e:
        raise UserError(f"{e}; {_DAMAGED}") from None


def end_epoch(
    tmp: Path,
    fingerprint: str,
    state: TrainState,
    parts: Resumable,
    record: dict[str, Any],
    steps: int,
    *,
    epochs: int,
    patience: int,
    emit: OnEvent,
    write: bool = True,
) -> None:
    """The end of an epoch in both recipes: record it in the state, make it durable (checkpoint, then
    metrics.jsonl; `write` is False on the ranks that do not write under torchrun), then report it."""
    state.finish_epoch(record, steps)
    if write:
        save_checkpoint(tmp, fingerprint, state, parts)
        write_metrics(tmp, state.history)
    emit(
        EpochDone(
            state.epoch,
            epochs,
            record["loss"],
            record["val_mean_r@1"],
            state.best,
            state.best_epoch,
            record["lr"],
            record["time_s"],
            state.stopped_early(patience),
        )
    )
