"""The paper's two losses over all modality pairs, with masks for missing modalities (Sec. 3, Eq. 3-9).

Conventions (see docs/conventions.md for the reasoning):
- `emb[m]` is the raw head output [B, D] of modality m; the losses L2-normalise it, so S is the cosine
  similarity matrix [B, B] of Eq. 2.
- Pairs i < j run over the sorted modality names (Eq. 3); the total is the plain sum over pairs.
- PCMC (Eq. 4-5): each pair is the mean of the two cross-entropy directions; each direction is the MEAN over
  counted rows (CLIP/open_clip), not the sum Eq. 5 writes. With two modalities, all present, this is
  exactly `open_clip.loss.ClipLoss()` on the normalised embeddings.
- `logit_scale` multiplies the cosines (tau in Eq. 5). Pass a float (fixed, 1/0.07 by default) or a 0-d tensor:
  for a learnable scale the trainer owns `log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))`, passes
  `log_scale.exp()` and clamps `log_scale` to at most log(MAX_LOGIT_SCALE) after each step, as CLIP does.
- Masking (Eq. 8, 9): `present[m]` is a bool [B]; a modality missing from `present` is present everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on the learnable logit scale (the trainer applies it)


def _masks(emb: dict[str, Tensor], present: dict[str, Tensor] | None) -> dict[str, Tensor | None]:
    """name -> bool [B] where a mask was given, None where the modality is present in every row.

    The None entries let the losses skip the mask arithmetic entirely (the trainer passes masks only for
    modalities with missing rows); the masked and unmasked paths give the same values.
    """
    out: dict[str, Tensor | None] = {}
    for name, x in emb.items():
        p = None if present is None else present.get(name)
        if p is not None:
            p = p.to(device=x.device, dtype=torch.bool)
            if p.shape != (x.shape[0],):
                raise ValueError(f"present[{name!r}] must be [B={x.shape[0]}], got {tuple(p.shape)}")
        out[name] = p
    return out


def _filled(emb: dict[str, Tensor], masks: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """The masks with every None made an all-True mask, for the masked arithmetic."""
    return {
        n: m if m is not None else torch.ones(emb[n].shape[0], dtype=torch.bool, device=emb[n].device)
        for n, m in masks.items()
    }


def _check_batch(emb: dict[str, Tensor]) -> int:
    sizes = {name: x.shape[0] for name, x in emb.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"all modalities need the same batch size, got {sizes}")
    if not sizes:
        raise ValueError("no modalities given")
    return next(iter(sizes.values()))


def _masked_ce(logits: Tensor, cand_ok: Tensor, rows: Tensor) -> Tensor:
    """Mean cross-entropy with the diagonal as target, over the rows in `rows` only.

    logits [B, B]; cand_ok bool [B, B] (False -> logit -inf, Eq. 8); rows bool [B], every counted row has a
    finite diagonal. Uncounted rows are dropped BEFORE the softmax: an all -inf row would give NaN that a
    zero weight cannot cancel in the backward pass.
    """
    idx = rows.nonzero(as_tuple=True)[0]  # [R]
    sub = logits[idx].masked_fill(~cand_ok[idx], float("-inf"))  # [R, B]
    return F.cross_entropy(sub, idx)


def pcmc_loss(
    emb: dict[str, Tensor],
    present: dict[str, Tensor] | None = None,
    logit_scale: float | Tensor = 1 / 0.07,
) -> Tensor:
    """Pairwise cross-modal contrastive loss (PCMC, Eq. 3-5, masked by Eq. 8).

    Args:
        emb: name -> raw embeddings [B, D] (same B for all).
        present: name -> bool [B]; None means every modality is present in every row.
        logit_scale: float or 0-d tensor (already exponentiated; see module docstring).

    Returns a 0-d tensor: sum over pairs (i < j, sorted names) of
    (CE(S^{ij} rows) + CE(S^{ji} rows)) / 2, each CE averaged over the rows whose query and positive are both
    present. A pair with no such rows contributes 0 (still connected to the graph, gradient 0).
    """
    B = _check_batch(emb)
    masks = _masks(emb, present)
    pres = _filled(emb, masks)
    z = {name: F.normalize(x, dim=-1) for name, x in emb.items()}
    total = None
    for a, b in combinations(sorted(z), 2):
        za, zb = z[a], z[b]
        if masks[a] is None and masks[b] is None:  # every row counts: the plain CLIP loss of the pair
            logits = logit_scale * za @ zb.T
            labels = torch.arange(B, device=logits.device)
            term = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        else:
            rows = pres[a] & pres[b]  # query and its positive both present
            if bool(rows.any()):
                logits = logit_scale * za @ zb.T  # [B, B]: query a, candidate b
                cand_ok = pres[a][:, None] & pres[b][None, :]  # [B, B]
                term = (_masked_ce(logits, cand_ok, rows) + _masked_ce(logits.T, cand_ok.T, rows)) / 2
            else:
                term = (za.sum() + zb.sum()) * 0.0
        total = term if total is None else total + term
    if total is None:  # a single modality has no pairs
        total = next(iter(z.values())).sum() * 0.0
    return total


@torch.no_grad()
def pcmr_target(
    inputs: dict[str, Tensor],
    threshold: float = 0.99,
    present: dict[str, Tensor] | None = None,
) -> Tensor:
    """Regression target of Eq. 7 from the backbone features.

    T[p, q] = 1 when, over the modalities present in both p and q, max_m cos(x_p^(m), x_q^(m)) > threshold
    (each row flattened: a HuBERT (13, 768) feature is one 9984-d vector), else 0; the diagonal is always 1.
    Catches shared views, e.g. two captions of the same image share the image feature.

    inputs: name -> [B, ...]; present: name -> bool [B]. Returns float [B, B] of 0/1 (no gradient).
    """
    B = _check_batch(inputs)
    masks = _masks(inputs, present)
    best: Tensor | None = None
    for name, x in inputs.items():
        x = x.detach().reshape(B, -1)
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        # cos = diag(1/|x|) (x x^T) diag(1/|x|): the Gram matrix of the raw rows, scaled. Same value as
        # normalising first (F.normalize's eps included), without a normalised copy of a [B, 9984] batch.
        inv = torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-12).reciprocal()  # [B]
        cos = (x @ x.T) * inv[:, None] * inv[None, :]  # [B, B]
        mask = masks[name]
        if mask is not None:
            cos = cos.masked_fill(~(mask[:, None] & mask[None, :]), float("-inf"))
        best = cos if best is None else torch.maximum(best, cos.to(best.dtype))
    assert best is not None, "_check_batch rejects an empty `inputs`"
    target = (best > threshold).to(torch.float32)
    target.fill_diagonal_(1.0)
    return target


def pcmr_loss(
    emb: dict[str, Tensor],
    target: Tensor | None = None,
    present: dict[str, Tensor] | None = None,
    rho: float = 1.0,
) -> Tensor:
    """Pairwise cross-modal regression loss (PCMR, Eq. 6, masked by Eq. 9).

    Sum over pairs i < j (sorted names) of ||H (.) (S - T)||_F^(2 + rho), with S [B, B] the cosine similarity
    between modality i (rows) and j (columns), T the target [B, B] (identity when None, see `pcmr_target`) and
    H[p, q] = 1 iff i is present in p and j in q.

    The norm is computed as (sum of squares)^(1 + rho/2): same value, and unlike sqrt it has a finite gradient
    when the residual is exactly 0. rho must be >= 0 for that to hold.
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    B = _check_batch(emb)
    masks = _masks(emb, present)
    pres = _filled(emb, masks)
    z = {name: F.normalize(x, dim=-1) for name, x in emb.items()}
    first = next(iter(z.values()))
    if target is None:
        target = torch.eye(B, dtype=first.dtype, device=first.device)
    else:
        target = target.to(device=first.device, dtype=first.dtype)
        if target.shape != (B, B):
            raise ValueError(f"target must be [B, B] = [{B}, {B}], got {tuple(target.shape)}")
    power = 1.0 + rho / 2.0
    total = first.sum() * 0.0  # a single modality has no pairs
    for a, b in combinations(sorted(z), 2):
        sim = z[a] @ z[b].T  # [B, B]
        if masks[a] is None and masks[b] is None:
            sq = ((sim - target) ** 2).sum()
        else:
            h = (pres[a][:, None] & pres[b][None, :]).to(sim.dtype)
            sq = ((h * (sim - target)) ** 2).sum()
        total = total + sq.pow(power)
    return total


