"""CRM / CRF: a conciseness reward scored by a second model, paid only to correct answers
(Wang et al., "Efficient Reasoning via Reward Model", arXiv 2511.09158; ALGORITHMS.md 4.7).

The Conciseness Reward Function (as an ICLR reviewer transcribed it; the paper's own equation and
code are not public):

    R̂_i = R_i^o · [1 + α · c_i · (s + d_q)]

``R_i^o`` the outcome reward (here the verifier's correctness, 0/1, so a wrong answer gets 0 whatever
its conciseness: the paper's gating), ``c_i ∈ [0.1, 1.0]`` the Conciseness Reward Model's score of
completion i, ``s`` an annealing coefficient over training, ``d_q`` a per-question difficulty factor
of i's question q, ``α`` a weight. The schedule of ``s``, the definition of ``d_q`` and ``α`` are not
public; rlrun's choices, each an explicit setting (``conf/reward/crm.yaml``):

- ``c_i = c_min + (1 − c_min) · p_i`` with ``p_i ∈ [0, 1]`` the judge's score (:mod:`rlrun.engines.judge`)
  and ``c_min = 0.1``: the paper's range [0.1, 1.0] read as a 1-10 rating divided by 10, the
  affine map keeps the judge's order, and even the least concise correct answer keeps a bonus.
- ``s(t) = s_start + (s_end − s_start) · min(t / T, 1)`` at the 0-based step t over T steps
  (``total_steps: ${steps}``, the run's length): linear, constant when ``start == end``. Shipped
  0 → 1, a warm-up: early on the outcome decides, as Kimi k1.5 warms up its length penalty
  (arXiv 2501.12599 Sec. 2.3.3), against the "training collapse" the paper is about.
- ``d_q`` from the question's group in the step (the G completions of q, ``group_N``), with p̂_q
  their mean correctness: ``pass_rate`` d_q = p̂_q (shipped), ``fail_rate`` d_q = 1 − p̂_q (the
  literal "difficulty"), ``none`` d_q = 0. Shipped ``pass_rate``: more weight on conciseness where
  the model already solves the question, less where it struggles. With ``fail_rate`` an all-correct
  group has d_q = 0 and, at s = 0, no conciseness signal at all, on exactly the easy questions
  models overthink (ALGORITHMS.md 4.8); on a hard question a larger bonus spread pushes a verbose
  but correct answer towards the group mean, the length collapse the paper warns of. It is the
  direction of DLER's and Train Long, Think Short's difficulty-aware budgets (harder, longer).
- ``α = 0.5``: with s, d_q ≤ 1 the factor α (s + d_q) ≤ 1, so the spread between the most and the
  least concise correct answer, α (s + d_q) (1 − c_min) ≤ 0.9, stays below the gap between any
  correct answer and a wrong one (≥ 1): conciseness never outweighs correctness.

Shapes: ``correct_N`` (N,) 0/1, ``c_N`` (N,), ``d_N`` (N,) -> (N,) float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlrun.types import StepBatch

DIFFICULTIES = ("pass_rate", "fail_rate", "none")


class Judge(Protocol):
    """Scores how concise each response is: ``p_i ∈ [0, 1]`` per (question, response) pair
    (:mod:`rlrun.engines.judge`: a sequence classifier or a causal LM asked Yes/No)."""

    def __call__(self, questions: list[str], responses: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Anneal:
    """``s(t) = start + (end − start) · min(t / total_steps, 1)``, t the 0-based step."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"anneal.total_steps={self.total_steps} must be >= 1")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.start + (self.end - self.start) * min(step / self.total_steps, 1.0)


def crf(correct_N: torch.Tensor, c_N: torch.Tensor, s: float, d_N: torch.Tensor,
        alpha: float) -> torch.Tensor:
    """``R̂_i = R_i^o · [1 + α · c_i · (s + d_q)]`` (module docstring), ``R^o = correct_N``."""
    correct = correct_N.to(torch.float32)
    return correct * (1.0 + alpha * c_N.to(torch.float32) * (s + d_N.to(torch.float32)))


