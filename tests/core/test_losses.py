"""The clipped surrogate, k3 and aggregation against ALGORITHMS.md 1.1.7 (Ex. 2, Ex. 3) and 1.2.7
(Ex. 1-3), plus the micro-batch additivity that the global LossNorm guarantees."""
import math

import pytest
import torch
from torch.testing import assert_close

from rlrun.core.advantages import GroupNormalized
from rlrun.core.losses import AGGREGATIONS, ClippedSurrogate, aggregate, clipped_surrogate, k3, loss_norm
from rlrun.types import LossNorm, StepBatch

F64 = torch.float64


# ---------------------------------------------------------------- 1.1.7 Ex. 2 (G=2, eps=0.2, beta=0.04)
def _ex2():
    logp = torch.tensor([[-0.5, -1.0, -0.2], [-0.3, -2.0, 0.0]], dtype=F64)
    old = torch.tensor([[-0.7, -1.0, -0.5], [-0.4, -1.5, 0.0]], dtype=F64)
    ref = torch.tensor([[-0.6, -1.2, -0.2], [-0.3, -1.9, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    # rewards [1, 0]: mean 0.5, sample std 0.707107 → A = ±0.5/0.707108 = ±0.707106
    adv = GroupNormalized().of(torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0, 0]))
    return logp, StepBatch(mask_NT=mask, old_logp_NT=old, advantages_N=adv, ref_logp_NT=ref)


def test_ex2_per_token_surrogate_and_k3():
    logp, batch = _ex2()
    assert batch.advantages_N.tolist() == pytest.approx([0.707106, -0.707106], abs=1e-6)
    pg, clipped = clipped_surrogate(logp, batch.old_logp_NT, batch.advantages_N, 0.2, 0.2)
    # o0: ρ = e^0.2 = 1.221403 → −A·1.2 = −0.848527 (clipped); ρ = 1 → −0.707106; ρ = e^0.3 → −0.848527 (clipped)
    # o1: ρ = e^0.1 = 1.105171 → +A·ρ = 0.781473; ρ = e^−0.5 = 0.606531 → max(0.428882, 0.707106·0.8) = 0.565685 (clipped)
    assert pg[0].tolist() == pytest.approx([-0.848527, -0.707106, -0.848527], abs=1e-6)
    assert pg[1, :2].tolist() == pytest.approx([0.781473, 0.565685], abs=1e-6)
    assert clipped[0].tolist() == [True, False, True] and clipped[1, :2].tolist() == [False, True]
    # k3 = e^d − d − 1, d = ref − logp: d = −0.1 → 0.004837; −0.2 → 0.018731; 0 → 0; 0 → 0; 0.1 → 0.005171
    kl = k3(logp, batch.ref_logp_NT)
    assert kl[0].tolist() == pytest.approx([0.004837, 0.018731, 0.0], abs=1e-6)
    assert kl[1, :2].tolist() == pytest.approx([0.0, 0.005171], abs=1e-6)


def test_ex2_seq_mean_token_mean_loss_and_stats():
    logp, batch = _ex2()
    loss, stats = ClippedSurrogate(kl_coef=0.04)(logp, batch)
    # pg = mean((−0.848527 − 0.707106 − 0.848527)/3, (0.781473 + 0.565685)/2) = mean(−0.801387, 0.673579) = −0.063904
    # kl = mean((0.004837 + 0.018731)/3, 0.005171/2) = mean(0.007856, 0.002585) = 0.005221
    # loss = −0.063904 + 0.04·0.005221 = −0.063695; clip_frac = 3 clipped of 5 tokens = 0.6
    assert stats["loss/policy"].item() == pytest.approx(-0.063904, abs=1e-6)
    assert stats["loss/kl"].item() == pytest.approx(0.005221, abs=1e-6)
    assert loss.item() == pytest.approx(-0.063695, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.6, abs=1e-6)
    assert not any(v.requires_grad for v in stats.values())


@pytest.mark.parametrize(
    "mode, constant, want",
    [
        # token sums: pg −2.404160 + 1.347158 = −1.057002, kl 0.023568 + 0.005171 = 0.028739
        # token_mean: (−1.057002 + 0.04·0.028739)/5 = −0.211171
        ("token_mean", None, -0.211171),
        # seq_mean_token_sum: (−1.057002 + 0.04·0.028739)/2 = −0.527926
        ("seq_mean_token_sum", None, -0.527926),
        # seq_mean_token_sum_norm, C=4: −0.527926/4 = −0.131982
        ("seq_mean_token_sum_norm", 4.0, -0.131982),
        ("seq_mean_token_mean", None, -0.063695),
    ],
)
def test_ex2_other_aggregations(mode, constant, want):
    logp, batch = _ex2()
    loss, stats = ClippedSurrogate(kl_coef=0.04, aggregation=mode, norm_constant=constant)(logp, batch)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.6, abs=1e-6)  # token mean in every mode