@dataclass(frozen=True)
class LossParams:
    """The settings a training loss reads: the PCMC temperature (as its log, the trainer's parameter) and
    PCMR's target threshold and power factor."""

    log_scale: Tensor
    threshold: float = 0.99
    rho: float = 1.0


def _pcmc_step(
    emb: dict[str, Tensor],
    present: dict[str, Tensor] | None,
    features: Callable[[], dict[str, Tensor]],
    params: LossParams,
) -> Tensor:
    return pcmc_loss(emb, present, logit_scale=params.log_scale.exp())


def _pcmr_step(
    emb: dict[str, Tensor],
    present: dict[str, Tensor] | None,
    features: Callable[[], dict[str, Tensor]],
    params: LossParams,
) -> Tensor:
    target = pcmr_target(features(), threshold=params.threshold, present=present)
    return pcmr_loss(emb, target=target, present=present, rho=params.rho)


# The registry both trainers dispatch through, one call signature:
#   LOSSES[name](emb, present, features, params) -> 0-d loss
# emb/present as above; `features()` returns the batch's backbone features (the PCMR target's inputs), called
# only by the losses that need them, so PCMC never pays for gathering them across ranks.
LOSSES: dict[str, Callable[..., Tensor]] = {"pcmc": _pcmc_step, "pcmr": _pcmr_step}

__all__ = ["pcmc_loss", "pcmr_target", "pcmr_loss", "LOSSES", "LossParams", "MAX_LOGIT_SCALE"]
