"""ProjectionHead: structure of Sec. 4 (linear, residual one-hidden-layer block, LayerNorm) and HuBERT layer weights."""

import pytest
import torch
import torch.nn.functional as F

from pcmpipe.errors import UserError
from pcmpipe.heads import ProjectionHead, build_heads


def _manual(head: ProjectionHead, x: torch.Tensor) -> torch.Tensor:
    """The head written out with functional ops, layer by layer."""
    h = F.linear(x, head.proj.weight, head.proj.bias)
    inner = F.linear(F.gelu(F.linear(h, head.fc1.weight, head.fc1.bias)), head.fc2.weight, head.fc2.bias)
    return F.layer_norm(h + inner, (head.dim,), head.norm.weight, head.norm.bias, head.norm.eps)


def test_vector_head_matches_written_out_architecture():
    torch.manual_seed(0)
    head = ProjectionHead((40,), dim=16)
    # perturb the LayerNorm affine so it is exercised too
    with torch.no_grad():
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(7, 40)
    out = head(x)
    assert out.shape == (7, 16)
    torch.testing.assert_close(out, _manual(head, x))
    assert head.layer_weights() is None
    # exactly four parameterised layers: proj, fc1, fc2 (one hidden layer), norm
    assert sorted(n for n, _ in head.named_children()) == ["fc1", "fc2", "norm", "proj"]
    assert head.fc1.in_features == head.fc1.out_features == 16


def test_default_dim_is_256_and_output_is_layer_normalised():
    torch.manual_seed(1)
    head = ProjectionHead((512,))
    out = head(torch.randn(5, 512))
    assert out.shape == (5, 256)
    # default LayerNorm affine (1, 0): zero mean, unit variance per row (Sec. 3.1 footnote 1)
    torch.testing.assert_close(out.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_layer_weights_start_uniform_and_pool_before_projection():
    torch.manual_seed(2)
    L, D = 13, 24
    head = ProjectionHead((L, D), dim=8)
    w = head.layer_weights()
    torch.testing.assert_close(w, torch.full((L,), 1 / L))
    x = torch.randn(4, L, D)
    torch.testing.assert_close(head(x), _manual(head, x.mean(1)))

    with torch.no_grad():
        head.layer_logits.copy_(torch.randn(L))
    w = torch.softmax(head.layer_logits.detach(), 0)
    torch.testing.assert_close(head.layer_weights(), w)
    assert abs(float(head.layer_weights().sum()) - 1.0) < 1e-6
    manual = _manual(head, (x * w[None, :, None]).sum(1))
    torch.testing.assert_close(head(x), manual)


def test_weighted_layer_sum_of_time_means_equals_time_mean_of_weighted_frames():
    """Why caching per-layer time means is enough: pooling commutes with the mean over frames."""
    torch.manual_seed(3)
    L, D, frames = 5, 6, 11
    head = ProjectionHead((L, D), dim=4)
    with torch.no_grad():
        head.layer_logits.copy_(torch.randn(L))
    hidden = torch.randn(2, frames, L, D, dtype=torch.float64)  # per-frame hidden states of every layer
    w = head.layer_weights().double()
    pooled_frames = torch.einsum("btld,l->btd", hidden, w).mean(1)  # SUPERB: weight layers, then mean time
    head = head.double()
    torch.testing.assert_close(head(hidden.mean(1)), _manual(head, pooled_frames))


def test_gradients_reach_layer_weights_and_all_layers():
    torch.manual_seed(4)
    head = ProjectionHead((3, 10), dim=8)
    head(torch.randn(6, 3, 10)).pow(2).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert head.layer_logits.grad.abs().sum() > 0


def test_build_heads_and_errors():
    heads = build_heads({"I": (12,), "S": (13, 8), "my-feat_2": (3,)}, dim=8)
    assert list(heads.keys()) == ["I", "S", "my-feat_2"]
    assert heads["S"].layer_weights().shape == (13,)
    assert heads["I"](torch.randn(2, 12)).shape == (2, 8)
    with pytest.raises(UserError):
        build_heads({"I": (2, 3, 4)})
    with pytest.raises(UserError):
        build_heads({"a.b": (3,)})
    with pytest.raises(ValueError):
        heads["I"](torch.randn(2, 13))


def test_standardisation_is_applied_and_travels_with_the_state_dict():
    torch.manual_seed(0)
    head = ProjectionHead((2, 3), dim=8)
    x = torch.randn(5, 2, 3) * 4 + 10
    mean, scale = x.mean(0), x.std(0)
    before = head(x)
    head.set_standardisation(mean, scale)
    assert head.standardised
    after = head(x)
    assert not torch.allclose(before, after)
    head.set_standardisation(None)
    torch.testing.assert_close(head((x - mean) / scale), after)  # the same as feeding standardised features
    head.set_standardisation(mean, scale)
    # saved and loaded like any head: the statistics are buffers in the state dict
    other = ProjectionHead((2, 3), dim=8)
    other.load_state_dict(head.state_dict())
    assert other.standardised
    torch.testing.assert_close(other(x), after)


def test_heads_saved_before_standardisation_load_as_identity():
    torch.manual_seed(0)
    head = ProjectionHead((4,), dim=8)
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("input_")}
    fresh = ProjectionHead((4,), dim=8)
    fresh.set_standardisation(torch.ones(4), torch.full((4,), 2.0))
    fresh.load_state_dict(old)  # strict: the missing statistics default to identity
    assert not fresh.standardised
    x = torch.randn(3, 4)
    torch.testing.assert_close(fresh(x), head(x))
