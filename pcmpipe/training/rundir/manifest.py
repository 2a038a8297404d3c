"""A finished run's file manifest, `files.json`: the sha256 of every file the run holds when it finishes.

Each safetensors file of a run carries its own digests (pcmpipe.checksums), but a file whose metadata was
deleted reads as one written before checksums existed; and the JSON files (config.json, metrics.jsonl,
test_metrics.json, embeddings/<m>.json) carry none. The manifest covers them all: it is written, atomically, when
the run finishes (`finalise`, after the completion marker and before the rename to the final name), and every
strict reader of a run file compares the file with it (`verify`). Runs written before the manifest existed have
none and are read as they are. Files added to a finished run later (`pcmpipe run`'s zeroshot.json and
enrichment.json) are not in it and not checked against it.

Format (`RunFiles`): {"format": "pcmpipe-run-files/1", "files": {"<path relative to the run>": "<sha256 hex>"}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pcmpipe import atomic, readback
from pcmpipe.checksums import file_sha256
from pcmpipe.errors import UserError

FILES = "files.json"
FORMAT = "pcmpipe-run-files/1"
# a run holds tens of files (a fine-tuned one a tower per modality); ten thousand is not a run
MAX_FILES = 10_000
_DAMAGED = "delete the run directory and train it again"


class RunFiles(BaseModel):
    """files.json of a finished run: what each of its files hashed to when it finished."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["pcmpipe-run-files/1"] = Field(description="the manifest's format")
    files: dict[str, str] = Field(
        description="path relative to the run directory (/-separated) -> sha256 hex of its bytes",
        max_length=MAX_FILES,
    )


def held_files(run_dir: Path) -> list[str]:
    """The run's files, relative and sorted: hidden names (temp files, locks) and the manifest itself left out."""
    out = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != FILES:
            out.append(rel.as_posix())
    return out


def write_manifest(run_dir: Path) -> None:
    """files.json over every file `run_dir` holds now (called once the completion marker is written)."""
    files = {rel: file_sha256(run_dir / rel) for rel in held_files(run_dir)}
    atomic.write_json(run_dir / FILES, {"format": FORMAT, "files": files})


def read_manifest(run_dir: str | Path) -> RunFiles | None:
    """The run's manifest, validated; None for a run without one (written before it existed, or not finished)."""
    path = Path(run_dir) / FILES
    if not path.is_file() and not path.is_symlink():
        return None
    try:
        return readback.read_model(path, RunFiles, "run file manifest", max_bytes=MAX_FILES * 200)
    except UserError as e:
        raise UserError(f"{e}; {_DAMAGED}") from None


def verify(run_dir: str | Path, rel: str) -> None:
    """Refuse, in one line, a run file that differs from what the run's manifest recorded (or that a manifest
    does not list: the run was not written with it). No manifest: nothing to compare with."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        return
    path = Path(run_dir) / rel
    if rel not in manifest.files:
        raise UserError(f"{path} is not one of the files run {run_dir} was written with ({FILES}); {_DAMAGED}")
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or type(e).__name__}); {_DAMAGED}") from None
    if digest != manifest.files[rel]:
        raise UserError(f"{path} differs from what run {run_dir} wrote (sha256 in {FILES}); {_DAMAGED}")
