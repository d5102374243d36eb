"""GFPO, Group Filtered Policy Optimization (Shrivastava et al., "Sample More to Think Less",
arXiv 2508.09726; ALGORITHMS.md 2.2): sample G' completions per prompt, keep the k best by a metric
(Algorithm 1, REJECTIONSAMPLE), and compute the group-normalised advantage over the retained ones
only (Eq. 2). The filters return the keep mask the loop applies (``Filter`` protocol); the loop
then passes only the kept rows to ``RetainedGroupNormalized``, so non-retained completions are not
trained on (their advantage is 0 in the paper).

- ``ShortestK``: metric = length, ascending ("Shortest k/G").
- ``TokenEfficiencyK``: metric = reward / length, descending ("Token Efficiency").
- ``AdaptiveDifficulty``: k per prompt from the quartiles of the per-prompt mean rewards of every
  prompt seen so far (Algorithm 2), with exact quantiles.

Length convention (ALGORITHMS.md 2.0, the verl port's response mask): ``L_i = |o_i|`` counts the
response tokens **including EOS** when one was emitted, i.e. ``length_tokens_N + (not truncated)``
(the row sum of ``mask_NT``); it is never 0 for a finished response, so ``R/L`` needs no epsilon
(L is clamped to >= 1 for a truncated response of budget 0).

Ties in the metric keep the lower row index first (stable sort; ALGORITHMS.md 2.2.6, example F5).
"""
from __future__ import annotations

import bisect
import math
from typing import Literal

import torch

from rlrun.core.collectives import LOCAL, Collectives
from rlrun.types import StepBatch

BUCKETS = ("very_hard", "hard", "medium", "easy")
PAPER_KEEP = {"very_hard": 8, "hard": 8, "medium": 6, "easy": 4}  # G' = 16, paper Sec. 4 / Alg. 2
METRICS = ("length", "token_efficiency")


