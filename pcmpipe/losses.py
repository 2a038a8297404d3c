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

import functools
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


TARGET_MODES = ("shared", "features", "projections")  # how Eq. 7's "shared view" is decided (docs/conventions.md)
RHO_ON = ("entries", "norm")  # what Eq. 6's power 2 + rho applies to (docs/conventions.md, "PCMR power factor")


def _cosine(x: Tensor) -> Tensor:
    """Cosine matrix [B, B] of the rows of x [B, ...], each row flattened (a HuBERT (13, 768) row is one vector).

    cos = diag(1/|x|) (x x^T) diag(1/|x|): the Gram matrix of the raw rows, scaled. Same value as normalising
    first (F.normalize's eps included), without a normalised copy of a [B, 9984] batch.
    """
    x = x.detach().reshape(x.shape[0], -1)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    inv = torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-12).reciprocal()  # [B]
    return (x @ x.T) * inv[:, None] * inv[None, :]


def _both(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask[:, None] & mask[None, :]


@torch.no_grad()
def target_components(
    values: dict[str, Tensor],
    mode: str = "features",
    threshold: float = 0.99,
    present: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per modality m, the bool [B, B] of pairs (p, q) that Eq. 7 counts as sharing view m.

    - `shared`: values[m] are the cached row indices [B] of m; p and q share m when they use the same row
      (two captions of one image use the same image row). No threshold.
    - `features` / `projections`: values[m] are the backbone features [B, ...] / the heads' outputs [B, D];
      p and q share m when their cosine is above `threshold` (strict).
    Pairs where m is absent in p or q never share m. The diagonal is whatever the rule gives (see pcmr_target).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown PCMR target {mode!r}; valid: {', '.join(TARGET_MODES)}")
    _check_batch(values)
    masks = _masks(values, present)
    out = {}
    for name, x in values.items():
        if mode == "shared":
            same = x.reshape(-1)[:, None] == x.reshape(-1)[None, :]
        else:
            same = _cosine(x) > threshold
        both = _both(masks[name])
        out[name] = same if both is None else same & both
    return out


@torch.no_grad()
def combine_target(components: dict[str, Tensor]) -> Tensor:
    """Eq. 7's max over modalities: T[p, q] = 1 when p and q share any view; the diagonal is always 1.

    Returns float [B, B] of 0/1 (no gradient)."""
    stacked = torch.stack(list(components.values()))  # [M, B, B]
    target = stacked.any(dim=0).to(torch.float32)
    target.fill_diagonal_(1.0)
    return target


@torch.no_grad()
def pcmr_target(
    inputs: dict[str, Tensor],
    threshold: float = 0.99,
    present: dict[str, Tensor] | None = None,
) -> Tensor:
    """Regression target of Eq. 7 from the backbone features (the `features` target).

    T[p, q] = 1 when, over the modalities present in both p and q, max_m cos(x_p^(m), x_q^(m)) > threshold
    (each row flattened: a HuBERT (13, 768) feature is one 9984-d vector), else 0; the diagonal is always 1.
    Catches shared views, e.g. two captions of the same image share the image feature.

    inputs: name -> [B, ...]; present: name -> bool [B]. Returns float [B, B] of 0/1 (no gradient).
    """
    return combine_target(target_components(inputs, "features", threshold, present))


def pcmr_loss(
    emb: dict[str, Tensor],
    target: Tensor | None = None,
    present: dict[str, Tensor] | None = None,
    rho: float = 1.0,
    rho_on: str = "entries",
    stacked: bool | None = None,
) -> Tensor:
    """Pairwise cross-modal regression loss (PCMR, Eq. 6, masked by Eq. 9).

    Sum over pairs i < j (sorted names) of the residual R = H (.) (S - T) raised to the power 2 + rho, with
    S [B, B] the cosine similarity between modality i (rows) and j (columns), T the target [B, B] (identity when
    None, see `pcmr_target`) and H[p, q] = 1 iff i is present in p and j in q.

    rho_on="entries" (the default) raises each entry: sum_pq |R_pq|^(2 + rho), so rho weights every entry's
    gradient by its own residual, the focal balancing of matching against non-matching pairs that Sec. 3.1
    cites [21]. rho_on="norm" is the literal ||R||_F^(2 + rho), where rho only rescales the whole gradient
    (docs/conventions.md, "PCMR power factor"). Both are computed from squares, (R^2)^(1 + rho/2), which unlike
    abs or sqrt has a finite gradient where the residual is exactly 0; rho must be >= 0 for that to hold.

    stacked: form all pairs' residuals at once (`_stacked_squares`) instead of pair by pair; None: on CUDA only,
    where a step of small kernels is bound by their launches (docs/performance.md, "stacked similarities").
    The same value up to the order of float additions.
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if rho_on not in RHO_ON:
        raise ValueError(f"unknown PCMR rho_on {rho_on!r}; valid: {', '.join(RHO_ON)}")
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
    if (first.device.type == "cuda" if stacked is None else stacked) and len(z) > 2:
        sq = _stacked_squares(z, masks, pres, target)
        return total + (sq.pow(power).sum() if rho_on == "entries" else sq.sum((1, 2)).pow(power).sum())
    for a, b in combinations(sorted(z), 2):
        sim = z[a] @ z[b].T  # [B, B]
        if masks[a] is None and masks[b] is None:
            sq = (sim - target) ** 2
        else:
            h = (pres[a][:, None] & pres[b][None, :]).to(sim.dtype)
            sq = (h * (sim - target)) ** 2
        total = total + (sq.pow(power).sum() if rho_on == "entries" else sq.sum().pow(power))
    return total


def _stacked_squares(
    z: dict[str, Tensor], masks: dict[str, Tensor | None], pres: dict[str, Tensor], target: Tensor
) -> Tensor:
    """The squared (masked) residuals of every pair i < j, stacked: [P, B, B] in `combinations` order.

    One product of the first M - 1 modalities' rows with the last M - 1's: its (i, j - 1) blocks on and above
    the block diagonal are the P = M(M-1)/2 pairs (M = 3: 4 blocks for 3 pairs), gathered in one indexing; the
    subtraction, mask and square then run once over all pairs instead of once per pair."""
    names = sorted(z)
    B, M = target.shape[0], len(names)
    first, second = zip(*combinations(range(M), 2))
    rows = torch.cat([z[n] for n in names[:-1]])  # [(M - 1) B, D]
    cols = torch.cat([z[n] for n in names[1:]])
    blocks = (rows @ cols.T).view(M - 1, B, M - 1, B).transpose(1, 2)  # [M - 1, M - 1, B, B]
    diff = blocks[list(first), [j - 1 for j in second]] - target  # [P, B, B]
    if any(masks[n] is not None for n in names):
        p = torch.stack([pres[n] for n in names])  # [M, B]
        diff = (p[list(first)][:, :, None] & p[list(second)][:, None, :]).to(diff.dtype) * diff
    return diff**2


@functools.cache
def compiled(loss: Callable[..., Tensor], backend: str) -> Callable[..., Tensor]:
    """`loss` (pcmc_loss or pcmr_loss) under torch.compile with `backend`, one compiled function per pair, so
    every step reuses its graphs. The losses are chains of small element-wise kernels around [B, B] products:
    on a GPU their launches, not their arithmetic, bound a step, and compiling fuses them. "inductor" is what
    training uses (`compile: true`); "aot_eager" captures the same graph (forward and backward) but runs torch's
    own kernels, which is how tests check the captured step gives exactly the eager numbers."""
    return torch.compile(loss, backend=backend, dynamic=False)


@dataclass(frozen=True)
class LossParams:
    """The settings a training loss reads: the PCMC temperature (as its log, the trainer's parameter) and
    PCMR's target (mode, threshold) and power factor (rho, and what it applies to)."""

    log_scale: Tensor
    threshold: float = 0.99
    rho: float = 1.0
    target: str = "features"
    rho_on: str = "entries"
    compile: str | None = None  # a torch.compile backend for the loss arithmetic (`compiled`); None: eager


class TargetShares:
    """Per-epoch share of off-diagonal pairs the PCMR target marks, per modality, next to the share the ids imply.

    `add` keeps device tensors (no sync per step); `shares()` reads them once per epoch. "Implied" counts the
    pairs that use the same cached row of m (what `shared` marks); a threshold target far above it is treating
    distinct samples as one (docs/conventions.md, "PCMR target").
    """

    def __init__(self) -> None:
        self._marked: dict[str, Tensor] = {}
        self._implied: dict[str, Tensor] = {}
        self._pairs: dict[str, Tensor] = {}

    def add(self, marked: dict[str, Tensor], implied: dict[str, Tensor], present: dict[str, Tensor] | None) -> None:
        for m, comp in marked.items():
            B = comp.shape[0]
            off = ~torch.eye(B, dtype=torch.bool, device=comp.device)
            both = _both(None if present is None else present.get(m))
            pairs = off if both is None else off & both
            for acc, value in ((self._marked, comp & pairs), (self._implied, implied[m] & pairs), (self._pairs, pairs)):
                count = value.sum()
                acc[m] = count if m not in acc else acc[m] + count

    def shares(self) -> dict[str, dict[str, float]]:
        """{"target": {m: share}, "ids": {m: share}} over the pairs seen since the last call; then reset."""
        out: dict[str, dict[str, float]] = {"target": {}, "ids": {}}
        for m in sorted(self._pairs):
            n = max(int(self._pairs[m]), 1)
            out["target"][m] = int(self._marked[m]) / n
            out["ids"][m] = int(self._implied[m]) / n
        for acc in (self._marked, self._implied, self._pairs):
            acc.clear()
        return out

    def _accumulators(self) -> dict[str, dict[str, Tensor]]:
        return {"marked": self._marked, "implied": self._implied, "pairs": self._pairs}

    def counts(self) -> dict[str, Tensor]:
        """The counts since the last `shares()`, flat ("marked.T" -> tensor): what a mid-epoch checkpoint keeps."""
        return {f"{name}.{m}": v for name, acc in self._accumulators().items() for m, v in acc.items()}

    def restore(self, counts: dict[str, Tensor], device: torch.device | str) -> None:
        """Continue from `counts()` of an interrupted epoch."""
        accs = self._accumulators()
        for key, v in counts.items():
            name, m = key.split(".", 1)
            accs[name][m] = v.to(device)


@dataclass(frozen=True)
class LossBatch:
    """One training step's inputs to a loss. `emb`/`present` as above; `features()` returns the batch's backbone
    features (the `features` target's inputs) and `rows()` each modality's cached row index [B] (the `shared`
    target's inputs). Both are called only by the losses and targets that need them, so PCMC never pays for
    gathering them across ranks."""

    emb: dict[str, Tensor]
    present: dict[str, Tensor] | None
    features: Callable[[], dict[str, Tensor]]
    rows: Callable[[], dict[str, Tensor]] | None = None


def _pcmc_step(batch: LossBatch, params: LossParams, shares: TargetShares | None = None) -> Tensor:
    loss = compiled(pcmc_loss, params.compile) if params.compile else pcmc_loss
    return loss(batch.emb, batch.present, logit_scale=params.log_scale.exp())


def _pcmr_step(batch: LossBatch, params: LossParams, shares: TargetShares | None = None) -> Tensor:
    emb, present, rows = batch.emb, batch.present, batch.rows
    ids = rows() if rows is not None and (params.target == "shared" or shares is not None) else None
    if params.target == "shared":
        if ids is None:
            raise ValueError("the shared PCMR target needs the batch's cached rows (`rows`)")
        comps = target_components(ids, "shared", params.threshold, present)
    elif params.target == "projections":
        comps = target_components({m: e.detach() for m, e in emb.items()}, "projections", params.threshold, present)
    else:
        comps = target_components(batch.features(), params.target, params.threshold, present)
    if shares is not None and ids is not None:
        implied = comps if params.target == "shared" else target_components(ids, "shared", present=present)
        shares.add(comps, implied, present)
    loss = compiled(pcmr_loss, params.compile) if params.compile else pcmr_loss
    return loss(emb, target=combine_target(comps), present=present, rho=params.rho, rho_on=params.rho_on)


# The registry both trainers dispatch through: LOSSES[name](batch, params, shares=None) -> 0-d loss. `shares`
# collects the target's per-modality share of marked pairs for the epoch log.
LOSSES: dict[str, Callable[..., Tensor]] = {"pcmc": _pcmc_step, "pcmr": _pcmr_step}

__all__ = [
    "pcmc_loss",
    "pcmr_target",
    "pcmr_loss",
    "target_components",
    "combine_target",
    "LOSSES",
    "LossBatch",
    "LossParams",
    "TargetShares",
    "TARGET_MODES",
    "RHO_ON",
    "MAX_LOGIT_SCALE",
]
