"""CANON, Conditional Advantage Estimation, length variant (Chen et al., arXiv 2509.23962; ALGORITHMS.md
2.3; the formula of the released code, biuboomc/CANON ``compute_dr_length_on_mean_group_outcome_advantage``,
since the paper body was not read): each prompt's completions are split by length into a short and a
long half, and a completion is compared with the other half's mean reward (inter-group: does being
short or long pay?) and with its own half's (intra-group), mixed by μ. No direction is presumed;
α < 1 adds an efficiency bias ("CANON-Eff").
"""
from __future__ import annotations

import warnings

import torch

from rlrun.types import StepBatch


def canon_length(batch: StepBatch) -> torch.Tensor:
    """The length CANON splits by: ``length_tokens_N`` (response tokens, EOS not counted), which
    follows ``length.span`` (the loop puts the thinking span there under ``length.span=thinking``,
    ``rlrun.runtime.sampling.counted``). One function, so that the source is chosen in one place."""
    return batch.length_tokens_N


class CanonLength:
    """CANON's advantage by response length (ALGORITHMS.md 2.3.3; the paper's Eq. 5 mixing weight μ,
    "mu in Eq. 5", and Eq. 8 weight α, "alpha in Eq. 8", per the released README; the formulas are
    the code's). For each group of G completions:

    1. sort by length L_i ascending, stably (ties keep the batch order);
    2. ``mid = ⌊G/2⌋``: the short half C_s is the first ``mid``, the long half C_l the rest (the larger
       half when G is odd); m_s, m_l are their mean rewards (both 0 when G = 1);
    3. i ∈ C_l:  A_i = [ μ (α R_i − m_s + β) + (1 − μ)(R_i − m_l) ] / Z
       i ∈ C_s:  A_i = [ μ (R_i − α m_l − β) + (1 − μ)(R_i − m_s) ] / Z

    μ = 1 is inter-group only, μ = 0 intra-group only; μ = 0.5, α = 1, β = 0 with an even G is
    Dr. GRPO's R_i − mean(R). ``divisor`` is Z: the released script uses Z = 8192 (its
    max_response_length) with seq-mean-token-sum aggregation; Z = 1 with seq_mean_token_sum_norm and
    C = 8192 is the same loss (the clipped surrogate is linear in A > 0 scalings), which is how
    conf/algo/canon.yaml runs it. Defaults (the released script): μ = 1, α = 1, β = 0, Z = 1.

    Worked example (ALGORITHMS.md 2.3.4; tests/core/test_canon.py): R = [1,0,1,1,0,1,0,0] with
    L ascending: m_s = 0.75, m_l = 0.25; μ = 1, α = 1: A = [0.75, −0.25, 0.75, 0.75, −0.75, 0.25,
    −0.75, −0.75].

    Shapes: ``reward_N`` (N,), ``group_N`` (N,) integer ids (any order), ``length_N`` (N,) ->
    ``advantages_N`` (N,) in the reward's floating dtype (computed in float64, without a loop over groups).
    """

    def __init__(self, mu: float = 1.0, alpha: float = 1.0, beta: float = 0.0, divisor: float = 1.0) -> None:
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1] (the inter/intra mixing weight), got {mu}")
        if not divisor > 0.0:
            raise ValueError(f"divisor (Z) must be > 0, got {divisor}")
        self.mu, self.alpha, self.beta, self.divisor = float(mu), float(alpha), float(beta), float(divisor)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        return self.of(batch.reward_N, batch.group_N, canon_length(batch))

    def of(self, reward_N: torch.Tensor, group_N: torch.Tensor, length_N: torch.Tensor) -> torch.Tensor:
        if not (reward_N.shape == group_N.shape == length_N.shape and reward_N.dim() == 1):
            raise ValueError(f"reward, group and length must be 1-D of one length, got {tuple(reward_N.shape)}, "
                             f"{tuple(group_N.shape)}, {tuple(length_N.shape)}")
        reward = reward_N.detach().to(torch.float64)
        short_N, mean_s_N, mean_l_N = _halves(reward, group_N, length_N)
        r, mu, alpha, beta = reward, self.mu, self.alpha, self.beta
        long_adv = mu * (alpha * r - mean_s_N + beta) + (1.0 - mu) * (r - mean_l_N)
        short_adv = mu * (r - alpha * mean_l_N - beta) + (1.0 - mu) * (r - mean_s_N)
        advantages = torch.where(short_N, short_adv, long_adv) / self.divisor
        out = reward_N.dtype if reward_N.is_floating_point() else torch.get_default_dtype()
        return advantages.to(out)


def _halves(reward: torch.Tensor, group_N: torch.Tensor, length_N: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row: in the short half?, and its group's short and long half mean rewards (float64).

    Rank in the group by (group, length) with stable sorts: first by length, then by group, so that
    within a group equal lengths keep the batch order. Empty half (G = 1: the short one): mean 0; a
    singleton group's long mean is 0 too (ALGORITHMS.md 2.3.3), with a warning.
    """
    n = reward.numel()
    _, index_N = torch.unique(group_N, return_inverse=True)
    by_length = torch.sort(length_N.to(torch.float64), stable=True).indices
    order = by_length[torch.sort(index_N[by_length], stable=True).indices]  # group-major, length ascending
    groups = int(index_N.max()) + 1 if n else 0
    count_G = torch.zeros(groups, dtype=torch.long).index_add(0, index_N, torch.ones(n, dtype=torch.long))
    start_G = torch.cumsum(count_G, 0) - count_G
    rank_N = torch.empty(n, dtype=torch.long)
    rank_N[order] = torch.arange(n) - start_G[index_N[order]]
    short_N = rank_N < (count_G // 2)[index_N]
    zeros = torch.zeros(groups, dtype=torch.float64)
    n_short = zeros.index_add(0, index_N, short_N.to(torch.float64))
    n_long = count_G.to(torch.float64) - n_short
    sum_short = zeros.index_add(0, index_N, torch.where(short_N, reward, 0.0))
    sum_long = zeros.index_add(0, index_N, torch.where(short_N, 0.0, reward))
    mean_s = torch.where(n_short > 0, sum_short / n_short.clamp(min=1.0), 0.0)
    mean_l = torch.where(count_G > 1, sum_long / n_long.clamp(min=1.0), 0.0)
    if bool((count_G == 1).any()):
        warnings.warn("canon: a group has a single completion; both half means are 0 for it", stacklevel=3)
    return short_N, mean_s[index_N], mean_l[index_N]
