"""Group- and batch-relative length rewards (ALGORITHMS.md 1.6, 1.7, 1.8, 4.2):

- :class:`KimiLengthReward`: Kimi k1.5's min/max length rank within a group (a pure length term:
  combine with ``correct``).
- :class:`CosineReward`: the cosine length-scaled correctness reward of "Demystifying Long CoT",
  with its exceed-length penalty (holds correctness: use alone); :func:`repetition_penalty_T` and
  :class:`RepetitionPenalty` are its n-gram repetition penalty.
- :class:`ShorterBetterReward`: ShorterBetter's distance to the Sample Optimal Length (holds
  correctness: use alone).
- :class:`GrpoLambdaReward`: GRPO-λ's batch-wise top-λ selection of groups that get a length penalty
  (holds correctness: use alone).

Every term is ``fn(batch: StepBatch) -> Tensor_N`` float32, computed in float64. Groups are
``batch.group_N`` (any integer ids); "batch order" is ascending group id, i.e. the order of
``rollouts.problems``. Lengths are ``rollouts.length_tokens_N`` (response tokens without EOS, rlrun's
length contract) unless a term's ``count_eos`` asks for the sampled tokens (EOS included), as verl
counts them.

A term is called once per sampling round on each rank with that rank's completions of the round
(``loop.score``): group statistics are always complete (a group never spans ranks or rounds), but
GRPO-λ's batch rank is over the round's groups on this rank unless its cross-rank hooks are set.
"""
from __future__ import annotations

import math

import torch

from rlrun.core.collectives import LOCAL, Collectives
from rlrun.core.rewards import Gate, check_gate, gated
from rlrun.types import StepBatch

EXCEED_RULES = ("truncated", "repo", "none")


