"""Evaluation glue of the trainer: embed a split's rows with the heads, score every direction, and chance.

Evaluation compares each modality's OWN rows (1,000 images against 5,000 captions on Flickr8k test), not the
training join. Metric definitions live in pcmpipe.evaluation; this module only feeds them and adds the
expected score of a random ranking ("chance") so reports can show trained vs untrained vs chance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations, permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pcmpipe.errors import UserError
from pcmpipe.samples import ModalityData


@torch.no_grad()
def embed_rows(heads: nn.ModuleDict, mods: dict[str, ModalityData], batch: int = 4096) -> dict[str, torch.Tensor]:
    """Every row of every modality through its head -> m -> [N_m, dim] float32 on the features' device."""
    was_training = heads.training
    heads.eval()
    out = {}
    for m, d in mods.items():
        chunks = [heads[m](x) for x in d.chunks(batch)]  # resident slices, or decoded from the cache
        out[m] = torch.cat(chunks).float()
    heads.train(was_training)
    return out


def levels_available(mods: dict[str, ModalityData]) -> list[str]:
    """'instance' always; 'image' where two modalities are finer than the image (Flickr8k T and S); 'class' when
    every modality's rows carry a class_id (pcmpipe.evaluation.retrieval.levels_for)."""
    from pcmpipe.evaluation.retrieval import levels_for

    return levels_for(*_cols(mods))


def _cols(mods: dict[str, ModalityData]) -> tuple[dict, dict]:
    return {m: d.columns for m, d in mods.items()}, {m: d.key for m, d in mods.items()}


def score(emb: dict[str, torch.Tensor], mods: dict[str, ModalityData], level: str, ks=(1, 5)) -> dict:
    """All directions X->Y at one match level (see pcmpipe.evaluation.retrieval.evaluate_directions)."""
    from pcmpipe.evaluation.retrieval import evaluate_directions

    if level not in levels_available(mods):
        column = f"{level}_id"
        missing = [m for m, d in mods.items() if not d.carries(column)]
        why = f"{', '.join(missing)} has none" if missing else "no two modalities are keyed finer than it"
        raise UserError(f"--match {level} needs a {column} column, and {why}; use --match instance")
    cols, keys = _cols(mods)
    return evaluate_directions({m: e.cpu() for m, e in emb.items()}, cols, keys, level=level, ks=ks)


def mean_r1(metrics: dict) -> float:
    """Mean r@1 over every direction 'X->Y' (the early-stopping criterion)."""
    vals = [v["r@1"] for k, v in metrics.items() if "->" in k and isinstance(v, dict) and "r@1" in v]
    return float(np.mean(vals)) if vals else float("nan")


def chance(mods: dict[str, ModalityData], level: str, ks=(1, 5)) -> dict:
    """Expected r@k and R-precision (percent) of a uniformly random ranking, per direction X->Y.

    A query with n positives among N gallery rows: P(hit in top k) = 1 - C(N-n, k) / C(N, k), and the expected
    precision of any R-long prefix is n / N. Averaged over queries that have a positive, as the metrics are.
    """
    from pcmpipe.evaluation.retrieval import match_labels

    out: dict = {}
    for x, y in permutations(mods, 2):
        # Positives are equal labels; count them per query from label frequencies (O(Q + N), no [Q, N] matrix).
        q_lab, g_lab = match_labels(mods[x].columns, mods[y].columns, level, mods[x].key, mods[y].key)
        labels, counts = np.unique(np.asarray(g_lab), return_counts=True)
        pos = np.searchsorted(labels, q_lab).clip(0, max(len(labels) - 1, 0))
        n = np.where(labels[pos] == q_lab, counts[pos], 0).astype(np.float64) if len(labels) else np.zeros(len(q_lab))
        n = n[n > 0]
        total = len(g_lab)
        rec = {}
        for k in ks:
            miss = np.ones_like(n)
            for i in range(k):  # C(N-n, k) / C(N, k) = prod_i (N-n-i) / (N-i)
                miss *= np.clip(total - n - i, 0, None) / max(total - i, 1)
            rec[f"r@{k}"] = float(100 * np.mean(1 - miss)) if n.size else float("nan")
        rec["R-P"] = float(100 * np.mean(n / total)) if n.size else float("nan")
        out[f"{x}->{y}"] = rec
    dirs = list(out.values())
    for x, y in combinations(mods, 2):  # same summary keys as evaluate_directions
        out[f"{x}+{y}"] = {k: (out[f"{x}->{y}"][k] + out[f"{y}->{x}"][k]) / 2 for k in dirs[0]}
    out["mean"] = {k: float(np.mean([d[k] for d in dirs])) for k in dirs[0]} if dirs else {}
    return out