def conciseness(score_N: torch.Tensor, c_min: float) -> torch.Tensor:
    """``c_i = c_min + (1 − c_min) · p_i``: the judge's ``p_i ∈ [0, 1]`` into [c_min, 1]."""
    return c_min + (1.0 - c_min) * score_N.to(torch.float32).clamp(0.0, 1.0)


def question_factor(correct_N: torch.Tensor, group_N: torch.Tensor, difficulty: str) -> torch.Tensor:
    """``d_q`` per row: p̂_q (``pass_rate``), 1 − p̂_q (``fail_rate``) or 0 (``none``), with p̂_q the
    mean correctness of the batch's rows of question q (its group)."""
    correct = correct_N.to(torch.float32)
    if difficulty == "none":
        return torch.zeros_like(correct)
    groups = group_N.to(torch.long)
    size = int(groups.max()) + 1 if len(groups) else 0
    total = torch.zeros(size).index_add_(0, groups, correct)
    count = torch.zeros(size).index_add_(0, groups, torch.ones_like(correct))
    rate = (total / count.clamp(min=1.0))[groups]
    return rate if difficulty == "pass_rate" else 1.0 - rate


class ConcisenessReward:
    """The CRF term (module docstring): ``fn(batch) -> R̂_N``. It holds correctness: use it alone
    (``reward=crm``) or beside pure length/format terms, never with ``correct``.

    The judge sees the question (``batch.problems[g].prompt``) and the response (``batch.texts``)
    of the **correct** rows only: a wrong answer's R̂ is 0 whatever its score, so it is not judged.
    Metrics (``HasMetrics``, logged ``reward/<term>/<key>``): ``judge_score``, the mean p_i over the
    completions judged in the step (0 when none), ``judged_frac`` the share of the step's completions
    judged (the correct ones), ``s`` the step's s.
    """

    def __init__(self, judge: Judge, alpha: float, anneal: Anneal | dict[str, Any],
                 difficulty: str, c_min: float) -> None:
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty={difficulty!r} is not one of {', '.join(DIFFICULTIES)}")
        if not 0.0 <= c_min <= 1.0:
            raise ValueError(f"c_min={c_min} must be in [0, 1] (the paper's c_i is in [0.1, 1.0])")
        if alpha < 0:
            raise ValueError(f"alpha={alpha} must be >= 0")
        if not callable(judge):
            raise ValueError(f"judge {judge!r} is not callable: give a judge node (rlrun.engines.judge)")
        self.judge = judge
        self.alpha, self.difficulty, self.c_min = float(alpha), difficulty, float(c_min)
        self.anneal = anneal if isinstance(anneal, Anneal) else Anneal(**anneal)
        self._step, self._sum, self._count, self._rows = -1, 0.0, 0, 0

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        correct = batch.correct_N.to(torch.float32)
        rows = torch.nonzero(correct > 0).flatten().tolist()
        score = torch.zeros(len(batch))
        if rows:
            groups = batch.group_N.tolist()
            questions = [batch.problems[groups[i]].prompt for i in rows]
            judged = torch.as_tensor(self.judge(questions, [batch.texts[i] for i in rows]), dtype=torch.float32)
            if judged.shape != (len(rows),):
                raise ValueError(f"the judge returned shape {tuple(judged.shape)} for {len(rows)} responses")
            score[rows] = judged.cpu()
        if batch.step != self._step:
            self._step, self._sum, self._count, self._rows = batch.step, 0.0, 0, 0
        self._sum += float(score[rows].sum()) if rows else 0.0
        self._count += len(rows)
        self._rows += len(batch)
        d = question_factor(correct, batch.group_N, self.difficulty)
        return crf(correct, conciseness(score, self.c_min), self.anneal(batch.step), d, self.alpha)

    def metrics(self) -> dict[str, float]:
        return {"judge_score": self._sum / self._count if self._count else 0.0,
                "judged_frac": self._count / self._rows if self._rows else 0.0, "s": self.anneal(max(self._step, 0))}