def _groups(group_N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense group index per row (groups in ascending id order) and rows per group, shapes (N,), (G,)."""
    _, index_N = torch.unique(group_N, return_inverse=True)
    count_G = torch.bincount(index_N, minlength=int(index_N.max()) + 1 if index_N.numel() else 0)
    return index_N, count_G


def response_length(inp: StepBatch) -> torch.Tensor:
    """``|o_i|`` with EOS: ``length_tokens_N + 1`` where the response ended with EOS (not truncated),
    clamped to >= 1; shape (N,) float64 (ALGORITHMS.md 2.0)."""
    return inp.sampled_tokens_N.to(torch.float64).clamp(min=1.0)


def metric_key(inp: StepBatch, metric: str) -> torch.Tensor:
    """Sort key of Algorithm 1, smaller = better (ALGORITHMS.md 2.2.3 recipe), shape (N,) float64:
    ``length`` -> ``L_i`` (keep shortest); ``token_efficiency`` -> ``−R_i / L_i`` (keep highest
    reward per token; signed rewards keep their sign, so a long wrong answer has a *less* negative
    ``R/L`` than a short one, as in the paper)."""
    length = response_length(inp)
    if metric == "length":
        return length
    if metric == "token_efficiency":
        return -inp.reward_N.detach().to(torch.float64) / length
    raise ValueError(f"unknown GFPO metric {metric!r}; choose one of {', '.join(METRICS)}")


def retain_top_k(key_N: torch.Tensor, group_N: torch.Tensor, k_G: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 for every group at once: in each group keep the ``k_g`` rows of smallest key, ties
    to the lower row index (stable). ``k_G`` is one k per group in ascending group-id order.

    Shapes: ``key_N`` (N,), ``group_N`` (N,) integer ids, ``k_G`` (G,) integer -> bool mask (N,).
    """
    index_N, count_G = _groups(group_N)
    by_key = torch.sort(key_N, stable=True).indices
    order = by_key[torch.sort(index_N[by_key], stable=True).indices]  # by group, then key, then row
    start_G = torch.cumsum(count_G, 0) - count_G
    rank_in_group = torch.arange(len(order)) - start_G[index_N[order]]
    keep_N = torch.zeros(len(order), dtype=torch.bool)
    keep_N[order] = rank_in_group < k_G.to(rank_in_group.dtype)[index_N[order]]
    return keep_N


def _check_k(keep: int, group_size: int | None, what: str = "keep") -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise ValueError(f"GFPO {what}={keep} must be an int >= 2 (one retained completion has std 0 "
                         "and no advantage); GFPO needs 2 <= k < G' (group_size)")
    if group_size is not None and keep >= group_size:
        raise ValueError(f"GFPO {what}={keep} with group_size={group_size}: GFPO needs k < G' "
                         f"(keep k of the G' completions sampled per prompt); lower {what} or set "
                         f"group_size > {keep}, e.g. group_size={2 * keep}")


def _check_groups(count_G: torch.Tensor, k_G: torch.Tensor, what: str) -> None:
    small = count_G <= k_G
    if bool(small.any()):
        g = int(small.nonzero()[0, 0])
        raise ValueError(f"GFPO {what}={int(k_G[g])} with group_size={int(count_G[g])}: GFPO needs "
                         f"k < G' (keep k of the G' completions sampled per prompt)")


class _TopK:
    """Keep the ``keep`` best completions of every group by ``metric`` (ALGORITHMS.md 2.2.3, Alg. 1)."""

    metric = "length"
    max_rounds = 1  # one sampling round: GFPO never refills groups

    def __init__(self, keep: int, group_size: int | None = None) -> None:
        _check_k(keep, group_size)
        self.keep = keep
        self.group_size = group_size

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        _, count_G = _groups(inp.group_N)
        k_G = torch.full_like(count_G, self.keep)
        _check_groups(count_G, k_G, "keep")
        return retain_top_k(metric_key(inp, self.metric), inp.group_N, k_G)


class ShortestK(_TopK):
    """GFPO "Shortest k/G'": keep the k shortest of the G' completions of each prompt
    (arXiv 2508.09726 Alg. 1 with metric ``|o_i|`` ascending; ALGORITHMS.md 2.2.3).

    ``keep`` = k (2 <= k < G'); ``group_size`` = G' (optional, ``${group_size}`` in the yaml) makes
    a bad k fail at construction; without it the check happens on the first call.
    Shapes: ``inp`` rows (N,) -> bool keep mask (N,) with exactly k True per group.
    """

    metric = "length"


class TokenEfficiencyK(_TopK):
    """GFPO "Token Efficiency": keep the k completions of highest ``R_i / |o_i|`` in each group
    (arXiv 2508.09726 Alg. 1, metric reward/length descending; ALGORITHMS.md 2.2.3; key ``−R/L``).

    With binary rewards every group with >= k correct answers keeps k correct ones, whose rewards
    are equal: sigma_S = 0 and no update (ALGORITHMS.md 2.2.7 F2, 2.2.9 pitfall 1). It is meant
    for signed, length-aware rewards (the paper's R in [−1, 1]).
    Shapes: ``inp`` rows (N,) -> bool keep mask (N,) with exactly k True per group.
    """

    metric = "token_efficiency"


def percentile(sorted_values: list[float], p: float) -> float:
    """Exact ``p``-th percentile (0..100) of a sorted list with linear interpolation between order
    statistics (numpy's default ``linear`` method): position ``(n − 1) p / 100``."""
    position = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class AdaptiveDifficulty:
    """GFPO Adaptive Difficulty (arXiv 2508.09726 Algorithm 2; ALGORITHMS.md 2.2.3, 2.2.5): per
    prompt, ``mu_R`` = mean reward of all its G' completions; ``mu_R`` joins the history of every
    prompt seen so far; once ready, with ``(q25, q50, q75)`` the history's quartiles,

        k = keep.very_hard if mu_R < q25 else keep.hard if mu_R < q50 else keep.medium
            if mu_R < q75 else keep.easy

    and the prompt keeps its k best completions by ``metric`` (Algorithm 1).

    Choices where the paper is silent (ALGORITHMS.md 2.2.4-2.2.6):
    - Quantiles are **exact** (all values kept, sorted; linear interpolation), not a t-digest:
      deterministic, checkpointable bit for bit, 8 bytes per prompt seen (6.4k prompts in the
      paper's run). The history is never reset.
    - ``mode="sequential"`` (Algorithm 2, default): prompts are added and classified one at a time,
      in ascending group-id order; ``mode="batch"`` (verl PR #3479): the whole step is added first.
    - Warm-up: steps ``inp.step < warmup_steps`` use ``keep.very_hard`` for every prompt (the paper's
      "a few warm-up steps with k = 8"); their means still enter the history.
    - Several ranks: pass ``gather`` (a callable mapping this rank's per-prompt means (B_r,) to the
      concatenation over ranks in rank order and the index where this rank's block starts) so that
      every rank keeps the same history (checkpoints save rank 0's); without it each rank keeps its own.
    ``keep`` maps the four buckets to k (default: the paper's 8/8/6/4 for G' = 16); every k must be
    >= 2 and < ``group_size`` (G').
    Shapes: ``inp`` rows (N,) -> bool keep mask (N,).
    """

    max_rounds = 1

    def __init__(
        self,
        keep: dict[str, int] | None = None,
        group_size: int | None = None,
        metric: Literal["length", "token_efficiency"] = "length",
        warmup_steps: int = 2,
        mode: Literal["sequential", "batch"] = "sequential",
    ) -> None:
        keep = dict(PAPER_KEEP if keep is None else keep)
        if sorted(keep) != sorted(BUCKETS):
            raise ValueError(f"GFPO adaptive keep={keep} must give k for exactly the buckets "
                             f"{', '.join(BUCKETS)}")
        for bucket in BUCKETS:
            _check_k(keep[bucket], group_size, f"keep.{bucket}")
        if metric not in METRICS:
            raise ValueError(f"unknown GFPO metric {metric!r}; choose one of {', '.join(METRICS)}")
        if mode not in ("sequential", "batch"):
            raise ValueError(f"GFPO adaptive mode={mode!r}; choose sequential or batch")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"GFPO adaptive warmup_steps={warmup_steps} must be an int >= 0")
        self.keep, self.group_size, self.metric = keep, group_size, metric
        self.warmup_steps, self.mode = warmup_steps, mode
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step
        self.history: list[float] = []  # sorted per-prompt mean rewards of every prompt seen

    def quartiles(self) -> tuple[float, float, float]:
        """``(q25, q50, q75)`` of the history (exact, linear interpolation)."""
        return tuple(percentile(self.history, p) for p in (25.0, 50.0, 75.0))  # type: ignore[return-value]

    def bucket(self, mean_reward: float) -> str:
        """The difficulty bucket of ``mean_reward`` against the current quartiles (strict ``<``)."""
        q25, q50, q75 = self.quartiles()
        if mean_reward < q25:
            return "very_hard"
        if mean_reward < q50:
            return "hard"
        return "medium" if mean_reward < q75 else "easy"

    def assign(self, mean_reward_B: list[float], step: int) -> list[int]:
        """Add the prompts' mean rewards to the history (in order) and return each prompt's k."""
        ready = step >= self.warmup_steps
        ks = []
        for value in mean_reward_B:
            bisect.insort(self.history, float(value))
            if self.mode == "sequential":
                ks.append(self.keep[self.bucket(value)] if ready else self.keep["very_hard"])
        if self.mode == "batch":
            ks = [self.keep[self.bucket(v)] if ready else self.keep["very_hard"] for v in mean_reward_B]
        return ks

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        index_N, count_G = _groups(inp.group_N)
        reward = inp.reward_N.detach().to(torch.float64)
        mean_G = torch.zeros(len(count_G), dtype=torch.float64).index_add(0, index_N, reward) / count_G
        everyone, start = self.collectives.gather_prompts(mean_G)
        ks = self.assign(everyone.tolist(), inp.step)
        k_G = torch.tensor(ks[start: start + len(mean_G)], dtype=count_G.dtype)
        _check_groups(count_G, k_G, "keep")
        return retain_top_k(metric_key(inp, self.metric), inp.group_N, k_G)

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        history = [float(v) for v in state["history"]]
        if history != sorted(history):
            raise ValueError("GFPO adaptive state: history must be sorted")
        self.history = history


