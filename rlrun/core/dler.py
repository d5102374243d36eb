"""DLER's pieces (Liu et al., "DLER: Doing Length pEnalty Right", arXiv 2510.15110; ALGORITHMS.md 1.5):
the truncation reward and its difficulty-aware variant, batch-wise reward normalisation (the paper's
sequence-level Eq. 3 and the released code's token-weighted whitening) and the offline
update-selective weight merge.

Dynamic sampling is ``rlrun.core.dapo.DynamicSampling(metric="reward")``; clip-higher, dual clip and
the KL are options of ``rlrun.core.losses.ClippedSurrogate``.

Batch statistics are over the rows the advantage receives: the kept completions of the step **on
this rank**. verl computes them on the driver over the whole batch of all data-parallel ranks. With
one process the two agree; with several, the estimators sum their statistics over ranks with
``collectives.reduce_sum`` (``UsesCollectives``, set by the runtime; called on every rank, also with
zero rows); with one process's collectives (``LOCAL``) each rank would standardise with its own. Per-rank statistics are noisier estimates of the same
quantities (every rank holds B/world groups); the difference shrinks with the per-rank batch but
makes a multi-GPU run not bitwise the verl computation.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from rlrun.core.advantages import GroupCentered
from rlrun.core.collectives import LOCAL, Collectives
from rlrun.core.rewards import Gate, check_gate, gated
from rlrun.types import StepBatch

STD_KINDS = ("sample", "population")
MERGE_SCOPES = ("global", "per_tensor")
MASKED_MEAN_EPS = 1e-8  # verl masked_mean: sum / (mask.sum() + 1e-8)
BOOST_TOLERANCE = 1e-5  # verl boost_high_score_advantages: score >= threshold - 1e-5


class TruncationReward:
    """DLER's truncation length penalty folded into the outcome reward (arXiv 2510.15110 Sec. 2-3;
    ALGORITHMS.md 1.5.3): ``R'_i = correct_i`` if the completion finished within the generation cap,
    else ``truncated_coef * correct_i``:

        R'_i = correct_i * s_i,   s_i = truncated_coef if truncated_i else 1     (gate=correct, the paper)
        R'_i = correct_i + (s_i − 1)                                        (gate=all)

    (``correct + gated(s − 1)``, ``rlrun.core.rewards.gated``: with ``all`` a wrong truncated completion
    gets ``truncated_coef − 1``, −1 with the paper's 0.) Paper: ``truncated_coef = 0`` (reward 0 beyond the limit L_T = the generation cap, 4000).
    Released code (``stop_properly_penalty.penalty_coef``): 0.1. The code grades the cut text, so a
    truncated completion counts as correct only if its answer survived the cut; rlrun's verifier
    does the same with ``correct_N``.
    Shapes: ``correct_N``, ``truncated_N`` (N,) -> (N,) float32.
    """

    def __init__(self, truncated_coef: float = 0.0, gate: Gate = "correct") -> None:
        if not 0.0 <= truncated_coef <= 1.0:
            raise ValueError(f"truncated_coef must be in [0, 1], got {truncated_coef}")
        self.truncated_coef, self.gate = float(truncated_coef), check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        correct_N = batch.correct_N.to(torch.float64)
        scale_N = torch.where(batch.truncated_N.bool(), self.truncated_coef, 1.0).to(torch.float64)
        return (correct_N + gated(scale_N - 1.0, correct_N, self.gate)).to(torch.float32)


def tier_limits(ratio_N: torch.Tensor, ratio_bounds: Sequence[float], limits_tokens: Sequence[int]) -> torch.Tensor:
    """Difficulty-Aware DLER's truncation length per row (arXiv 2510.15110 Sec. 3.5): with bounds
    ``d_1 < ... < d_k`` and limits ``l_0 .. l_k``, ``limit = l_j`` for ``d_j <= p < d_{j+1}``
    (``d_0 = -inf``, ``d_{k+1} = +inf``). Paper: bounds [0.5], limits [4000, 2000] (p >= 0.5, the
    easier questions, get 2000). Shapes: ``ratio_N`` (N,) -> (N,) long.
    """
    bounds = torch.tensor(list(ratio_bounds), dtype=torch.float64)
    index_N = torch.searchsorted(bounds, ratio_N.to(torch.float64).contiguous(), right=True)
    return torch.tensor(list(limits_tokens), dtype=torch.long)[index_N]


class DifficultyAwareTruncationReward:
    """Difficulty-Aware DLER's reward (arXiv 2510.15110 Sec. 3.5; not in the released code;
    ALGORITHMS.md 1.5.3): the truncation reward with a per-question limit chosen from the correctness
    ratio ``p = #correct / n`` of the question's completions **in this step** (``tier_limits``):

        R'_i = correct_i * fits_i,   fits_i = [not truncated_i] * [|o_i| <= limit(p_{g(i)})]   (gate=correct)
        R'_i = correct_i + (fits_i − 1)                                                  (gate=all)

    (``gate=correct`` is the paper's; ``all`` gives a wrong answer that does not fit −1.)
    ``|o_i|`` = sampled tokens including EOS (``sampled_tokens_N``: the thinking span under
    ``length.span=thinking``): the completion fits in ``limit`` iff an engine capped
    at ``limit`` tokens would have finished it. The paper gives no rule for the boundary: rlrun
    puts ``p = 0.5`` in the upper tier (shorter limit), ALGORITHMS.md 1.5.3.
    Shapes: ``batch`` / ``batch`` with N completions -> (N,) float32.
    """

    def __init__(self, ratio_bounds: Sequence[float] = (0.5,), limits_tokens: Sequence[int] = (4000, 2000),
                 gate: Gate = "correct") -> None:
        bounds, limits = list(ratio_bounds), list(limits_tokens)
        if not bounds or any(not 0.0 < b <= 1.0 for b in bounds) or bounds != sorted(set(bounds)):
            raise ValueError(f"ratio_bounds must be increasing values in (0, 1], got {bounds}")
        if len(limits) != len(bounds) + 1 or any(int(x) != x or x < 1 for x in limits):
            raise ValueError(f"limits_tokens needs {len(bounds) + 1} ints >= 1 (one per tier), got {limits}")
        self.ratio_bounds, self.limits_tokens = [float(b) for b in bounds], [int(x) for x in limits]
        self.gate = check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts, correct_N = batch, batch.correct_N.to(torch.float64)
        _, index_N = torch.unique(rollouts.group_N, return_inverse=True)
        n_groups = int(index_N.max()) + 1 if index_N.numel() else 0
        zeros_G = torch.zeros(n_groups, dtype=torch.float64)
        ratio_G = zeros_G.index_add(0, index_N, correct_N) / zeros_G.index_add(0, index_N, torch.ones_like(correct_N))
        limit_N = tier_limits(ratio_G[index_N], self.ratio_bounds, self.limits_tokens)
        fits_N = (~rollouts.truncated_N.bool() & (rollouts.sampled_tokens_N <= limit_N)).to(torch.float64)
        return (correct_N + gated(fits_N - 1.0, correct_N, self.gate)).to(torch.float32)


def _sums(values_N: torch.Tensor, weight_N: torch.Tensor, collectives: Collectives) -> tuple[float, float, float]:
    """``(Σ w, Σ w v, Σ w v²)`` in float64, summed over ranks by ``collectives.reduce_sum``."""
    sums = torch.stack([weight_N.sum(), (weight_N * values_N).sum(), (weight_N * values_N**2).sum()])
    sums = collectives.reduce_sum(sums)
    total, first, second = (float(x) for x in sums)
    return total, first, second


class BatchNormalized:
    """DLER's batch-wise reward normalisation as the paper writes it (arXiv 2510.15110 Eq. 3;
    ALGORITHMS.md 1.5.3), sequence level:

        A_i = R'_i - mean_{j in g(i)} R'_j                   (group-centred; singleton group: mean 0)
        A^norm_i = (A_i - mean_b(A)) / sqrt(var_b(A) + eps)

    over the n rows of the batch (see the module docstring for ranks). The paper states neither the
    std kind nor an epsilon: ``std="sample"`` (divide by n - 1, default: like the released code's
    ``masked_whiten(unbiased=True)`` and rlrun's GRPO) or ``"population"`` (divide by n); ``eps``
    inside the square root as in the code (1e-8). n = 1 has variance 0.
    Shapes: ``reward_N``, ``group_N`` (N,) -> (N,).
    """

    def __init__(self, std: Literal["sample", "population"] = "sample", eps: float = 1e-8) -> None:
        if std not in STD_KINDS:
            raise ValueError(f"unknown std {std!r}; choose one of {', '.join(STD_KINDS)}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.std, self.eps = std, float(eps)
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        centred_N = GroupCentered().of(inp.reward_N, inp.group_N).to(torch.float64)
        n, first, second = _sums(centred_N, torch.ones_like(centred_N), self.collectives)
        mean = first / n if n > 0 else 0.0
        squares = max(second - n * mean * mean, 0.0)
        dof = n - 1.0 if self.std == "sample" else n
        var = squares / dof if dof > 0 else 0.0
        out = inp.reward_N.dtype if inp.reward_N.is_floating_point() else torch.get_default_dtype()
        return ((centred_N - mean) / math.sqrt(var + self.eps)).to(out)


class TokenWhitened:
    """DLER's batch-wise reward normalisation as the released code runs it (verl
    ``reinforce_plus_plus_baseline`` + ``masked_whiten``; ALGORITHMS.md 1.5.3): group-centred
    advantages whitened with token weights ``w_i = |o_i|`` (the row's mask sum: sampled tokens,
    EOS included), over the batch (see the module docstring for ranks):

        A_i = R'_i - mean_{j in g(i)} R'_j                   (singleton group: mean 0)
        S = Σ_i w_i,   mu = Σ_i w_i A_i / (S + 1e-8)
        var = [Σ_i w_i (A_i - mu)² / (S + 1e-8)] · S / (S - 1)          (S/(S-1) only if S > 1)
        A^norm_i = (A_i - mu) / sqrt(var + eps) + boost · [R'_i >= boost_threshold - 1e-5]

    ``eps`` 1e-8 as verl. Long rows dominate mu and var, and mu != 0 in general. The boost is the
    code-only correct-sample bonus (``boost_high_score_advantages``; 0 in the README script and
    ``dapo_trainer.yaml``, 0.1 in ``verl-dler/dler_slurm.sh``); rlrun reads ``reward_N`` (R') for
    it, as ALGORITHMS.md 1.5.7 Ex. 1 does (the code reads the unscaled score).
    Shapes: ``reward_N``, ``group_N`` (N,), ``mask_NT`` (N, T) -> (N,).
    """

    def __init__(self, eps: float = 1e-8, boost: float = 0.0, boost_threshold: float = 1.0) -> None:
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not boost >= 0.0:
            raise ValueError(f"boost must be >= 0, got {boost}")
        self.eps, self.boost, self.boost_threshold = float(eps), float(boost), float(boost_threshold)
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        if inp.mask_NT is None or inp.mask_NT.shape[0] != inp.reward_N.shape[0]:
            raise ValueError("TokenWhitened needs inp.mask_NT with one row per completion (token weights)")
        centred_N = GroupCentered().of(inp.reward_N, inp.group_N).to(torch.float64)
        weight_N = (inp.mask_NT > 0).sum(dim=-1).to(torch.float64)
        total, first, second = _sums(centred_N, weight_N, self.collectives)
        mu = first / (total + MASKED_MEAN_EPS)
        squares = max(second - 2.0 * mu * first + mu * mu * total, 0.0)
        var = squares / (total + MASKED_MEAN_EPS) * (total / (total - 1.0) if total > 1.0 else 1.0)
        advantages_N = (centred_N - mu) / math.sqrt(var + self.eps)
        if self.boost > 0.0:
            high_N = inp.reward_N.to(torch.float64) >= self.boost_threshold - BOOST_TOLERANCE
            advantages_N = advantages_N + self.boost * high_N.to(torch.float64)
        out = inp.reward_N.dtype if inp.reward_N.is_floating_point() else torch.get_default_dtype()
        return advantages_N.to(out)


def selective_merge(
    base: Mapping[str, torch.Tensor],
    tuned: Mapping[str, torch.Tensor],
    keep_frac: float = 0.25,
    scale: float = 0.7,
    scope: Literal["global", "per_tensor"] = "global",
) -> dict[str, torch.Tensor]:
    """DLER's update-selective merging (arXiv 2510.15110 Sec. 4.6; not in the released code;
    ALGORITHMS.md 1.5.3), an offline tool on two state dicts:

        Δ = θ_tuned - θ_base;  keep the n_keep = ceil(keep_frac · d) entries of largest |Δ|
        (every entry tied with the n_keep-th largest is kept);  θ = θ_base + scale · Δ ⊙ mask.

    ``scope="global"``: d and the threshold over all floating tensors together (like TIES-merging on
    the flattened task vector; the paper does not say which); ``"per_tensor"``: per tensor.
    Non-floating tensors are taken from ``base``. Shapes: matching state dicts -> a new state dict.
    """
    if scope not in MERGE_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(MERGE_SCOPES)}")
    if not 0.0 < keep_frac <= 1.0:
        raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac}")
    if set(base) != set(tuned):
        raise ValueError(f"state dicts differ in keys: {sorted(set(base) ^ set(tuned))[:5]}")
    delta = {k: (tuned[k] - base[k]).to(torch.float64) for k in base if base[k].is_floating_point()}

    def threshold(magnitudes: torch.Tensor) -> float:
        n_keep = math.ceil(keep_frac * magnitudes.numel())
        return float(torch.topk(magnitudes, n_keep).values.min()) if n_keep else math.inf

    cut = math.inf
    if scope == "global" and delta:
        cut = threshold(torch.cat([d.abs().flatten() for d in delta.values()]))
    merged = {}
    for key, value in base.items():
        if key not in delta:
            merged[key] = value.clone()
            continue
        d = delta[key]
        cut_here = cut if scope == "global" else threshold(d.abs().flatten())
        update = torch.where(d.abs() >= cut_here, scale * d, torch.zeros_like(d))
        merged[key] = (value.to(torch.float64) + update).to(value.dtype)
    return merged
