"""Policy losses beside the clipped surrogate: GSPO and LUSPO (a sequence-level importance ratio),
CISPO (a clipped, detached importance weight on log π) and SAPO (a soft sigmoid gate instead of a clip).

Each is a :class:`rlrun.core.losses.PolicyLoss`: the same call ``loss(logp_NT, batch) -> (scalar,
stats)``, the same ``kl_coef`` (k3 to the reference, aggregated like the policy term), aggregation
modes over the mini-batch denominators of ``batch.norm``, rollout correction (tis | mis) and
statistics (``loss/policy``, ``loss/kl``, ``ppo/clip_frac``, each a sum over rows divided by global
denominators, so micro-batches add up to the mini-batch). Only the per-token policy term ``ℓ^pg``
differs. A sequence-level quantity (GSPO's ratio) is computed per row inside the micro-batch: a row
is never split across micro-batches. Advantages are one scalar per completion (``advantages_N``),
broadcast to its tokens; ``r_{i,t} = exp(clamp(logp − old_logp, −20, 20))`` as in losses.py.

Where the peers differ, the choice made here (TRL ``trl/trainer/grpo_trainer.py`` ``_compute_loss``;
verl ``verl/trainer/ppo/core_algos.py`` policy losses gspo, sapo, cispo at b178a3c):

- GSPO: the sequence ratio s_i = exp(mean_t log r_{i,t}) enters per token in the "GSPO-token" form
  ``sg[s_i] · π_θ(o_t) / sg[π_θ(o_t)]`` (verl), whose value is s_i on every token and whose gradient
  equals GSPO's (tested); aggregation seq_mean_token_mean (the paper's (1/G) Σ_i; verl forces it,
  TRL lets ``loss_type`` choose and warns for token sums). The sequence log-ratio is clamped to
  [−20, 20] (verl clamps at 10 from above, TRL not at all).
- LUSPO: GSPO's per-sequence loss times the sequence's length, averaged over the N' non-empty rows
  (TRL ``loss_type="luspo"`` averages over all rows).
- CISPO: the weight is clip(r, 1 − ε_low, 1 + ε_high) (MiniMax-M1's form; verl's, with its actor's
  ε); TRL caps r at ``epsilon_high`` itself with no lower bound (ScaleRL's ε_max = 5). Default here:
  no lower bound (the paper sets ε_low large; verl's example uses 10) and 1 + ε_high = 5 (TRL's
  recommended cap); aggregation token_mean (the paper's 1/Σ|o_i|, TRL, verl's default).
- SAPO: the token ratio (verl, TRL's default level), τ_pos for A > 0 and τ_neg for A ≤ 0 (verl and
  TRL both), defaults 1.0 / 1.05 (both), aggregation seq_mean_token_mean (the paper; verl forces it).
"""
from __future__ import annotations

import torch

from rlrun.core.losses import LOG_RATIO_CLAMP, PolicyLoss, clipped_surrogate
from rlrun.types import StepBatch


def sequence_log_ratio(logp_NT: torch.Tensor, old_logp_NT: torch.Tensor, mask_NT: torch.Tensor) -> torch.Tensor:
    """GSPO-token's per-token log-ratio (GSPO, arXiv 2507.18071, Sec. 4.3, "GSPO-token"):

        log s_i = clamp((1/|o_i|) Σ_t m_{i,t} (logp_{i,t} − old_logp_{i,t}), −20, 20)
        log s_{i,t} = sg[log s_i] + logp_{i,t} − sg[logp_{i,t}]

    The value is log s_i on every token of row i (padding included; the loss masks it); the gradient
    of s_{i,t} = exp(log s_{i,t}) is s_i ∇logp_{i,t}. A row's mean over its tokens equals GSPO's
    ∇s_i = s_i (1/|o_i|) Σ_t ∇logp_{i,t}. A row without tokens gets log s_i = 0.
    Shapes: (N, T), (N, T), (N, T) -> (N, T).
    """
    keep_NT = mask_NT > 0
    diff_NT = torch.where(keep_NT, logp_NT - old_logp_NT.detach().to(logp_NT.dtype), torch.zeros_like(logp_NT))
    length_N = keep_NT.sum(dim=-1).clamp(min=1).to(logp_NT.dtype)
    log_s_N = (diff_NT.sum(dim=-1) / length_N).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_s_N.detach().unsqueeze(-1) + logp_NT - logp_NT.detach()


