"""PCMC / PCMR losses and the PCMR target against explicit float64 loops, open_clip's ClipLoss, and masks."""

import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from pcmpipe.losses import pcmc_loss, pcmr_loss, pcmr_target

# ---------------------------------------------------------------- independent reference computations (loops)


def _cos(u, v):
    u, v = [float(t) for t in u], [float(t) for t in v]
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def _ref_pcmc(emb, present, scale):
    names = sorted(emb)
    B = emb[names[0]].shape[0]
    pres = {m: [True] * B if present is None or m not in present else [bool(t) for t in present[m]] for m in names}
    total = 0.0
    for a, b in combinations(names, 2):
        directions = []
        for q_mod, c_mod in ((a, b), (b, a)):
            losses = []
            for p in range(B):
                if not (pres[q_mod][p] and pres[c_mod][p]):
                    continue
                logits = {q: scale * _cos(emb[q_mod][p], emb[c_mod][q]) for q in range(B) if pres[c_mod][q]}
                lse = math.log(sum(math.exp(v) for v in logits.values()))
                losses.append(lse - logits[p])
            directions.append(sum(losses) / len(losses) if losses else 0.0)
        total += (directions[0] + directions[1]) / 2
    return total


def _ref_pcmr(emb, target, present, rho, rho_on="entries"):
    # entries: sum_pq |R_pq|^(2 + rho); norm: (sqrt(sum_pq R_pq^2))^(2 + rho), the literal Frobenius reading
    names = sorted(emb)
    B = emb[names[0]].shape[0]
    pres = {m: [True] * B if present is None or m not in present else [bool(t) for t in present[m]] for m in names}
    total = 0.0
    for a, b in combinations(names, 2):
        sq = powered = 0.0
        for p in range(B):
            for q in range(B):
                if pres[a][p] and pres[b][q]:
                    t = (1.0 if p == q else 0.0) if target is None else float(target[p][q])
                    r = abs(_cos(emb[a][p], emb[b][q]) - t)
                    sq += r**2
                    powered += r ** (2 + rho)
        total += powered if rho_on == "entries" else math.sqrt(sq) ** (2 + rho)
    return total


def _ref_target(inputs, threshold, present):
    names = list(inputs)
    B = inputs[names[0]].shape[0]
    flat = {m: inputs[m].reshape(B, -1) for m in names}
    out = [[0.0] * B for _ in range(B)]
    for p in range(B):
        for q in range(B):
            sims = [
                _cos(flat[m][p], flat[m][q])
                for m in names
                if present is None or m not in present or (bool(present[m][p]) and bool(present[m][q]))
            ]
            out[p][q] = 1.0 if p == q or (sims and max(sims) > threshold) else 0.0
    return torch.tensor(out)


def _emb(names, B=6, D=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, D, generator=g, dtype=dtype) for m in names}


def _random_present(names, B, seed):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(B, generator=g) > 0.35 for m in names}


# ---------------------------------------------------------------- PCMC


@pytest.mark.parametrize("scale", [1 / 0.07, 3.0])
def test_pcmc_two_modalities_equals_open_clip_cliploss(scale):
    emb = _emb(["I", "T"], B=16, D=32, seed=1, dtype=torch.float32)
    ours = pcmc_loss(emb, logit_scale=scale)
    theirs = ClipLoss()(F.normalize(emb["I"], dim=-1), F.normalize(emb["T"], dim=-1), torch.tensor(scale))
    assert abs(float(ours) - float(theirs)) < 1e-5
    # a 0-d tensor scale (learnable, exp of a log-parameter) gives the same value and a gradient
    log_scale = torch.tensor(math.log(scale), requires_grad=True)
    ours_t = pcmc_loss(emb, logit_scale=log_scale.exp())
    assert abs(float(ours_t.detach()) - float(theirs)) < 1e-5
    ours_t.backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad)


def test_pcmc_three_modalities_matches_loops():
    emb = _emb(["T", "I", "S"], B=5, D=4, seed=2)
    assert abs(float(pcmc_loss(emb, logit_scale=5.0)) - _ref_pcmc(emb, None, 5.0)) < 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_pcmc_random_missing_modalities_matches_loops(seed):
    names = ["I", "T", "A", "C"]
    emb = _emb(names, B=7, D=3, seed=seed)
    present = _random_present(names, 7, seed + 100)
    present["C"][:] = True  # one modality present everywhere, as a class embedding is
    got = float(pcmc_loss(emb, present, logit_scale=4.0))
    assert math.isfinite(got)
    assert abs(got - _ref_pcmc(emb, present, 4.0)) < 1e-9