# ---------------------------------------------------------------- 1.1.7 Ex. 3
def test_ex3_dual_clip_and_k3_clamp():
    logp = torch.tensor([[math.log(4.0)]], dtype=F64)
    old = torch.zeros(1, 1, dtype=F64)
    adv = torch.tensor([-1.0], dtype=F64)
    batch = StepBatch(mask_NT=torch.ones(1, 1), old_logp_NT=old, advantages_N=adv)
    # A = −1, ρ = 4: max(4, 1.2) = 4; dual clip c = 3: min(4, 3) = 3
    loss, stats = ClippedSurrogate(aggregation="token_mean")(logp, batch)
    assert loss.item() == pytest.approx(4.0, abs=1e-6) and stats["ppo/clip_frac"].item() == 0.0
    loss, stats = ClippedSurrogate(aggregation="token_mean", dual_clip=3.0)(logp, batch)
    assert loss.item() == pytest.approx(3.0, abs=1e-6) and stats["ppo/clip_frac"].item() == 1.0
    # k3, logp = −30, ref = 0: d = 30 → clamp 20 → e^20 − 21 = 4.85e8 → clamp 10
    assert k3(torch.tensor([[-30.0]], dtype=F64), torch.zeros(1, 1, dtype=F64)).item() == 10.0
    # unclamped it would be e^30 − 30 − 1 = 10686474581493.46
    assert math.exp(30.0) - 31.0 == pytest.approx(10686474581493.46, abs=0.01)


def test_log_ratio_clamp():
    # logp − old = 50 is clamped to 20 before exp: A = −1 → loss = e^20 = 485165195.409790
    batch = StepBatch(mask_NT=torch.ones(1, 1), old_logp_NT=torch.zeros(1, 1, dtype=F64),
                       advantages_N=torch.tensor([-1.0], dtype=F64))
    loss, _ = ClippedSurrogate(aggregation="token_mean")(torch.full((1, 1), 50.0, dtype=F64), batch)
    assert loss.item() == pytest.approx(math.exp(20.0), rel=1e-12)


# ---------------------------------------------------------------- 1.2.7 Ex. 1 and Ex. 2
def _table():
    values = torch.tensor(
        [
            [0.6, 0.2, 9.0, 9.0, 9.0, 9.0],  # masked positions hold junk: they must not count
            [-0.1, -0.3, -0.2, -0.4, 9.0, 9.0],
            [0.05, 0.05, 0.1, 0.1, 0.0, 0.2],
        ],
        dtype=F64,
    )
    mask = (torch.arange(6) < torch.tensor([[2], [4], [6]])).to(F64)
    return values, mask


@pytest.mark.parametrize(
    "mode, constant, want",
    [
        ("token_mean", None, 0.025),  # 0.3/12 (S = 0.8, −1.0, 0.5)
        ("seq_mean_token_mean", None, 0.077778),  # (0.4 − 0.25 + 0.083333)/3
        ("seq_mean_token_sum", None, 0.1),  # 0.3/3
        ("seq_mean_token_sum_norm", 8.0, 0.0125),  # 0.3/(3·8)
        ("seq_mean_token_sum_norm", 6.0, 0.016667),  # 0.3/(3·6), C = T = 6
    ],
)
def test_aggregation_ex1(mode, constant, want):
    values, mask = _table()
    assert aggregate(values, mask, mode, None, constant).item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    "mode, constant, want",
    [
        ("token_mean", None, -0.033333),  # (0.8 − 1.0)/6
        ("seq_mean_token_mean", None, 0.075),  # (0.4 − 0.25)/2, N' = 2
        ("seq_mean_token_sum", None, -0.1),  # −0.2/2
        ("seq_mean_token_sum_norm", 8.0, -0.0125),  # −0.2/(2·8)
    ],
)
def test_aggregation_ex2_fully_masked_row(mode, constant, want):
    values, mask = _table()
    mask[2] = 0.0
    assert loss_norm(mask) == LossNorm(total_tokens=6.0, total_rows=2.0)
    assert aggregate(values, mask, mode, None, constant).item() == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------- 1.2.7 Ex. 3 (autograd)
