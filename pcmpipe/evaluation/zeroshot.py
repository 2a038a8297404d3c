"""Zero-shot classification as cross-modal retrieval (paper Sec. 4.3, Table 4).

A sample's input vector is the average of the L2-normalised embeddings of the chosen input modalities. With
T among the inputs each caption is one sample (`per="caption"`, the default: Table 4's T->C, 34.5, is Table 7's
per-caption T->C r@1, 34.6), joined with its image's I and A; `per="image"` averages an image's captions first
and makes every image one sample. Without T every image is one sample. The candidate outputs are the test
classes (the 50 unseen CUB classes), encoded either as the learned class embeddings C or as P, the prompt
"A photo of a {class name}." through the run's text tower and then its T head: the cached P features of the
frozen tower, or, for a run that fine-tuned T, the prompts encoded by its own tower (`run_prompt_vectors`).
A sample is classified as the class whose output vector has the highest cosine similarity; the metric is T1,
the mean over classes of the per-class top-1 accuracy (`metrics.per_class_accuracy`), in percent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.evaluation.embeddings import RunEmbeddings
from pcmpipe.evaluation.metrics import per_class_accuracy

PROMPT = "A photo of a {}."


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def per_image(emb: RunEmbeddings) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """One normalised vector per image -> (image_ids [N], class_ids [N], vectors [N, D]).

    Rows keyed finer than the image (captions) are normalised and averaged per image, so every image counts once
    whatever its number of captions.
    """
    if "image_id" not in emb.columns or "class_id" not in emb.columns:
        raise UserError(
            f"zero-shot needs image_id and class_id columns; the {emb.key} embeddings carry "
            f"{', '.join(sorted(emb.columns))}"
        )
    image_ids = emb.columns["image_id"]
    vecs = _normalise(emb.embedding)
    uniq, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    if len(uniq) == len(image_ids):
        order = np.argsort(image_ids, kind="stable")
        return image_ids[order], emb.columns["class_id"][order], vecs[torch.as_tensor(order)]
    inv = torch.as_tensor(inverse, dtype=torch.long)
    sums = torch.zeros(len(uniq), vecs.shape[1]).index_add_(0, inv, vecs)
    counts = torch.bincount(inv, minlength=len(uniq)).clamp_min(1).unsqueeze(1)
    return uniq, emb.columns["class_id"][first], _normalise(sums / counts)


PER = ("caption", "image")  # what one zero-shot sample is when T is an input (docs/conventions.md, "Zero-shot")


def _fine_rows(emb: RunEmbeddings) -> bool:
    """Are the rows finer than the image (several rows share an image_id, as captions do)?"""
    ids = emb.columns["image_id"]
    return len(np.unique(ids)) < len(ids)


def combine_inputs(
    embs: dict[str, RunEmbeddings], inputs: list[str], per: str = "caption"
) -> tuple[np.ndarray, torch.Tensor]:
    """The samples of the `inputs` combination -> (class_ids [N], vectors [N, D]).

    per="image": one sample per image, the average of the per-image normalised vectors of `inputs` (captions
    averaged per image first), on the images all of them have; rows sorted by image id.
    per="caption" (Table 4's protocol): when an input is keyed finer than the image (T), each of its rows is a
    sample, combined with its image's vectors of the other inputs; rows in caption order. Inputs that are all
    per image give the same samples either way.
    """
    if per not in PER:
        raise UserError(f"zero-shot per={per!r} unknown; valid: {', '.join(PER)}")
    missing = [m for m in inputs if m not in embs]
    if missing:
        raise UserError(
            f"zero-shot input(s) {', '.join(missing)} not among the run's embeddings ({', '.join(sorted(embs))})"
        )
    per_img = {m: per_image(embs[m]) for m in inputs}
    common = sorted(set.intersection(*(set(p[0].tolist()) for p in per_img.values())))
    if not common:
        raise UserError(f"the input modalities {'+'.join(inputs)} share no test image")
    fine = [m for m in inputs if _fine_rows(embs[m])] if per == "caption" else []
    if len(fine) > 1:
        raise UserError(f"zero-shot inputs {'+'.join(fine)} are all finer than the image; use per: image")
    if fine:
        f = embs[fine[0]]
        keep = np.flatnonzero(np.isin(f.columns["image_id"], common))
        sample_images = f.columns["image_id"][keep]
        classes = f.columns["class_id"][keep]
    else:
        sample_images = np.asarray(common)
        classes = None
    total = None
    for m, (ids, cls, vecs) in per_img.items():
        if fine and m == fine[0]:
            part = _normalise(embs[m].embedding)[torch.as_tensor(keep, dtype=torch.long)]
        else:
            pos = {v: i for i, v in enumerate(ids.tolist())}
            rows = np.asarray([pos[i] for i in sample_images.tolist()], dtype=np.int64)
            part = vecs[torch.as_tensor(rows)]
            classes = cls[rows] if classes is None else classes
        total = part if total is None else total + part
    assert total is not None and classes is not None  # `inputs` is non-empty: `common` needed one modality
    return np.asarray(classes), _normalise(total / len(inputs))


def classify(inputs: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
    """inputs [N, D], class_vectors [K, D] -> predicted class index [N] (argmax cosine similarity)."""
    return (_normalise(inputs) @ _normalise(class_vectors).T).argmax(dim=1)


def zero_shot_t1(
    embs: dict[str, RunEmbeddings],
    inputs: list[str],
    class_ids: np.ndarray,
    class_vectors: torch.Tensor,
    per: str = "caption",
) -> float:
    """T1 in percent: mean per-class top-1 accuracy of classifying the `inputs` combination.

    class_ids [K] and class_vectors [K, D] are the candidate classes (test split). Images of a class outside
    the candidates would be unclassifiable and are an error, not a silent skip.
    """
    target_cls, x = combine_inputs(embs, inputs, per)
    index = {c: k for k, c in enumerate(np.asarray(class_ids).tolist())}
    unknown = sorted(set(target_cls.tolist()) - set(index))
    if unknown:
        raise UserError(f"test images of class(es) {', '.join(unknown[:5])} have no output class vector")
    target = torch.as_tensor([index[c] for c in target_cls.tolist()], dtype=torch.long)
    pred = classify(x, class_vectors)
    return 100.0 * float(per_class_accuracy(pred, target))


def prompt_vectors(
    text_head: torch.nn.Module, cache_root: str | Path, dataset: str, split: str = "test"
) -> tuple[np.ndarray, torch.Tensor]:
    """P: the cached prompt features of `split` through a run's T head -> (class_ids [K], vectors [K, D])."""
    from pcmpipe.cache import cache_dir, open_cache

    reader = open_cache(cache_dir(Path(cache_root), dataset, "P", split))
    columns, feats = reader.read()
    x = torch.as_tensor(np.asarray(next(iter(feats.values()))), dtype=torch.float32)
    with torch.no_grad():
        out = text_head(x)
    ids = columns["class_id"] if "class_id" in columns else columns["id"]
    return np.asarray(ids, dtype=str), out


def run_prompt_vectors(
    run_dir: str | Path, record: dict, text_head: torch.nn.Module, cache_root: str | Path, dataset: str, split: str
) -> tuple[np.ndarray, torch.Tensor]:
    """P for a finished run (`record`: its config.json) -> (class_ids [K], vectors [K, D]).

    A run trained on cached T features takes the cached prompt features (`prompt_vectors`). A run that
    fine-tuned its text tower trained its T head on that tower's outputs, so the prompts are encoded by the run's
    own tower (`text_backbone.safetensors`, the best epoch's) from the dataset's prompt texts; the frozen tower's
    cached P features would be off the head's input distribution.
    """
    t_source = record.get("caches", {}).get(split, {}).get("T", {})
    if not t_source.get("live"):
        return prompt_vectors(text_head, cache_root, dataset, split)
    from pcmpipe.backbones import create_backbone
    from pcmpipe.datasets import open_dataset

    cfg = record["config"]
    tower = Path(run_dir) / "text_backbone.safetensors"
    if not tower.is_file():
        raise UserError(f"{tower} is missing: P of a fine-tuned run needs the run's own text tower; train it again")
    if not cfg.get("data_root"):
        raise UserError(f"run {run_dir} records no data_root; P of a fine-tuned run encodes the dataset's prompts")
    backbone = create_backbone(cfg["text_backbone"], weights=str(tower))
    records = open_dataset(dataset, cfg["data_root"]).records("P", split)
    if not records:
        raise UserError(f"the {dataset} {split} split has no prompts (modality P)")
    batch = int(cfg.get("encode_batch") or 256)
    parts = []
    backbone.model.eval()
    with torch.no_grad():
        for i in range(0, len(records), batch):
            tokens = backbone.preprocess([r.text or "" for r in records[i : i + batch]]).to(backbone.device)
            parts.append(text_head(backbone.encode(tokens).float().cpu()))
    ids = [r.links.get("class_id", r.id) for r in records]
    return np.asarray(ids, dtype=str), torch.cat(parts)


def class_vectors(embs: dict[str, RunEmbeddings]) -> tuple[np.ndarray, torch.Tensor]:
    """C: the run's learned class embeddings of the test classes -> (class_ids [K], vectors [K, D])."""
    if "C" not in embs:
        raise UserError("the run has no C embeddings; zero-shot output C needs a run trained with C")
    c = embs["C"]
    ids = c.columns["class_id"] if "class_id" in c.columns else c.columns["id"]
    return np.asarray(ids, dtype=str), c.embedding


def zero_shot_table(
    embs: dict[str, RunEmbeddings],
    inputs: list[str],
    outputs: dict[str, tuple[np.ndarray, torch.Tensor]],
    per: str = "caption",
) -> dict[str, dict[str, float | None]]:
    """{input combination ('I+A'): {output name ('C'): T1 percent}} for every input and output (`per`: see
    `combine_inputs`)."""
    table: dict[str, dict[str, float | None]] = {}
    for combo in inputs:
        mods = combo.split("+")
        table[combo] = {name: zero_shot_t1(embs, mods, ids, vecs, per) for name, (ids, vecs) in outputs.items()}
    return table
