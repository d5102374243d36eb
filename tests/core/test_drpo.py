"""DRPO against ALGORITHMS.md 2.1.7 (D1-D6, λ = 0.1, τ = 10, C = 8192) and the edge cases of 2.1.6;
the advantage + loss mapping (2.1.3 (j)) against the direct J_q with autograd (recipe (i)); micro-batch
additivity under the global LossNorm."""
import math

import pytest
import torch
from torch.testing import assert_close

from rlrun.core.drpo import (
    DRPOAdvantage,
    DRPOLoss,
    drpo_objective,
    length_preference,
    negative_weights,
    positive_weights,
    sequence_scores,
    trust_region_kl,
)
from rlrun.types import StepBatch, LossNorm

F64 = torch.float64
C = 8192


def rows(lengths, scores, width=C):
    """logp_NT with every token of row i equal to s_i (so mean_t logp = s_i) and its mask."""
    L = torch.tensor(lengths)
    mask = (torch.arange(width)[None, :] < L[:, None]).to(F64)
    return mask * torch.tensor(scores, dtype=F64)[:, None], mask


def adv_input(correct, lengths, scores, truncated=None, group=None, preference=None, width=C):
    """StepBatch for rows of ``lengths`` tokens incl. EOS (length_tokens_N excludes EOS unless truncated)."""
    n = len(correct)
    trunc = torch.tensor(truncated if truncated is not None else [False] * n)
    logp, mask = rows(lengths, scores, width)
    return StepBatch(
        reward_N=torch.tensor(correct, dtype=F64),
        group_N=torch.tensor(group if group is not None else [0] * n),
        correct_N=torch.tensor(correct, dtype=F64),
        length_tokens_N=torch.tensor(lengths) - (~trunc).long(),
        truncated_N=trunc, preference_N=preference, logp_NT=logp, mask_NT=mask,
    )


# D1: c, L (incl. EOS; i=1 truncated, L = C), s
D1 = {"correct": [1, 0, 1, 1, 0, 0], "lengths": [1500, 8192, 4200, 900, 2600, 6100],
      "scores": [-0.32, -0.95, -0.41, -0.28, -0.37, -0.52], "truncated": [False, True] + [False] * 4}
D1_W = [0.320806, 0, 0.011881, 0.667313, 0, 0]
D1_Q = [0, 0.322201, 0, 0, 0.341441, 0.336358]
D1_DJ_DS = [0.320806, -0.322201, 0.011881, 0.667313, -0.341441, -0.336358]
D1_TOKEN = [2.138708e-04, -3.933117e-05, 2.828804e-06, 7.414587e-04, -1.313235e-04, -5.514062e-05]


def test_d1_length_reward_and_positive_weights():
    inp = adv_input(**D1)
    algo = DRPOAdvantage(max_response_tokens=C)
    L = algo.response_tokens(inp)  # length_tokens + 1 (EOS) except the truncated row: [1500, 8192, ...]
    assert L.tolist() == D1["lengths"]
    r = length_preference(L, C)  # 1 − L/8192
    assert r.tolist() == pytest.approx([0.816895, 0.0, 0.487305, 0.890137, 0.682617, 0.255371], abs=1e-6)
    # exp(r/0.1): 3529.619354, 130.718594, 7342.004577 (positives); sum 11002.342525
    assert torch.exp(r[[0, 2, 3]] / 0.1).tolist() == pytest.approx([3529.619354, 130.718594, 7342.004577], abs=1e-6)
    w = positive_weights(r, inp.correct_N, inp.group_N, 0.1)  # 3529.619354/11002.342525 = 0.320806, ...
    assert w.tolist() == pytest.approx(D1_W, abs=1e-6)


def test_d1_negative_weights_and_advantages():
    inp = adv_input(**D1)
    # s_j/τ = −0.095, −0.037, −0.052 → exp 0.909373, 0.963676, 0.949329, sum 2.822378 → q = 0.322201, ...
    q = negative_weights(torch.tensor(D1["scores"], dtype=F64), inp.correct_N, inp.group_N, 10.0)
    assert q.tolist() == pytest.approx(D1_Q, abs=1e-6)
    adv = DRPOAdvantage(max_response_tokens=C)(inp)  # w on positives, −q on negatives (= ∂J/∂s)
    assert adv.tolist() == pytest.approx(D1_DJ_DS, abs=1e-6)
    assert adv.dtype == F64 and adv[[0, 2, 3]].sum().item() == pytest.approx(1.0, abs=1e-12)


