"""CRF, the conciseness reward of CRM (rlrun.core.crm; ALGORITHMS.md 4.7): R = correct * [1 + alpha * c
* (s + d_q)] with hand-computed numbers, the gating of wrong answers, the s schedule and d_q. The judge
here is a table of scores (the judge is not what is tested: tests/engines/test_crm_judge.py tests it)."""
from __future__ import annotations

import pytest
import torch

from rlrun.core.crm import Anneal, ConcisenessReward, conciseness, crf, question_factor
from rlrun.core.rewards import Composite
from rlrun.types import Problem, StepBatch

# two questions, G = 3; row 2 is wrong. The judge's p per response text.
CORRECT = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
TEXTS = ["r0", "r1", "r2", "r3", "r4", "r5"]
P = {"r0": 0.0, "r1": 1.0, "r2": 0.5, "r3": 0.5, "r4": 0.2, "r5": 1.0}


class TableJudge:
    """p from the table ``P``; records the pairs it was asked about."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, questions, responses):
        self.asked += list(zip(questions, responses))
        return torch.tensor([P[r] for r in responses])


def batch(step: int) -> StepBatch:
    problems = [Problem(uid="q0", prompt="Q0", answer="a"), Problem(uid="q1", prompt="Q1", answer="b")]
    return StepBatch(problems=problems, group_size=3, texts=list(TEXTS), step=step,
                     correct_N=torch.tensor(CORRECT))


def term(difficulty: str, judge=None) -> ConcisenessReward:
    return ConcisenessReward(judge or TableJudge(), alpha=0.5, difficulty=difficulty, c_min=0.1,
                             anneal={"start": 0.0, "end": 1.0, "total_steps": 4})


def test_conciseness_maps_the_judge_score_into_the_papers_range():
    # c = 0.1 + 0.9 p: p = 0, 0.5, 0.2, 1 -> 0.1, 0.55, 0.28, 1.0 (p outside [0, 1] is clamped)
    got = conciseness(torch.tensor([0.0, 0.5, 0.2, 1.0, 1.5, -0.1]), c_min=0.1)
    torch.testing.assert_close(got, torch.tensor([0.1, 0.55, 0.28, 1.0, 1.0, 0.1]))


def test_anneal_schedule():
    # s(t) = start + (end - start) min(t / T, 1); T = 4
    up = Anneal(start=0.0, end=1.0, total_steps=4)
    assert [up(t) for t in (0, 1, 2, 4, 10)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    down = Anneal(start=1.0, end=0.2, total_steps=4)
    assert down(1) == pytest.approx(0.8)  # 1 - 0.8 * 0.25
    assert [Anneal(0.3, 0.3, 4)(t) for t in (0, 3, 9)] == [0.3, 0.3, 0.3]  # start == end: constant
    with pytest.raises(ValueError, match="total_steps"):
        Anneal(0.0, 1.0, 0)


def test_question_factor_from_the_groups_pass_rate():
    # p_hat: q0 = 2/3 (rows 0-2), q1 = 1 (rows 3-5)
    correct, group = torch.tensor(CORRECT), torch.tensor([0, 0, 0, 1, 1, 1])
    third = 1 / 3
    torch.testing.assert_close(question_factor(correct, group, "pass_rate"), torch.tensor([2 * third] * 3 + [1.0] * 3))
    torch.testing.assert_close(question_factor(correct, group, "fail_rate"), torch.tensor([third] * 3 + [0.0] * 3))
    assert question_factor(correct, group, "none").tolist() == [0.0] * 6


def test_crf_gates_wrong_answers():
    # R = correct (1 + alpha c (s + d)): 1 (1 + 0.5 * 1 * (1 + 1)) = 2; a wrong answer with c = 1 gets 0
    got = crf(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), 1.0, torch.tensor([1.0, 1.0]), 0.5)
    assert got.tolist() == [2.0, 0.0]


@pytest.mark.parametrize("difficulty,expected", [
    # step 1: s = 0.25; alpha = 0.5; c = [0.1, 1.0, -, 0.55, 0.28, 1.0]
    # pass_rate d = [2/3]*3 + [1]*3: row 0: 1 + 0.5*0.1*(0.25 + 2/3) = 1.0458333; row 1: 1 + 0.5*0.91667
    # = 1.4583333; row 3: 1 + 0.5*0.55*1.25 = 1.34375; row 4: 1 + 0.5*0.28*1.25 = 1.175; row 5: 1.625
    ("pass_rate", [1.0458333, 1.4583333, 0.0, 1.34375, 1.175, 1.625]),
    # fail_rate d = [1/3]*3 + [0]*3: 1 + 0.05*0.58333 = 1.0291667; 1 + 0.5*0.58333 = 1.2916667;
    # 1 + 0.5*0.55*0.25 = 1.06875; 1 + 0.5*0.28*0.25 = 1.035; 1 + 0.5*0.25 = 1.125
    ("fail_rate", [1.0291667, 1.2916667, 0.0, 1.06875, 1.035, 1.125]),
    # none d = 0: 1 + 0.05*0.25 = 1.0125; 1 + 0.5*0.25 = 1.125; then as fail_rate's q1 rows
    ("none", [1.0125, 1.125, 0.0, 1.06875, 1.035, 1.125]),
])
def test_term_on_a_step(difficulty, expected):
    judge = TableJudge()
    got = term(difficulty, judge)(batch(step=1))
    torch.testing.assert_close(got, torch.tensor(expected))
    # only correct rows are judged, each with its own question
    assert judge.asked == [("Q0", "r0"), ("Q0", "r1"), ("Q1", "r3"), ("Q1", "r4"), ("Q1", "r5")]


def test_metrics_are_the_steps_mean_judge_score():
    reward = Composite({"crm": {"weight": 1.0, "fn": term("pass_rate")}})
    assert reward.metrics() == {"reward/crm/judge_score": 0.0, "reward/crm/judged_frac": 0.0, "reward/crm/s": 0.0}
    reward(batch(step=2))
    # judged p = 0, 1, 0.5, 0.2, 1 -> mean 2.7 / 5 = 0.54 (5 of 6 judged); s(2) = 0.5
    got = reward.metrics()
    assert got["reward/crm/judge_score"] == pytest.approx(0.54) and got["reward/crm/judged_frac"] == 5 / 6
    assert got["reward/crm/s"] == 0.5
    reward(batch(step=2).select(torch.tensor([0, 1, 2])))  # a second round of the same step adds up
    got = reward.metrics()  # (2.7 + 0 + 1) / 7, 7 of 9 judged
    assert got["reward/crm/judge_score"] == pytest.approx(3.7 / 7) and got["reward/crm/judged_frac"] == 7 / 9
    reward(batch(step=3).select(torch.tensor([2])))  # a new step starts over; nothing judged: 0
    assert reward.metrics() == {"reward/crm/judge_score": 0.0, "reward/crm/judged_frac": 0.0, "reward/crm/s": 0.75}


def test_all_wrong_asks_the_judge_nothing():
    judge = TableJudge()
    step = batch(step=0).with_columns(correct_N=torch.zeros(6))
    assert term("pass_rate", judge)(step).tolist() == [0.0] * 6 and judge.asked == []


@pytest.mark.parametrize("change,message", [
    ({"difficulty": "hard"}, "difficulty='hard' is not one of"),
    ({"c_min": 1.5}, "c_min=1.5 must be in"),
    ({"alpha": -1.0}, "alpha=-1.0 must be"),
    ({"judge": "not a judge"}, "is not callable"),
])
def test_bad_settings_fail_in_one_line(change, message):
    settings = {"judge": TableJudge(), "alpha": 0.5, "difficulty": "pass_rate", "c_min": 0.1,
                "anneal": {"start": 0.0, "end": 1.0, "total_steps": 4}} | change
    with pytest.raises(ValueError, match=message):
        ConcisenessReward(**settings)
