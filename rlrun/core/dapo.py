"""DAPO's pieces (Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
arXiv 2503.14476; ALGORITHMS.md 1.4): dynamic sampling (the keep decision; the loop refills), overlong
filtering, the +-1 correctness reward and the soft overlong punishment.

Clip-higher and the token-level loss are options of ``rlrun.core.losses.ClippedSurrogate``
(``clip_high: 0.28``, ``aggregation: token_mean``); the advantage is GRPO's
(``rlrun.core.advantages.GroupNormalized``). DLER (``rlrun.core.dler``) reuses ``DynamicSampling``.
"""
from __future__ import annotations

from typing import Literal

import torch

from rlrun.core.rewards import CorrectReward, Gate, check_gate, gated
from rlrun.types import StepBatch

FILTER_METRICS = ("acc", "reward")


def _group_index(group_N: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index 0..n_groups-1 of each row (group ids may be any integers, any order)."""
    _, index_N = torch.unique(group_N, return_inverse=True)
    return index_N, (int(index_N.max()) + 1 if index_N.numel() else 0)


def varied_groups(values_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
    """DAPO's keep rule per row (Eq. 11, Algorithm 1 line 6; verl ``filter_groups``): a row is kept
    iff its group's values are not all equal, or its group has a single row:

        keep_i = (max_{j in g(i)} v_j > min_{j in g(i)} v_j)  or  n_{g(i)} = 1.

    verl tests ``np.std(values) > 0``; for equal values that is the same test except where
    floating-point rounding makes the std of equal numbers non-zero (``np.std([0.1]*3)`` is 1.4e-17,
    so verl keeps such a constant group); max > min is exact, so rlrun drops it.
    Shapes: ``values_N`` (N,), ``group_N`` (N,) integer -> bool (N,).
    """
    if values_N.shape != group_N.shape or values_N.dim() != 1:
        raise ValueError(f"values {tuple(values_N.shape)} and groups {tuple(group_N.shape)} must be "
                         "1-D of the same length")
    index_N, n_groups = _group_index(group_N)
    values = values_N.detach().to(torch.float64)
    empty_G = torch.empty(n_groups, dtype=torch.float64, device=values.device)
    high_G = empty_G.scatter_reduce(0, index_N, values, "amax", include_self=False)
    low_G = empty_G.scatter_reduce(0, index_N, values, "amin", include_self=False)
    count_G = torch.zeros(n_groups, dtype=torch.long, device=values.device).index_add(
        0, index_N, torch.ones_like(index_N))
    return ((high_G > low_G) | (count_G == 1))[index_N]


# What the loop does when max_rounds rounds did not fill the step: stop with an error (verl), or train
# on the groups that were kept (and say so in rollout/rounds and a warning).
WHEN_SHORT = ("error", "train")


class DynamicSampling:
    """DAPO's dynamic sampling, the keep decision (arXiv 2503.14476 Eq. 11 constraint
    ``0 < |{o_i : is_equivalent(a, o_i)}| < G``, Algorithm 1 lines 4-8; ALGORITHMS.md 1.4.3):
    keep a group iff its filter metric varies inside the group (``varied_groups``), i.e. drop the
    groups whose advantages would all be zero. Also DLER's filter (arXiv 2510.15110 Sec. 3.3, metric
    ``reward``; ALGORITHMS.md 1.5.3).

    ``metric`` picks the per-completion value compared inside a group:

    - ``acc``: the verifier's ``correct_N`` (verl ``metric=acc``; the paper's constraint; DAPO's
      released script). A group that is all correct is dropped even when a length term makes its
      rewards differ.
    - ``reward``: the shaped ``reward_N`` (verl ``seq_final_reward``; DLER's ``seq_reward`` when the
      reward has no term besides the score). All-correct groups of different lengths survive when
      a length term is in the reward.

    ``max_rounds`` (verl ``max_num_gen_batches``, >= 1) is read by the loop, which implements the
    refill (``rlrun.runtime.sampling.sample``): a step samples its prompts (per rank: B / world), keeps the
    varied groups, and while fewer groups than prompts are kept samples as many new prompts (the
    data moves on: dropped prompts are consumed), at most ``max_rounds`` rounds; then the first
    kept groups fill the batch and surplus kept groups are discarded (verl). Still short after
    ``max_rounds`` rounds, verl raises (its ``max_num_gen_batches = 0`` means unlimited; rlrun has
    no such sentinel) and so does the loop. ``max_rounds = 1`` means no refill: the step trains on
    the groups kept in one round. The filter itself is stateless: it judges one round.

    Shapes: ``inp`` fields (N,) -> bool keep mask (N,); whole groups are kept or dropped.
    """

    def __init__(
        self, metric: Literal["acc", "reward"] = "acc", max_rounds: int = 10, when_short: str = "error"
    ) -> None:
        if when_short not in WHEN_SHORT:
            raise ValueError(f"when_short={when_short!r} is not one of {', '.join(WHEN_SHORT)}")
        if metric not in FILTER_METRICS:
            raise ValueError(f"unknown dynamic-sampling metric {metric!r}; choose one of "
                             f"{', '.join(FILTER_METRICS)}")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1 (sampling rounds per step), got {max_rounds!r}")
        self.metric = metric
        self.max_rounds = max_rounds
        self.when_short = when_short

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        values_N = inp.correct_N if self.metric == "acc" else inp.reward_N
        return varied_groups(values_N, inp.group_N)


class NotTruncated:
    """The rows DAPO's overlong filtering trains on (arXiv 2503.14476 Sec. 3.4; ALGORITHMS.md
    1.4.3): ``train_i = not truncated_i``. Meant for a row selection applied **after** the advantage
    (group statistics include truncated rows; their loss is masked, and they leave the loss
    denominators). Shapes: ``inp.truncated_N`` (N,) -> bool (N,).
    """

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        return ~inp.truncated_N.bool()


class SignedCorrectReward(CorrectReward):
    """DAPO's rule-based reward (arXiv 2503.14476 Eq. 7; verl ``math_dapo.compute_score``):
    ``R_i = +1`` if correct else ``-1``, i.e. ``2 correct_i - 1``. A correctness term (a subclass of
    ``CorrectReward``), so it is not part of ``Scored.preference_N``.
    Shapes: ``batch.correct_N`` (N,) -> (N,) float32.
    """

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        return 2.0 * batch.correct_N.to(torch.float32) - 1.0


def soft_overlong_penalty(length_N: torch.Tensor, max_N: torch.Tensor, cache_tokens: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476 Eq. 13; ALGORITHMS.md 1.4.3), with
    ``|y|`` = ``length_N``, L_max = ``max_N``, L_cache = ``cache_tokens``:

        R_length = 0                          if |y| <= L_max - L_cache
                 = ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
                 = -1                         if |y| > L_max
                 = clamp(((L_max - L_cache) - |y|) / L_cache, -1, 0).

    verl's overlong buffer is the same up to L_max and not floored beyond (unreachable there).
    Shapes: ``length_N``, ``max_N`` (N,) -> (N,) float32.
    """
    if cache_tokens < 1:
        raise ValueError(f"cache_tokens must be >= 1, got {cache_tokens}")
    expected = max_N.to(torch.float64) - float(cache_tokens)
    penalty = (expected - length_N.to(torch.float64)) / float(cache_tokens)
    return penalty.clamp(-1.0, 0.0).to(torch.float32)


