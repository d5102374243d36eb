"""The PPO/GRPO clipped surrogate with a k3 KL penalty and the four loss-aggregation modes
(ALGORITHMS.md 1.1.3 and 1.2.3), and ``PolicyLoss``, the template every policy loss shares (KL,
aggregation, rollout correction, statistics; the sequence-level losses are in ``seq_losses.py``).

Aggregation denominators (the total number of response tokens and N', the rows with at least one
response token) are taken over the whole optimisation mini-batch, on all ranks, and arrive in
``StepBatch.norm``. Every mode is then a sum over rows divided by a global constant, so the losses
of the micro-batches add up to the loss of the full mini-batch exactly, and so do their gradients.
``loss_norm`` computes the two numbers of one rank's rows; the trainer all-reduces them (sum).
"""
from __future__ import annotations

import torch

from rlrun.types import LossNorm, StepBatch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
LOG_RATIO_CLAMP = 20.0  # verl clamps log(pi/pi_old) to [-20, 20] before exp
KL_LOG_CLAMP = 20.0  # verl low_var_kl: d = ref_logp - logp clamped to [-20, 20]
KL_VALUE_CLAMP = 10.0  # verl low_var_kl: k3 clamped to [-10, 10]


def loss_norm(mask_NT: torch.Tensor) -> LossNorm:
    """The aggregation denominators of the rows in ``mask_NT`` (ALGORITHMS.md 1.2.3):
    ``total_tokens = Σ_i |o_i|`` and ``total_rows = N' = #{i : |o_i| > 0}``, ``|o_i| = Σ_t m_{i,t}``.

    Shapes: ``mask_NT`` (N, T), 1/True on response tokens -> two Python floats. Sum both over
    micro-batches and ranks to get the mini-batch's ``LossNorm``.
    """
    length_N = (mask_NT > 0).sum(dim=-1)
    return LossNorm(total_tokens=float(length_N.sum()), total_rows=float((length_N > 0).sum()))


