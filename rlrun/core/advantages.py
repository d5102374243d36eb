"""Group-relative advantages: GRPO's normalised one (and Train Long, Think Short's population-std
variant) and Dr. GRPO's centred one (ALGORITHMS.md 1.1, 1.3, 3.4).

Each maps one scalar reward per completion to one scalar advantage per completion; the loss broadcasts
it to the completion's tokens. Groups are given by ``group_N`` (any integer ids, not necessarily
contiguous or sorted). All group statistics are computed with scatter-adds, without a Python loop over
groups, in float64, and returned in the reward's floating dtype.

A group of size 1 has no spread to compare with: as in verl, its mean is taken as 0 and its std as 1,
so its advantage is ``r / (1 + eps)`` (normalised) or ``r`` (centred), and a warning is issued
(the population-std variant follows its paper's formula instead: A = 0).
"""
from __future__ import annotations

import warnings

import torch

from rlrun.types import StepBatch


def _group_stats(reward_N: torch.Tensor, group_N: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-completion group mean, group sample std and group size, broadcast back to ``_N``.

    ``mean_g = (1/n_g) Σ_{i∈g} r_i``, ``std_g = sqrt(Σ_{i∈g} (r_i − mean_g)² / (n_g − 1))`` (sample
    std, Bessel's correction, as ``torch.std``). Singleton groups get mean 0 and std 1 (verl).
    Shapes: ``reward_N`` (N,), ``group_N`` (N,) integer -> three (N,) float64 tensors.
    """
    if reward_N.shape != group_N.shape or reward_N.dim() != 1:
        raise ValueError(
            f"reward_N and group_N must be 1-D of the same length, got {tuple(reward_N.shape)} "
            f"and {tuple(group_N.shape)}"
        )
    reward = reward_N.detach().to(torch.float64)
    _, index_N = torch.unique(group_N, return_inverse=True)
    n_groups = int(index_N.max()) + 1 if index_N.numel() else 0
    zeros_G = torch.zeros(n_groups, dtype=torch.float64, device=reward.device)
    count_G = zeros_G.index_add(0, index_N, torch.ones_like(reward))
    mean_G = zeros_G.index_add(0, index_N, reward) / count_G
    sq_dev_G = zeros_G.index_add(0, index_N, (reward - mean_G[index_N]) ** 2)
    singleton_G = count_G < 2
    std_G = torch.sqrt(sq_dev_G / (count_G - 1).clamp(min=1.0))
    if bool(singleton_G.any()):
        warnings.warn(
            "advantage: a group has a single completion; using mean 0 and std 1 for it (verl)",
            stacklevel=3,
        )
        mean_G = torch.where(singleton_G, torch.zeros_like(mean_G), mean_G)
        std_G = torch.where(singleton_G, torch.ones_like(std_G), std_G)
    return mean_G[index_N], std_G[index_N], count_G[index_N]


def _out_dtype(reward_N: torch.Tensor) -> torch.dtype:
    return reward_N.dtype if reward_N.is_floating_point() else torch.get_default_dtype()


class GroupNormalized:
    """GRPO's outcome-supervision advantage (DeepSeekMath, arXiv 2402.03300, Sec. 4.1.2, unnumbered
    equation below Eq. 3; ALGORITHMS.md 1.1.3):

        A_i = (r_i − mean_g(r)) / (std_g(r) + eps)        for completion i in group g,

    with ``std_g`` the **sample** std (divide by n_g − 1) and ``eps`` added to the std, as verl's
    ``compute_grpo_outcome_advantage`` (eps 1e-6; TRL uses 1e-4). A group whose rewards are all equal
    (all correct, all wrong) gets A = 0 for every member. Singleton group: mean 0, std 1.

    Shapes: ``reward_N`` (N,) float, ``group_N`` (N,) integer group ids -> ``advantages_N`` (N,).
    """

    def __init__(self, eps: float = 1e-6) -> None:
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        return self.of(inp.reward_N, inp.group_N)

    def of(self, reward_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
        mean_N, std_N, _ = _group_stats(reward_N, group_N)
        advantages = (reward_N.detach().to(torch.float64) - mean_N) / (std_N + self.eps)
        return advantages.to(_out_dtype(reward_N))


class GroupNormalizedPopulation:
    """Train Long, Think Short's GRPO advantage (Hammoud et al., arXiv 2508.08940 Sec. 3.1, unnumbered;
    ALGORITHMS.md 3.4.3): the **population** std with ``eps`` inside the root,

        σ_g = sqrt((1/n_g) Σ_{i∈g} (r_i − mean_g(r))² + eps),   A_i = (r_i − mean_g(r)) / σ_g,

    unlike :class:`GroupNormalized` (sample std, eps added to the std). A group whose rewards are all
    equal gets σ = sqrt(eps) > 0 and A = 0; so does a group of one completion (its mean is its reward:
    the formula, not verl's singleton rule). eps = ε_stab (the paper gives no value; 1e-6 in §3.4.7's
    worked example: r = [0.975862, 0.886207, 0.4, 0.05] -> A = [1.059735, 0.820922, −0.474183, −1.406474]).

    Shapes: ``reward_N`` (N,) float, ``group_N`` (N,) integer group ids -> ``advantages_N`` (N,).
    """

    def __init__(self, eps: float = 1e-6) -> None:
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0 (it keeps sigma above 0), got {eps}")
        self.eps = float(eps)

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        return self.of(inp.reward_N, inp.group_N)

    def of(self, reward_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
        reward = reward_N.detach().to(torch.float64)
        _, index_N = torch.unique(group_N, return_inverse=True)
        n_groups = int(index_N.max()) + 1 if index_N.numel() else 0
        zeros_G = torch.zeros(n_groups, dtype=torch.float64, device=reward.device)
        count_G = zeros_G.index_add(0, index_N, torch.ones_like(reward))
        mean_N = (zeros_G.index_add(0, index_N, reward) / count_G)[index_N]
        var_N = (zeros_G.index_add(0, index_N, (reward - mean_N) ** 2) / count_G)[index_N]
        return ((reward - mean_N) / torch.sqrt(var_N + self.eps)).to(_out_dtype(reward_N))


class GroupCentered:
    """Dr. GRPO's advantage: the group-mean baseline without the std division (Liu et al.,
    "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv 2503.20783, Sec. 3.2 / Fig. 1; the
    GRPO advantage of DeepSeekMath arXiv 2402.03300 Sec. 4.1.2 with the std removed; ALGORITHMS.md 1.3):

        A_i = r_i − mean_g(r)                              for completion i in group g.

    Singleton group: mean 0, so A = r (verl).

    Shapes: ``reward_N`` (N,) float, ``group_N`` (N,) integer group ids -> ``advantages_N`` (N,).
    """

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        return self.of(inp.reward_N, inp.group_N)

    def of(self, reward_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
        mean_N, _, _ = _group_stats(reward_N, group_N)
        advantages = reward_N.detach().to(torch.float64) - mean_N
        return advantages.to(_out_dtype(reward_N))
