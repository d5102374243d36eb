"""PEAR (ALGORITHMS.md 4.6.7): both worked examples through ``reward=[correct,pear]`` and GRPO's
advantages, from per-token entropies as the trainer hands them over (``policy_NT``)."""
from __future__ import annotations

import pytest
import torch

from rlrun.core.advantages import GroupNormalized
from rlrun.core.pear import PhaseEntropyPenalty
from rlrun.core.rewards import Composite, CorrectReward
from rlrun.types import Problem, StepBatch

MARK, EOS, TOK = 9, 2, 5  # a one-token </think> (Qwen3, R1-distill)


def example(term, entropies, marker_at, correct, eos=True):
    ids, width = [], max(map(len, entropies))
    for h, at in zip(entropies, marker_at):
        row = [TOK] * len(h)
        if at is not None:
            row[at] = MARK
        if eos:
            row[-1] = EOS
        ids.append(row)
    table = torch.zeros(len(entropies), width)
    for i, h in enumerate(entropies):
        table[i, : len(h)] = torch.tensor(h)
    return StepBatch(problems=[Problem("q", "p", "1")], group_size=len(ids), prompt_ids=[[1]], completion_ids=ids,
                     think_end_ids=(MARK,), length_tokens_N=torch.tensor([len(r) - eos for r in ids]),
                     truncated_N=torch.tensor([not eos] * len(ids)), correct_N=torch.tensor(correct),
                     policy_NT={term.request.key: table})


def reward_of(term):
    return Composite({"correct": {"weight": 1.0, "fn": CorrectReward()}, "pear": {"weight": 1.0, "fn": term}})


def test_example_p1():
    term = PhaseEntropyPenalty(alpha=1.0)
    batch = example(term, [[1.2, 0.8, 0.6, 0.4, 0.0, 0.3, 0.2, 0.1], [0.3, 0.2, 0.4, 0.1, 0.05, 0.5, 0.4],
                           [1.5, 1.4, 1.3, 0.2, 0.9], [0.9, 0.7, 0.5]], [4, 4, 3, None], [1.0, 1.0, 0.0, 1.0])
    # 1: H_think (1.2+.8+.6+.4)/4 = .75, H_answer (.3+.2+.1)/3 = .2, P = .55; 2: .25 vs .45 -> P = 0
    # 3: wrong (P = 1.4 − .9 = .5 unused); 4: no marker, all three tokens: .7, P = .7
    assert term.penalty(batch).tolist() == pytest.approx([0.55, 0.0, 0.5, 0.7], abs=1e-6)
    scored = reward_of(term)(batch)
    assert scored.reward_N.tolist() == pytest.approx([0.45, 1.0, 0.0, 0.3], abs=1e-6)
    # GRPO: mean 0.4375, sample std 0.419076, eps 1e-6
    advantages = GroupNormalized(eps=1e-6)(batch.with_columns(reward_N=scored.reward_N))
    assert advantages.tolist() == pytest.approx([0.029827, 1.342234, -1.043960, -0.328102], abs=1e-6)
    assert term.metrics() == {"below_wrong_frac": 0.0}


def test_example_p2_a_correct_answer_below_a_wrong_one():
    term = PhaseEntropyPenalty(alpha=1.0)
    batch = example(term, [[2.0, 1.8, 1.6, 1.8, 0.1, 0.3, 0.3], [1.0, 1.0]], [4, None], [1.0, 0.0])
    scored = reward_of(term)(batch)  # H_think 1.8, H_answer .3, P = 1.5, r = −0.5
    assert scored.reward_N.tolist() == pytest.approx([-0.5, 0.0], abs=1e-6)
    advantages = GroupNormalized(eps=1e-6)(batch.with_columns(reward_N=scored.reward_N))
    assert advantages.tolist() == pytest.approx([-0.707105, 0.707105], abs=1e-6)
    assert term.metrics() == {"below_wrong_frac": 0.5}


def test_edges_multi_token_marker_drop_last_and_empty_phases():
    term = PhaseEntropyPenalty(alpha=0.5)
    marker = (7, 8)
    ids = [[5, 5, 7, 8, 5, EOS], [7, 8, 5, EOS], [5, 5, 7, 8]]  # the third truncated, marker last
    table = torch.tensor([[1.0, 0.6, 9.0, 9.0, 0.4, 0.2], [9.0, 9.0, 0.5, 0.1, 0, 0], [0.4, 0.2, 9.0, 9.0, 0, 0]])
    batch = StepBatch(problems=[Problem("q", "p", "1")], group_size=3, prompt_ids=[[1]], completion_ids=ids,
                      think_end_ids=marker, length_tokens_N=torch.tensor([5, 3, 4]),
                      truncated_N=torch.tensor([False, False, True]), correct_N=torch.ones(3),
                      policy_NT={term.request.key: table})
    # 1: think (1.0+.6)/2 = .8, answer (.4+.2)/2 = .3 (EOS in it), P = .8 − .15 = .65
    # 2: empty thinking -> 0, P = max(0, 0 − .5·.3) = 0; 3: think .3, empty answer -> 0, P = .3
    assert term.penalty(batch).tolist() == pytest.approx([0.65, 0.0, 0.3], abs=1e-6)
    literal = PhaseEntropyPenalty(no_marker="drop_last")
    plain = example(literal, [[0.9, 0.7, 0.5]], [None], [1.0])
    assert literal.penalty(plain).tolist() == pytest.approx([0.8], abs=1e-6)  # (0.9 + 0.7)/2
    with pytest.raises(ValueError, match="no_marker='none'"):
        PhaseEntropyPenalty(no_marker="none")
