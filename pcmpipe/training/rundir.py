"""Run directory I/O (docs/design.md "Runs", docs/training.md "Run directory").

A run is written into `<runs_root>/.tmp-<name>/` and renamed to `<runs_root>/<name>/` only when
`test_metrics.json` (the completion marker) is written, so a directory without the `.tmp-` prefix is always a
finished run. The temp directory holds `checkpoint.pt` between epochs; `pcmpipe train` with the same config
resumes from it.

Files: config.json, metrics.jsonl, untrained_metrics.json, heads.safetensors, test_metrics.json,
embeddings/<m>.safetensors (tensor "embedding" [N, dim], raw head outputs of the test rows) and
embeddings/<m>.json ({"key": ..., "columns": {"id": [...], <link>: [...]}}, rows aligned with the tensor).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pcmpipe.errors import UserError

CHECKPOINT = "checkpoint.pt"
COMPLETE_MARKER = "test_metrics.json"


def final_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / name


def temp_dir(runs_root: str | Path, name: str) -> Path:
    return Path(runs_root) / f".tmp-{name}"


def is_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / COMPLETE_MARKER).is_file()


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write: temp file in the same directory, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl from the epoch records (one JSON object per line); atomic, so after a resume the
    file always agrees with the checkpoint it came from."""
    tmp = run_dir / ".metrics.jsonl.tmp"
    with open(tmp, "w") as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / "metrics.jsonl")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- heads ----
def save_heads(path: Path, state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], dim: int,
               logit_scale: float) -> None:
    """heads.safetensors: head parameters as '<modality>.<param>', the logit scale, and the input shapes in the
    metadata so the file alone rebuilds the heads."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tensors["logit_scale"] = torch.tensor(float(logit_scale), dtype=torch.float32)
    meta = {"shapes": json.dumps({m: list(s) for m, s in shapes.items()}), "dim": str(dim)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_heads(run_dir: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the trained heads of a run -> (nn.ModuleDict of ProjectionHead, logit_scale float). eval() mode."""
    from safetensors import safe_open

    from pcmpipe.heads import build_heads

    path = Path(run_dir) / "heads.safetensors"
    if not path.is_file():
        raise UserError(f"{run_dir} has no heads.safetensors; is it a finished run? (see `pcmpipe train`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    shapes = {m: tuple(s) for m, s in json.loads(meta["shapes"]).items()}
    heads = build_heads(shapes, dim=int(meta["dim"]))
    tensors = load_file(str(path))
    scale = float(tensors.pop("logit_scale"))
    heads.load_state_dict(tensors)
    return heads.to(device).eval(), scale


# ---- embeddings ----
@dataclass
class RunEmbeddings:
    """Test-split embeddings of one modality, as a run stored them."""

    embedding: torch.Tensor  # [N, dim] raw head outputs (not normalised)
    key: str
    columns: dict[str, np.ndarray]  # "id" + link columns, each [N]


def save_embeddings(run_dir: Path, modality: str, emb: torch.Tensor, key: str, columns: dict[str, np.ndarray]) -> None:
    out = run_dir / "embeddings"
    out.mkdir(exist_ok=True)
    tmp = out / f".{modality}.safetensors.tmp"
    save_file({"embedding": emb.detach().to("cpu", torch.float32).contiguous()}, str(tmp))
    os.replace(tmp, out / f"{modality}.safetensors")
    write_json(out / f"{modality}.json", {"key": key, "columns": {k: [str(x) for x in v] for k, v in columns.items()}})


def load_embeddings(run_dir: str | Path) -> dict[str, RunEmbeddings]:
    """modality -> RunEmbeddings for every modality of the run (test rows, with ids and links)."""
    out = {}
    folder = Path(run_dir) / "embeddings"
    if not folder.is_dir():
        raise UserError(f"{run_dir} has no embeddings/; is it a finished run? (see `pcmpipe train`)")
    for st in sorted(folder.glob("*.safetensors")):
        m = st.name[: -len(".safetensors")]
        meta = read_json(folder / f"{m}.json")
        cols = {k: np.asarray(v, dtype=str) for k, v in meta["columns"].items()}
        out[m] = RunEmbeddings(load_file(str(st))["embedding"], meta["key"], cols)
    return out


# ---- checkpoints ----
def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Atomic torch.save of the resume state (heads, optimizer, scheduler, RNG, epoch, best, history)."""
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a checkpoint is written atomically, so this is damage from outside
        raise UserError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete {run_dir} to start over") from None


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.json of a run (resolved settings under "config")."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    return read_json(path)