class RetainedGroupNormalized:
    """GFPO's advantage over the retained set S of each group (arXiv 2508.09726 Eq. 2;
    ALGORITHMS.md 2.2.3): the loop passes only the kept rows, so every group here is S, and

        A_i = (R_i − mu_S) / sigma_S,   mu_S = mean_S(R),   sigma_S = sqrt((1/k) sum_S (R_i − mu_S)^2)

    with the **population** std (paper; ``std="sample"`` divides by k − 1 as ``torch.std`` in the
    verl/TRL ports). No epsilon: when all rewards of S are equal (sigma_S = 0) every advantage of the
    group is exactly 0 (ALGORITHMS.md 2.2.6; tested as max == min, not sigma < eps).

    Shapes: ``reward_N`` (N,) float, ``group_N`` (N,) integer ids -> ``advantages_N`` (N,), in the
    reward's floating dtype (float64 arithmetic).
    """

    def __init__(self, std: Literal["population", "sample"] = "population") -> None:
        if std not in ("population", "sample"):
            raise ValueError(f"GFPO advantage std={std!r}; choose population (paper) or sample")
        self.std = std

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        return self.of(inp.reward_N, inp.group_N)

    def of(self, reward_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
        index_N, count_G = _groups(group_N)
        reward = reward_N.detach().to(torch.float64)
        zeros_G = torch.zeros(len(count_G), dtype=torch.float64)
        count = count_G.to(torch.float64)
        mean_G = zeros_G.index_add(0, index_N, reward) / count
        sq_G = zeros_G.index_add(0, index_N, (reward - mean_G[index_N]) ** 2)
        dof = count if self.std == "population" else (count - 1).clamp(min=1.0)
        std_G = torch.sqrt(sq_G / dof)
        constant_G = (zeros_G.scatter_reduce(0, index_N, reward, "amax", include_self=False)
                      == zeros_G.scatter_reduce(0, index_N, reward, "amin", include_self=False))
        safe_G = torch.where(constant_G, torch.ones_like(std_G), std_G)
        advantages = torch.where(constant_G[index_N], torch.zeros_like(reward),
                                 (reward - mean_G[index_N]) / safe_G[index_N])
        dtype = reward_N.dtype if reward_N.is_floating_point() else torch.get_default_dtype()
        return advantages.to(dtype)
