"""The thinking and answer spans of a completion (``StepBatch.thinking_tokens_N``), ``length.span``
(``rlrun.runtime.sampling.counted``) and their metrics, on hand-made token ids."""
from __future__ import annotations

import pytest
import torch

from rlrun.batch import StepBatch, find_marker
from rlrun.core.metrics import span_metrics
from rlrun.runtime.sampling import counted
from rlrun.types import Problem

EOS, MARK = 2, [7, 8]  # a two-token end-of-thinking marker, as the tiny model's characters make


def batch(ids: list[list[int]], truncated: list[bool], marker=tuple(MARK)) -> StepBatch:
    lengths = [len(c) - (not t) for c, t in zip(ids, truncated)]
    return StepBatch(problems=[Problem("q", "p", "1")], group_size=len(ids), prompt_ids=[[1]],
                     think_end_ids=marker, completion_ids=ids, texts=[""] * len(ids),
                     length_tokens_N=torch.tensor(lengths), truncated_N=torch.tensor(truncated))


def test_find_marker_first_occurrence():
    assert find_marker([5, 7, 9, 7, 8, 7, 8], MARK) == 3
    assert find_marker([5, 7], MARK) is None
    assert find_marker([7, 8], MARK) == 0
    assert find_marker([9, 8, 7], [8]) == 1


def test_spans_by_hand():
    b = batch([
        [5, 6, 7, 8, 9, 9, EOS],  # 2 thinking, marker, 2 answer, EOS: response 6
        [5, 5, 5, 5, EOS],        # no marker: all 4 thinking, answer 0
        [5, 7, 8, 9, 9, 9],       # truncated (no EOS): 1 thinking, 3 answer
        [7, 8, EOS],              # marker first: empty thinking, empty answer
        [5, 7, 9, 7, 8, EOS],     # a partial marker inside the thinking
    ], [False, False, True, False, False])
    assert b.response_tokens_N.tolist() == [6, 4, 6, 2, 5]
    assert b.thinking_tokens_N.tolist() == [2, 4, 1, 0, 3]
    assert b.answer_tokens_N.tolist() == [2, 0, 3, 0, 0]
    # means: thinking (2+4+1+0+3)/5 = 2.0, answer (2+0+3+0+0)/5 = 1.0
    assert span_metrics(b.thinking_tokens_N, b.answer_tokens_N) == {
        "length/thinking_mean_tokens": 2.0, "length/answer_mean_tokens": 1.0}


def test_without_marker_or_ids_everything_is_thinking():
    b = batch([[5, 7, 8, 5, EOS]], [False], marker=())
    assert b.thinking_tokens_N.tolist() == [4] and b.answer_tokens_N.tolist() == [0]
    plain = StepBatch(length_tokens_N=torch.tensor([3, 5]), truncated_N=torch.tensor([False, True]))
    assert plain.thinking_tokens_N.tolist() == [3, 5] and plain.answer_tokens_N.tolist() == [0, 0]


def test_counted_thinking_span_feeds_every_length():
    b = batch([[5, 6, 7, 8, 9, 9, EOS], [5, 5, 5, 5, EOS]], [False, False])
    assert b.sampled_tokens_N.tolist() == [7, 5]  # EOS counted by the terms that count it
    same = counted(b, "response")
    assert same is b
    t = counted(b, "thinking")
    assert t.length_tokens_N.tolist() == [2, 4]
    assert t.sampled_tokens_N.tolist() == [2, 4]  # the thinking span holds no EOS
    assert t.response_tokens_N.tolist() == [6, 4]  # the whole response stays known
    assert t.thinking_tokens_N.tolist() == [2, 4] and t.answer_tokens_N.tolist() == [2, 0]
    sub = t.select(torch.tensor([1]))
    assert sub.length_span == "thinking" and sub.sampled_tokens_N.tolist() == [4]
    with pytest.raises(ValueError, match="length.span='answer'"):
        counted(b, "answer")


def test_spans_found_once_and_again_when_their_columns_change():
    b = batch([[5, 7, 8, 9, EOS]], [False])
    first = b.thinking_tokens_N
    assert b.answer_tokens_N.tolist() == [1] and b._spans()[0] is first  # one search for both
    b.completion_ids = [[5, 5, 7, 8, 9, EOS]]  # a replaced column: searched again
    b.length_tokens_N = torch.tensor([5])
    assert b.thinking_tokens_N.tolist() == [2] and b.answer_tokens_N.tolist() == [1]