def aggregate(
    values_NT: torch.Tensor,
    mask_NT: torch.Tensor,
    mode: str,
    norm: LossNorm | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce per-token values to the scalar of one aggregation mode (ALGORITHMS.md 1.2.3 table).

    With ``m`` the mask, ``|o_i| = Σ_t m_{i,t}``, ``S_i = Σ_t m_{i,t} v_{i,t}``, and the denominators
    of ``norm`` (``Σ_i |o_i|`` and N' over the whole mini-batch; computed from ``mask_NT`` if None):

    - ``token_mean``:              Σ_i S_i / Σ_i |o_i|                 (DAPO, verl default)
    - ``seq_mean_token_mean``:     (1/N') Σ_i S_i / |o_i|              (GRPO, DeepSeekMath Eq. 3)
    - ``seq_mean_token_sum``:      (1/N') Σ_i S_i
    - ``seq_mean_token_sum_norm``: (1/N') Σ_i S_i / C                  (Dr. GRPO, arXiv 2503.20783)

    Rows with ``|o_i| = 0`` contribute 0. A zero denominator only happens with a zero numerator
    (nothing unmasked); the result is then 0, still attached to the graph.
    Shapes: ``values_NT`` (N, T), ``mask_NT`` (N, T) -> scalar.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
    if values_NT.shape != mask_NT.shape:
        raise ValueError(f"values {tuple(values_NT.shape)} and mask {tuple(mask_NT.shape)} differ")
    keep_NT = mask_NT > 0
    norm = loss_norm(mask_NT) if norm is None else norm
    sum_N = torch.where(keep_NT, values_NT, torch.zeros_like(values_NT)).sum(dim=-1)
    rows = max(float(norm.total_rows), 1.0)
    if mode == "token_mean":
        return sum_N.sum() / max(float(norm.total_tokens), 1.0)
    if mode == "seq_mean_token_mean":
        length_N = keep_NT.sum(dim=-1).clamp(min=1).to(values_NT.dtype)
        return (sum_N / length_N).sum() / rows
    if mode == "seq_mean_token_sum":
        return sum_N.sum() / rows
    if norm_constant is None or not norm_constant > 0:
        raise ValueError(f"seq_mean_token_sum_norm needs norm_constant > 0, got {norm_constant}")
    return sum_N.sum() / (rows * float(norm_constant))


def clipped_surrogate(
    logp_NT: torch.Tensor,
    old_logp_NT: torch.Tensor,
    advantages_N: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO clipped surrogate as a loss (PPO, arXiv 1707.06347 Eq. 7; GRPO, DeepSeekMath
    arXiv 2402.03300 Eq. 3; ALGORITHMS.md 1.1.3):

        ρ = exp(clamp(logp − old_logp, −20, 20))
        ℓ = max(−A ρ, −A clip(ρ, 1 − clip_low, 1 + clip_high))
        ℓ ← min(ℓ, −A c)  where A < 0          (dual clip, only when ``dual_clip`` = c is given)

    Dual clip: Ye et al., "Mastering Complex Control in MOBA Games with Deep Reinforcement
    Learning", arXiv 1912.09729 (equation number not checked); verl's ``clip_ratio_c`` (3.0).

    Returns ``(loss_NT, clipped_NT)``: ``clipped_NT`` is True where a clip removed the gradient,
    i.e. the clipped term is strictly the larger one (verl's ``pg_clipfrac``) or, with dual clip,
    the ``−A c`` cap is strictly the smaller one.
    Shapes: ``logp_NT``, ``old_logp_NT`` (N, T); ``advantages_N`` (N,) broadcast over tokens.
    """
    advantages = advantages_N.detach().to(logp_NT.dtype).unsqueeze(-1)
    log_ratio = (logp_NT - old_logp_NT.detach().to(logp_NT.dtype)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    clipped_NT = clipped > unclipped
    if dual_clip is not None:
        cap = -advantages * dual_clip
        capped_NT = (advantages < 0) & (cap < loss)
        loss = torch.where(capped_NT, cap.expand_as(loss), loss)
        clipped_NT = clipped_NT | capped_NT
    return loss, clipped_NT


def k3(logp_NT: torch.Tensor, ref_logp_NT: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ || π_ref) per token (DeepSeekMath arXiv 2402.03300 Eq. 4),
    with verl's ``low_var_kl`` clamps (ALGORITHMS.md 1.1.3):

        d = clamp(ref_logp − logp, −20, 20),   D = clamp(exp(d) − d − 1, −10, 10).

    Shapes: (N, T), (N, T) -> (N, T). The reference is detached.
    """
    d = (ref_logp_NT.detach().to(logp_NT.dtype) - logp_NT).clamp(-KL_LOG_CLAMP, KL_LOG_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-KL_VALUE_CLAMP, KL_VALUE_CLAMP)


ROLLOUT_CORRECTIONS = ("none", "tis", "mis")


def rollout_weights(train_logp_NT: torch.Tensor, rollout_logp_NT: torch.Tensor, mode: str,
                    cap: float) -> torch.Tensor:
    """Per-token importance weights for the rollout/trainer mismatch (detached), from
    ρ_t = π_train(y_t) / π_rollout(y_t) = exp(log π_train − log π_rollout):

    - ``tis``, truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework
      Secretly Brings You Off-Policy RL Training", fengyao.notion.site/off-policy-rl; verl's
      ``rollout_is`` truncate mode, TRL's ``vllm_importance_sampling_cap``): w_t = min(ρ_t, C);
    - ``mis``, masked importance sampling (Liu, Li et al. 2025, "When Speed Kills Stability:
      Demystifying RL Collapse from the Training-Inference Mismatch"): w_t = ρ_t · 1[ρ_t ≤ C], a
      token whose ratio exceeds the cap leaves the gradient instead of being clipped to it.
      Choice: token level, and the loss denominators keep the masked tokens (verl's rejection mode
      drops them from the denominators too; here the loss scale stays that of ``none``).

    Worked example (tests/core/test_losses.py): log π_train = (−1.0, −2.0), log π_rollout = (−1.5,
    −1.0), C = 1.5: ρ = (e^0.5, e^−1) = (1.6487, 0.3679); tis w = (1.5, 0.3679); mis w = (0, 0.3679).
    """
    ratio = torch.exp((train_logp_NT.detach().float() - rollout_logp_NT.detach().float()).clamp(-20.0, 20.0))
    if mode == "tis":
        return ratio.clamp(max=cap)
    if mode == "mis":
        return ratio * (ratio <= cap)
    raise ValueError(f"rollout correction {mode!r}; choose one of {', '.join(ROLLOUT_CORRECTIONS)}")


class PolicyLoss:
    """What every policy loss of rlrun shares (``ClippedSurrogate`` here; GSPO, LUSPO, CISPO and SAPO in
    ``rlrun.core.seq_losses``): a subclass's per-token policy term ``ℓ^pg`` (:meth:`per_token`), optionally
    weighted for the rollout/trainer mismatch, plus ``kl_coef`` times the per-token k3 KL (``k3``), each
    reduced with ``aggregate(mode=aggregation)`` over the mini-batch denominators in ``batch.norm``:

        loss = agg(w ⊙ ℓ^pg) + β · agg(D̂)         (w = 1 unless ``rollout_correction`` is tis | mis)

    ``needs_reference`` is ``kl_coef > 0``: only then is ``batch.ref_logp_NT`` read.
    ``norm_constant`` (C) is read only by ``seq_mean_token_sum_norm``, which requires it.
    ``rollout_correction`` (``none`` | ``tis`` | ``mis``, cap ``rollout_cap``) multiplies each
    token's policy term by the importance weight of :func:`rollout_weights` between the trainer's
    π_old (``batch.old_logp_NT``) and the rollout engine's log-probs (``batch.logp_NT``); the share
    of tokens whose ratio passed the cap is logged as ``rollout/is_capped_frac``.

    Statistics (detached scalars, each a sum over the micro-batch's rows divided by the global
    denominators, so that summing them over micro-batches and ranks gives the mini-batch value):
    ``loss/policy`` = agg(w ⊙ ℓ^pg); ``loss/kl`` = agg(D̂) (not multiplied by β; 0 when β = 0);
    ``ppo/clip_frac`` = (clipped response tokens of this micro-batch) / (response tokens of the
    whole mini-batch), i.e. always a token mean whatever the aggregation mode. A quantity of a whole
    row (GSPO's sequence ratio) is computed inside the micro-batch: rows are never split.

    The arithmetic runs in float32 at least (bf16 log-probs are upcast; float64 stays float64).
    Shapes: ``logp_NT`` (N, T) with grad; ``batch`` tensors as documented in ``StepBatch``.
    """

    def __init__(self, kl_coef: float, aggregation: str, norm_constant: float | None,
                 rollout_correction: str, rollout_cap: float) -> None:
        if rollout_correction not in ROLLOUT_CORRECTIONS:
            raise ValueError(f"rollout_correction={rollout_correction!r}; choose one of {', '.join(ROLLOUT_CORRECTIONS)}")
        if not rollout_cap > 1.0:
            raise ValueError(f"rollout_cap must be > 1 (the largest importance weight kept), got {rollout_cap}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
            )
        if aggregation == "seq_mean_token_sum_norm" and (norm_constant is None or not norm_constant > 0):
            raise ValueError(
                "aggregation seq_mean_token_sum_norm needs norm_constant > 0 (e.g. the maximum "
                f"response length in tokens), got {norm_constant}"
            )
        if not kl_coef >= 0.0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.rollout_correction, self.rollout_cap = rollout_correction, float(rollout_cap)
        self.kl_coef = float(kl_coef)
        self.aggregation = aggregation
        self.norm_constant = None if norm_constant is None else float(norm_constant)
        self.needs_reference = self.kl_coef > 0.0
        # A = 0 makes every policy term 0 (each is A times something finite); only the KL term reads such rows.
        self.zero_advantage_is_zero_loss = not self.needs_reference

    def per_token(self, logp_NT: torch.Tensor, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ℓ^pg_NT, clipped_NT)``: the per-token policy loss and where a clip removed the gradient."""
        raise NotImplementedError

    def _reduce(self, values_NT: torch.Tensor, mask_NT: torch.Tensor, norm: LossNorm) -> torch.Tensor:
        return aggregate(values_NT, mask_NT, self.aggregation, norm, self.norm_constant)

    def __call__(
        self, logp_NT: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask_NT = batch.mask_NT
        if logp_NT.shape != mask_NT.shape or batch.old_logp_NT.shape != mask_NT.shape:
            raise ValueError(
                f"logp {tuple(logp_NT.shape)}, old_logp {tuple(batch.old_logp_NT.shape)} and mask "
                f"{tuple(mask_NT.shape)} must have the same shape"
            )
        if batch.advantages_N.shape != mask_NT.shape[:1]:
            raise ValueError(f"advantages {tuple(batch.advantages_N.shape)} do not match {mask_NT.shape[0]} rows")
        norm = loss_norm(mask_NT) if batch.norm is None else batch.norm
        logp_NT = logp_NT.to(torch.promote_types(logp_NT.dtype, torch.float32))  # bf16 -> fp32 math
        pg_NT, clipped_NT = self.per_token(logp_NT, batch)
        extra: dict[str, torch.Tensor] = {}
        if self.rollout_correction != "none":
            pg_NT, extra = self._rollout_corrected(pg_NT, batch, norm)
        policy = self._reduce(pg_NT, mask_NT, norm)
        loss = policy
        kl = torch.zeros((), dtype=policy.dtype, device=policy.device)
        if self.needs_reference:
            if batch.ref_logp_NT is None:
                raise ValueError("kl_coef > 0 needs batch.ref_logp_NT (the reference log-probs)")
            kl = self._reduce(k3(logp_NT, batch.ref_logp_NT), mask_NT, norm)
            loss = policy + self.kl_coef * kl
        clipped_tokens = (clipped_NT & (mask_NT > 0)).sum().to(policy.dtype)
        stats = {
            "loss/policy": policy.detach(),
            "loss/kl": kl.detach(),
            "ppo/clip_frac": clipped_tokens / max(float(norm.total_tokens), 1.0),
            **extra,
        }
        return loss, stats

    def _rollout_corrected(self, pg_NT: torch.Tensor, batch: StepBatch,
                           norm: LossNorm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.logp_NT is None:
            raise ValueError("rollout_correction needs the rollout engine's log-probs (batch.logp_NT)")
        weight_NT = rollout_weights(batch.old_logp_NT, batch.logp_NT, self.rollout_correction, self.rollout_cap)
        over = torch.exp((batch.old_logp_NT.float() - batch.logp_NT.float()).clamp(-20.0, 20.0)) > self.rollout_cap
        # tokens whose ratio passed the cap (truncated by tis, masked by mis), over the mini-batch's
        # tokens: a sum over micro-batches and ranks like the other statistics
        capped = (over & (batch.mask_NT > 0)).sum().to(pg_NT.dtype) / max(float(norm.total_tokens), 1.0)
        return pg_NT * weight_NT.to(pg_NT.dtype), {"rollout/is_capped_frac": capped}


class ClippedSurrogate(PolicyLoss):
    """GRPO's loss (DeepSeekMath arXiv 2402.03300 Eq. 3, as a loss to minimise): the per-token
    clipped surrogate (``clipped_surrogate``) plus ``kl_coef`` times the per-token k3 KL (``k3``),
    each reduced with ``aggregate(mode=aggregation)`` over the mini-batch denominators in
    ``batch.norm``:

        loss = agg(ℓ^pg) + β · agg(D̂)

    KL, aggregation, rollout correction and the statistics are :class:`PolicyLoss`'s;
    ``ppo/clip_frac`` counts the tokens where a clip (or the dual clip) removed the gradient.
    Shapes: ``logp_NT`` (N, T) with grad; ``batch`` tensors as documented in ``StepBatch``.
    """

    def __init__(
        self,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        dual_clip: float | None = None,
        kl_coef: float = 0.0,
        aggregation: str = "seq_mean_token_mean",
        norm_constant: float | None = None,
        rollout_correction: str = "none",
        rollout_cap: float = 2.0,
    ) -> None:
        super().__init__(kl_coef, aggregation, norm_constant, rollout_correction, rollout_cap)
        if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
        if dual_clip is not None and not dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1 (or null for off), got {dual_clip}")
        self.clip_low = float(clip_low)
        self.clip_high = float(clip_high)
        self.dual_clip = None if dual_clip is None else float(dual_clip)

    def per_token(self, logp_NT: torch.Tensor, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return clipped_surrogate(
            logp_NT, batch.old_logp_NT, batch.advantages_N, self.clip_low, self.clip_high, self.dual_clip
        )