def _groups(group_N: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(index_N, n_groups)``: each row's group as 0..n_groups-1 in ascending group id."""
    _, index_N = torch.unique(group_N, return_inverse=True)
    return index_N, int(index_N.max()) + 1 if index_N.numel() else 0


def _group_sum(values_N: torch.Tensor, index_N: torch.Tensor, n_groups: int) -> torch.Tensor:
    return torch.zeros(n_groups, dtype=torch.float64).index_add(0, index_N, values_N.to(torch.float64))


def _lengths(rollouts: StepBatch, count_eos: bool) -> torch.Tensor:
    """Response tokens per completion (N,) float64: without EOS, or all sampled ids (EOS included)."""
    if count_eos:
        return rollouts.sampled_tokens_N.to(torch.float64)
    return rollouts.length_tokens_N.to(torch.float64)


class KimiLengthReward:
    """Kimi k1.5's length reward (arXiv 2501.12599 Sec. 2.3.3, unnumbered; ALGORITHMS.md 1.6.3), per
    group of the k completions of a problem, min/max over all of them (correct and wrong):

        λ_i = 0.5 − (len_i − min_len) / (max_len − min_len)     (0 for all if max_len = min_len)
        len_reward_i = λ_i if correct_i else min(0, λ_i)         (gate=all, the paper)
        len_reward_i = λ_i if correct_i else 0                   (gate=correct)

    Range [−0.5, 0.5]. A pure length term: Kimi's reward is ``correct + w · len_reward``
    (``reward=[correct,kimi]``, w = the term's weight; paper value not found, Laser's 0.4). Warm-up
    (paper: "standard policy optimization without length penalty" first; duration not found): the
    term is 0 while ``batch.step < warmup_steps`` (0-based loop steps), so it needs no state of its
    own: the step comes with the StepBatch, also after a resume.
    Shapes: ``length_tokens_N``, ``group_N``, ``correct_N`` (N,) -> (N,) float32.
    """

    def __init__(self, warmup_steps: int = 0, gate: Gate = "all") -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps, self.gate = warmup_steps, check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        if batch.step < self.warmup_steps or len(rollouts) == 0:
            return torch.zeros(len(rollouts), dtype=torch.float32)
        length_N = rollouts.length_tokens_N.to(torch.float64)
        index_N, n_groups = _groups(rollouts.group_N)
        lo_G = torch.full((n_groups,), math.inf, dtype=torch.float64).scatter_reduce(0, index_N, length_N, "amin")
        hi_G = torch.full((n_groups,), -math.inf, dtype=torch.float64).scatter_reduce(0, index_N, length_N, "amax")
        span_N = (hi_G - lo_G)[index_N]
        spread_N = span_N > 0
        lam_N = torch.where(spread_N, 0.5 - (length_N - lo_G[index_N]) / torch.where(spread_N, span_N, 1.0), 0.0)
        correct_N = batch.correct_N.bool()
        return gated(torch.where(correct_N, lam_N, lam_N.clamp(max=0.0)), correct_N, self.gate).to(torch.float32)


class CosineReward:
    """The cosine length-scaled reward (Yeo et al., arXiv 2502.03373 Sec. 4.2 box and App. C.1 Eq. 1;
    ALGORITHMS.md 1.7.3), with the endpoint meaning of the box (and the repo's code):

        p = min(L / L_max, 1)
        R = r_L + ½ (r_0 − r_L) (1 + cos(π p))       r_0, r_L = (r0_correct, rL_correct) if correct
                                                     else (r0_wrong, rL_wrong)
        R = r_exceed                                  if the completion exceeded the cap (replaces R)

    ``gate``: ``all`` (the paper) scales wrong answers along their cosine too; ``correct`` gives a wrong
    answer ``rL_wrong`` whatever its length (its length part ``½ (r_0 − r_L)(1 + cos(π p))`` is 0),
    the exceed rule still applying to every completion (it is the cap's, not the shaping's).

    Exceeded (``exceed_rule``): ``"truncated"`` (rlrun default) the engine's truncated flag;
    ``"repo"`` the released code's ``L + margin_tokens >= L_max`` (margin 16); ``"none"`` never (TRL:
    the clamp keeps L > L_max at the L_max value). ``L_max`` = ``max_len_tokens``, or (None) each
    row's generation cap ``budget_tokens_N`` (the paper's ``generate_max_len``). Defaults are the
    paper's (Tables 7, 9): (2, 1, −10, 0), r_exceed −10. The repo with its exceed flag unset:
    ``r_exceed=0.0``; TRL: (1, 0.5, −1, −0.5) with ``exceed_rule="none"``. Holds correctness.
    Shapes: ``length_tokens_N`` (or sampled ids), ``correct_N``, ``truncated_N``, ``budget_tokens_N``
    (N,) -> (N,) float32.
    """

    def __init__(self, r0_correct: float = 2.0, rL_correct: float = 1.0, r0_wrong: float = -10.0,
                 rL_wrong: float = 0.0, r_exceed: float = -10.0, max_len_tokens: int | None = None,
                 exceed_rule: str = "truncated", margin_tokens: int = 16, count_eos: bool = False,
                 gate: Gate = "all") -> None:
        if exceed_rule not in EXCEED_RULES:
            raise ValueError(f"unknown exceed_rule {exceed_rule!r}; choose one of {', '.join(EXCEED_RULES)}")
        if max_len_tokens is not None and (isinstance(max_len_tokens, bool) or int(max_len_tokens) != max_len_tokens
                                           or max_len_tokens < 1):
            raise ValueError(f"max_len_tokens must be an int >= 1 or null (the generation cap), got {max_len_tokens!r}")
        if margin_tokens < 0:
            raise ValueError(f"margin_tokens must be >= 0, got {margin_tokens}")
        self.correct_ends = (float(r0_correct), float(rL_correct))
        self.wrong_ends = (float(r0_wrong), float(rL_wrong))
        self.r_exceed, self.exceed_rule, self.margin_tokens = float(r_exceed), exceed_rule, int(margin_tokens)
        self.max_len_tokens = None if max_len_tokens is None else int(max_len_tokens)
        self.count_eos, self.gate = bool(count_eos), check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        length_N = _lengths(rollouts, self.count_eos)
        if self.max_len_tokens is None:
            cap_N = rollouts.budget_tokens_N.to(torch.float64)
        else:
            cap_N = torch.full_like(length_N, float(self.max_len_tokens))
        progress_N = (length_N / cap_N).clamp(max=1.0)
        correct_N = batch.correct_N.bool()
        r0_N = torch.where(correct_N, self.correct_ends[0], self.wrong_ends[0])
        rL_N = torch.where(correct_N, self.correct_ends[1], self.wrong_ends[1])
        shaped_N = 0.5 * (r0_N - rL_N) * (1.0 + torch.cos(math.pi * progress_N))
        reward_N = rL_N + gated(shaped_N, correct_N, self.gate)
        if self.exceed_rule == "truncated":
            exceeded_N = rollouts.truncated_N.bool()
        elif self.exceed_rule == "repo":
            exceeded_N = length_N + self.margin_tokens >= cap_N
        else:
            exceeded_N = torch.zeros_like(correct_N)
        return torch.where(exceeded_N, self.r_exceed, reward_N).to(torch.float32)


def repetition_penalty_T(token_ids: list[int], ngram_tokens: int = 40, penalty: float = -0.05) -> torch.Tensor:
    """The dense n-gram repetition penalty (arXiv 2502.03373 Sec. 4.5, App. C.2 Algorithm 1;
    ALGORITHMS.md 1.7.3): every token of an n-gram (token ids, n = ``ngram_tokens``) that appeared
    earlier in the sequence gets ``penalty`` (set, not summed, where repeated n-grams overlap), the
    others 0. Paper: n 40, P −0.05. Shapes: T ids -> (T,) float32.
    """
    out = torch.zeros(len(token_ids), dtype=torch.float32)
    seen: set[tuple[int, ...]] = set()
    for start in range(len(token_ids) - ngram_tokens + 1):
        gram = tuple(token_ids[start:start + ngram_tokens])
        if gram in seen:
            out[start:start + ngram_tokens] = penalty
        seen.add(gram)
    return out


class RepetitionPenalty:
    """The repetition penalty of :func:`repetition_penalty_T` as a sequence-level term: the sum of the
    per-token penalties over the response tokens (EOS excluded). rlrun's terms are one scalar per
    completion, so this is the undiscounted return of the paper's dense reward (its γ_p = 0.99 GAE
    credit assignment is not reproduced: an approximation, ALGORITHMS.md 1.7.3). Use next to
    ``cosine``: ``reward=[cosine,repetition]``. Shapes: ``completion_ids`` (N lists) -> (N,) float32.
    """

    def __init__(self, ngram_tokens: int = 40, penalty: float = -0.05) -> None:
        if ngram_tokens < 1:
            raise ValueError(f"ngram_tokens must be >= 1, got {ngram_tokens}")
        self.ngram_tokens, self.penalty = int(ngram_tokens), float(penalty)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        sums = [float(repetition_penalty_T(ids[:n], self.ngram_tokens, self.penalty).to(torch.float64).sum())
                for ids, n in zip(rollouts.completion_ids, rollouts.length_tokens_N.tolist())]
        return torch.tensor(sums, dtype=torch.float32)


class ShorterBetterReward:
    """ShorterBetter's reward (Yi, Wang, Li, arXiv 2504.21370, project page ``eq:sol-reward``;
    ALGORITHMS.md 4.2.3), per group of a question:

        SOL = min{ ℓ_j : I_j = 1 }   if any completion is correct, else mean_j ℓ_j
        r_j = α · I_j − β · |ℓ_j − SOL|                  (gate=all, the paper)
        r_j = α · I_j − β · I_j · |ℓ_j − SOL|            (gate=correct: a wrong answer gets 0)

    Two-sided, unclipped. Holds correctness: use alone (``reward=shorter_better``) with GRPO.
    α 2.0, β 0.001 (released code; the paper also releases α = 1). ``ℓ`` = ``length_tokens_N``;
    ``count_eos=True`` counts the EOS token like verl's response mask (only the distance between a
    finished and a truncated completion changes, by 1 token).
    Shapes: ``length_tokens_N``, ``group_N``, ``correct_N`` (N,) -> (N,) float32.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 0.001, count_eos: bool = False,
                 gate: Gate = "all") -> None:
        if not beta >= 0.0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.alpha, self.beta, self.count_eos = float(alpha), float(beta), bool(count_eos)
        self.gate = check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        length_N = _lengths(batch, self.count_eos)
        correct_N = batch.correct_N.to(torch.float64)
        if length_N.numel() == 0:
            return torch.zeros(0, dtype=torch.float32)
        index_N, n_groups = _groups(batch.group_N)
        shortest_G = torch.full((n_groups,), math.inf, dtype=torch.float64).scatter_reduce(
            0, index_N, torch.where(correct_N > 0, length_N, math.inf), "amin")
        mean_G = _group_sum(length_N, index_N, n_groups) / _group_sum(torch.ones_like(length_N), index_N, n_groups)
        sol_G = torch.where(torch.isfinite(shortest_G), shortest_G, mean_G)
        distance_N = self.beta * (length_N - sol_G[index_N]).abs()
        reward_N = self.alpha * correct_N - gated(distance_N, correct_N, self.gate)
        return reward_N.to(torch.float32)




class GrpoLambdaReward:
    """GRPO-λ's reward (Dai, Liu, Si, arXiv 2505.18086; equations not numbered in the sources;
    ALGORITHMS.md 1.8.3): rank the batch's groups by accuracy ``acc_k = #correct / G`` (descending,
    ties in batch order), take the top ``|S| = ceil(λ · B)`` (0 if λ = 0) and give them the
    efficiency-prioritised reward, all others the 0/1 reward:

        k ∈ S:  r_k^i = 1 − α · σ((L_k^i − mean_c(L_k)) / std_c(L_k))  if correct, else 0
        k ∉ S:  r_k^i = correct

    ``gate=correct`` is that (the paper); ``gate=all`` also gives a wrong answer of a selected group its
    penalty, ``r = −α · σ(z)`` with z against the group's correct completions (``correct + gated(−α σ(z))``;
    a selected group without a correct completion has z = 0).

    mean_c, std_c over the **correct** completions of group k, population std; std 0 (one correct
    completion, or equal lengths) gives z = 0, r = 1 − α/2 (rlrun choices where the sources are
    silent, ALGORITHMS.md 1.8.3). λ·B is rounded down by 1e-9 before the ceiling so that e.g.
    0.6·5 = 3.0000000000000004 selects 3 groups. α 0.6 (third-party default, unverified; paper value
    not found), λ 0.2 (the paper's "e.g., top 20%"). Holds correctness: use alone.

    Batch: the groups this call sees, i.e. this rank's groups of one sampling round. With several
    ranks the paper's batch is all ranks' groups: the runtime sets ``collectives``
    (``UsesCollectives``) and the ranking is over every rank's groups (ties in rank order, then this
    rank's batch order); every rank must then call the term together (the loop does).
    Shapes: ``length_tokens_N``, ``group_N``, ``correct_N`` (N,) -> (N,) float32.
    """

    def __init__(self, top_lambda: float = 0.2, alpha: float = 0.6, gate: Gate = "correct") -> None:
        if not 0.0 <= top_lambda <= 1.0:
            raise ValueError(f"top_lambda must be in [0, 1], got {top_lambda}")
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.top_lambda, self.alpha, self.gate = float(top_lambda), float(alpha), check_gate(gate)
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step

    def selected_G(self, acc_G: torch.Tensor) -> torch.Tensor:
        """Boolean (n_groups,): which of this call's groups are in S (see the class docstring)."""
        counts = self.collectives.gather_cat(torch.tensor([acc_G.numel()], dtype=torch.long))
        offset = int(counts[: self.collectives.rank()].sum())
        all_acc = self.collectives.gather_cat(acc_G)
        n_select = math.ceil(self.top_lambda * all_acc.numel() - 1e-9) if self.top_lambda > 0 else 0
        order = sorted(range(all_acc.numel()), key=lambda k: -float(all_acc[k]))  # stable: batch order
        chosen = torch.zeros(all_acc.numel(), dtype=torch.bool)
        chosen[order[:n_select]] = True
        return chosen[offset: offset + acc_G.numel()]

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        length_N = batch.length_tokens_N.to(torch.float64)
        correct_N = batch.correct_N.to(torch.float64)
        index_N, n_groups = _groups(batch.group_N)
        n_correct_G = _group_sum(correct_N, index_N, n_groups)
        acc_G = n_correct_G / _group_sum(torch.ones_like(correct_N), index_N, n_groups)
        selected_N = self.selected_G(acc_G)[index_N]
        mean_G = _group_sum(correct_N * length_N, index_N, n_groups) / n_correct_G.clamp(min=1.0)
        sq_G = _group_sum(correct_N * (length_N - mean_G[index_N]) ** 2, index_N, n_groups)
        std_N = torch.sqrt(sq_G / n_correct_G.clamp(min=1.0))[index_N]
        z_N = torch.where(std_N > 0, (length_N - mean_G[index_N]) / torch.where(std_N > 0, std_N, 1.0), 0.0)
        penalised_N = correct_N + gated(-self.alpha * torch.sigmoid(z_N), correct_N, self.gate)
        return torch.where(selected_N, penalised_N, correct_N).to(torch.float32)