def test_pcmc_rows_missing_both_modalities_are_the_same_as_dropping_them():
    emb = _emb(["I", "T"], B=8, D=6, seed=3, dtype=torch.float32)
    keep = torch.tensor([True, False, True, True, False, True, True, True])
    present = {"I": keep.clone(), "T": keep.clone()}
    masked = pcmc_loss(emb, present)
    sub = {m: x[keep] for m, x in emb.items()}
    dropped = ClipLoss()(F.normalize(sub["I"], dim=-1), F.normalize(sub["T"], dim=-1), torch.tensor(1 / 0.07))
    assert abs(float(masked) - float(dropped)) < 1e-5


def test_pcmc_symmetric_in_names_and_batch_order():
    emb = _emb(["I", "T", "S"], B=6, D=4, seed=4)
    present = _random_present(["I", "T", "S"], 6, 5)
    base = float(pcmc_loss(emb, present))
    # swapping which tensor is called what swaps the pair order; the loss is symmetric in the two directions
    swapped = {"I": emb["T"], "T": emb["I"], "S": emb["S"]}
    swapped_p = {"I": present["T"], "T": present["I"], "S": present["S"]}
    assert abs(float(pcmc_loss(swapped, swapped_p)) - base) < 1e-9
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    permuted = float(pcmc_loss({m: x[perm] for m, x in emb.items()}, {m: p[perm] for m, p in present.items()}))
    assert abs(permuted - base) < 1e-9


def test_pcmc_pair_without_counted_rows_is_zero_with_finite_gradients():
    emb = {m: x.requires_grad_() for m, x in _emb(["A", "I", "T"], B=4, D=3, seed=6).items()}
    # A and I never co-occur; T is absent in row 0
    present = {
        "A": torch.tensor([True, True, False, False]),
        "I": torch.tensor([False, False, True, True]),
        "T": torch.tensor([False, True, True, True]),
    }
    loss = pcmc_loss(emb, present)
    assert torch.isfinite(loss)
    assert abs(float(loss.detach()) - _ref_pcmc({m: x.detach() for m, x in emb.items()}, present, 1 / 0.07)) < 1e-9
    loss.backward()
    for m, x in emb.items():
        assert torch.isfinite(x.grad).all(), m
    # nothing counted at all: exactly 0, still differentiable, zero gradient
    none = {m: torch.zeros(4, dtype=torch.bool) for m in emb}
    for x in emb.values():
        x.grad = None
    zero = pcmc_loss(emb, none)
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert all(torch.equal(x.grad, torch.zeros_like(x)) for x in emb.values())


def test_pcmc_gradients_finite_with_masks_in_float32():
    emb = {m: x.float().requires_grad_() for m, x in _emb(["I", "T", "S"], B=10, D=8, seed=7).items()}
    present = _random_present(["I", "T", "S"], 10, 8)
    pcmc_loss(emb, present, logit_scale=torch.tensor(100.0)).backward()
    for x in emb.values():
        assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- PCMR


@pytest.mark.parametrize("stacked", [False, True])  # pair by pair, and all pairs from one product
@pytest.mark.parametrize("rho_on", ["entries", "norm"])
@pytest.mark.parametrize("rho", [0.0, 1.0, 0.5])
def test_pcmr_identity_target_matches_loops(rho, rho_on, stacked):
    emb = _emb(["I", "T", "S"], B=5, D=4, seed=9)
    got = float(pcmr_loss(emb, rho=rho, rho_on=rho_on, stacked=stacked))
    assert abs(got - _ref_pcmr(emb, None, None, rho, rho_on)) < 1e-9


