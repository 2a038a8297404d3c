"""A run's tensor files: heads.safetensors (the trained heads, rebuildable from the file alone) and
embeddings/<m>.safetensors with embeddings/<m>.json (the test rows' head outputs and what each row is).

Every file is written by `pcmpipe.checksums.save_tensors` (its digests in the metadata) and read back checked
against them and against the run's files.json (pcmpipe.training.rundir.manifest). docs/run-directory.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pcmpipe.checksums import check_tensors, save_tensors
from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.training.rundir.files import EMBEDDINGS, HEADS, read_json, validated, write_json
from pcmpipe.training.rundir.manifest import verify
from pcmpipe.training.rundir.record import EmbeddingRows


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

    path = Path(run_dir) / HEADS
    if not path.is_file():
        raise UserError(f"{run_dir} has no heads.safetensors; is it a finished run? (see `pcmpipe train`)")
    # Written atomically, so damage comes from outside: a truncated file, flipped bytes, or a file written by
    # another tool without the metadata that rebuilds the heads. Each is one line naming the file.
    verify(run_dir, HEADS)
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


def save_embeddings(run_dir: Path, modality: str, emb: torch.Tensor, key: str, columns: dict[str, np.ndarray]) -> None:
    out = run_dir / EMBEDDINGS
    out.mkdir(exist_ok=True)
    save_tensors(out / f"{modality}.safetensors", {"embedding": emb.float()}, {}, "embeddings file")
    write_json(out / f"{modality}.json", {"key": key, "columns": {k: [str(x) for x in v] for k, v in columns.items()}})


def load_embeddings(run_dir: str | Path) -> dict[str, RunEmbeddings]:
    """modality -> RunEmbeddings for every modality of the run (test rows, with ids and links)."""
    folder = _embeddings_folder(run_dir)
    # a modality is its pair of files: one without the other is damage, not a run with fewer modalities
    names = sorted({p.stem for p in folder.glob("*.safetensors")} | {p.stem for p in folder.glob("*.json")})
    return {m: load_modality_embeddings(run_dir, m) for m in names}


def load_modality_embeddings(run_dir: str | Path, m: str) -> RunEmbeddings:
    """The stored test rows of one modality, checked as `load_embeddings` checks each (a search reads one)."""
    folder = _embeddings_folder(run_dir)
    st = folder / f"{m}.safetensors"
    if not st.is_file() or not (folder / f"{m}.json").is_file():
        raise UserError(f"{st} or {m}.json beside it is missing; delete the run directory and train it again")
    rows = folder / f"{m}.json"
    verify(run_dir, f"embeddings/{m}.safetensors")
    verify(run_dir, f"embeddings/{m}.json")
    meta = validated(EmbeddingRows, read_json(rows), str(rows))
    try:
        cols = {k: np.asarray(v, dtype=str) for k, v in meta.columns.items()}
        return RunEmbeddings(_load_verified(st)[0]["embedding"], meta.key, cols)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise UserError(
            f"{st} (or {m}.json beside it) is damaged ({type(e).__name__}); delete the run directory and train it again"
        ) from None


def _embeddings_folder(run_dir: str | Path) -> Path:
    folder = Path(run_dir) / EMBEDDINGS
    if not folder.is_dir():
        raise UserError(f"{run_dir} has no embeddings/; is it a finished run? (see `pcmpipe train`)")
    return folder
