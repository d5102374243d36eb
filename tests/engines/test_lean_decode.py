"""The lean decode path (rlrun/engines/rollout/lean.py) samples exactly what the plain Hugging Face
forward samples: same tokens for the same seed, log-probs within float tolerance, on the shipped
tiny model (left-padding-free prompts, GQA 4/2) and on a random policy with prompts of different
lengths (left padding), rows leaving the batch as they finish, and after a weight sync."""
from __future__ import annotations

import pytest
import torch

from rlrun.engines.rollout.hf import HFRollout
from rlrun.types import Problem

pytestmark = pytest.mark.both_venvs  # also in .venv-vllm's transformers (make test-vllm)


def pair(spec):
    return HFRollout(spec, decode="hf"), HFRollout(spec, decode="lean")


def sample_both(plain, lean, problems, group_size, budgets, seed):
    torch.manual_seed(seed)
    a = plain.generate(problems, group_size, budgets)
    torch.manual_seed(seed)
    b = lean.generate(problems, group_size, budgets)
    return a, b


def assert_same(a, b):
    assert a.completion_ids == b.completion_ids
    assert torch.equal(a.length_tokens_N, b.length_tokens_N) and torch.equal(a.truncated_N, b.truncated_N)
    torch.testing.assert_close(a.logp_NT, b.logp_NT, atol=1e-4, rtol=0)


def test_lean_decode_samples_the_same_tokens_on_the_tiny_model():
    from rlrun.tasks.arith import ArithProblems
    from rlrun.tasks.tiny_model import tiny_model_spec

    plain, lean = pair(tiny_model_spec())
    assert lean.lean is not None and plain.lean is None
    problems = ArithProblems(0).batch(0, 4)
    a, b = sample_both(plain, lean, problems, 4, [160, 100, 60, 160], seed=3)
    assert a.truncated_N.any() and not a.truncated_N.all()  # rows finish at different steps
    assert_same(a, b)


def test_lean_decode_with_left_padding_and_weight_sync(random_policy):
    plain, lean = pair(random_policy)
    problems = [Problem("a", "Hi", "1"), Problem("b", "A longer prompt here", "2"), Problem("c", "x", "3")]
    assert_same(*sample_both(plain, lean, problems, 3, [40, 25, 33], seed=0))
    weights = {k: v + 0.01 * torch.randn_like(v) for k, v in plain.model.state_dict().items()}
    plain.load_weights(weights)
    lean.load_weights(weights)
    assert_same(*sample_both(plain, lean, problems, 3, [40, 25, 33], seed=1))


def test_lean_decode_refuses_what_it_does_not_support(random_policy):
    rollout = HFRollout(random_policy, decode="hf")
    rollout.model.config.hidden_act = "gelu"
    from rlrun.engines.rollout import lean

    assert lean.supports(rollout.model) == "hidden_act 'gelu'"
    with pytest.raises(ValueError, match="lean decode does not support this model: hidden_act 'gelu'"):
        lean.LeanDecoder(rollout.model)
    with pytest.raises(ValueError, match="rollout.decode='fast'; valid: auto, lean, hf"):
        HFRollout(random_policy, decode="fast")