def test_d1_objective_value_and_official_logged_value():
    logp, mask = rows(D1["lengths"], D1["scores"])
    correct, group = torch.tensor(D1["correct"], dtype=F64), torch.zeros(6, dtype=torch.long)
    pref = length_preference(torch.tensor(D1["lengths"]), C)
    assert sequence_scores(logp, mask).tolist() == pytest.approx(D1["scores"], abs=1e-12)
    J, ids = drpo_objective(logp, mask, correct, group, pref, lam=0.1, tau=10.0)
    # Σ w s = 0.320806·(−0.32) + 0.011881·(−0.41) + 0.667313·(−0.28) = −0.294377
    # τ log mean exp(s_j/τ) = 10·log(2.822378/3) = −0.610325;  J = −0.294377 + 0.610325 = 0.315948
    assert ids.tolist() == [0] and J.item() == pytest.approx(0.315948, abs=1e-6)
    w = positive_weights(pref, correct, group, 0.1)
    sum_ws = (w * torch.tensor(D1["scores"], dtype=F64)).sum().item()
    assert sum_ws == pytest.approx(-0.294377, abs=1e-6)
    assert (sum_ws - J.item()) == pytest.approx(-0.610325, abs=1e-6)  # the negative term
    assert sum_ws - 10.0 == pytest.approx(-10.294377, abs=1e-6)  # what the official code logs as J


def test_d1_gradients_by_autograd_match_2_1_3_e():
    logp, mask = rows(D1["lengths"], D1["scores"])
    logp.requires_grad_(True)
    pref = length_preference(torch.tensor(D1["lengths"]), C)
    J, _ = drpo_objective(logp, mask, torch.tensor(D1["correct"], dtype=F64), torch.zeros(6, dtype=torch.long),
                          pref, 0.1, 10.0)
    (grad,) = torch.autograd.grad(J.sum(), logp)
    # ∂J/∂logp[i,t] = (∂J/∂s_i)/L_i on each of row i's tokens, 0 on padding: 0.320806/1500 = 2.138708e-04, ...
    for i, L in enumerate(D1["lengths"]):
        assert grad[i, :L].min().item() == pytest.approx(D1_TOKEN[i], rel=1e-6)
        assert grad[i, :L].max().item() == pytest.approx(D1_TOKEN[i], rel=1e-6)
        assert grad[i, L:].abs().sum().item() == 0.0
        assert (grad[i, :L].sum().item()) == pytest.approx(D1_DJ_DS[i], abs=1e-6)


@pytest.mark.parametrize("lam, want", [
    (0.2, [0.379549, 0.073042, 0.547409]),
    (0.5, [0.373827, 0.193372, 0.432801]),
    (math.inf, [1 / 3, 1 / 3, 1 / 3]),  # DisCO
])
def test_d1_positive_weights_for_other_lambdas(lam, want):
    adv = DRPOAdvantage(max_response_tokens=C, lam=lam)(adv_input(**D1))
    assert adv[[0, 2, 3]].tolist() == pytest.approx(want, abs=1e-6)
    assert adv[[1, 4, 5]].tolist() == pytest.approx([-0.322201, -0.341441, -0.336358], abs=1e-6)


def test_d2_all_correct_group_is_dropped():
    L = [600, 1800, 3600, 7200]
    inp = adv_input([1, 1, 1, 1], L, [-0.2, -0.3, -0.4, -0.5])
    assert DRPOAdvantage(max_response_tokens=C)(inp).tolist() == [0.0] * 4
    # the discarded length weights: softmax(−L/819.2) = exp(−0.732422, −2.197266, −4.394531, −8.789063)/0.604...
    w = positive_weights(length_preference(torch.tensor(L), C), inp.correct_N, inp.group_N, 0.1)
    assert w.tolist() == pytest.approx([0.795476, 0.183846, 0.020426, 0.000252], abs=1e-6)
    J, _ = drpo_objective(inp.logp_NT, inp.mask_NT, inp.correct_N, inp.group_N, length_preference(torch.tensor(L), C),
                          0.1, 10.0)
    assert J.tolist() == [0.0]


def test_d3_all_wrong_group_is_dropped():
    inp = adv_input([0, 0, 0, 0], [1000, 2000, 3000, 4000], [-0.6, -0.7, -0.8, -0.9])
    assert DRPOAdvantage(max_response_tokens=C)(inp).tolist() == [0.0] * 4


