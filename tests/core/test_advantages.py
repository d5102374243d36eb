"""Group advantages against ALGORITHMS.md 1.1.7 Ex. 1 and the edge cases of 1.1.6."""
import warnings

import pytest
import torch
from torch.testing import assert_close

from rlrun.core.advantages import GroupCentered, GroupNormalized

# Ex. 1: group a rewards [1,0,1,1], b [1,1,1,1], c a single completion [1].
REWARD = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
GROUP = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])


def _quiet(advantage, reward, group):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return advantage.of(reward, group)


def test_ex1_verl_sample_std_eps_1e6():
    # a: mean 0.75, sample std sqrt((3·0.0625 + 0.5625)/3) = 0.5
    #    A = 0.25/0.500001 = 0.499999, −0.75/0.500001 = −1.499997
    # b: all equal → 0/(0+1e-6) = 0;  c: singleton → mean 0, std 1 → 1/(1+1e-6) = 0.999999
    got = _quiet(GroupNormalized(eps=1e-6), REWARD, GROUP)
    want = [0.499999, -1.499997, 0.499999, 0.499999, 0, 0, 0, 0, 0.999999]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_ex1_trl_eps_1e4():
    # TRL row: same sample std, eps 1e-4: 0.25/0.5001 = 0.499900, −0.75/0.5001 = −1.499700
    # (TRL has no value for the singleton group c; only groups a and b are compared)
    got = GroupNormalized(eps=1e-4).of(REWARD[:8], GROUP[:8])
    assert got.tolist() == pytest.approx([0.4999, -1.4997, 0.4999, 0.4999, 0, 0, 0, 0], abs=1e-6)


def test_ex1_dr_grpo_centred():
    # "no std" row: A = r − mean: a → [0.25, −0.75, 0.25, 0.25]; b → 0; c singleton (mean 0) → 1
    # (the population-std row of Ex. 1 is not an rlrun option: rlrun uses the sample std)
    got = _quiet(GroupCentered(), REWARD, GROUP)
    assert got.tolist() == pytest.approx([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0, 1.0], abs=1e-6)


def test_group_ids_any_order_and_values():
    # the same groups, interleaved and labelled 7 / 3: same advantages row by row
    order = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])
    labels = torch.tensor([7, 7, 7, 7, 3, 3, 3, 3])[order]
    got = GroupNormalized().of(REWARD[:8][order], labels)
    assert_close(got, GroupNormalized().of(REWARD[:8], GROUP[:8])[order])


def test_all_correct_and_all_wrong_groups_are_zero():
    reward = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3])
    group = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    for advantage in (GroupNormalized(), GroupCentered()):
        assert advantage.of(reward, group).abs().max().item() < 1e-9


def test_single_correct_of_four():
    # 1.1.6: G=4, rewards [1,0,0,0]: mean 0.25, sample std sqrt(0.75/3) = 0.5 → A = +1.5, −0.5
    # (with eps: 0.75/0.500001 = 1.499997, −0.25/0.500001 = −0.499999)
    got = GroupNormalized().of(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.long))
    assert got.tolist() == pytest.approx([1.499997, -0.499999, -0.499999, -0.499999], abs=1e-6)


def test_singleton_warns_and_dtype():
    with pytest.warns(UserWarning, match="single completion"):
        got = GroupNormalized().of(torch.tensor([2, 0]), torch.tensor([0, 1]))
    # integer rewards → default float dtype; singleton: r/(1+1e-6) = 1.999998, 0
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([1.999998, 0.0], abs=1e-6)
    assert GroupNormalized().of(REWARD[:4].double(), GROUP[:4]).dtype == torch.float64


def test_bad_shapes_and_eps():
    with pytest.raises(ValueError):
        GroupNormalized().of(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        GroupNormalized(eps=-1.0)
