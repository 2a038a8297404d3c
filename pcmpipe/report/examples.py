"""Figure 2: qualitative text -> image retrievals with and without class enrichment, as a PNG grid.

For caption queries of a run's test split, the nearest image (cosine) to the caption's embedding ("before")
and to the enriched query, the mean of the caption's and its class's normalised embeddings ("after", the
{}->I block of Table 5, `evaluation.enrichment.fuse`). Each grid row shows the caption, the image it belongs
to, and the two nearest images, read from the dataset's own files (on synthetic data, the synthetic images).
Rows are chosen without looking at pictures: first the captions enrichment turns from wrong to right, then
right to wrong, then the rest, each in caption-id order, one caption per image.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.report.plots import Figure, png_bytes, pyplot
from pcmpipe.report.results import RunResult


@dataclass(frozen=True)
class Example:
    caption_id: str
    image_id: str  # the image the caption describes
    before: str  # nearest image to the caption alone
    after: str  # nearest image to the enriched query
    right_before: bool
    right_after: bool


def nearest_images(run: RunResult, query: str, database: str, enrich: list[str]) -> tuple[list[Example], str]:
    """Every query row's nearest database row before / after enrichment -> (examples, match level)."""
    from pcmpipe.evaluation.enrichment import fuse
    from pcmpipe.training.rundir.tensors import load_embeddings

    embs = load_embeddings(run.directory)
    enriched = fuse(embs, [query, *enrich])
    plain = embs[query]
    pos = {v: i for i, v in enumerate(plain.columns[plain.key].tolist())}
    rows = torch.as_tensor([pos[v] for v in enriched.columns[enriched.key].tolist()], dtype=torch.long)
    db = F.normalize(embs[database].embedding.float(), dim=-1)
    before = (F.normalize(plain.embedding.float()[rows], dim=-1) @ db.T).argmax(dim=1).numpy()
    after = (F.normalize(enriched.embedding.float(), dim=-1) @ db.T).argmax(dim=1).numpy()
    level = "class_id" if run.match == "class" else embs[database].key
    db_ids, db_level = embs[database].columns[embs[database].key], embs[database].columns.get(level)
    if db_level is None:
        db_level = db_ids
    own_image, own_level = enriched.columns[embs[database].key], enriched.columns[level]
    out = [
        Example(
            caption_id=str(cid),
            image_id=str(own_image[k]),
            before=str(db_ids[before[k]]),
            after=str(db_ids[after[k]]),
            right_before=bool(db_level[before[k]] == own_level[k]),
            right_after=bool(db_level[after[k]] == own_level[k]),
        )
        for k, cid in enumerate(enriched.columns[enriched.key].tolist())
    ]
    return out, run.match


def pick(examples: list[Example], n: int) -> list[Example]:
    """n examples, one per image: wrong -> right first, then right -> wrong, then the rest (caption-id order)."""

    def rank(e: Example) -> int:
        return 0 if e.right_after and not e.right_before else 1 if e.right_before and not e.right_after else 2

    chosen: list[Example] = []
    seen: set[str] = set()
    for e in sorted(examples, key=lambda e: (rank(e), e.caption_id)):
        if e.image_id not in seen:
            chosen.append(e)
            seen.add(e.image_id)
        if len(chosen) == n:
            break
    return chosen


def _thumbnail(path: Path | None, size: int = 160) -> np.ndarray | None:
    from PIL import Image

    if path is None or not path.is_file():
        return None
    with Image.open(path) as opened:
        img = opened.convert("RGB")
    img.thumbnail((size, size))
    return np.asarray(img)


def examples_figure(
    run: RunResult, dataset: str, root: str | Path, enrich: list[str], n: int = 4, title: str = "Figure 2"
) -> tuple[Figure | None, str]:
    """The grid, or (None, why not): needs the run's embeddings and the dataset's caption and image files."""
    from pcmpipe.datasets import open_dataset

    try:
        found, level = nearest_images(run, "T", "I", enrich)
        ds = open_dataset(dataset, root)
        text = {r.id: r.text for r in ds.records("T", "test")}
        paths = {r.id: r.path for r in ds.records("I", "test")}
    except (UserError, KeyError, OSError) as err:
        return None, f"Figure 2 not drawn: {err}"
    chosen = pick(found, n)
    if not chosen:
        return None, "Figure 2 not drawn: no caption query has a partner in every enrichment modality"
    plt = pyplot()
    fig, axes = plt.subplots(len(chosen), 4, figsize=(10, 2.4 * len(chosen)), squeeze=False)
    what = "class" if level == "class" else "image"
    heads = ["query caption", "its image", "nearest before (T)", f"nearest after (T+{'+'.join(enrich)})"]
    for row, e in zip(axes, chosen):
        caption = textwrap.fill(text.get(e.caption_id) or "(caption not found)", 34)
        row[0].text(0.0, 0.5, caption, fontsize=7, va="center", ha="left", wrap=True)
        cells = [(e.image_id, None), (e.before, e.right_before), (e.after, e.right_after)]
        for ax, (iid, right) in zip(row[1:], cells):
            img = _thumbnail(paths.get(iid))
            if img is not None:
                ax.imshow(img)
            verdict = "" if right is None else (f" right {what}" if right else f" wrong {what}")
            ax.set_xlabel(f"image {iid}{verdict}", fontsize=7, color="black" if right in (None, True) else "#b00")
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
    for ax, head in zip(axes[0], heads):
        ax.set_title(head, fontsize=8)
    axes[0][0].axis("off")
    for row in axes[1:]:
        row[0].axis("off")
    fig.suptitle(title, fontsize=9)
    fixed = sum(e.right_after and not e.right_before for e in found)
    broken = sum(e.right_before and not e.right_after for e in found)
    caption = (
        f"{len(found)} caption queries of {run.name} ({level} match): enrichment with {'+'.join(enrich)} turns "
        f"{fixed} from wrong to right and {broken} from right to wrong; rows: wrong-to-right first, one per image"
    )
    return Figure(title=title, png=png_bytes(fig), caption=caption), caption