def test_d4_single_correct():
    inp = adv_input([0, 1, 0, 0], [3000, 2000, 8192, 1000], [-0.5, -0.3, -0.8, -0.2],
                    truncated=[False, False, True, False])
    adv = DRPOAdvantage(max_response_tokens=C)(inp)
    # w = [0, 1, 0, 0]; s/τ = −0.05, −0.08, −0.02 → exp 0.951229, 0.923116, 0.980199 (sum 2.854545)
    assert adv.tolist() == pytest.approx([-0.333233, 1.0, -0.323385, -0.343382], abs=1e-6)
    logp = inp.logp_NT.clone().requires_grad_(True)
    J, _ = drpo_objective(logp, inp.mask_NT, inp.correct_N, inp.group_N, DRPOAdvantage(C).preference_of(inp),
                          0.1, 10.0)
    # J = −0.3 − 10·log(2.854545/3) = −0.3 + 0.497 = 0.197000
    assert J.item() == pytest.approx(0.197000, abs=1e-6)
    (grad,) = torch.autograd.grad(J.sum(), logp)
    # per token: −0.333233/3000, 1/2000, −0.323385/8192, −0.343382/1000
    want = [-1.110778e-04, 5.000000e-04, -3.947569e-05, -3.433818e-04]
    for i, L in enumerate([3000, 2000, 8192, 1000]):
        assert grad[i, 0].item() == pytest.approx(want[i], rel=1e-6)
        assert grad[i, L - 1].item() == pytest.approx(want[i], rel=1e-6)


@pytest.mark.parametrize("D, value, grad, half_sq, paper", [
    (2.5e-4, 3.75e-5, 0.15, 1.125e-5, 2.25e-5),  # h = 1.5e-4; coef β·h = 0.15; 0.15·2.5e-4 = 3.75e-5
    (8e-5, 0.0, 0.0, 0.0, 0.0),  # inside the trust region
])
def test_d5_kl_hinge(D, value, grad, half_sq, paper):
    beta, delta = 1e3, 1e-4
    # the loss on 2 rows of 3 tokens, A = 0, logp_old − logp = D on every token → D̂ = D
    logp = torch.tensor([[-0.5, -1.0, -0.2], [-0.3, -2.0, -0.7]], dtype=F64, requires_grad=True)
    batch = StepBatch(mask_NT=torch.ones(2, 3, dtype=F64), old_logp_NT=logp.detach() + D,
                       advantages_N=torch.zeros(2, dtype=F64), norm=LossNorm(6.0, 2.0, 1.0))
    loss, stats = DRPOLoss(beta=beta, delta=delta)(logp, batch)
    assert loss.item() == pytest.approx(value, abs=1e-12)
    assert stats["loss/kl"].item() == pytest.approx(D, abs=1e-12)
    (g,) = torch.autograd.grad(loss, logp)  # coef · ∂D/∂logp = −coef/6 per token
    assert_close(g, torch.full((2, 3), -grad / 6, dtype=F64), atol=1e-12, rtol=0)
    # the code's penalty has the gradient of (β/2)[D−δ]_+², the paper's is β[D−δ]_+² (twice as strong)
    h = max(D - delta, 0.0)
    assert beta / 2 * h * h == pytest.approx(half_sq, abs=1e-12) and beta * h * h == pytest.approx(paper, abs=1e-12)
    assert beta * h == pytest.approx(grad, abs=1e-12)


D2 = {"correct": [1, 1, 1, 1], "lengths": [600, 1800, 3600, 7200], "scores": [-0.2, -0.3, -0.4, -0.5]}
D3 = {"correct": [0, 0, 0, 0], "lengths": [1000, 2000, 3000, 4000], "scores": [-0.6, -0.7, -0.8, -0.9]}


def d6_batch(offset=2.5e-4):
    """D1, D2, D3 as one mini-batch (groups 0, 1, 2), sampled by π_old with logp_old = logp_θ + offset."""
    groups = [D1, D2, D3]
    correct, lengths, scores = ([x for g in groups for x in g[key]] for key in ("correct", "lengths", "scores"))
    inp = adv_input(correct, lengths, scores,
                    truncated=D1["truncated"] + [False] * 8, group=[0] * 6 + [1] * 4 + [2] * 4)
    logp = inp.logp_NT.clone()
    inp.logp_NT = (logp + offset) * inp.mask_NT  # sampling log-probs = π_old
    return inp, logp


