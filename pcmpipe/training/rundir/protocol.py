"""The claim -> lock -> finish protocol of a run directory, which both recipes follow (docs/run-directory.md).

A run is written into `<runs_root>/.tmp-<name>/` and renamed to `<runs_root>/<name>/` only when its completion
marker (`test_metrics.json`) is written, so a directory without the `.tmp-` prefix is always a finished run. The
temp directory holds `checkpoint.safetensors` between epochs (pcmpipe.training.state); the same config resumes
from it. `run_lock` holds the run for the whole span; `claim` decides fresh | resume | done; `start_fresh` /
`start_resume` prepare the temp directory; `finish` writes a run's results, its completion marker and its
files.json, then renames it (`finalise`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmpipe import atomic
from pcmpipe.config.schema import run_name_problem
from pcmpipe.errors import UserError
from pcmpipe.training.rundir.files import COMPLETE_MARKER, CONFIG, HEADS, result_ok, write_json, write_metrics
from pcmpipe.training.rundir.manifest import write_manifest
from pcmpipe.training.rundir.record import run_record
from pcmpipe.training.rundir.tensors import save_embeddings, save_heads
from pcmpipe.training.state import CHECKPOINT, Checkpoint, load_checkpoint

# Written by pcmpipe before 0.x as a torch pickle; unpickling runs arbitrary code, so it is never loaded.
LEGACY_CHECKPOINT = "checkpoint.pt"


def final_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / name


def temp_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / f".tmp-{name}"


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
    write_json(tmp / CONFIG, record)


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


# a modality's test embeddings as `finish` writes them: the head outputs, the key column, the id/link columns
Embedded = tuple[torch.Tensor, str, Mapping[str, np.ndarray]]


def finish(
    claim: Claim,
    heads: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    dim: int,
    scale: float,
    embeddings: Mapping[str, Embedded],
    result: dict[str, Any],
    more: Callable[[Path], None] | None = None,
) -> Path:
    """The finish phase of both recipes, on rank 0: the best epoch's heads and test embeddings (and `more`, a
    recipe's own files: fine-tuned towers) into the temp directory, the completion marker `result` last, then
    `finalise` (files.json, rename) -> the finished run's directory. A kill before the marker resumes from the
    checkpoint; one after it is finished by the next `claim`."""
    tmp = claim.tmp
    save_heads(tmp / HEADS, dict(heads), dict(shapes), dim, scale)
    for m, (emb, key, columns) in embeddings.items():
        save_embeddings(tmp, m, emb, key, dict(columns))
    if more is not None:
        more(tmp)
    write_json(tmp / COMPLETE_MARKER, result)
    finalise(tmp, claim.final)
    return claim.final