@pytest.mark.parametrize(
    "mode, want",
    [
        ("token_mean", [0.083333, -0.083333, 0.041667]),  # A/12
        ("seq_mean_token_mean", [0.166667, -0.083333, 0.027778]),  # A/(3·|o_i|): 1/6, −1/12, 0.5/18
        ("seq_mean_token_sum", [0.333333, -0.333333, 0.166667]),  # A/3
        ("seq_mean_token_sum_norm", [0.041667, -0.041667, 0.020833]),  # A/(3·8)
    ],
)
def test_effective_token_weights_ex3(mode, want):
    # at ρ = 1 (logp = old_logp) inside the clip region, ∂loss/∂logp_{i,t} = −w_i on every token of row i
    lengths = torch.tensor([2, 4, 6])
    mask = (torch.arange(6) < lengths[:, None]).to(F64)
    logp = torch.zeros(3, 6, dtype=F64, requires_grad=True)
    batch = StepBatch(mask_NT=mask, old_logp_NT=torch.zeros(3, 6, dtype=F64),
                       advantages_N=torch.tensor([1.0, -1.0, 0.5], dtype=F64))
    loss, _ = ClippedSurrogate(aggregation=mode, norm_constant=8.0)(logp, batch)
    loss.backward()
    for row, n in enumerate(lengths.tolist()):
        assert (-logp.grad[row, :n]).tolist() == pytest.approx([want[row]] * n, abs=1e-6)
        assert logp.grad[row, n:].abs().sum().item() == 0.0


# ---------------------------------------------------------------- micro-batches with the global norm
def _random_batch(seed: int, spread: float = 1.0):
    """7 rows of 0-6 tokens (one empty); log-probs within ±spread/2 of pi_old's (some ratios clip)."""
    gen = torch.Generator().manual_seed(seed)
    n, t = 7, 6
    lengths = torch.tensor([6, 1, 0, 4, 3, 6, 2])
    mask = (torch.arange(t) < lengths[:, None]).to(F64)
    old = -torch.rand(n, t, generator=gen, dtype=F64) * 3
    logp0 = old + (torch.rand(n, t, generator=gen, dtype=F64) - 0.5) * spread
    ref = old + (torch.rand(n, t, generator=gen, dtype=F64) - 0.5)
    adv = torch.randn(n, generator=gen, dtype=F64)
    batch = StepBatch(mask_NT=mask, old_logp_NT=old, advantages_N=adv, ref_logp_NT=ref, norm=loss_norm(mask))
    return logp0, batch


def check_micro_batches_add_up(loss_fn, logp0: torch.Tensor, batch: StepBatch):
    """The loss, its gradient and its statistics over micro-batches of whole rows, with the
    mini-batch's denominators, equal those of the whole batch; returns the whole batch's (loss, stats)."""
    full_logp = logp0.clone().requires_grad_(True)
    full_loss, full_stats = loss_fn(full_logp, batch)
    full_loss.backward()
    micro_logp = logp0.clone().requires_grad_(True)
    total = torch.zeros((), dtype=F64)
    sums = {k: torch.zeros((), dtype=F64) for k in full_stats}
    for rows in ([0, 1, 2], [3], [4, 5, 6]):
        index = torch.tensor(rows)
        loss, stats = loss_fn(micro_logp[index], batch.select(index))
        loss.backward()  # gradients accumulate on micro_logp as with gradient accumulation
        total = total + loss.detach()
        sums = {k: sums[k] + stats[k] for k in sums}
    assert_close(total, full_loss.detach())
    assert_close(micro_logp.grad, full_logp.grad)
    for key, value in full_stats.items():
        assert_close(sums[key], value)
    return full_loss, full_stats


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_micro_batches_add_up_to_full_batch(mode):
    logp0, batch = _random_batch(0)
    loss_fn = ClippedSurrogate(kl_coef=0.1, dual_clip=1.5, aggregation=mode, norm_constant=5.0)
    _, full_stats = check_micro_batches_add_up(loss_fn, logp0, batch)
    assert 0.0 < full_stats["ppo/clip_frac"].item() < 1.0


def test_norm_none_uses_the_batch_itself():
    logp, batch = _random_batch(1)
    local = StepBatch(mask_NT=batch.mask_NT, old_logp_NT=batch.old_logp_NT,
                       advantages_N=batch.advantages_N, ref_logp_NT=batch.ref_logp_NT)
    for mode in AGGREGATIONS:
        loss_fn = ClippedSurrogate(kl_coef=0.1, aggregation=mode, norm_constant=5.0)
        assert_close(loss_fn(logp, local)[0], loss_fn(logp, batch)[0])