def test_d6_one_mini_batch():
    inp, logp = d6_batch()
    total_L = sum(D1["lengths"] + D2["lengths"] + D3["lengths"])  # 23492 + 13200 + 10000 = 46692
    adv = DRPOAdvantage(max_response_tokens=C)(inp)  # q is invariant to the uniform offset
    batch = StepBatch(mask_NT=inp.mask_NT, old_logp_NT=inp.logp_NT, advantages_N=adv,
                       group_N=inp.group_N, correct_N=inp.correct_N)  # norm from the batch: Q = 3
    logp.requires_grad_(True)
    loss, stats = DRPOLoss()(logp, batch)
    assert stats["loss/kl"].item() == pytest.approx(2.5e-4, abs=1e-12)
    assert (loss - stats["loss/policy"]).item() == pytest.approx(3.75e-5, abs=1e-12)  # 0.15 · 2.5e-4
    (g,) = torch.autograd.grad(loss, logp)
    # per token: (∂loss/∂s_i)/L_i − 0.15/ΣL;  ∂loss/∂s_i = −(∂J/∂s_i)/3 for D1, 0 for D2 and D3
    want_ds = [-0.106935, 0.107400, -0.003960, -0.222438, 0.113814, 0.112119] + [0.0] * 8
    lengths = D1["lengths"] + D2["lengths"] + D3["lengths"]
    for i, L in enumerate(lengths):
        ds = (g[i, :L] + 0.15 / total_L) * L
        assert ds.min().item() == pytest.approx(want_ds[i], abs=1e-6)
        assert ds.max().item() == pytest.approx(want_ds[i], abs=1e-6)
        assert g[i, L:].abs().sum().item() == 0.0
    # the true policy loss −ΣJ/Q = −0.315948/3 = −0.105316 (direct objective, recipe (i))
    J, _ = drpo_objective(logp, inp.mask_NT, inp.correct_N, inp.group_N,
                          DRPOAdvantage(C).preference_of(inp), 0.1, 10.0)
    assert (-J.sum() / 3).item() == pytest.approx(-0.105316, abs=1e-6)
    assert J.tolist()[1:] == [0.0, 0.0]
    # what the official code logs: −(Σws − τ)/3 + 3.75e-5 = 10.294377/3 + 3.75e-5 = 3.431496
    assert 10.294377 / 3 + 3.75e-5 == pytest.approx(3.431496, abs=1e-6)


def mixed_batch(seed=0):
    """Five groups (ids not contiguous, sizes 3..5) with random per-token log-probs and lengths."""
    gen = torch.Generator().manual_seed(seed)
    group = torch.tensor([7, 7, 7, 2, 2, 2, 2, 9, 9, 9, 9, 9, 4, 4, 4, 5, 5, 5])
    correct = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0], dtype=F64)
    lengths = torch.randint(1, 12, (len(group),), generator=gen)
    mask = (torch.arange(12)[None, :] < lengths[:, None]).to(F64)
    logp = -torch.rand(len(group), 12, generator=gen, dtype=F64) * 2 * mask
    trunc = lengths == 11
    inp = StepBatch(reward_N=correct, group_N=group, correct_N=correct,
                         length_tokens_N=lengths - (~trunc).long(), truncated_N=trunc,
                         logp_NT=logp, mask_NT=mask)
    return inp, logp


def test_advantage_and_loss_gradient_equals_direct_objective_at_theta_old():
    inp, logp_old = mixed_batch()
    algo = DRPOAdvantage(max_response_tokens=11, lam=0.3)
    adv = algo(inp)
    logp = logp_old.clone().requires_grad_(True)
    batch = StepBatch(mask_NT=inp.mask_NT, old_logp_NT=logp.detach(), advantages_N=adv, group_N=inp.group_N)
    loss, stats = DRPOLoss()(logp, batch)  # on-policy: D = 0, the hinge is inactive
    (g_j,) = torch.autograd.grad(loss, logp)
    J, _ = drpo_objective(logp, inp.mask_NT, inp.correct_N, inp.group_N, algo.preference_of(inp), 0.3, 10.0)
    (g_i,) = torch.autograd.grad(-J.sum() / 5, logp)  # Q = 5 prompts
    assert_close(g_j, g_i, atol=1e-15, rtol=1e-12)
    assert stats["loss/kl"].item() == 0.0 and stats["ppo/clip_frac"].item() == 0.0
    assert adv[inp.group_N == 4].tolist() == [0.0] * 3 and adv[inp.group_N == 5].tolist() == [0.0] * 3