def evaluate_all(
    heads: nn.ModuleDict, mods: dict[str, ModalityData], batch: int = 4096, with_chance: bool = True
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Scores at every available level (and chance) -> ({"instance": {...}, "class": {...}, "chance": {...}}, emb)."""
    emb = embed_rows(heads, mods, batch)
    out: dict = {}
    for level in levels_available(mods):
        out[level] = score(emb, mods, level)
    if with_chance:
        out["chance"] = {level: chance(mods, level) for level in levels_available(mods)}
    return out, emb


def cache_root_of(rec: dict, run_dir: Path) -> Path:
    """The cache a run read. A run records its cache root as given (often relative, like the default `cache`)
    and, since this version, also resolved (`cache_root_resolved`), so it is found from any directory. For
    an older run with a relative root, try the working directory, then the runs root's parent (the default
    runs root is `<cache_root>/runs`)."""
    recorded = rec.get("cache_root_resolved")
    if recorded and Path(recorded).is_dir():  # not when the cache and its runs were moved together
        return Path(recorded)
    given = Path(rec["config"]["cache_root"])
    if given.is_absolute() or given.is_dir():
        return given
    beside = run_dir.resolve().parent.parent
    return beside if beside.name == given.name and beside.is_dir() else given


def non_finite(mods: Mapping[str, Any], chunk: int = 4096) -> list[str]:
    """Modalities whose in-memory features are non-finite or overflow float32 arithmetic (a row whose squared
    norm is inf, e.g. values near 1e20 from a broken export or import): the heads' LayerNorm turns them into
    NaN at the first step, and the loss message would then blame the learning rate."""
    bad = []
    for m, d in mods.items():
        features = getattr(d, "features", None)
        if features is None:  # streamed: decoded chunk by chunk, never all in memory
            continue
        flat = features.reshape(len(features), -1)
        # Chunks of at most `chunk` rows and about 16 MB of float32: 4,096 HuBERT rows (13 x 768) were two
        # 0.16 GB temporaries, a fifth of a Flickr8k-scale training run's peak.
        rows = max(1, min(chunk, (1 << 22) // max(1, flat.shape[1])))
        # in float32: a float16 cache's squared norms overflow float16 long before they trouble the heads
        if any(not bool(torch.isfinite((x.float() ** 2).sum(1)).all()) for x in flat.split(rows)):
            bad.append(m)
    return bad


def evaluate_run(
    run_dir,
    match: str | None = None,
    split: str | None = None,
    device: str = "cpu",
    ks: Sequence[int] = (1, 5),
    dataset: str | None = None,
    cache_root: str | None = None,
) -> dict:
    """Re-score a finished run's heads on a split of its caches (default: its test split), or on any cached
    `dataset` and split whose features come from the backbones the run was trained on.

    Returns {"run", "dataset", "split", "ks", level: metrics, "gallery": {modality: rows},
    "chance": {level: metrics of a random ranking}}. The run's own caches must be the ones it recorded
    (same fingerprint); another dataset's caches must carry the same backbone and weights checksum, otherwise
    the numbers would silently describe other features. `run_dir` may also be a folder written by `pcmpipe
    export`: its recorded settings and cache fingerprints stand in for the run's.
    """
    from pcmpipe.samples import load_modality
    from pcmpipe.training.rundir.tensors import load_heads

    run_dir = Path(run_dir)
    rec, exported = _record(run_dir)
    cfg = rec["config"]
    split = split or cfg["split_test"]
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UserError("--recall-k takes positive integers, e.g. 1,5,10")
    own = (dataset or cfg["dataset"]) == cfg["dataset"] and Path(cache_root or cfg["cache_root"]) == Path(
        cfg["cache_root"]
    )
    dataset = dataset or cfg["dataset"]
    # the run's own cache: found from any directory (cache_root_of); another one: as the user names it
    root = cache_root_of(rec, run_dir) if cache_root is None else Path(cache_root)
    levels = [match] if match else None
    names = cfg["modalities"] if own else _covered(root, dataset, split, cfg["modalities"])
    try:
        mods = {m: load_modality(root, dataset, m, split) for m in names}
    except UserError as e:
        raise UserError(
            f"{e} (evaluate looked under {root.resolve()}; {run_dir.name} recorded cache_root {cfg['cache_root']!r})"
        ) from None
    recorded = rec.get("caches", {}).get(split, {})
    for m, d in mods.items():
        fp = recorded.get(m, {}).get("fingerprint")
        if own and fp is not None and fp != d.fingerprint:
            raise UserError(
                f"cache {d.directory} changed since {run_dir.name} was trained (fingerprint "
                f"{d.fingerprint[:12]} vs {fp[:12]}); retrain or restore the cache"
            )
        if not own:
            _check_same_backbone(_trained_meta(rec, m, exported), m, d)
    heads, _ = load_heads(run_dir, device)
    for m, d in mods.items():
        if tuple(d.shape) != tuple(heads[m].in_shape):
            raise UserError(
                f"{d.directory} holds features of shape {tuple(d.shape)}, the {m} head of {run_dir.name} takes "
                f"{tuple(heads[m].in_shape)}; extract {dataset} with the run's backbones"
            )
        d.features = d.resident().to(device)  # load_modality without stream_above reads them into memory
    emb = embed_rows(torch.nn.ModuleDict({m: heads[m] for m in mods}), mods, int(cfg.get("eval_batch", 4096)))
    out: dict = {"run": str(run_dir), "dataset": dataset, "split": split, "ks": ks}
    # the gallery's size and a random ranking's score: r@10 = 100 over a gallery of 10 rows is chance
    out["gallery"] = {m: int(len(d.columns["id"])) for m, d in mods.items()}
    out["chance"] = {}
    for level in levels or levels_available(mods):
        out[level] = score(emb, mods, level, ks=ks)
        out["chance"][level] = chance(mods, level, ks=ks)
    return out


def _covered(cache_root, dataset: str, split: str, modalities: list[str]) -> list[str]:
    """The run's modalities cached for (dataset, split); at least two are needed to score a direction."""
    from pcmpipe.cache import read_manifest

    found = [m for m in modalities if read_manifest(cache_root, dataset, m, split) is not None]
    if len(found) < 2:
        raise UserError(
            f"{dataset} {split} under {cache_root} caches {', '.join(found) or 'none'} of the run's modalities "
            f"{', '.join(modalities)}; extract at least two of them"
        )
    return found


