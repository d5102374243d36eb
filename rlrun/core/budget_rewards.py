"""Train Long, Think Short's reward terms (Hammoud et al., arXiv 2508.08940 Sec. 3.3; ALGORITHMS.md
3.4.3): the length reward peaked at the curriculum's current budget ("band" ablation Sec. 4.5) and the
format reward with partial credit for the ``<think>`` and ``<answer>`` spans. The paper's reward is

    r_i = λ_c · R_cor · c_i + λ_ℓ · R_len(ℓ_i) + λ_f · R_fmt(a_i)

``reward=[correct,triangular,tlts_format]`` with the λ as the terms' weights (conf/reward/triangular.yaml).

The budget L = B(t) is the one the curriculum states for the prompt (``meta["budget_tokens"]``,
written by every budget schedule's ``prompts``; see ``rlrun.core.budget_curricula``). When the
generation cap equals B(t) (the default) no response is longer than L and the reward is R_max l / L;
with ``curriculum.cap_tokens`` above 2 B(t) the falling side applies too.
"""
from __future__ import annotations

import re

import torch

from rlrun.core.rewards import Gate, check_gate, gated
from rlrun.types import StepBatch


def triangular_length_reward(length_N: torch.Tensor, budget_N: torch.Tensor, r_max: float = 1.0,
                             band: bool = False) -> torch.Tensor:
    """Train Long, Think Short's length reward (arXiv 2508.08940 Sec. 3.3; "band" Sec. 4.5), L = B(t):

        R_len(l) = R_max l / L            0 <= l <= L   (band: R_max)
                 = R_max (1 - (l - L)/L)   L < l <= 2L
                 = 0                       l > 2L

    E.g. L = 87: l = 80 -> 0.919540, 120 -> 0.620690, 87 -> 1, 200 -> 0. Shapes: (N,), (N,) -> (N,) float32.
    """
    length = length_N.to(torch.float64)
    budget = budget_N.to(torch.float64)
    rising = torch.ones_like(length) if band else length / budget
    falling = (1.0 - (length - budget) / budget).clamp(min=0.0)
    return (r_max * torch.where(length <= budget, rising, falling)).to(torch.float32)


class TriangularLengthReward:
    """The reward term ``R_len(l_i)`` of :func:`triangular_length_reward` with ``L`` = the prompt's
    stated budget (``meta["budget_tokens"]``) and ``l`` = the response's tokens without EOS (the
    paper's "length of response a_i (in tokens)", Sec. 3.3; it does not say whether EOS counts;
    ``length.span=thinking`` counts the thinking trace, its Fig. 1). Correctness and format are
    separate terms (module docstring). ``gate``: ``all`` (the paper: a wrong answer at the budget
    earns its length reward too, §3.4.7 row 3) or ``correct`` (a wrong answer gets 0).
    Stateless. Shapes: ``length_tokens_N`` (N,) -> (N,) float32.
    """

    requires = ("stated_budget",)  # RequiresPromptFacts: a budget curriculum states it

    def __init__(self, r_max: float = 1.0, band: bool = False, gate: Gate = "all") -> None:
        if not r_max > 0:
            raise ValueError(f"r_max={r_max} must be > 0")
        self.r_max, self.band, self.gate = float(r_max), bool(band), check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        missing = [p.uid for p in rollouts.problems if "budget_tokens" not in p.meta]
        if missing:
            raise ValueError(f"problem {missing[0]} has no stated budget (meta['budget_tokens']); the "
                             "triangular reward needs a budget curriculum, e.g. curriculum=budget_exponential")
        budget_B = torch.tensor([p.meta["budget_tokens"] for p in rollouts.problems], dtype=torch.float64)
        budget_N = budget_B[rollouts.group_N]
        reward_N = triangular_length_reward(rollouts.length_tokens_N, budget_N, self.r_max, self.band)
        return gated(reward_N, batch.correct_N, self.gate)


def tag_spans(text: str, open_tag: str, close_tag: str) -> list[tuple[int, int]]:
    """The non-overlapping ``open_tag … close_tag`` spans of ``text``, shortest first (``re.finditer``
    of ``open.*?close``, DOTALL) as ``(start, end)`` character offsets."""
    pattern = re.escape(open_tag) + ".*?" + re.escape(close_tag)
    return [m.span() for m in re.finditer(pattern, text, flags=re.DOTALL)]


class TagFormatReward:
    """Train Long, Think Short's format reward (arXiv 2508.08940 Sec. 3.3; ALGORITHMS.md 3.4.3), partial
    credit per tag pair:

        R_fmt(a) = α_think · I_think + α_answer · I_answer

    ``I_think`` = 1 iff the text holds exactly one ``<think>…</think>`` span (non-overlapping, shortest
    match: a nested or repeated block is not well-formed); ``I_answer`` likewise for ``<answer>…</answer>``,
    and 0 when that span overlaps the think span (an answer inside the reasoning). "Exactly one" is
    torchtune's GRPO recipe (``shaped_correctness_reward``: +5 for one think, +5 for one answer), the
    code base the paper built on (its own code is not released). Tags are configurable (the paper's
    defaults; the built-in task answers in ``\\boxed{}``, so with the defaults I_answer is 0 there).
    α_think = α_answer = 0.5 make R_fmt ∈ {0, 0.5, 1} (the paper states no values; §3.4.7's example).
    Reads ``texts`` only, no correctness, no length. Shapes: N texts -> (N,) float32.
    """

    def __init__(self, alpha_think: float = 0.5, alpha_answer: float = 0.5, think_open: str = "<think>",
                 think_close: str = "</think>", answer_open: str = "<answer>",
                 answer_close: str = "</answer>") -> None:
        if not (alpha_think >= 0 and alpha_answer >= 0):
            raise ValueError(f"alpha_think={alpha_think} and alpha_answer={alpha_answer} must be >= 0")
        tags = {"think_open": think_open, "think_close": think_close, "answer_open": answer_open,
                "answer_close": answer_close}
        empty = [k for k, v in tags.items() if not v]
        if empty:
            raise ValueError(f"{empty[0]} must be a non-empty tag")
        self.alphas = (float(alpha_think), float(alpha_answer))
        self.think, self.answer = (think_open, think_close), (answer_open, answer_close)

    def indicators(self, text: str) -> tuple[float, float]:
        """``(I_think, I_answer)`` of one text (class docstring)."""
        think, answer = tag_spans(text, *self.think), tag_spans(text, *self.answer)
        i_think = len(think) == 1
        overlaps = i_think and len(answer) == 1 and answer[0][0] < think[0][1] and think[0][0] < answer[0][1]
        return float(i_think), float(len(answer) == 1 and not overlaps)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        flags = torch.tensor([self.indicators(t) for t in batch.texts], dtype=torch.float64).reshape(-1, 2)
        return (flags @ torch.tensor(self.alphas, dtype=torch.float64)).to(torch.float32)
