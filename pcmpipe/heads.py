"""Projection heads: one small trainable network per modality, mapping cached backbone features to D = 256.

Sec. 4 "Model design": a linear projection onto D dimensions, a feed-forward block with one hidden layer of
D units and a residual connection, and a LayerNorm at the end (the LayerNorm is what makes the cosine score a
Pearson correlation in Sec. 3.1, footnote 1).

HuBERT features are cached as the time-mean of every hidden layer, shape (L, D_in) = (13, 768). The head owns
SUPERB-style softmax layer weights and takes the weighted sum over L first; because the weighted sum over
layers and the mean over time are both linear, pooling the cached means equals pooling the frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmpipe.errors import UserError


class ProjectionHead(nn.Module):
    """Linear(D_in -> dim) -> x + Linear(GELU(Linear(x))) -> LayerNorm.

    Args:
        in_shape: per-sample feature shape: (D_in,) for a vector, or (L, D_in) for per-layer features whose
            softmax-weighted sum over L is taken first.
        dim: output dimension D (256 in the paper); also the hidden width of the feed-forward block.

    forward(x [B, *in_shape]) -> [B, dim] (raw, not L2-normalised; the losses normalise).
    """

    input_mean: Tensor  # buffers (see __init__), declared for the type checker
    input_scale: Tensor

    def __init__(self, in_shape: tuple[int, ...], dim: int = 256) -> None:
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) not in (1, 2) or any(s < 1 for s in in_shape):
            raise UserError(
                f"feature shape {in_shape} is not supported by a projection head: "
                "use (D,) vectors or (L, D) per-layer features"
            )
        self.in_shape = in_shape
        self.dim = dim
        if len(in_shape) == 2:
            # zeros -> softmax is uniform: training starts from the plain layer average (as in SUPERB).
            self.layer_logits = nn.Parameter(torch.zeros(in_shape[0]))
        else:
            self.register_parameter("layer_logits", None)
        # Input standardisation (x - mean) / scale, per feature element, fitted on the train split
        # (`set_standardisation`). Buffers, not parameters: saved with the heads, so every user of a run's heads
        # (evaluate, report, zero-shot) applies it; identity by default, and heads saved before it existed load
        # as identity (`_load_from_state_dict`).
        self.register_buffer("input_mean", torch.zeros(in_shape))
        self.register_buffer("input_scale", torch.ones(in_shape))
        self.standardised = False
        self.proj = nn.Linear(in_shape[-1], dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def set_standardisation(self, mean: Tensor | None, scale: Tensor | None = None) -> None:
        """Subtract `mean` and divide by `scale` (both [*in_shape]; None: 0 / 1) before the projection."""
        with torch.no_grad():
            self.input_mean.copy_(torch.zeros(self.in_shape) if mean is None else mean.reshape(self.in_shape))
            self.input_scale.copy_(torch.ones(self.in_shape) if scale is None else scale.reshape(self.in_shape))
        self._update_standardised()

    def _update_standardised(self) -> None:
        # A Python flag, read once here: checking the buffers in forward would sync a GPU every step.
        self.standardised = bool(self.input_mean.any()) or bool((self.input_scale != 1).any())

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name, fill in (("input_mean", 0.0), ("input_scale", 1.0)):
            state_dict.setdefault(prefix + name, torch.full(self.in_shape, fill))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._update_standardised()

    def standardise(self, x: Tensor) -> Tensor:
        """x [B, *in_shape] as the projection sees it: standardised when `set_standardisation` was given stats."""
        return (x - self.input_mean) / self.input_scale if self.standardised else x

    def layer_weights(self) -> Tensor | None:
        """Softmax layer weights [L] (sum to 1), or None for vector inputs. Detached, for inspection."""
        if self.layer_logits is None:
            return None
        return F.softmax(self.layer_logits.detach(), dim=0)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, *in_shape] -> [B, dim]."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"ProjectionHead expects [B, {self.in_shape}], got {tuple(x.shape)}")
        x = x.to(self.proj.weight.dtype)
        x = self.standardise(x)
        if self.layer_logits is not None:
            w = F.softmax(self.layer_logits, dim=0)  # [L]
            # [B, 1, L] @ [B, L, D] -> [B, D]: one batched GEMM over the rows as stored. (`torch.matmul(w, x)`
            # copies x transposed first, a fresh 3 MB buffer per HuBERT batch: page faults cost more than the math.)
            x = torch.bmm(w.expand(x.shape[0], 1, -1), x).squeeze(1)  # [B, D_in]
        h = self.proj(x)  # [B, dim]
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.norm(h)


def build_heads(shapes: dict[str, tuple[int, ...]], dim: int = 256) -> nn.ModuleDict:
    """One ProjectionHead per modality: {"I": (512,), "S": (13, 768)} -> ModuleDict(I=..., S=...)."""
    for name in shapes:
        if "." in name or not name:
            # torch module names cannot contain '.', which also separates state_dict keys.
            raise UserError(f"modality name {name!r} cannot name a projection head: use letters, digits, '_' or '-'")
    return nn.ModuleDict({name: ProjectionHead(tuple(shape), dim=dim) for name, shape in shapes.items()})
