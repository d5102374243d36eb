"""Rollout and reward metrics on hand-made sets."""
import json

import pytest
import torch

from rlrun.core.metrics import reward_metrics, rollout_metrics
from rlrun.types import Scored


def test_rollout_metrics():
    length = torch.tensor([10, 20, 30, 40, 100])
    truncated = torch.tensor([False, False, False, False, True])
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    got = rollout_metrics(length, truncated, correct)
    # acc 2/5; mean 200/5 = 40; p50 = 30 (middle); p90: position 0.9·4 = 3.6 → 40 + 0.6·(100 − 40) = 76
    # correct (10 + 30)/2 = 20; incorrect (20 + 40 + 100)/3 = 53.333333; truncated 1/5
    want = {
        "acc/train": 0.4, "length/mean_tokens": 40.0, "length/p50_tokens": 30.0, "length/p90_tokens": 76.0,
        "length/correct_mean_tokens": 20.0, "length/incorrect_mean_tokens": 53.333333,
        "length/truncated_frac": 0.2,
    }
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
        assert type(got[key]) is float


def test_empty_sets_are_zero_and_json_safe():
    # all wrong: no correct completion → length/correct_mean_tokens = 0.0 (documented), not NaN
    got = rollout_metrics(torch.tensor([3, 5]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert got["length/correct_mean_tokens"] == 0.0 and got["length/incorrect_mean_tokens"] == 4.0
    empty = rollout_metrics(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    assert set(empty.values()) == {0.0}
    json.dumps(got, allow_nan=False)
    json.dumps(empty, allow_nan=False)
    with pytest.raises(ValueError):
        rollout_metrics(torch.zeros(2), torch.zeros(3), torch.zeros(2))


def test_reward_metrics():
    scored = Scored(reward_N=torch.tensor([1.5, 0.5, 1.0, 0.0]),
                    terms={"correct": torch.tensor([1.0, 0.0, 1.0, 0.0]), "format": torch.tensor([1.0, 1.0, 0.0, 0.0])})
    # total (1.5 + 0.5 + 1 + 0)/4 = 0.75; correct 2/4; format 2/4
    assert reward_metrics(scored) == pytest.approx({"reward/total": 0.75, "reward/correct": 0.5, "reward/format": 0.5})
