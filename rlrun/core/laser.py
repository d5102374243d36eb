"""LASER's base reward and its fixed-target term (Liu et al., "Learn to Reason Efficiently with
Adaptive Length-based Reward Shaping", arXiv 2505.15612; ALGORITHMS.md 3.2). LASER-D / LASER-DE
(adaptive per-bucket targets and their monitor) are in ``rlrun.core.laser_d``; the ``hkust-nlp/Laser``
length controller (generation-cap schedule, not in the paper; ALGORITHMS.md 3.3) is in
``rlrun.core.laser_controller``.

Every LASER term returns the **whole** shaped reward of the paper's Eq. 2, ``R̂ = C(y) + λ(y)·S(y)``
with ``C = R`` the base reward (+1 correct, −0.5 wrong, −1 format error): use it alone
(``reward=laser``), not with ``correct``.

Length: ``len`` = sampled response tokens **including EOS** (``len(completion_ids)``), the paper
code's verl response mask (ALGORITHMS.md 3.0), not ``length_tokens_N`` (which drops EOS): a target
``L_T`` then means what it means in the paper, and a response cut at the cap has ``len = cap``.
"""
from __future__ import annotations

import torch

from rlrun.core.rewards import Gate, check_gate
from rlrun.types import StepBatch

CORRECT, WRONG, FORMAT_ERROR = 1.0, -0.5, -1.0


def base_score(correct_N: torch.Tensor, format_ok_N: torch.Tensor) -> torch.Tensor:
    """LASER's base reward R(x, y) (paper Sec. 2; code ``hf_math_verifier.compute_score``;
    ALGORITHMS.md 3.2.3): −1 if the format is wrong (whatever the answer), else +1 if correct, else
    −0.5. Shapes: (N,), (N,) -> (N,) float32."""
    ok_N = format_ok_N.bool()
    score_N = torch.where(correct_N.bool(), CORRECT, WRONG).to(torch.float32)
    return torch.where(ok_N, score_N, torch.tensor(FORMAT_ERROR))


def bonus_rows(score_N: torch.Tensor, gate: str) -> torch.Tensor:
    """Which completions may earn LASER's length bonus: ``gate=correct`` those with R = 1 (the paper's
    λ(y) = 1[R = 1], Table 2), ``gate=all`` every completion (λ(y) = 1, Table 2's length rewards
    that ignore correctness). Shapes: (N,) -> bool (N,)."""
    return score_N == CORRECT if gate == "correct" else torch.ones_like(score_N, dtype=torch.bool)


def sampled_lengths(batch: StepBatch) -> torch.Tensor:
    """``len`` of each completion: sampled tokens with EOS (verl's response mask). (N,) long."""
    return batch.sampled_tokens_N


class Laser:
    """LASER (paper Table 2 / Sec. 4; code ``compute_length_reward_larse``, type ``reward``):

        r_i = R_i + alpha · 1[R_i = 1] · 1[len_i ≤ L_T]      (gate=correct, the paper)
        r_i = R_i + alpha · 1[len_i ≤ L_T]               (gate=all: wrong and format errors too)

    R = :func:`base_score`. Paper/scripts: alpha 0.5, L_T ∈ {2048, 4096, 8192} with a 16384 context.
    Stateless. Shapes: StepBatch with N completions -> (N,) float32.
    """

    def __init__(self, target_tokens: int = 4096, alpha: float = 0.5, gate: Gate = "correct") -> None:
        if isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens < 1:
            raise ValueError(f"target_tokens must be an int >= 1, got {target_tokens!r}")
        self.target_tokens, self.alpha, self.gate = target_tokens, float(alpha), check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        score_N = base_score(batch.correct_N, batch.format_ok_N)
        short_N = sampled_lengths(batch) <= self.target_tokens
        return score_N + self.alpha * (bonus_rows(score_N, self.gate) & short_N).float()