class GSPO(PolicyLoss):
    """Group Sequence Policy Optimization (Zheng et al., Qwen, arXiv 2507.18071; objective Eq. 5, whose
    clip ranges the paper sets to 3e-4 and 4e-4 in Sec. 5.1), as a loss to minimise:

        s_i = (π_θ(o_i|q) / π_old(o_i|q))^(1/|o_i|) = exp((1/|o_i|) Σ_t log r_{i,t})
        ℓ_i = max(−A_i s_i, −A_i clip(s_i, 1 − ε_low, 1 + ε_high))
        loss = (1/N') Σ_i ℓ_i  (+ β · agg(k3))

    computed per token in the GSPO-token form (:func:`sequence_log_ratio`) and reduced with
    ``aggregation`` (default seq_mean_token_mean, which is the (1/N') Σ_i ℓ_i above since every
    token of a row holds ℓ_i). One clip decision per sequence: ``ppo/clip_frac`` counts all tokens of
    a clipped sequence. Paper defaults: ε_low 3e-4, ε_high 4e-4, no KL. Peers' differences: module
    docstring. Shapes: as :class:`PolicyLoss`.
    """

    def __init__(self, clip_low: float = 3e-4, clip_high: float = 4e-4, kl_coef: float = 0.0,
                 aggregation: str = "seq_mean_token_mean", norm_constant: float | None = None,
                 rollout_correction: str = "none", rollout_cap: float = 2.0) -> None:
        super().__init__(kl_coef, aggregation, norm_constant, rollout_correction, rollout_cap)
        if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
        self.clip_low, self.clip_high = float(clip_low), float(clip_high)

    def per_token(self, logp_NT: torch.Tensor, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        log_s_NT = sequence_log_ratio(logp_NT, batch.old_logp_NT, batch.mask_NT)
        # clipped_surrogate takes log-probs: log s_{i,t} against 0 gives the ratio s_{i,t}
        return clipped_surrogate(log_s_NT, torch.zeros_like(log_s_NT), batch.advantages_N,
                                 self.clip_low, self.clip_high)


class LUSPO(GSPO):
    """Length-Unbiased Sequence Policy Optimization (Liu, Yin et al., Meituan, arXiv 2602.05261; as TRL
    defines ``loss_type="luspo"``): GSPO's per-sequence loss ℓ_i scaled by the sequence's length,

        loss = (1/N') Σ_i |o_i| ℓ_i  (+ β · (1/N') Σ_i Σ_t D̂_{i,t})

    i.e. GSPO-token reduced with seq_mean_token_sum (each of the |o_i| tokens holds ℓ_i). GSPO's
    (1/|o_i|) inside s_i shrinks a long sequence's gradient; the factor |o_i| undoes that, so a
    token's gradient no longer depends on its sequence's length. The aggregation is what the method
    is, hence not a parameter. Defaults: ε_low 2e-3, ε_high 2.5e-3 (paper Sec. 5.1, per TRL's paper
    index), no KL. TRL divides by all N rows, rlrun by the N' with a token. Shapes: as :class:`PolicyLoss`.
    """

    def __init__(self, clip_low: float = 2e-3, clip_high: float = 2.5e-3, kl_coef: float = 0.0,
                 rollout_correction: str = "none", rollout_cap: float = 2.0) -> None:
        super().__init__(clip_low, clip_high, kl_coef, "seq_mean_token_sum", None, rollout_correction, rollout_cap)


class CISPO(PolicyLoss):
    """Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv 2506.13585, Sec. 3.1, the CISPO
    objective and its clipped weight; equation numbers not checked), as a loss to minimise:

        ŵ_{i,t} = sg[clip(r_{i,t}, 1 − ε_low, 1 + ε_high)]
        ℓ_{i,t} = −ŵ_{i,t} A_i log π_θ(o_{i,t})        aggregated token_mean: 1/Σ_i |o_i| (the paper)

    Unlike the clipped surrogate no token loses its gradient: ∇ℓ_{i,t} = −ŵ_{i,t} A_i ∇log π_θ(o_{i,t})
    (tested), the clip only bounds the weight. ``clip_low`` null: no lower bound (the paper sets
    ε_low "large"). ``ppo/clip_frac`` counts the tokens whose weight was cut (r outside the bounds,
    verl's count; TRL counts only r > cap with A > 0). The value of ``loss/policy`` is −agg(ŵ A log π),
    not a surrogate of the return. Defaults and the peers' forms: module docstring.
    Shapes: as :class:`PolicyLoss`.
    """

    def __init__(self, clip_low: float | None = None, clip_high: float = 4.0, kl_coef: float = 0.0,
                 aggregation: str = "token_mean", norm_constant: float | None = None,
                 rollout_correction: str = "none", rollout_cap: float = 2.0) -> None:
        super().__init__(kl_coef, aggregation, norm_constant, rollout_correction, rollout_cap)
        if not ((clip_low is None or clip_low >= 0.0) and clip_high >= 0.0):
            raise ValueError(f"need clip_low >= 0 (or null: no lower bound) and clip_high >= 0, got {clip_low}, {clip_high}")
        self.clip_low = None if clip_low is None else float(clip_low)
        self.clip_high = float(clip_high)

    def per_token(self, logp_NT: torch.Tensor, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        log_ratio = (logp_NT - batch.old_logp_NT.detach().to(logp_NT.dtype)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ratio = torch.exp(log_ratio).detach()
        low = None if self.clip_low is None else 1.0 - self.clip_low
        weight = ratio.clamp(min=low, max=1.0 + self.clip_high)
        advantages = batch.advantages_N.detach().to(logp_NT.dtype).unsqueeze(-1)
        return -weight * advantages * logp_NT, weight != ratio


class SAPO(PolicyLoss):
    """Soft Adaptive Policy Optimization (Gao, Zheng et al., Qwen, arXiv 2511.20347; the soft-gated
    objective of Sec. 3, equation numbers not checked), as a loss to minimise: a sigmoid gate of the
    token ratio in place of the clip,

        τ_{i,t} = τ_pos if A_i > 0 else τ_neg
        f(r) = σ(τ (r − 1)) · 4/τ
        ℓ_{i,t} = −f(r_{i,t}) A_i                      aggregated seq_mean_token_mean (the paper)

    ∂f/∂r = 4 σ(1 − σ): 1 at r = 1 (the on-policy gradient, as the plain surrogate), decaying
    smoothly as r leaves 1, faster with a larger τ; τ_neg > τ_pos damps negative updates more.
    Nothing is clipped: ``ppo/clip_frac`` is 0 (verl reports 0 too). Defaults τ_pos 1.0, τ_neg 1.05
    (the paper's, verl's and TRL's). Shapes: as :class:`PolicyLoss`.
    """

    def __init__(self, tau_pos: float = 1.0, tau_neg: float = 1.05, kl_coef: float = 0.0,
                 aggregation: str = "seq_mean_token_mean", norm_constant: float | None = None,
                 rollout_correction: str = "none", rollout_cap: float = 2.0) -> None:
        super().__init__(kl_coef, aggregation, norm_constant, rollout_correction, rollout_cap)
        if not (tau_pos > 0.0 and tau_neg > 0.0):
            raise ValueError(f"need tau_pos > 0 and tau_neg > 0, got {tau_pos}, {tau_neg}")
        self.tau_pos, self.tau_neg = float(tau_pos), float(tau_neg)

    def per_token(self, logp_NT: torch.Tensor, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        log_ratio = (logp_NT - batch.old_logp_NT.detach().to(logp_NT.dtype)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ratio = torch.exp(log_ratio)
        advantages = batch.advantages_N.detach().to(logp_NT.dtype).unsqueeze(-1)
        tau = torch.where(advantages > 0, self.tau_pos, self.tau_neg).to(logp_NT.dtype)
        gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
        return -gate * advantages, torch.zeros_like(ratio, dtype=torch.bool)