def test_whole_batch_masked_is_zero():
    logp = torch.randn(2, 3, dtype=F64, requires_grad=True)
    batch = StepBatch(mask_NT=torch.zeros(2, 3), old_logp_NT=torch.zeros(2, 3, dtype=F64),
                       advantages_N=torch.ones(2, dtype=F64), ref_logp_NT=torch.zeros(2, 3, dtype=F64))
    for mode in AGGREGATIONS:
        loss, stats = ClippedSurrogate(kl_coef=0.1, aggregation=mode, norm_constant=4.0)(logp, batch)
        assert loss.item() == 0.0 and all(v.item() == 0.0 for v in stats.values())
        loss.backward()
        assert logp.grad.abs().sum().item() == 0.0


def test_configuration_errors_and_needs_reference():
    with pytest.raises(ValueError, match="token_mean, seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm"):
        ClippedSurrogate(aggregation="seq-mean-token-mean")
    with pytest.raises(ValueError, match="norm_constant"):
        ClippedSurrogate(aggregation="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="dual_clip"):
        ClippedSurrogate(dual_clip=0.5)
    with pytest.raises(ValueError, match="choose one of"):
        aggregate(torch.zeros(1, 1), torch.ones(1, 1), "mean")
    assert ClippedSurrogate().needs_reference is False
    assert ClippedSurrogate(kl_coef=0.001).needs_reference is True
    logp, batch = _ex2()
    batch.ref_logp_NT = None
    with pytest.raises(ValueError, match="ref_logp_NT"):
        ClippedSurrogate(kl_coef=0.04)(logp, batch)
    loss, stats = ClippedSurrogate()(logp, batch)  # no KL: the reference is not needed
    assert stats["loss/kl"].item() == 0.0 and loss.item() == pytest.approx(-0.063904, abs=1e-6)


def test_bf16_logp_is_computed_in_float32():
    logp, batch = _ex2()
    low = logp.to(torch.bfloat16).requires_grad_(True)
    loss, stats = ClippedSurrogate()(low, batch)
    assert loss.dtype == torch.float32 and stats["loss/policy"].dtype == torch.float32
    loss.backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16


def _mismatch():
    """One completion of 2 tokens, A = +1, π_train = π_old (ratio 1, no clipping): log π_train =
    (−1.0, −2.0); the rollout engine's log-probs (−1.5, −1.0)."""
    old = torch.tensor([[-1.0, -2.0]])
    batch = StepBatch(advantages_N=torch.tensor([1.0]), mask_NT=torch.ones(1, 2), old_logp_NT=old,
                      logp_NT=torch.tensor([[-1.5, -1.0]]))
    return old.clone().requires_grad_(True), batch


@pytest.mark.parametrize("mode, want_loss", [
    # ρ = (e^0.5, e^−1) = (1.648721, 0.367879); ℓ_t = −A·1 = −1 per token
    ("none", -1.0),  # mean(−1, −1)
    ("tis", -(1.5 + 0.367879) / 2),  # w = (min(1.6487, 1.5), 0.3679): −0.933940
    ("mis", -(0.0 + 0.367879) / 2),  # w = (0 as 1.6487 > 1.5, 0.3679): −0.183940
])
def test_rollout_correction_worked_example(mode, want_loss):
    logp, batch = _mismatch()
    loss, stats = ClippedSurrogate(rollout_correction=mode, rollout_cap=1.5)(logp, batch)
    assert loss.item() == pytest.approx(want_loss, abs=1e-6)
    if mode == "none":
        assert "rollout/is_capped_frac" not in stats
    else:  # 1 of the 2 tokens has a ratio above the cap
        assert stats["rollout/is_capped_frac"].item() == pytest.approx(0.5)
    loss.backward()  # the weights scale the gradient, they carry none themselves: d loss / d logp_t = −w_t / 2
    want_grad = {"none": [-0.5, -0.5], "tis": [-0.75, -0.367879 / 2], "mis": [0.0, -0.367879 / 2]}[mode]
    assert_close(logp.grad, torch.tensor([want_grad]), atol=1e-6, rtol=0)


def test_rollout_correction_needs_the_engines_log_probs_and_a_cap_above_one():
    logp, batch = _mismatch()
    with pytest.raises(ValueError, match="needs the rollout engine's log-probs"):
        ClippedSurrogate(rollout_correction="tis")(logp, batch.with_columns(logp_NT=None))
    with pytest.raises(ValueError, match="rollout_cap must be > 1"):
        ClippedSurrogate(rollout_correction="tis", rollout_cap=1.0)
    with pytest.raises(ValueError, match="choose one of none, tis, mis"):
        ClippedSurrogate(rollout_correction="is")