def test_pcmr_rho_zero_vs_one():
    emb = _emb(["I", "T"], B=6, D=4, seed=10)
    za, zb = F.normalize(emb["I"], dim=-1), F.normalize(emb["T"], dim=-1)
    resid = (za @ zb.T - torch.eye(6, dtype=za.dtype)).abs()
    # rho = 0: both readings are the squared Frobenius norm
    for rho_on in ("entries", "norm"):
        assert abs(float(pcmr_loss(emb, rho=0.0, rho_on=rho_on)) - float((resid**2).sum())) < 1e-12
    # rho = 1: the cube of each entry, against the 3/2 power of the squared norm
    assert abs(float(pcmr_loss(emb, rho=1.0)) - float((resid**3).sum())) < 1e-12
    assert abs(float(pcmr_loss(emb, rho=1.0, rho_on="norm")) - float((resid**2).sum()) ** 1.5) < 1e-9


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_pcmr_masked_with_target_matches_loops(seed, stacked):
    names = ["I", "T", "A", "S"][: 3 + seed % 2]  # 3 and 4 modalities
    emb = _emb(names, B=6, D=3, seed=seed + 20)
    present = _random_present(names, 6, seed + 30)
    target = (torch.rand(6, 6, generator=torch.Generator().manual_seed(seed)) > 0.7).double()
    target = ((target + target.T + torch.eye(6)) > 0).double()
    for rho_on in ("entries", "norm"):
        got = float(pcmr_loss(emb, target=target, present=present, rho=1.0, rho_on=rho_on, stacked=stacked))
        assert abs(got - _ref_pcmr(emb, target, present, 1.0, rho_on)) < 1e-9


def test_pcmr_symmetric_in_names():
    emb = _emb(["I", "T"], B=5, D=4, seed=11)
    target = torch.eye(5, dtype=torch.float64)
    target[0, 2] = target[2, 0] = 1.0
    present = _random_present(["I", "T"], 5, 12)
    a = float(pcmr_loss(emb, target, present))
    b = float(pcmr_loss({"I": emb["T"], "T": emb["I"]}, target, {"I": present["T"], "T": present["I"]}))
    assert abs(a - b) < 1e-9


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_pcmr_gradient_finite_at_zero_residual(rho):
    # orthonormal embeddings shared by both modalities: S == I exactly, so the residual is 0
    eye = torch.eye(4, 8, dtype=torch.float64)
    emb = {"I": eye.clone().requires_grad_(), "T": eye.clone().requires_grad_()}
    loss = pcmr_loss(emb, rho=rho)
    assert float(loss.detach()) == 0.0
    loss.backward()
    for x in emb.values():
        assert torch.isfinite(x.grad).all()
    # all-absent mask: H is 0 everywhere, same story
    emb2 = {m: x.detach().clone().requires_grad_() for m, x in _emb(["I", "T"], B=3, D=2, seed=13).items()}
    loss2 = pcmr_loss(emb2, present={"I": torch.zeros(3, dtype=torch.bool)}, rho=rho)
    loss2.backward()
    assert float(loss2.detach()) == 0.0 and all(torch.isfinite(x.grad).all() for x in emb2.values())


def test_pcmr_rejects_negative_rho():
    with pytest.raises(ValueError):
        pcmr_loss(_emb(["I", "T"]), rho=-0.5)


def test_pcmr_rejects_unknown_rho_on():
    with pytest.raises(ValueError, match="rho_on"):
        pcmr_loss(_emb(["I", "T"]), rho_on="rows")


def test_loss_choices_are_the_schemas():
    # the settings a user can pick (pcmpipe.config.schema) are exactly the ones the loss accepts
    from typing import get_args

    from pcmpipe.config.schema import PcmrTarget, RhoOn
    from pcmpipe.losses import RHO_ON, TARGET_MODES

    assert get_args(RhoOn) == RHO_ON and get_args(PcmrTarget) == TARGET_MODES


# ---------------------------------------------------------------- PCMR target (Eq. 7)


