"""CANON's length advantage (rlrun/core/canon.py) against ALGORITHMS.md 2.3.4, all four rows, plus the
grouping, sorting and edge cases of 2.3.3."""
import pytest
import torch
from torch.testing import assert_close

from rlrun.core.advantages import GroupCentered
from rlrun.core.canon import CanonLength, canon_length
from rlrun.types import StepBatch

F64 = torch.float64
R = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0], dtype=F64)
L = torch.tensor([420, 510, 760, 980, 1500, 2300, 3100, 8192])
G = torch.zeros(8, dtype=torch.long)

# C_short = {0,1,2,3}: m_s = (1+0+1+1)/4 = 0.75; C_long = {4,5,6,7}: m_l = (0+1+0+0)/4 = 0.25
ROWS = [
    # μ = 1, α = 1: short R − m_l = R − 0.25; long R − m_s = R − 0.75
    ((1.0, 1.0), [0.75, -0.25, 0.75, 0.75, -0.75, 0.25, -0.75, -0.75]),
    # μ = 0: short R − m_s = R − 0.75; long R − m_l = R − 0.25
    ((0.0, 1.0), [0.25, -0.75, 0.25, 0.25, -0.25, 0.75, -0.25, -0.25]),
    # μ = 0.5: short ½(R − 0.25) + ½(R − 0.75) = R − 0.5; long ½(R − 0.75) + ½(R − 0.25) = R − 0.5 (Dr. GRPO)
    ((0.5, 1.0), [0.5, -0.5, 0.5, 0.5, -0.5, 0.5, -0.5, -0.5]),
    # μ = 1, α = 0.88 (printed 0.78, −0.22, 0.13 in 2.3.4; exact): short R − 0.88·0.25 = R − 0.22
    #   → 0.78, −0.22; long 0.88 R − 0.75 → 0.88 − 0.75 = 0.13, 0 − 0.75 = −0.75
    ((1.0, 0.88), [0.78, -0.22, 0.78, 0.78, -0.75, 0.13, -0.75, -0.75]),
]


@pytest.mark.parametrize("params, want", ROWS, ids=["mu1", "mu0", "mu0.5", "eff0.88"])
def test_worked_example(params, want):
    mu, alpha = params
    got = CanonLength(mu=mu, alpha=alpha).of(R, G, L)
    assert_close(got, torch.tensor(want, dtype=F64), atol=1e-6, rtol=0)


def test_half_weight_is_dr_grpo_and_divisor_scales():
    assert_close(CanonLength(mu=0.5).of(R, G, L), GroupCentered().of(R, G))
    # the released script's Z = 8192 (seq-mean-token-sum) is the μ = 1 row / 8192: 0.75/8192 = 9.155273e-5
    assert_close(CanonLength(divisor=8192.0).of(R, G, L), CanonLength().of(R, G, L) / 8192.0)
    assert CanonLength(divisor=8192.0).of(R, G, L)[0].item() == pytest.approx(9.155273e-5, rel=1e-6)


def test_shuffled_interleaved_groups_and_beta():
    # the example's group a in a shuffled order, interleaved with group b (G = 3, odd: mid = 1)
    perm = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
    r_b = torch.tensor([1.0, 0.0, 1.0], dtype=F64)
    l_b = torch.tensor([30, 10, 20])  # sorted: row1 (10) short; rows 2 (20), 0 (30) long
    reward = torch.cat([R[perm], r_b])
    length = torch.cat([L[perm], l_b])
    group = torch.cat([torch.full((8,), 7), torch.full((3,), 3)])
    got = CanonLength(mu=1.0, alpha=1.0, beta=0.1).of(reward, group, length)
    # group a, μ = 1, β = 0.1: short R − 0.25 − 0.1; long R − 0.75 + 0.1
    want_a = torch.tensor([0.65, -0.35, 0.65, 0.65, -0.65, 0.35, -0.65, -0.65], dtype=F64)[perm]
    # group b: m_s = 0 (row1), m_l = (1 + 1)/2 = 1; short: 0 − 1 − 0.1 = −1.1; long: R − 0 + 0.1 = 1.1
    want_b = torch.tensor([1.1, -1.1, 1.1], dtype=F64)
    assert_close(got, torch.cat([want_a, want_b]), atol=1e-12, rtol=0)


def test_equal_lengths_keep_batch_order():
    # all lengths equal: the first ⌊4/2⌋ = 2 rows are the short half. R = [0, 1, 1, 1]:
    # m_s = 0.5, m_l = 1; μ = 1: short R − 1 → (−1, 0); long R − 0.5 → (0.5, 0.5)
    got = CanonLength().of(torch.tensor([0.0, 1.0, 1.0, 1.0]), torch.zeros(4, dtype=torch.long),
                           torch.full((4,), 7))
    assert got.tolist() == [-1.0, 0.0, 0.5, 0.5]


def test_single_completion_group_has_zero_means():
    # G = 1: both means 0 → μ = 1: long α R + β = 1·0.7 = 0.7 (μ = 0.3: 0.3·0.7 + 0.7·0.7 = 0.7)
    with pytest.warns(UserWarning, match="single completion"):
        got = CanonLength().of(torch.tensor([0.7]), torch.tensor([0]), torch.tensor([5]))
    assert got.tolist() == pytest.approx([0.7])


def test_reads_the_batch_length_and_checks_arguments():
    batch = StepBatch(reward_N=R.float(), group_N=G, length_tokens_N=L)
    assert canon_length(batch) is batch.length_tokens_N
    got = CanonLength()(batch)
    assert got.dtype == torch.float32 and got[5].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="mu must be in"):
        CanonLength(mu=1.5)
    with pytest.raises(ValueError, match="divisor"):
        CanonLength(divisor=0.0)
    with pytest.raises(ValueError, match="1-D of one length"):
        CanonLength().of(R, G, L[:3])
