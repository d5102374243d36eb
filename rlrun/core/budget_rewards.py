"""Train Long, Think Short's length reward, peaked at the curriculum's current budget (Hammoud et
al., arXiv 2508.08940 Sec. 3.3, "band" ablation Sec. 4.5; ALGORITHMS.md 3.4.3).

The budget L = B(t) is the one the curriculum states for the prompt (``meta["budget_tokens"]``,
written by every budget schedule's ``prompts``; see ``rlrun.core.budget_curricula``). When the
generation cap equals B(t) (the default) no response is longer than L and the reward is R_max l / L;
with ``curriculum.cap_tokens`` above 2 B(t) the falling side applies too.
"""
from __future__ import annotations

import torch

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
    paper's "length of response a_i (in tokens)", Sec. 3.3; it does not say whether EOS counts).
    Correctness and format are separate terms: the paper's reward is
    ``λ_c·correct + λ_ℓ·R_len + λ_f·format`` (``reward=[correct,triangular,format]`` with weights).
    Stateless. Shapes: ``length_tokens_N`` (N,) -> (N,) float32.
    """

    requires = ("stated_budget",)  # RequiresPromptFacts: a budget curriculum states it

    def __init__(self, r_max: float = 1.0, band: bool = False) -> None:
        if not r_max > 0:
            raise ValueError(f"r_max={r_max} must be > 0")
        self.r_max, self.band = float(r_max), bool(band)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        missing = [p.uid for p in rollouts.problems if "budget_tokens" not in p.meta]
        if missing:
            raise ValueError(f"problem {missing[0]} has no stated budget (meta['budget_tokens']); the "
                             "triangular reward needs a budget curriculum, e.g. curriculum=budget_exponential")
        budget_B = torch.tensor([p.meta["budget_tokens"] for p in rollouts.problems], dtype=torch.float64)
        budget_N = budget_B[rollouts.group_N]
        return triangular_length_reward(rollouts.length_tokens_N, budget_N, self.r_max, self.band)