def test_pcmr_target_marks_shared_views():
    g = torch.Generator().manual_seed(14)
    B = 6
    image = torch.randn(B, 16, generator=g, dtype=torch.float64)
    image[3] = image[0] * 2.0  # captions 0 and 3 describe the same image (cosine 1, scale-invariant)
    image[5] = image[1] + 1e-4 * torch.randn(16, generator=g, dtype=torch.float64)  # near-duplicate: > 0.99
    text = torch.randn(B, 16, generator=g, dtype=torch.float64)
    speech = torch.randn(B, 3, 7, generator=g, dtype=torch.float64)  # per-layer features, flattened per row
    inputs = {"I": image, "T": text, "S": speech}
    target = pcmr_target(inputs)
    assert target.dtype == torch.float32 and target.shape == (B, B)
    torch.testing.assert_close(target, _ref_target(inputs, 0.99, None))
    expected = torch.eye(B)
    expected[0, 3] = expected[3, 0] = expected[1, 5] = expected[5, 1] = 1.0
    torch.testing.assert_close(target, expected)
    assert torch.equal(target, target.T)


def test_pcmr_target_respects_presence_and_threshold():
    g = torch.Generator().manual_seed(15)
    B = 5
    image = torch.randn(B, 8, generator=g)
    image[2] = image[0]
    text = torch.randn(B, 8, generator=g)
    text[4] = text[1]
    present = {"I": torch.tensor([True, True, False, True, True])}  # the image of row 2 is missing
    target = pcmr_target({"I": image, "T": text}, present=present)
    torch.testing.assert_close(target, _ref_target({"I": image, "T": text}, 0.99, present))
    assert target[0, 2] == 0 and target[1, 4] == 1 and target[2, 2] == 1
    # a threshold above every off-diagonal cosine but the duplicates keeps them; above 1 drops them
    assert pcmr_target({"T": text}, threshold=1.5)[1, 4] == 0


def test_pcmr_target_has_no_gradient_and_feeds_the_loss():
    x = torch.randn(4, 6, requires_grad=True)
    t = pcmr_target({"I": x})
    assert not t.requires_grad
    emb = _emb(["I", "T"], B=4, D=3, seed=16)
    got = float(pcmr_loss(emb, target=t.double()))
    assert abs(got - _ref_pcmr(emb, t, None, 1.0)) < 1e-9


def test_all_true_masks_equal_no_masks_values_and_gradients():
    """The unmasked fast path (no entry in `present`) and an explicit all-True mask give the same loss and
    gradients, for every loss and for the target, also when only some modalities carry a mask."""
    names = ["I", "S", "T"]
    B = 7
    inputs = {
        "I": torch.randn(B, 4, dtype=torch.float64),
        "S": torch.randn(B, 3, 5, dtype=torch.float64),
        "T": torch.randn(B, 4, dtype=torch.float64),
    }
    inputs["T"][3] = inputs["T"][5] * 2  # a shared view, so the target is not the identity
    ones = {m: torch.ones(B, dtype=torch.bool) for m in names}
    for present in ({"S": ones["S"]}, ones):
        assert torch.equal(pcmr_target(inputs, 0.99, None), pcmr_target(inputs, 0.99, present))
    target = pcmr_target(inputs, 0.99)
    assert target.sum() > B  # the planted pair counts
    for loss in (lambda e, p: pcmc_loss(e, p, logit_scale=3.0), lambda e, p: pcmr_loss(e, target, p, rho=1.0)):
        results = []
        for present in (None, {"S": ones["S"]}, ones):
            emb = {m: e.clone().requires_grad_(True) for m, e in _emb(names, B=B, D=6, seed=3).items()}
            value = loss(emb, present)
            value.backward()
            results.append((value.detach(), {m: e.grad for m, e in emb.items()}))
        for value, grads in results[1:]:
            assert torch.allclose(value, results[0][0], rtol=1e-12, atol=1e-12)
            for m in names:
                assert torch.allclose(grads[m], results[0][1][m], rtol=1e-10, atol=1e-12)