@pytest.mark.parametrize("kl_type, offset", [("kl", 0.0), ("kl", 3e-4), ("low_var_kl", 3e-2)])
def test_micro_batches_with_global_norm_add_up_to_the_full_batch(kl_type, offset):
    inp, logp_old = mixed_batch(seed=1)
    adv = DRPOAdvantage(max_response_tokens=11)(inp)
    old = (logp_old + offset) * inp.mask_NT  # uniform shift: every micro-batch has the same D̂, hinge active
    full = StepBatch(mask_NT=inp.mask_NT, old_logp_NT=old, advantages_N=adv, group_N=inp.group_N)
    norm = LossNorm(float(inp.mask_NT.sum()), float(len(adv)), 5.0)
    full.norm = norm
    loss_fn = DRPOLoss(kl_type=kl_type)
    logp = logp_old.clone().requires_grad_(True)
    whole, whole_stats = loss_fn(logp, full)
    (g_whole,) = torch.autograd.grad(whole, logp)
    order = torch.argsort(inp.mask_NT.sum(-1), descending=True)  # length-sorted, groups split up
    total, g_sum, kl = torch.zeros((), dtype=F64), torch.zeros_like(logp), 0.0
    for index in order.split(4):
        part = logp_old[index].clone().requires_grad_(True)
        value, stats = loss_fn(part, full.select(index))
        (g,) = torch.autograd.grad(value, part)
        total, kl = total + value.detach(), kl + stats["loss/kl"].item()
        g_sum[index] += g
    assert total.item() == pytest.approx(whole.item(), abs=1e-12)
    assert kl == pytest.approx(whole_stats["loss/kl"].item(), abs=1e-12)
    assert_close(g_sum, g_whole, atol=1e-14, rtol=1e-10)
    if offset:
        assert whole.item() != pytest.approx(whole_stats["loss/policy"].item(), abs=1e-9)  # hinge is on


# ---------------------------------------------------------------- 2.1.6 edge cases
def test_single_response_group_is_dropped():
    inp = adv_input([1, 1, 0], [10, 20, 30], [-0.1, -0.2, -0.3], group=[0, 0, 1], width=40)
    assert DRPOAdvantage(max_response_tokens=40)(inp).tolist() == [0.0, 0.0, 0.0]


def test_truncated_correct_is_a_positive_with_the_smallest_weight_and_negative_lengths_do_not_matter():
    # correct: L = 100 (ended with EOS) and a truncated one (L = C = 128, r_l = 0); negatives of any length
    base = {"correct": [1, 1, 0, 0], "scores": [-0.1, -0.2, -0.3, -0.4],
            "truncated": [False, True, False, True], "width": 128}
    a = DRPOAdvantage(max_response_tokens=128)(adv_input(lengths=[100, 128, 10, 128], **base))
    b = DRPOAdvantage(max_response_tokens=128)(adv_input(lengths=[100, 128, 90, 128], **base))
    # w ∝ exp((1 − 100/128)/0.1) = exp(2.1875) = 8.912903, exp(0) = 1 → 8.912903/9.912903 = 0.899121, 0.100879
    assert a[:2].tolist() == pytest.approx([0.899121, 0.100879], abs=1e-6)
    assert_close(a, b)


def test_equal_length_positives_get_uniform_weights():
    inp = adv_input([1, 1, 1, 0], [50, 50, 50, 20], [-0.1, -0.9, -0.5, -0.3], width=60)
    assert DRPOAdvantage(max_response_tokens=60)(inp).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, -1.0])


def test_empty_response_and_tiny_lambda_stay_finite():
    inp = adv_input([1, 1, 0, 0], [0, 8192, 8000, 0], [-0.1, -0.2, -0.3, -0.4], width=C)
    inp.length_tokens_N = torch.tensor([0, 8191, 7999, 0])  # rows 0 and 3: nothing sampled at all
    inp.mask_NT[0].zero_()
    inp.mask_NT[3].zero_()
    adv = DRPOAdvantage(max_response_tokens=C, lam=0.005)(inp)  # exp(1/0.005) would overflow float32/64 unshifted
    assert torch.isfinite(adv).all()
    assert adv[:2].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)  # L 1 vs 8192: all weight on the short one
    assert adv[2:].sum().item() == pytest.approx(-1.0, abs=1e-12)  # an empty negative scores 0


