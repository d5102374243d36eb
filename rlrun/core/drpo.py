"""DRPO: Decoupled Reward Policy Optimization (Li, Chen, Lin, Yang, arXiv 2510.04474, Secs. 4.1-4.2,
Eqs. 3-7, App. A.1; equation numbers from secondary readings, ALGORITHMS.md 2.1), on its DisCO base
(Li et al., arXiv 2505.12366): raise the log-L score of correct responses, weighted towards the
preferred (shorter) ones, lower that of incorrect ones, under a KL trust-region hinge. No clipping,
no importance ratio, no reference model.

Per group with positives ``P`` (correct) and negatives ``N`` (incorrect), ALGORITHMS.md 2.1.3 (d):

    s_i = (1/L_i) Σ_t logp_θ[i,t]                                  (log-L score)
    w_i = softmax_{i∈P}(r_pref(o_i)/λ),   r_pref = r_l = 1 − L_i/C by default
    J_q = Σ_{i∈P} w_i s_i − τ · log((1/|N|) Σ_{j∈N} exp(s_j/τ))     (0 unless |P| ≥ 1 and |N| ≥ 1)

rlrun splits it into an advantage and a loss (ALGORITHMS.md 2.1.3 (j)): ``DRPOAdvantage`` gives
``A_i = w_i`` (i ∈ P), ``A_j = −q_j = −softmax_{j∈N}(s_j^old/τ)`` (j ∈ N), 0 in groups without both
classes; ``DRPOLoss`` minimises ``−(1/Q) Σ_i A_i s_i + sg(β[D−δ]_+)·D``. Because ∂J_q/∂s_i = w_i and
∂J_q/∂s_j = −q_j(θ) (2.1.3 (e)), the gradient equals the official one exactly wherever θ = θ_old,
which is every rlrun update (one optimizer step per rollout batch). ``drpo_objective`` computes
J_q directly with autograd (recipe (i)); it is the reference the mapping is tested against.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from rlrun.core.losses import KL_LOG_CLAMP, KL_VALUE_CLAMP
from rlrun.types import LossNorm, StepBatch

PREFERENCES = ("auto", "length", "reward")
KL_TYPES = ("kl", "low_var_kl")


def sequence_scores(logp_NT: torch.Tensor, mask_NT: torch.Tensor) -> torch.Tensor:
    """DisCO's log-L score, the mean token log-likelihood of each response (ALGORITHMS.md 2.1.3 (a)):
    ``s_i = Σ_t m_{i,t} logp_{i,t} / max(Σ_t m_{i,t}, 1)``; an empty response scores 0 instead of
    the official code's 0/0 = NaN (2.1.6). Differentiable in ``logp_NT``.
    Shapes: ``logp_NT`` (N, T), ``mask_NT`` (N, T) -> (N,) in ``logp_NT``'s dtype.
    """
    if logp_NT.shape != mask_NT.shape:
        raise ValueError(f"logp {tuple(logp_NT.shape)} and mask {tuple(mask_NT.shape)} differ")
    keep_NT = mask_NT > 0
    total_N = torch.where(keep_NT, logp_NT, torch.zeros_like(logp_NT)).sum(-1)
    return total_N / keep_NT.sum(-1).clamp(min=1).to(logp_NT.dtype)


def length_preference(length_N: torch.Tensor, max_response_tokens: int) -> torch.Tensor:
    """DRPO's linear length reward ``r_l = 1 − L/C`` (ALGORITHMS.md 2.1.3 (b); official code
    ``1 − eos_mask.sum / max_response_length``), L in tokens including EOS, C the generation cap.
    Shapes: (N,) -> (N,) float64."""
    return 1.0 - length_N.to(torch.float64) / float(max_response_tokens)


def _segment_softmax(logits_N: torch.Tensor, member_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
    """``softmax`` of ``logits_N`` over the members of each group, max-shifted (no overflow for
    small temperatures, 2.1.6), 0 for non-members. The shift is a constant (detached), so the
    result is differentiable in ``logits_N``. Shapes: three (N,) -> (N,)."""
    _, index_N = torch.unique(group_N, return_inverse=True)
    n_groups = int(index_N.max()) + 1 if index_N.numel() else 0
    z_N = torch.where(member_N, logits_N, torch.full_like(logits_N, -math.inf))
    max_G = torch.full((n_groups,), -math.inf, dtype=logits_N.dtype, device=logits_N.device)
    max_G = max_G.scatter_reduce(0, index_N, z_N.detach(), reduce="amax")
    max_G = torch.where(torch.isfinite(max_G), max_G, torch.zeros_like(max_G))
    e_N = torch.where(member_N, torch.exp(z_N - max_G[index_N]), torch.zeros_like(z_N))
    sum_G = torch.zeros_like(max_G).index_add(0, index_N, e_N)
    return e_N / sum_G[index_N].clamp(min=torch.finfo(e_N.dtype).tiny)


def _valid_groups(correct_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
    """True for rows whose group holds at least one correct and one incorrect response (2.1.6:
    the official ``valid_mask``). Shapes: (N,), (N,) -> (N,) bool."""
    _, index_N = torch.unique(group_N, return_inverse=True)
    n_groups = int(index_N.max()) + 1 if index_N.numel() else 0
    positive = (correct_N > 0.5).to(torch.float64)
    count_G = torch.zeros(n_groups, dtype=torch.float64, device=correct_N.device)
    pos_G = count_G.index_add(0, index_N, positive)
    neg_G = count_G.index_add(0, index_N, 1.0 - positive)
    return ((pos_G > 0) & (neg_G > 0))[index_N]


def positive_weights(
    preference_N: torch.Tensor, correct_N: torch.Tensor, group_N: torch.Tensor, lam: float
) -> torch.Tensor:
    """DRPO's tilted positive weights (ALGORITHMS.md 2.1.3 (b)-(d); paper App. A.1 closed form):
    ``w_i = exp(r_i/λ) / Σ_{j∈P_g} exp(r_j/λ)`` for correct i in group g, 0 for incorrect rows.
    Sums to 1 over each group's positives (all groups, valid or not). ``lam = inf`` gives the
    uniform weights of DisCO. Shapes: three (N,) -> (N,) float64.
    """
    positive_N = correct_N > 0.5
    logits_N = preference_N.detach().to(torch.float64) / float(lam)
    return _segment_softmax(logits_N, positive_N, group_N)


def negative_weights(
    score_N: torch.Tensor, correct_N: torch.Tensor, group_N: torch.Tensor, tau: float
) -> torch.Tensor:
    """DisCO's log-sum-exp weights on the negatives (ALGORITHMS.md 2.1.3 (e)):
    ``q_j = exp(s_j/τ) / Σ_{k∈N_g} exp(s_k/τ)`` for incorrect j in group g, 0 for correct rows;
    ``q_j = −∂J_q/∂s_j``. Shapes: three (N,) -> (N,) float64 (detached)."""
    negative_N = correct_N <= 0.5
    return _segment_softmax(score_N.detach().to(torch.float64) / float(tau), negative_N, group_N)


def drpo_objective(
    logp_NT: torch.Tensor,
    mask_NT: torch.Tensor,
    correct_N: torch.Tensor,
    group_N: torch.Tensor,
    preference_N: torch.Tensor,
    lam: float,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """J_q of every group computed directly, differentiable in ``logp_NT`` (ALGORITHMS.md 2.1.3 (d),
    recipe (i); the official ``compute_policy_loss_drpo`` up to its logged value, 2.1.9 item 6):

        J_q = Σ_{i∈P} w_i s_i − τ · (logsumexp_{j∈N}(s_j/τ) − log|N|),   0 unless |P|, |N| ≥ 1.

    Returns ``(J_G, group_ids_G)``, one J per distinct id of ``group_N`` (sorted ids).
    Shapes: ``logp_NT``, ``mask_NT`` (N, T); ``correct_N``, ``group_N``, ``preference_N`` (N,).
    """
    s_N = sequence_scores(logp_NT, mask_NT)
    ids_G, index_N = torch.unique(group_N, return_inverse=True)
    zeros_G = torch.zeros(len(ids_G), dtype=s_N.dtype, device=s_N.device)
    negative_N = correct_N <= 0.5
    w_N = positive_weights(preference_N, correct_N, group_N, lam).to(s_N.dtype)
    positive_G = zeros_G.index_add(0, index_N, w_N * s_N)
    z_N = s_N / float(tau)
    shift_G = zeros_G.detach().scatter_reduce(
        0, index_N, torch.where(negative_N, z_N.detach(), torch.full_like(z_N, -math.inf)), reduce="amax",
        include_self=False,
    )
    shift_G = torch.where(torch.isfinite(shift_G), shift_G, torch.zeros_like(shift_G))
    # exp only of the negatives' shifted scores: an overflow in the unused branch would give NaN gradients
    e_N = torch.where(negative_N, torch.exp(torch.where(negative_N, z_N - shift_G[index_N], 0.0)), 0.0)
    count_G = zeros_G.detach().index_add(0, index_N, negative_N.to(s_N.dtype))
    mean_exp_G = zeros_G.index_add(0, index_N, e_N) / count_G.clamp(min=1.0)
    negative_G = float(tau) * (shift_G + torch.log(mean_exp_G.clamp(min=torch.finfo(s_N.dtype).tiny)))
    valid_G = torch.zeros(len(ids_G), dtype=torch.bool, device=s_N.device)
    valid_G = valid_G.index_put((index_N,), _valid_groups(correct_N, group_N))
    return torch.where(valid_G, positive_G - negative_G, zeros_G), ids_G


class DRPOAdvantage:
    """DRPO's per-response sequence weights as advantages (ALGORITHMS.md 2.1.3 (j)):

        A_i = w_i = softmax_{i∈P_g}(r_pref,i / λ)         correct i (positives)
        A_j = −q_j = −softmax_{j∈N_g}(s_j^old / τ)         incorrect j, s^old = mean_t logp_old[j,t]
        A   = 0                                            groups without both classes (2.1.6)

    ``r_pref`` (``preference``): ``"auto"`` takes ``inp.preference_N`` (the weighted non-correctness
    terms of the reward, ALGORITHMS.md 0.2) when the reward has any, else the paper's
    ``r_l = 1 − L/C``; ``"length"`` always uses ``r_l``; ``"reward"`` requires ``preference_N``.
    λ = 0.1 is calibrated for r_l ∈ [0, 1]; retune it to the scale of another preference.
    ``L_i`` counts the response tokens including EOS (ALGORITHMS.md 2.0; verl's response mask):
    ``length_tokens_N + 1`` for rows that ended with EOS, ``length_tokens_N`` for truncated ones
    (= ``mask_NT.sum(-1)``), so a truncated response has L = C. ``C = max_response_tokens`` is the
    generation cap (2.1.9 item 8). A correct truncated response is a positive with r_l = 0
    (2.1.3 (j), "Truncation"). ``correct_N`` must be 0/1.

    ``q`` needs pi_old's log-probs: ``inp.logp_NT`` (the sampling log-probs) with ``inp.mask_NT``.
    Shapes: ``inp`` rows (N,) -> ``advantages_N`` (N,) in the reward's float dtype.
    """

    def __init__(
        self,
        max_response_tokens: int,
        lam: float = 0.1,
        tau: float = 10.0,
        preference: Literal["auto", "length", "reward"] = "auto",
    ) -> None:
        cap = max_response_tokens
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_response_tokens must be an int >= 1 (the generation cap C), got {cap!r}")
        if not lam > 0.0:
            raise ValueError(f"lam must be > 0 (use .inf for DisCO's uniform weights), got {lam}")
        if not (tau > 0.0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        if preference not in PREFERENCES:
            raise ValueError(
                f"preference={preference!r} is not valid; choose one of {', '.join(PREFERENCES)}")
        self.max_response_tokens = max_response_tokens
        self.lam, self.tau, self.preference = float(lam), float(tau), preference

    def response_tokens(self, inp: StepBatch) -> torch.Tensor:
        """L_i including EOS: ``length_tokens_N + 1`` unless truncated. Shapes: (N,) -> (N,) float64."""
        return inp.sampled_tokens_N.to(torch.float64)

    def preference_of(self, inp: StepBatch) -> torch.Tensor:
        """r_pref per row (see the class docstring). Shapes: -> (N,) float64."""
        if self.preference == "reward" and inp.preference_N is None:
            raise ValueError("DRPO preference='reward' needs a reward with a non-correctness term "
                             "(e.g. reward=laser_d); use preference=auto or length")
        if self.preference != "length" and inp.preference_N is not None:
            return inp.preference_N.detach().to(torch.float64)
        return length_preference(self.response_tokens(inp), self.max_response_tokens)

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        correct_N = inp.correct_N.detach()
        if not bool(((correct_N == 0) | (correct_N == 1)).all()):
            raise ValueError("DRPO needs binary correct_N (0/1): the positives are the correct responses")
        if inp.logp_NT is None or inp.mask_NT is None:
            raise ValueError("DRPO needs the sampling log-probs (StepBatch.logp_NT and mask_NT) "
                             "for its negative weights; use a rollout engine that returns them")
        mask_NT = inp.mask_NT
        logp_NT = inp.logp_NT.detach().to(torch.float64)[:, : mask_NT.shape[1]]
        logp_NT = torch.nn.functional.pad(logp_NT, (0, mask_NT.shape[1] - logp_NT.shape[1]))
        w_N = positive_weights(self.preference_of(inp), correct_N, inp.group_N, self.lam)
        q_N = negative_weights(sequence_scores(logp_NT, mask_NT), correct_N, inp.group_N, self.tau)
        advantages = torch.where(correct_N > 0.5, w_N, -q_N)
        valid_N = _valid_groups(correct_N, inp.group_N)
        advantages = torch.where(valid_N, advantages, torch.zeros_like(advantages))
        dtype = inp.reward_N.dtype if inp.reward_N.is_floating_point() else torch.get_default_dtype()
        return advantages.to(dtype)


def trust_region_kl(logp_NT: torch.Tensor, old_logp_NT: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token estimate of D_KL(π_old ‖ π_θ) on tokens sampled from π_old (ALGORITHMS.md 2.1.3 (f)):
    ``kl``: ``logp_old − logp_θ`` (the released scripts' ``ppo_kl_type=kl``; may be negative);
    ``low_var_kl``: ``exp(d) − 1 − d``, ``d = clamp(logp_θ − logp_old, ±20)``, clamped to ±10 (verl).
    Shapes: (N, T), (N, T) -> (N, T); differentiable in ``logp_NT``, ``old_logp_NT`` detached."""
    old = old_logp_NT.detach().to(logp_NT.dtype)
    if kl_type == "kl":
        return old - logp_NT
    d = (logp_NT - old).clamp(-KL_LOG_CLAMP, KL_LOG_CLAMP)
    return (torch.exp(d) - 1.0 - d).clamp(-KL_VALUE_CLAMP, KL_VALUE_CLAMP)


class DRPOLoss:
    """DRPO's loss for one micro-batch (ALGORITHMS.md 2.1.3 (g), (j)), with ``A`` from
    ``DRPOAdvantage`` and the mini-batch denominators of ``batch.norm``:

        loss = −(1/Q) Σ_i A_i s_i  +  sg(β · max(D̂ − δ, 0)) · D
        s_i  = mean_t logp_θ[i,t]  (over the row's own tokens),   Q = norm.total_groups
        D    = Σ_{i,t} kl_{i,t} / norm.total_tokens                (token mean over ALL rows)

    Both terms are sums over rows divided by global numbers, so micro-batch losses add up to the
    mini-batch loss. The hinge's coefficient needs D itself, which one micro-batch cannot know:
    it uses ``D̂``, the token mean of kl over this micro-batch (the official code estimates D per
    micro-step, 2.1.9 item 4); it equals D when the micro-batch is the mini-batch, when every
    micro-batch has the same D̂, and on rlrun's on-policy updates, where kl ≡ 0 and the hinge is
    inactive. The hinge is the code's convention: gradient β[D−δ]_+ ∇D, i.e. (β/2)[D−δ]_+²
    (2.1.9 item 5). The value of the policy term is a surrogate: its gradient is −(1/Q) Σ ∇J_q at
    θ = θ_old, its value is not −(1/Q) Σ J_q (use ``drpo_objective`` for that).

    Statistics (sums over this micro-batch's rows over the global denominators): ``loss/policy``
    the policy term, ``loss/kl`` D (not multiplied by anything), ``ppo/clip_frac`` 0 (no clipping;
    kept so every algorithm logs the same keys). No reference model. Math in float32 at least.
    Shapes: ``logp_NT`` (N, T) with grad; ``batch.advantages_N`` (N,), ``batch.mask_NT`` (N, T).
    """

    needs_reference = False
    zero_advantage_is_zero_loss = False

    def __init__(self, beta: float = 1.0e3, delta: float = 1.0e-4,
                 kl_type: Literal["kl", "low_var_kl"] = "kl") -> None:
        if not (beta >= 0.0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if not (delta >= 0.0 and math.isfinite(delta)):
            raise ValueError(f"delta must be a finite number >= 0, got {delta}")
        if kl_type not in KL_TYPES:
            raise ValueError(f"kl_type={kl_type!r} is not valid; choose one of {', '.join(KL_TYPES)}")
        self.beta, self.delta, self.kl_type = float(beta), float(delta), kl_type

    @staticmethod
    def _norm(batch: StepBatch) -> LossNorm:
        if batch.norm is not None:
            return batch.norm
        if batch.group_N is None:
            raise ValueError("DRPOLoss needs batch.norm (or batch.group_N to count the prompts Q)")
        length_N = (batch.mask_NT > 0).sum(-1)
        return LossNorm(float(length_N.sum()), float((length_N > 0).sum()),
                        float(len(torch.unique(batch.group_N))))

    def __call__(
        self, logp_NT: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask_NT, old_NT = batch.mask_NT, batch.old_logp_NT
        if old_NT is None or logp_NT.shape != mask_NT.shape or old_NT.shape != mask_NT.shape:
            raise ValueError(f"logp {tuple(logp_NT.shape)}, old_logp and mask {tuple(mask_NT.shape)} "
                             "must be given with the same shape")
        if batch.advantages_N.shape != mask_NT.shape[:1]:
            raise ValueError(
                f"advantages {tuple(batch.advantages_N.shape)} do not match {mask_NT.shape[0]} rows")
        norm = self._norm(batch)
        tokens_m = float((mask_NT > 0).sum())
        if tokens_m > 0 and not norm.total_groups > 0:
            raise ValueError("DRPOLoss needs LossNorm.total_groups > 0 (Q, the prompts of the mini-batch)")
        logp_NT = logp_NT.to(torch.promote_types(logp_NT.dtype, torch.float32))
        s_N = sequence_scores(logp_NT, mask_NT)
        policy = -(batch.advantages_N.detach().to(s_N.dtype) * s_N).sum() / max(float(norm.total_groups), 1.0)
        kl_NT = trust_region_kl(logp_NT, batch.old_logp_NT, self.kl_type)
        kl_sum = torch.where(mask_NT > 0, kl_NT, torch.zeros_like(kl_NT)).sum()
        kl = kl_sum / max(float(norm.total_tokens), 1.0)
        coef = self.beta * torch.clamp(kl_sum.detach() / max(tokens_m, 1.0) - self.delta, min=0.0)
        loss = policy + coef * kl
        stats = {
            "loss/policy": policy.detach(),
            "loss/kl": kl.detach(),
            "ppo/clip_frac": torch.zeros((), dtype=policy.dtype, device=policy.device),
        }
        return loss, stats