# ---- the registry both trainers dispatch through ----
def test_registry_is_the_dispatch_with_one_signature():
    from pcmpipe.losses import LOSSES, LossBatch, LossParams

    g = torch.Generator().manual_seed(0)
    emb = {m: torch.randn(8, 6, generator=g) for m in ("I", "T", "S")}
    feats = {m: torch.randn(8, 5, generator=g) for m in ("I", "T", "S")}
    present = {"S": torch.tensor([1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)}
    log_scale = torch.tensor(math.log(1 / 0.07))
    params = LossParams(log_scale, threshold=0.5, rho=1.0)

    def no_features():
        raise AssertionError("PCMC does not read the backbone features")

    assert set(LOSSES) == {"pcmc", "pcmr"}
    got = LOSSES["pcmc"](LossBatch(emb, present, no_features), params)
    assert torch.equal(got, pcmc_loss(emb, present, logit_scale=log_scale.exp()))
    calls = []
    got = LOSSES["pcmr"](LossBatch(emb, present, lambda: calls.append(1) or feats), params)
    target = pcmr_target(feats, threshold=0.5, present=present)
    assert calls == [1] and torch.equal(got, pcmr_loss(emb, target=target, present=present, rho=1.0))


# ---- the target modes (shared / features / projections) and their per-modality shares ----
def test_shared_target_marks_pairs_that_use_the_same_cached_row():
    from pcmpipe.losses import combine_target, target_components

    # captions 0 and 2 belong to image 7; caption 3's image is missing (absent rows never share)
    rows = {"I": torch.tensor([7, 1, 7, 0, 1]), "T": torch.arange(5)}
    present = {"I": torch.tensor([True, True, True, False, True])}
    comps = target_components(rows, "shared", present=present)
    assert comps["T"].sum() == 5  # each caption only shares its own row
    target = combine_target(comps)
    expected = torch.eye(5)
    expected[0, 2] = expected[2, 0] = expected[1, 4] = expected[4, 1] = 1.0
    torch.testing.assert_close(target, expected)
    # no threshold is involved: identical rows of distinct samples (cosine 1) are not a shared view
    feats = {"I": torch.ones(5, 3), "T": torch.randn(5, 3)}
    assert pcmr_target(feats).sum() == 25
    assert combine_target(target_components(rows, "shared", threshold=-1.0, present=present)).sum() == 9


def test_projection_target_reads_the_detached_head_outputs():
    from pcmpipe.losses import LOSSES, LossBatch, LossParams, TargetShares, combine_target, target_components

    emb = _emb(["I", "T"], B=6, D=4, seed=21)
    emb["I"] = emb["I"].detach().clone()
    emb["I"][4] = emb["I"][1] * 3.0  # parallel head outputs: cosine 1
    emb = {m: e.clone().requires_grad_(True) for m, e in emb.items()}
    params = LossParams(torch.tensor(0.0), threshold=0.99, rho=1.0, target="projections")

    def no_features():
        raise AssertionError("the projections target does not read the backbone features")

    shares = TargetShares()
    rows = {"I": torch.arange(6), "T": torch.arange(6)}
    loss = LOSSES["pcmr"](LossBatch(emb, None, no_features, rows=lambda: rows), params, shares)
    target = combine_target(target_components({m: e.detach() for m, e in emb.items()}, "projections", 0.99))
    assert target[1, 4] == 1 and target.sum() == 8
    assert torch.equal(loss, pcmr_loss(emb, target=target, rho=1.0))
    loss.backward()  # the target is detached: the gradient is that of Eq. 6 with a fixed T
    got = shares.shares()
    assert got["target"]["I"] == pytest.approx(2 / 30) and got["ids"]["I"] == 0.0 and got["target"]["T"] == 0.0
    assert shares.shares() == {"target": {}, "ids": {}}  # read once per epoch, then reset


def test_shared_target_through_the_registry_and_its_shares():
    from pcmpipe.losses import LOSSES, LossBatch, LossParams, TargetShares

    emb = _emb(["I", "T"], B=4, D=3, seed=22)
    rows = {"I": torch.tensor([0, 0, 1, 2]), "T": torch.arange(4)}
    params = LossParams(torch.tensor(0.0), target="shared")
    shares = TargetShares()
    got = LOSSES["pcmr"](LossBatch(emb, None, dict, rows=lambda: rows), params, shares)
    expected = torch.eye(4)
    expected[0, 1] = expected[1, 0] = 1.0
    assert torch.equal(got, pcmr_loss(emb, target=expected))
    s = shares.shares()
    assert s["target"] == s["ids"] == {"I": pytest.approx(2 / 12), "T": 0.0}
    with pytest.raises(ValueError, match="rows"):
        LOSSES["pcmr"](LossBatch(emb, None, dict), params)
    with pytest.raises(ValueError, match="unknown PCMR target"):
        LOSSES["pcmr"](LossBatch(emb, None, dict), LossParams(torch.tensor(0.0), target="nearest"))