def _record(run_dir: Path) -> tuple[dict, dict | None]:
    """(the run's config.json as a run directory shapes it, validated; an export's backbones, else None)."""
    from pcmpipe.training.rundir.record import ExportRecord, read_record

    rec = read_record(run_dir)
    if isinstance(rec, ExportRecord):
        shaped = {
            "config": rec.training_config.model_dump(mode="json"),
            "caches": {s: {m: c.model_dump(mode="json") for m, c in mods.items()} for s, mods in rec.caches.items()},
            "fingerprint": rec.fingerprint,
        }
        return shaped, {m: None if bb is None else bb.model_dump(mode="json") for m, bb in rec.backbones.items()}
    return rec.model_dump(mode="json"), None


def _trained_meta(rec: dict, modality: str, exported: dict | None) -> dict | None:
    """What the run's `modality` features were computed with (backbone, weights checksum), or None if unknown:
    an export records it beside the heads, a run directory in the manifest of its training cache."""
    from pcmpipe.cache import open_cache

    if exported is not None:
        return exported.get(modality)
    path = rec.get("caches", {}).get(rec["config"]["split_train"], {}).get(modality, {}).get("path")
    if not path or not Path(path).is_dir():
        return None  # the training cache is gone: the shape check in evaluate_run is all that can be done
    return open_cache(path, verify=False).meta


def _check_same_backbone(trained: dict | None, modality: str, data: ModalityData) -> None:
    """Another dataset's cache must come from the encoder the run trained on (`same_encoder`)."""
    from pcmpipe.backbones.identity import same_encoder
    from pcmpipe.cache import open_cache
    from pcmpipe.cache.reader import source_of

    if trained is None:
        return
    here = open_cache(data.directory, verify=False).meta
    if not same_encoder(trained, here):
        raise UserError(
            f"{data.directory} was extracted with {source_of(here) or 'no recorded backbone'}, the run's {modality} "
            f"with {source_of(trained) or 'no recorded backbone'}; extract it with the run's backbone and weights"
        )
