"""Dr. GRPO (algo=dr_grpo) against ALGORITHMS.md 1.3.7 Ex. 1-2 and the edge cases of 1.3.6: the
centred advantage (rlrun.core.advantages.GroupCentered) with the constant-normaliser loss
(ClippedSurrogate, aggregation seq_mean_token_sum_norm, C = generation budget)."""
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from rlrun.core.advantages import GroupCentered, GroupNormalized
from rlrun.core.losses import ClippedSurrogate
from rlrun.types import StepBatch

# Ex. 1: G = 4, rewards [1, 0, 0, 0], lengths [3, 5, 2, 6], C = 8
REWARD = torch.tensor([1.0, 0.0, 0.0, 0.0])
GROUP = torch.zeros(4, dtype=torch.long)
LENGTH = [3, 5, 2, 6]
C = 8


def per_token_weights(advantages, aggregation, norm_constant=None):
    """−d loss / d logp at rho = 1 (logp = old_logp): one weight per row (equal over its tokens)."""
    mask = torch.zeros(4, max(LENGTH))
    for row, n in enumerate(LENGTH):
        mask[row, :n] = 1.0
    logp = torch.full(mask.shape, -1.0, dtype=torch.float64, requires_grad=True)
    batch = StepBatch(mask_NT=mask, old_logp_NT=logp.detach().clone(), advantages_N=advantages)
    loss, _ = ClippedSurrogate(aggregation=aggregation, norm_constant=norm_constant)(logp, batch)
    loss.backward()
    grad = -logp.grad
    for row, n in enumerate(LENGTH):  # every token of a row gets the same weight, padding none
        assert torch.allclose(grad[row, :n], grad[row, 0].expand(n)) and grad[row, n:].abs().sum() == 0
    return loss.item(), grad[:, 0].tolist()


def test_ex1_advantages():
    # GRPO: mean 0.25, sample std sqrt(0.75/3) = 0.5 -> 0.75/0.500001 = 1.499997, −0.25/0.500001 = −0.499999
    assert GroupNormalized(eps=1e-6).of(REWARD, GROUP).tolist() == pytest.approx(
        [1.499997, -0.499999, -0.499999, -0.499999], abs=1e-6)
    # Dr. GRPO: r − mean = [0.75, −0.25, −0.25, −0.25]
    assert GroupCentered().of(REWARD, GROUP).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25], abs=1e-6)


def test_ex1_per_token_weights_and_loss():
    grpo_a = GroupNormalized(eps=1e-6).of(REWARD, GROUP)
    dr_a = GroupCentered().of(REWARD, GROUP)
    # GRPO seq-mean-token-mean A/(G|o|): 1.499997/12, −0.499999/20, −0.499999/8, −0.499999/24
    _, w = per_token_weights(grpo_a, "seq_mean_token_mean")
    assert w == pytest.approx([0.125000, -0.025000, -0.062500, -0.020833], abs=1e-6)
    # Dr. GRPO A/(G C): 0.75/32 = 0.0234375, −0.25/32 = −0.0078125 for every wrong row
    loss, w = per_token_weights(dr_a, "seq_mean_token_sum_norm", norm_constant=C)
    assert w == pytest.approx([0.023438, -0.007812, -0.007812, -0.007812], abs=1e-6)
    # loss at rho = 1: −(1/4)(3·0.75 − 5·0.25 − 2·0.25 − 6·0.25)/8 = −(1/4)(−1)/8 = 0.031250
    assert loss == pytest.approx(0.031250, abs=1e-6)
    # DAPO token-mean A/Σ|o| = A/16: 1.499997/16 = 0.093750, −0.499999/16 = −0.031250
    _, w = per_token_weights(grpo_a, "token_mean")
    assert w == pytest.approx([0.093750, -0.031250, -0.031250, -0.031250], abs=1e-6)


def test_ex2_all_correct_group_is_zero():
    assert GroupCentered().of(torch.tensor([1.0, 1.0, 1.0]), torch.zeros(3, dtype=torch.long)).tolist() == [0, 0, 0]


def test_reward_scale_is_kept():
    # rewards [2, 0]: Dr. GRPO ±1; GRPO 1/(sqrt(2) + 1e-6) = ±0.707106
    group = torch.zeros(2, dtype=torch.long)
    assert GroupCentered().of(torch.tensor([2.0, 0.0]), group).tolist() == pytest.approx([1, -1], abs=1e-6)
    assert GroupNormalized().of(torch.tensor([2.0, 0.0]), group).tolist() == pytest.approx(
        [0.707106, -0.707106], abs=1e-6)


def test_singleton_group_keeps_the_reward():
    # verl convention: mu = 0 -> A = r
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert GroupCentered().of(torch.tensor([0.7]), torch.tensor([0])).tolist() == pytest.approx([0.7])


def test_the_option_uses_the_constant_normaliser_of_the_budget():
    conf = Path(__file__).resolve().parents[2] / "conf"
    algo = yaml.safe_load((conf / "algo" / "dr_grpo.yaml").read_text())
    assert algo["advantage"]["_target_"] == "rlrun.core.advantages.GroupCentered"
    assert {"loss": "clipped_sum_norm"} in algo["defaults"]  # the loss option, then the algo's own keys
    loss = {**yaml.safe_load((conf / "algo" / "loss" / "clipped_sum_norm.yaml").read_text()), **algo["loss"]}
    assert loss["aggregation"] == "seq_mean_token_sum_norm"
    assert loss["norm_constant"] == "${curriculum.max_new_tokens}"
    assert loss["kl_coef"] == 0.0