def test_reward_preference_replaces_the_length_reward():
    pref = torch.tensor([0.5, 0.0, 0.3, 0.1, 0.0, 0.0], dtype=F64)
    inp = adv_input(**D1, preference=pref)
    auto = DRPOAdvantage(max_response_tokens=C)(inp)
    # softmax(0.5/0.1, 0.3/0.1, 0.1/0.1) = e^5, e^3, e^1 / 171.216978 = 0.866813, 0.117310, 0.015876
    assert auto[[0, 2, 3]].tolist() == pytest.approx([0.866813, 0.117310, 0.015876], abs=1e-6)
    assert DRPOAdvantage(max_response_tokens=C, preference="reward")(inp).tolist() == auto.tolist()
    length = DRPOAdvantage(max_response_tokens=C, preference="length")(inp)
    assert length.tolist() == pytest.approx(D1_DJ_DS, abs=1e-6)
    with pytest.raises(ValueError, match="preference='reward' needs"):
        DRPOAdvantage(max_response_tokens=C, preference="reward")(adv_input(**D1))


def test_inputs_it_cannot_use_are_rejected():
    inp = adv_input(**D1)
    inp.correct_N = torch.tensor([1.0, 0.5, 0, 0, 1, 1], dtype=F64)
    with pytest.raises(ValueError, match="binary correct_N"):
        DRPOAdvantage(max_response_tokens=C)(inp)
    inp = adv_input(**D1)
    inp.logp_NT = None
    with pytest.raises(ValueError, match="sampling log-probs"):
        DRPOAdvantage(max_response_tokens=C)(inp)
    batch = StepBatch(mask_NT=torch.ones(1, 2), old_logp_NT=torch.zeros(1, 2), advantages_N=torch.ones(1),
                       norm=LossNorm(2.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="total_groups > 0"):
        DRPOLoss()(torch.zeros(1, 2), batch)


@pytest.mark.parametrize("make, message", [
    (lambda: DRPOAdvantage(max_response_tokens=0), "max_response_tokens must be an int >= 1"),
    (lambda: DRPOAdvantage(max_response_tokens=8.5), "max_response_tokens must be an int >= 1"),
    (lambda: DRPOAdvantage(C, lam=0.0), "lam must be > 0"),
    (lambda: DRPOAdvantage(C, tau=-1.0), "tau must be a finite number > 0"),
    (lambda: DRPOAdvantage(C, preference="short"), "preference='short' is not valid; choose one of auto, length, reward"),
    (lambda: DRPOLoss(beta=-1.0), "beta must be"),
    (lambda: DRPOLoss(delta=-1e-4), "delta must be"),
    (lambda: DRPOLoss(kl_type="k3"), "kl_type='k3' is not valid; choose one of kl, low_var_kl"),
])
def test_bad_settings_fail_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_negative_kl_leaves_the_penalty_off_and_stats_are_detached():
    logp = torch.tensor([[-0.5, -1.0]], dtype=F64, requires_grad=True)
    batch = StepBatch(mask_NT=torch.ones(1, 2, dtype=F64), old_logp_NT=logp.detach() - 0.1,
                       advantages_N=torch.tensor([0.5], dtype=F64), norm=LossNorm(2.0, 1.0, 1.0))
    loss, stats = DRPOLoss()(logp, batch)
    # D = −0.1 → hinge inactive; loss = −0.5 · mean(−0.5, −1.0) = 0.375
    assert loss.item() == pytest.approx(0.375, abs=1e-12) and stats["loss/kl"].item() == pytest.approx(-0.1)
    assert not any(v.requires_grad for v in stats.values()) and DRPOLoss.needs_reference is False


def test_low_var_kl_is_k3_of_old_against_theta():
    logp = torch.tensor([[-0.5, -1.0]], dtype=F64)
    old = torch.tensor([[-0.4, -1.2]], dtype=F64)
    # d = logp − old = −0.1, 0.2 → e^d − 1 − d = 0.004837, 0.021403
    assert trust_region_kl(logp, old, "low_var_kl")[0].tolist() == pytest.approx([0.004837, 0.021403], abs=1e-6)
    assert trust_region_kl(logp, old, "kl")[0].tolist() == pytest.approx([0.1, -0.2], abs=1e-12)


def test_the_yaml_builds_with_c_from_the_curriculum():
    from rlrun.wiring.cli import compose
    from rlrun.wiring.build import build

    cfg = compose(["algo=drpo"])
    adv, loss = build(cfg, "algo.advantage"), build(cfg, "algo.loss")
    assert adv.max_response_tokens == cfg.curriculum.max_new_tokens
    assert (adv.lam, adv.tau, adv.preference, loss.beta, loss.delta, loss.kl_type) == (0.1, 10.0, "auto", 1e3, 1e-4, "kl")