class OverlongSoftPunishment:
    """DAPO's soft overlong punishment as a reward term (arXiv 2503.14476 Eq. 13, see
    ``soft_overlong_penalty``). L_max is each completion's generation cap (``budget_tokens_N``, what
    the curriculum gave the engine), L_cache = ``cache_tokens`` (paper 4096 with L_max 20480).
    ``|y|`` counts the sampled tokens **including EOS** (verl's attention-mask length,
    ALGORITHMS.md 1.4.3; ``sampled_tokens_N``, the thinking span under ``length.span=thinking``), so a
    truncated completion has ``|y| = L_max`` and gets -1. The term's weight is verl's
    ``overlong_buffer.penalty_factor`` (1.0). ``gate``: ``all`` (the paper: every answer) or ``correct``
    (a wrong answer gets 0).

    Raises ValueError when a cap is not larger than ``cache_tokens`` (the "expected maximum length"
    L_max - L_cache would be <= 0 and every completion punished).
    Shapes: ``batch`` with N completions -> (N,) float32 in [-1, 0].
    """

    def __init__(self, cache_tokens: int, gate: Gate = "all") -> None:
        if isinstance(cache_tokens, bool) or not isinstance(cache_tokens, int) or cache_tokens < 1:
            raise ValueError(f"cache_tokens must be an int >= 1 (L_cache in tokens), got {cache_tokens!r}")
        self.cache_tokens, self.gate = cache_tokens, check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        max_N = rollouts.budget_tokens_N
        if bool((max_N <= self.cache_tokens).any()):
            raise ValueError(
                f"overlong_soft: cache_tokens={self.cache_tokens} must be smaller than the generation "
                f"cap (smallest {int(max_N.min())}); set reward.terms.overlong_soft.fn.cache_tokens")
        penalty_N = soft_overlong_penalty(rollouts.sampled_tokens_N, max_N, self.cache_tokens)
        return gated(penalty_N, batch.correct_N, self.gate)
