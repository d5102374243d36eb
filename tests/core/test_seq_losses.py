"""GSPO, LUSPO, CISPO and SAPO (rlrun/core/seq_losses.py) on hand-computed examples, their gradients
against the formulas (GSPO-token's against sequence-level GSPO's, CISPO's against sg(ŵ)·A·∇log π), and
the contract they share with the clipped surrogate (micro-batches add up, A = 0 is no loss, KL)."""
import math

import pytest
import torch
from torch.testing import assert_close

from rlrun.core.losses import AGGREGATIONS, ClippedSurrogate, k3
from rlrun.core.seq_losses import CISPO, GSPO, LUSPO, SAPO, sequence_log_ratio
from rlrun.types import StepBatch
from test_losses import _random_batch as random_batch, check_micro_batches_add_up  # tests/core's shared checks

F64 = torch.float64


def _example():
    """Two completions: o0 (3 tokens, A = +1), o1 (2 tokens + padding, A = −1).
    log r = logp − old: o0 (0.2, 0, 0.3), o1 (0.1, −0.5); r = (1.221403, 1, 1.349859), (1.105171, 0.606531)."""
    logp = torch.tensor([[-0.5, -1.0, -0.2], [-0.3, -2.0, 0.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[-0.7, -1.0, -0.5], [-0.4, -1.5, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    batch = StepBatch(mask_NT=mask, old_logp_NT=old, advantages_N=torch.tensor([1.0, -1.0], dtype=F64))
    return logp, batch


# ---------------------------------------------------------------- GSPO
def test_gspo_worked_example():
    logp, batch = _example()
    loss, stats = GSPO(clip_low=0.1, clip_high=0.2)(logp, batch)
    # s0 = exp((0.2 + 0 + 0.3)/3) = e^0.166667 = 1.181360: inside [0.9, 1.2] → ℓ0 = −A s0 = −1.181360
    # s1 = exp((0.1 − 0.5)/2) = e^−0.2 = 0.818731 < 0.9, A = −1: max(0.818731, 0.9) = 0.9 (clipped)
    # seq_mean_token_mean: (−1.181360 + 0.9)/2 = −0.140680; clip_frac: o1's 2 tokens of 5 = 0.4
    assert loss.item() == pytest.approx(-0.140680, abs=1e-6)
    assert stats["loss/policy"].item() == pytest.approx(-0.140680, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.4)
    assert stats["loss/kl"].item() == 0.0
    loss.backward()
    # o0: ∂/∂logp_t = (1/2)(1/3)(−A s0) = −1.181360/6 = −0.196893 on each token; o1 clipped: 0
    assert_close(logp.grad, torch.tensor([[-0.196893] * 3, [0.0, 0.0, 0.0]], dtype=F64), atol=1e-6, rtol=0)


def test_gspo_paper_clip_range_clips_both():
    logp, batch = _example()
    loss, stats = GSPO()(logp, batch)  # ε = 3e-4 / 4e-4: s0 → 1.0004, s1 → 0.9997
    # (−1.0004 + 0.9997)/2 = −0.00035; every token is in a clipped sequence
    assert loss.item() == pytest.approx(-0.00035, abs=1e-9)
    assert stats["ppo/clip_frac"].item() == 1.0


def _gspo_sequence_form(logp, batch, clip_low, clip_high):
    """GSPO as the paper writes it: one ratio per sequence, the mean over sequences."""
    m = batch.mask_NT
    s = torch.exp(((logp - batch.old_logp_NT) * m).sum(-1) / m.sum(-1))
    a = batch.advantages_N
    per_seq = torch.maximum(-a * s, -a * s.clamp(1 - clip_low, 1 + clip_high))
    return per_seq, m.sum(-1)


def test_gspo_token_gradient_equals_gspo_gradient_and_luspo_weights_by_length():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 1, 3, 6, 2, 4])
    mask = (torch.arange(6) < lengths[:, None]).to(F64)
    old = -torch.rand(6, 6, generator=gen, dtype=F64) * 3
    logp0 = old + (torch.rand(6, 6, generator=gen, dtype=F64) - 0.5) * 0.6
    batch = StepBatch(mask_NT=mask, old_logp_NT=old, advantages_N=torch.randn(6, generator=gen, dtype=F64))
    for cls, weight in ((GSPO, lambda n: torch.ones_like(n)), (LUSPO, lambda n: n)):
        ours = logp0.clone().requires_grad_(True)
        loss, stats = cls(clip_low=0.05, clip_high=0.05)(ours, batch)
        loss.backward()
        ref = logp0.clone().requires_grad_(True)
        per_seq, n = _gspo_sequence_form(ref, batch, 0.05, 0.05)
        want = (weight(n) * per_seq).mean()
        want.backward()
        assert_close(loss, want)
        assert_close(ours.grad, ref.grad)
        assert 0.0 < stats["ppo/clip_frac"].item() < 1.0  # some sequences clipped, some not


def test_gspo_on_policy_is_grpo_with_sequence_mean():
    # at logp = old every ratio is 1: GSPO's value and gradient are the clipped surrogate's (seq_mean_token_mean)
    logp, batch = _example()
    batch.old_logp_NT = logp.detach().clone()
    ours, _ = GSPO()(logp, batch)
    ours.backward()
    grad, logp.grad = logp.grad.clone(), None
    theirs, _ = ClippedSurrogate()(logp, batch)
    theirs.backward()
    assert_close(ours, theirs)
    assert_close(grad, logp.grad)


def test_sequence_log_ratio_value_and_empty_row():
    logp = torch.tensor([[-0.5, -1.0, -0.2], [0.0, 0.0, 0.0]], dtype=F64)
    old = torch.tensor([[-0.7, -1.0, -0.5], [1.0, 1.0, 1.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=F64)
    # row 0: mean log r = 0.5/3 = 0.166667 on every position; row 1 has no token: 0
    assert_close(sequence_log_ratio(logp, old, mask),
                 torch.tensor([[0.5 / 3] * 3, [0.0] * 3], dtype=F64))


# ---------------------------------------------------------------- LUSPO
def test_luspo_worked_example():
    logp, batch = _example()
    loss, stats = LUSPO(clip_low=0.1, clip_high=0.2)(logp, batch)
    # GSPO's ℓ = (−1.181360, 0.9) times the lengths (3, 2), over N' = 2 rows:
    # (3·−1.181360 + 2·0.9)/2 = (−3.544081 + 1.8)/2 = −0.872041
    assert loss.item() == pytest.approx(-0.872041, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.4)
    loss.backward()
    # o0's tokens: (1/2)(−A s0) = −0.590680 each (the 1/|o| of s is undone by |o|)
    assert_close(logp.grad[0], torch.full((3,), -0.590680, dtype=F64), atol=1e-6, rtol=0)
    assert LUSPO().aggregation == "seq_mean_token_sum" and (LUSPO().clip_low, LUSPO().clip_high) == (2e-3, 2.5e-3)


# ---------------------------------------------------------------- CISPO
def test_cispo_worked_example_and_gradient():
    logp, batch = _example()
    loss, stats = CISPO(clip_high=0.2)(logp, batch)  # no lower bound, cap 1.2
    # ŵ: o0 (min(1.221403, 1.2) = 1.2, 1, min(1.349859, 1.2) = 1.2); o1 (1.105171, 0.606531: no lower bound)
    # ℓ = −ŵ A logp: o0 (A = 1): 1.2·0.5 = 0.6, 1·1.0 = 1.0, 1.2·0.2 = 0.24 → 1.84
    #                o1 (A = −1): 1.105171·−0.3 = −0.331551, 0.606531·−2.0 = −1.213061 → −1.544613
    # token_mean: (1.84 − 1.544613)/5 = 0.059077; clip_frac: 2 cut weights of 5 tokens = 0.4
    assert loss.item() == pytest.approx(0.059077, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.4)
    loss.backward()
    # ∇ = −ŵ A / 5 on every token, clipped or not (no token loses its gradient)
    want = torch.tensor([[-1.2 / 5, -1.0 / 5, -1.2 / 5], [1.105171 / 5, 0.606531 / 5, 0.0]], dtype=F64)
    assert_close(logp.grad, want, atol=1e-6, rtol=0)


def test_cispo_lower_bound():
    logp, batch = _example()
    loss, stats = CISPO(clip_low=0.2, clip_high=0.2)(logp, batch)
    # o1's second weight 0.606531 → 0.8: o1 = −0.331551 + 0.8·−2.0 = −1.931551; (1.84 − 1.931551)/5 = −0.018310
    assert loss.item() == pytest.approx(-0.018310, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == pytest.approx(0.6)


# ---------------------------------------------------------------- SAPO
def test_sapo_worked_example_and_gradient():
    logp, batch = _example()
    loss, stats = SAPO()(logp, batch)  # τ_pos = 1 (o0, A = 1), τ_neg = 1.05 (o1, A = −1)
    # o0: σ(r − 1) = σ(0.221403, 0, 0.349859) = (0.555126, 0.5, 0.586583); f = 4σ = (2.220503, 2, 2.346333)
    #     ℓ = −f: mean = −(2.220503 + 2 + 2.346333)/3 = −2.188945
    # o1: σ(1.05 (r − 1)) = σ(0.110429, −0.413143) = (0.527579, 0.398159); f = 4σ/1.05 = (2.009826, 1.516795)
    #     ℓ = +f: mean = 1.763311
    # seq_mean_token_mean: (−2.188945 + 1.763311)/2 = −0.212817; nothing is clipped
    assert loss.item() == pytest.approx(-0.212817, abs=1e-6)
    assert stats["ppo/clip_frac"].item() == 0.0
    loss.backward()
    # ∂ℓ/∂logp = −A f'(r) r = −A 4σ(1 − σ) r; divided by N'·|o_i|
    # o0: 4σ(1−σ)r = (1.206556, 1, 1.309381) / 6 → −(0.201093, 0.166667, 0.218230)
    # o1: (1.101808, 0.581368) / 4 → +(0.275452, 0.145342)
    want = torch.tensor([[-0.201093, -0.166667, -0.218230], [0.275452, 0.145342, 0.0]], dtype=F64)
    assert_close(logp.grad, want, atol=1e-6, rtol=0)


def test_sapo_gate_at_ratio_one_has_the_plain_gradient():
    # σ'(0)·4 = 1 for any τ: on-policy SAPO steps like the unclipped surrogate
    logp, batch = _example()
    batch.old_logp_NT = logp.detach().clone()
    SAPO(tau_pos=3.0, tau_neg=7.0)(logp, batch)[0].backward()
    grad, logp.grad = logp.grad.clone(), None
    ClippedSurrogate()(logp, batch)[0].backward()
    assert_close(grad, logp.grad)


# ---------------------------------------------------------------- the shared contract
LOSSES = [
    lambda mode, kl=0.1: GSPO(clip_low=0.05, clip_high=0.05, kl_coef=kl, aggregation=mode, norm_constant=5.0),
    lambda mode, kl=0.1: LUSPO(clip_low=0.05, clip_high=0.05, kl_coef=kl),
    lambda mode, kl=0.1: CISPO(clip_low=0.1, clip_high=0.1, kl_coef=kl, aggregation=mode, norm_constant=5.0),
    lambda mode, kl=0.1: SAPO(kl_coef=kl, aggregation=mode, norm_constant=5.0),
]


def _random_batch(seed: int):
    return random_batch(seed, spread=0.5)


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize("make", LOSSES, ids=["gspo", "luspo", "cispo", "sapo"])
def test_micro_batches_add_up_to_full_batch(make, mode):
    logp0, batch = _random_batch(0)
    loss_fn = make(mode)
    full_loss, full_stats = check_micro_batches_add_up(loss_fn, logp0, batch)
    # the KL term is β·agg(k3) with the loss's own aggregation
    want_kl = loss_fn._reduce(k3(logp0, batch.ref_logp_NT), batch.mask_NT, batch.norm)
    assert_close(full_stats["loss/kl"], want_kl)
    assert_close(full_loss, full_stats["loss/policy"] + 0.1 * want_kl)


@pytest.mark.parametrize("make", LOSSES, ids=["gspo", "luspo", "cispo", "sapo"])
def test_zero_advantage_rows_add_nothing_without_kl(make):
    loss_fn = make("token_mean", kl=0.0)
    assert loss_fn.zero_advantage_is_zero_loss and not make("token_mean").zero_advantage_is_zero_loss
    logp0, batch = _random_batch(1)
    batch.advantages_N = torch.zeros(7, dtype=F64)
    logp = logp0.clone().requires_grad_(True)
    loss, stats = loss_fn(logp, batch)
    loss.backward()
    assert loss.item() == 0.0 and stats["loss/policy"].item() == 0.0  # what the trainer's row skip relies on
    assert logp.grad.abs().sum().item() == 0.0


def test_kl_needs_the_reference_and_rollout_correction_weights_tokens():
    logp, batch = _example()
    with pytest.raises(ValueError, match="ref_logp_NT"):
        CISPO(kl_coef=0.01)(logp, batch)
    assert GSPO().needs_reference is False and GSPO().zero_advantage_is_zero_loss is True
    # tis with cap 1.5 on rollout log-probs that put o0's first token at π_old/π_rollout = e^1 > 1.5:
    # its CISPO term 0.6 becomes 0.6·1.5 = 0.9; loss (1.84 + 0.3 − 1.544613)/5 = 0.119077
    rollout = batch.old_logp_NT.clone()
    rollout[0, 0] -= 1.0
    loss, stats = CISPO(clip_high=0.2, rollout_correction="tis", rollout_cap=1.5)(logp, batch.with_columns(logp_NT=rollout))
    assert loss.item() == pytest.approx(0.119077, abs=1e-6)
    assert stats["rollout/is_capped_frac"].item() == pytest.approx(0.2)


def test_configuration_errors():
    with pytest.raises(ValueError, match="clip_low"):
        GSPO(clip_low=1.0)
    with pytest.raises(ValueError, match="clip_low >= 0"):
        CISPO(clip_low=-0.1)
    with pytest.raises(ValueError, match="tau_pos > 0"):
        SAPO(tau_neg=0.0)
    with pytest.raises(ValueError, match="norm_constant"):
        SAPO(aggregation="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="choose one of"):
        CISPO(aggregation="mean")
    with pytest.raises(TypeError):
        LUSPO(aggregation="token_mean")  # LUSPO is its aggregation


def test_bf16_log_probs_are_upcast():
    logp, batch = _example()
    low = logp.detach().to(torch.bfloat16).requires_grad_(True)
    for loss_fn in (GSPO(), LUSPO(), CISPO(), SAPO()):
        loss, _ = loss_fn(low, batch)
        assert loss.dtype == torch.float32 and math.isfinite(loss.item())
