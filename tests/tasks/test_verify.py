"""Boxed-answer extraction, integer comparison and the format check."""
from __future__ import annotations

import pytest
import torch

from rlrun.tasks.verify import BoxedAnswerVerifier, extract_boxed, is_well_formed, parse_integer
from rlrun.types import Problem, StepBatch


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{1055}", "1055"),
        ("\\boxed{12} then \\boxed{13}", "13"),  # the last box counts
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{{1055}}", "{1055}"),
        ("\\boxed{ 1 055 }", "1 055"),  # stripped, inner spaces kept
        ("\\boxed{-7}", "-7"),
        ("no box here", None),
        ("\\boxed{12} and a cut-off \\boxed{13", "12"),  # an unterminated box does not count
        ("\\boxed{", None),
        ("\\boxed{}", ""),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [("1055", 1055), (" 1 055 ", 1055), ("1,055", 1055), ("-7", -7), ("+7", 7), ("{1055}", 1055),
     ("1\\,055", 1055), ("10.5", None), ("abc", None), ("", None), (None, None)],
)
def test_parse_integer(answer, expected):
    assert parse_integer(answer) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\n7+8=15\n</think>\n\\boxed{1055}", True),
        ("<think></think>\\boxed{1055}", True),
        ("  <think>x</think>  \\boxed{1055}\n", True),
        ("<think>x</think>\n\\boxed{1055} extra", False),  # text after the answer
        ("<think>x</think>\n1055", False),  # no box
        ("<think>x\n\\boxed{1055}", False),  # never closed the think block
        ("x<think>x</think>\\boxed{1}", False),  # text before <think>
        ("<think>x</think>\\boxed{ }", False),  # empty answer
        ("<think>a</think><think>b</think>\\boxed{1}", False),
        ("<think>x</think>\\boxed{1}\\boxed{2}", False),
    ],
)
def test_is_well_formed(text, expected):
    assert is_well_formed(text) is expected


def test_verifier_on_rollouts():
    problems = [Problem("p0", "Add 347+708.\n", "1055"), Problem("p1", "Add 100+200.\n", "300")]
    texts = [
        "<think>\nso 1055\n</think>\n\\boxed{1055}",  # right, well formed
        "<think>\nso 1056\n</think>\n\\boxed{1056}",  # wrong, well formed
        "\\boxed{ 300 }",  # right, no think block
        "<think>\nso 300\n",  # truncated: no answer
    ]
    rollouts = StepBatch(
        problems=problems, group_size=2, prompt_ids=[[1], [1]], completion_ids=[[5]] * 4,
        texts=texts, length_tokens_N=torch.tensor([1, 1, 1, 1]),
        truncated_N=torch.tensor([False, False, False, True]),
        budget_tokens_N=torch.tensor([256] * 4),
    )
    verdicts = BoxedAnswerVerifier()(rollouts)
    torch.testing.assert_close(verdicts.correct_N, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(verdicts.format_ok_N, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert verdicts.predicted == ["1055", "1056", "300", None]
