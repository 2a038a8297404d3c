"""Zero-shot classification as cross-modal retrieval (paper Sec. 4.3, Table 4).

Every test image is one sample. Its input vector is the average of the L2-normalised embeddings of the chosen
input modalities: I and A are per image; T is first averaged over the image's captions (each caption
embedding normalised, then the mean). The candidate outputs are the test classes (the 50 unseen CUB classes),
encoded either as the learned class embeddings C or as P, the prompt "A photo of a {class name}." through the
CLIP text tower (cached as modality P) and then the run's T head. A sample is classified as the class whose
output vector has the highest cosine similarity; the metric is T1, the mean over classes of the per-class
top-1 accuracy (`metrics.per_class_accuracy`), in percent.
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


def combine_inputs(embs: dict[str, RunEmbeddings], inputs: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """Average of the per-image normalised vectors of `inputs`, on the images all of them have.

    Returns (class_ids [N], vectors [N, D]); rows sorted by image id.
    """
    missing = [m for m in inputs if m not in embs]
    if missing:
        raise UserError(
            f"zero-shot input(s) {', '.join(missing)} not among the run's embeddings ({', '.join(sorted(embs))})"
        )
    per = {m: per_image(embs[m]) for m in inputs}
    common = sorted(set.intersection(*(set(p[0].tolist()) for p in per.values())))
    if not common:
        raise UserError(f"the input modalities {'+'.join(inputs)} share no test image")
    total = None
    classes = None
    for ids, cls, vecs in per.values():
        pos = {v: i for i, v in enumerate(ids.tolist())}
        rows = torch.as_tensor([pos[i] for i in common], dtype=torch.long)
        total = vecs[rows] if total is None else total + vecs[rows]
        classes = cls[rows.numpy()] if classes is None else classes
    assert total is not None  # `common` is non-empty, so `per` had at least one modality
    return np.asarray(classes), _normalise(total / len(inputs))


def classify(inputs: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
    """inputs [N, D], class_vectors [K, D] -> predicted class index [N] (argmax cosine similarity)."""
    return (_normalise(inputs) @ _normalise(class_vectors).T).argmax(dim=1)


def zero_shot_t1(
    embs: dict[str, RunEmbeddings], inputs: list[str], class_ids: np.ndarray, class_vectors: torch.Tensor
) -> float:
    """T1 in percent: mean per-class top-1 accuracy of classifying the `inputs` combination.

    class_ids [K] and class_vectors [K, D] are the candidate classes (test split). Images of a class outside
    the candidates would be unclassifiable and are an error, not a silent skip.
    """
    target_cls, x = combine_inputs(embs, inputs)
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


def class_vectors(embs: dict[str, RunEmbeddings]) -> tuple[np.ndarray, torch.Tensor]:
    """C: the run's learned class embeddings of the test classes -> (class_ids [K], vectors [K, D])."""
    if "C" not in embs:
        raise UserError("the run has no C embeddings; zero-shot output C needs a run trained with C")
    c = embs["C"]
    ids = c.columns["class_id"] if "class_id" in c.columns else c.columns["id"]
    return np.asarray(ids, dtype=str), c.embedding


def zero_shot_table(
    embs: dict[str, RunEmbeddings], inputs: list[str], outputs: dict[str, tuple[np.ndarray, torch.Tensor]]
) -> dict[str, dict[str, float | None]]:
    """{input combination ('I+A'): {output name ('C'): T1 percent}} for every input and output."""
    table: dict[str, dict[str, float | None]] = {}
    for combo in inputs:
        mods = combo.split("+")
        table[combo] = {name: zero_shot_t1(embs, mods, ids, vecs) for name, (ids, vecs) in outputs.items()}
    return table
