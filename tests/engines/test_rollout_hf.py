"""The HF rollout engine against plain Hugging Face ``generate`` and a full forward pass."""
from __future__ import annotations

import pytest
import torch

from rlrun.engines.rollout.hf import HFRollout, nucleus_filter
from rlrun.types import Problem

pytestmark = pytest.mark.both_venvs  # also in .venv-vllm's transformers (make test-vllm)

PROBLEMS = [Problem(uid=str(i), prompt=f"What is {i}+{7 * i}?" * (i + 1), answer="0") for i in range(3)]


def test_greedy_matches_generate_per_prompt(random_policy):
    rollout = HFRollout(random_policy, temperature=0)
    budgets = [20, 5, 12]
    out = rollout.generate(PROBLEMS, 2, budgets)
    assert out.budget_tokens_N.tolist() == [20, 20, 5, 5, 12, 12]
    for i, budget in enumerate(budgets):
        ids = torch.tensor([out.prompt_ids[i]])
        ref = rollout.model.generate(
            ids, max_new_tokens=budget, do_sample=False, eos_token_id=rollout.tokenizer.eos_token_id,
            pad_token_id=rollout.tokenizer.pad_token_id,
        )[0, ids.shape[1]:].tolist()
        assert out.completion_ids[2 * i] == ref  # left-padded batch == unpadded single prompt
        assert out.completion_ids[2 * i + 1] == ref  # greedy: both samples of a group agree


def test_a_batch_over_max_batch_rows_is_decoded_in_parts_with_the_same_result(random_policy):
    # 6 rows in parts of 4 and 2 (budgets 20, 20, 5, 5 | 12, 12): greedy, so the same as at once
    whole = HFRollout(random_policy, temperature=0).generate(PROBLEMS, 2, [20, 5, 12])
    parts = HFRollout(random_policy, temperature=0, max_batch_rows=4).generate(PROBLEMS, 2, [20, 5, 12])
    assert parts.completion_ids == whole.completion_ids
    assert parts.truncated_N.tolist() == whole.truncated_N.tolist()
    torch.testing.assert_close(parts.logp_NT, whole.logp_NT, rtol=0, atol=1e-5)
    # by prompt positions: prompts of 12, 24 and 39 tokens, 2 rows each; 50 positions: [12 12] (2 x 12),
    # [24 24] (a third row, 3 x 24 = 72, would not fit), [39], [39] (2 x 39 = 78)
    assert [len(p) for p in whole.prompt_ids] == [12, 24, 39]
    tokens = HFRollout(random_policy, temperature=0, max_batch_tokens=50)
    calls = []
    sample = tokens._sample
    tokens._sample = lambda rows, *a: calls.append(len(rows)) or sample(rows, *a)
    assert tokens.generate(PROBLEMS, 2, [20, 5, 12]).completion_ids == whole.completion_ids
    assert calls == [2, 2, 1, 1], calls
    with pytest.raises(ValueError, match=r"^rollout.max_batch_rows=0 and rollout.max_batch_tokens=65536 must be >= 1$"):
        HFRollout(random_policy, max_batch_rows=0)


def test_budgets_truncation_and_lengths(random_policy):
    torch.manual_seed(0)
    rollout = HFRollout(random_policy, temperature=1.0)
    eos = rollout.tokenizer.eos_token_id
    out = rollout.generate(PROBLEMS, 4, [3, 8, 30])
    for row, ids in enumerate(out.completion_ids):
        budget = int(out.budget_tokens_N[row])
        ended = ids[-1] == eos
        assert len(ids) <= budget
        assert eos not in ids[:-1]
        assert bool(out.truncated_N[row]) == (not ended)
        if not ended:
            assert len(ids) == budget
        assert int(out.length_tokens_N[row]) == len(ids) - int(ended)
    mask = out.mask_NT
    assert mask.sum(1).tolist() == [float(len(ids)) for ids in out.completion_ids]


def test_logprobs_match_full_forward(random_policy):
    torch.manual_seed(1)
    rollout = HFRollout(random_policy, temperature=1.0)
    out = rollout.generate(PROBLEMS, 2, [16, 16, 16])
    for row, ids in enumerate(out.completion_ids):
        prompt = out.prompt_ids[row // 2]
        full = torch.tensor([prompt + ids])
        logp = rollout.model(full).logits[0, len(prompt) - 1: -1].log_softmax(-1)
        ref = logp.gather(-1, torch.tensor(ids)[:, None]).squeeze(1)
        torch.testing.assert_close(out.logp_NT[row, : len(ids)], ref, atol=1e-5, rtol=0)


def test_sampling_is_reproducible_with_a_seed(random_policy):
    rollout = HFRollout(random_policy, temperature=1.0, top_p=0.9)
    torch.manual_seed(3)
    first = rollout.generate(PROBLEMS, 3, [10, 10, 10]).completion_ids
    torch.manual_seed(3)
    assert rollout.generate(PROBLEMS, 3, [10, 10, 10]).completion_ids == first


def test_nucleus_filter_keeps_smallest_set_reaching_top_p():
    # probs 0.5, 0.3, 0.15, 0.05: top_p 0.8 keeps {0.5, 0.3} (mass before 0.15 is 0.8 >= 0.8)
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))
    kept = torch.isfinite(nucleus_filter(logits, 0.8))
    assert kept.tolist() == [[False, True, False, True]]
    assert torch.isfinite(nucleus_filter(logits, 0.81)).tolist() == [[True, True, False, True]]
    assert torch.isfinite(nucleus_filter(logits, 0.3)).tolist() == [[False, True, False, False]]


def test_load_weights_streams_pairs_and_names_a_missing_or_unknown_weight(random_policy):
    from rlrun.engines.model import load_model

    engine = HFRollout(random_policy)
    state = {k: v * 0.5 for k, v in load_model(random_policy).state_dict().items()}
    engine.load_weights(iter(state.items()))  # (name, tensor) pairs, one at a time
    for key, value in engine.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    first = next(iter(state))
    with pytest.raises(ValueError, match=rf"^rollout=hf: the trainer sent no \['{first}'\] \(1 missing\)$"):
        engine.load_weights({k: v for k, v in state.items() if k != first})
    with pytest.raises(ValueError, match=r"^rollout=hf: the trainer's weight 'model.extra' is not in the rollout model$"):
        engine.load_weights({**state, "model.extra": state[first]})
