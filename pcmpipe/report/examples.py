"""Figure 2: qualitative text -> image retrievals with and without class enrichment, as a PNG grid.

For caption queries of a run's test split, the nearest image (cosine) to the caption's embedding ("before")
and after enrichment: rows of query enrichment, where the query is the mean of the caption's and its class's
normalised embeddings (the {}->I block of Table 5, `evaluation.enrichment.fuse`), then rows of database
enrichment, where every image is the mean of its own and its class's embeddings (the T->{} block). Each grid
row shows the caption, the image it belongs to, and the two nearest images, read from the dataset's own files
(on synthetic data, the synthetic images). Rows are chosen without looking at pictures: first the captions
enrichment turns from wrong to right, then right to wrong, then the rest, each in caption-id order, one
caption per image.
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


def _nearest(queries: torch.Tensor, db: torch.Tensor, db_cols: dict, db_key: str, level: str):
    """(id, match-level value) of each query's nearest database row (cosine)."""
    best = (F.normalize(queries.float(), dim=-1) @ F.normalize(db.float(), dim=-1).T).argmax(dim=1).numpy()
    ids = np.asarray(db_cols[db_key])
    at_level = np.asarray(db_cols.get(level, db_cols[db_key]))
    return ids[best], at_level[best]


def nearest_images(
    run: RunResult, query: str, database: str, enrich: list[str], side: str = "query"
) -> tuple[list[Example], str]:
    """Every query row's nearest database row before / after enrichment -> (examples, match level).

    side "query": the query is the mean of its own and its `enrich` partners' embeddings ({}->I of Table 5);
    side "database": every database item is the mean of its own and its partners' embeddings (T->{})."""
    from pcmpipe.evaluation.enrichment import fuse
    from pcmpipe.training.rundir.tensors import load_embeddings

    embs = load_embeddings(run.directory)
    q, db = embs[query], embs[database]
    level = "class_id" if run.match == "class" else db.key
    if side == "query":
        fused = fuse(embs, [query, *enrich])  # the query rows that have every partner
        pos = {v: i for i, v in enumerate(q.columns[q.key].tolist())}
        rows = torch.as_tensor([pos[v] for v in fused.columns[fused.key].tolist()], dtype=torch.long)
        q_before, q_after, q_cols, q_key = q.embedding[rows], fused.embedding, fused.columns, fused.key
        db_after, db_after_cols = db.embedding, db.columns
    else:
        fused = fuse(embs, [database, *enrich])  # the database rows that have every partner
        q_before = q_after = q.embedding
        q_cols, q_key = q.columns, q.key
        db_after, db_after_cols = fused.embedding, fused.columns
    before, right_b = _nearest(q_before, db.embedding, db.columns, db.key, level)
    after, right_a = _nearest(q_after, db_after, db_after_cols, db.key, level)
    own_image, own_level = np.asarray(q_cols[db.key]), np.asarray(q_cols[level])
    out = [
        Example(
            caption_id=str(cid),
            image_id=str(own_image[k]),
            before=str(before[k]),
            after=str(after[k]),
            right_before=bool(right_b[k] == own_level[k]),
            right_after=bool(right_a[k] == own_level[k]),
        )
        for k, cid in enumerate(q_cols[q_key].tolist())
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
    """The grid, or (None, why not): needs the run's embeddings and the dataset's caption and image files.
    The first `n` rows enrich the query (caption + its partners), the next `n` the database (image + its)."""
    from pcmpipe.datasets import open_dataset

    try:
        sides = {side: nearest_images(run, "T", "I", enrich, side) for side in ("query", "database")}
        ds = open_dataset(dataset, root)
        text = {r.id: r.text for r in ds.records("T", "test")}
        paths = {r.id: r.path for r in ds.records("I", "test")}
    except (UserError, KeyError, OSError) as err:
        return None, f"Figure 2 not drawn: {err}"
    level = sides["query"][1]
    chosen = [(side, e) for side, (found, _) in sides.items() for e in pick(found, n)]
    if not chosen:
        return None, "Figure 2 not drawn: no caption query has a partner in every enrichment modality"
    added = "+".join(enrich)
    fig = _grid(chosen, text, paths, "class" if level == "class" else "image", added, title)
    counts = {
        side: (
            sum(e.right_after and not e.right_before for e in f),
            sum(e.right_before and not e.right_after for e in f),
        )
        for side, (f, _) in sides.items()
    }
    caption = (
        f"{len(sides['query'][0])} caption queries of {run.name} ({level} match). Query enrichment (T+{added} -> I) "
        f"turns {counts['query'][0]} from wrong to right and {counts['query'][1]} from right to wrong; database "
        f"enrichment (T -> I+{added}) {counts['database'][0]} and {counts['database'][1]}. First {n} rows: query "
        f"enrichment, then {n} rows: database enrichment; in each, wrong-to-right first, one per image"
    )
    return Figure(title=title, png=png_bytes(fig), caption=caption), caption


def _grid(chosen: list[tuple[str, Example]], text: dict, paths: dict, what: str, added: str, title: str):
    """The figure: per row the caption (and which side is enriched), its image, nearest before and after."""
    plt = pyplot()
    fig, axes = plt.subplots(len(chosen), 4, figsize=(10, 2.4 * len(chosen)), squeeze=False)
    heads = ["query caption", "its image", "nearest before (T -> I)", "nearest after enrichment"]
    for row, (side, e) in zip(axes, chosen):
        how = f"query T+{added} -> I" if side == "query" else f"database T -> I+{added}"
        caption = textwrap.fill(text.get(e.caption_id) or "(caption not found)", 34)
        row[0].text(0.0, 0.5, f"[{how}]\n{caption}", fontsize=7, va="center", ha="left", wrap=True)
        row[0].axis("off")
        cells = [(e.image_id, None), (e.before, e.right_before), (e.after, e.right_after)]
        for ax, (iid, right) in zip(row[1:], cells):
            img = _thumbnail(paths.get(iid))
            if img is not None:
                ax.imshow(img)
            verdict = "" if right is None else (f" right {what}" if right else f" wrong {what}")
            ax.set_xlabel(f"image {iid}{verdict}", fontsize=7, color="black" if right in (None, True) else "#b00")
            ax.set_xticks([]), ax.set_yticks([])
    for ax, head in zip(axes[0], heads):
        ax.set_title(head, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(top=1 - 0.6 / (2.4 * len(chosen)))  # the title's height, not a share of a tall figure
    return fig
