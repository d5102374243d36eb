"""Length reward terms whose target adapts during training, and a reward without gold answers
(ALGORITHMS.md 4.1, 4.3, 4.4):

- :class:`HistoryLengthReward` — HAPO (Huang et al., arXiv 2505.11225): correctness plus a cosine
  (or linear) length reward relative to the shortest correct length seen so far for the question,
  a per-question history kept across steps (state).
- :class:`AdaptiveLengthPenalty` — A-DLP (Su & Cardie, "Thinking Fast and Right", arXiv
  2505.18298): ``correct - lambda_t * L`` with ``lambda_t`` a dual variable following the batch
  accuracy (state); ``lr = 0`` is the static S-DLP.
- :class:`FormatLengthReward` — Format-Length (Xin et al., arXiv 2505.19439, Eq. 1-5): a format
  reward plus a length reward peaking at ``p * L_max``; it reads ``verdicts.format_ok_N`` and
  lengths only, never the gold answer nor ``correct_N``.

Each term returns the whole reward of its method (HAPO and A-DLP include correctness, Format-Length
includes the format reward): use it alone, ``reward=hapo`` etc.

Length ``L``: ``rollouts.length_tokens_N``, response tokens *without* EOS (rlrun's length
contract). HAPO's code re-tokenises the decoded text without special tokens (the same count up to
re-tokenisation); A-DLP's and Format-Length's verl code count the EOS token too: set
``count_eos=True`` on those two for verl's count (``len(completion_ids)``).

Several ranks: each rank's term sees only its own completions. HAPO's history and A-DLP's batch
accuracy would then be per rank; both terms declare ``UsesCollectives`` (``collectives``, set by
the runtime, ``rlrun.core.collectives``): HAPO's ``gather_objects`` makes every rank apply every
rank's history updates, so all ranks keep the one global table; A-DLP's ``reduce_sum`` makes the
accuracy that of the whole batch. Both are collectives, called on every rank at every call of the
term (also with zero rows). With the default (``LOCAL``) each process is its own world.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from rlrun.core.collectives import LOCAL, Collectives
from rlrun.core.rewards import Gate, check_gate, gated
from rlrun.types import StepBatch

HAPO_SHAPES = ("cosine", "linear")
HAPO_MODES = ("min", "mean")
FL_SHAPES = ("quadratic", "polyline")


def lengths_N(batch: StepBatch, count_eos: bool = False) -> torch.Tensor:
    """Response length per completion, float64 (N,): ``length_tokens_N`` (no EOS), or with
    ``count_eos`` the sampled ids including EOS when one was emitted (verl's response mask)."""
    r = batch
    if count_eos:
        return r.sampled_tokens_N.to(torch.float64)
    return r.length_tokens_N.to(torch.float64)


# ----------------------------------------------------------------------------------- HAPO (4.1)


def hapo_length_reward(length_N: torch.Tensor, correct_N: torch.Tensor, history_N: torch.Tensor,
                       shape: str = "cosine", correct_floor: float = -0.7,
                       tolerance: float = 0.1) -> torch.Tensor:
    """HAPO's length reward ``r_len`` (code ``utils.py::compute_len_reward``/``_linear``;
    ALGORITHMS.md 4.1.3), before the weight ``w``. With ``h`` the history (NaN = Null; the code also
    treats ``h <= 0`` as Null) and ``c`` correctness:

        cosine: f = cos(min(pi/2 * L/h, pi));  r = max(f, floor) if c else min(f, 0)
        linear: c: 1 - L/h (L < h), 0 (L < (1+tau) h), max(floor, -(L - (1+tau) h)/h)
                not c: 0 (L < (1+tau) h), max(-1, -(L - (1+tau) h)/h)
        Null h: r = 0.

    ``floor`` = -0.7, ``tau`` = 0.1 (hard-coded in the code). Shapes: (N,) each -> (N,) float64.
    """
    if shape not in HAPO_SHAPES:
        raise ValueError(f"HAPO shape must be one of {HAPO_SHAPES}, got {shape!r}")
    length, h = length_N.to(torch.float64), history_N.to(torch.float64)
    correct = correct_N > 0
    known = ~torch.isnan(h) & (h > 0)
    h_safe = torch.where(known, h, torch.ones_like(h))
    if shape == "cosine":
        f = torch.cos(torch.clamp(math.pi / 2 * length / h_safe, max=math.pi))
        r = torch.where(correct, f.clamp(min=correct_floor), f.clamp(max=0.0))
    else:
        over = -(length - (1 + tolerance) * h_safe) / h_safe
        beyond = length >= (1 + tolerance) * h_safe
        r_correct = torch.where(length < h_safe, 1 - length / h_safe,
                                torch.where(beyond, over.clamp(min=correct_floor), torch.zeros_like(h)))
        r_wrong = torch.where(beyond, over.clamp(min=-1.0), torch.zeros_like(h))
        r = torch.where(correct, r_correct, r_wrong)
    return torch.where(known, r, torch.zeros_like(r))


class HistoryLengthReward:
    """HAPO's reward (arXiv 2505.11225; code ``grpo_trainer.py::combined_reward_func``;
    ALGORITHMS.md 4.1.3):

        r_i = c_i + w * r_len(L_i, h_q(i))        (``hapo_length_reward``; gate=all, the paper)
        r_i = c_i + w * c_i * r_len(L_i, h_q(i))  (gate=correct: a wrong answer gets 0, not its
                                                   never-positive r_len)

    ``h_q`` is the history of question ``q`` (keyed by ``Problem.uid``) **before** this call; after
    the rewards, every question with at least one correct completion in the call updates it:

        min  mode: h_q <- min(h_q, min_k L_k)                       (Null = +inf)
        mean mode: h_q <- m/(n_q+m) * mean_k L_k + n_q/(n_q+m) * h_q;  n_q <- n_q + m

    over its correct lengths ``L_1..L_m``. Questions without a correct completion keep ``h_q``
    (possibly Null: length reward 0). A call is one sampling round (the loop scores each round of
    dynamic sampling separately): a question is compared with the history of earlier calls only.
    Several ranks: with one process's collectives each rank would keep the history of the questions
    it scored (a question served to another rank in a later epoch starts there from Null, and a
    checkpoint written by rank 0 holds rank 0's table only); with the run's every rank applies all
    ranks' updates (HAPO's code merges its per-process tables the same way: min, count-weighted mean).
    The released code's repetition penalty (off by default there) is not implemented.
    Shapes: ``length_tokens_N``, ``correct_N`` (N,) -> (N,) float32.
    """

    def __init__(self, length_weight: float = 1.0, shape: str = "cosine", mode: str = "min",
                 correct_floor: float = -0.7, tolerance: float = 0.1, gate: Gate = "all") -> None:
        if shape not in HAPO_SHAPES:
            raise ValueError(f"HAPO shape must be one of {HAPO_SHAPES}, got {shape!r}")
        if mode not in HAPO_MODES:
            raise ValueError(f"HAPO mode must be one of {HAPO_MODES}, got {mode!r}")
        if not 0.0 <= length_weight <= 1.0:
            raise ValueError(f"length_weight={length_weight} must be in [0, 1] (HAPO README: only then "
                             "does every correct answer outrank every wrong one)")
        if not -1.0 <= correct_floor <= 0.0:
            raise ValueError(f"correct_floor={correct_floor} must be in [-1, 0]")
        if tolerance < 0:
            raise ValueError(f"tolerance={tolerance} must be >= 0")
        self.length_weight, self.shape, self.mode = float(length_weight), shape, mode
        self.correct_floor, self.tolerance = float(correct_floor), float(tolerance)
        self.gate = check_gate(gate)
        self.history: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # mean mode: correct completions seen per question
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        rollouts = batch
        uids = [rollouts.problems[g].uid for g in rollouts.group_N.tolist()]
        length_N = rollouts.length_tokens_N.to(torch.float64)
        correct_N = batch.correct_N.to(torch.float64)
        history_N = torch.tensor([self.history.get(u, math.nan) for u in uids], dtype=torch.float64)
        r_len = hapo_length_reward(length_N, correct_N, history_N, self.shape, self.correct_floor,
                                   self.tolerance)
        self._update(uids, length_N.tolist(), (correct_N > 0).tolist())
        return (correct_N + self.length_weight * gated(r_len, correct_N, self.gate)).to(torch.float32)

    def _update(self, uids: list[str], lengths: list[float], correct: list[bool]) -> None:
        """Apply this call's history update: per question ``[min L, sum L, m]`` of its correct rows
        (of every rank, ``collectives.gather_objects``)."""
        local: dict[str, list[float]] = {}
        for uid, length, ok in zip(uids, lengths, correct):
            if ok:
                seen = local.setdefault(uid, [math.inf, 0.0, 0])
                seen[0], seen[1], seen[2] = min(seen[0], length), seen[1] + length, seen[2] + 1
        parts = self.collectives.gather_objects(local)
        merged: dict[str, list[float]] = {}
        for part in parts:
            for uid, (low, total, m) in part.items():
                seen = merged.setdefault(uid, [math.inf, 0.0, 0])
                seen[0], seen[1], seen[2] = min(seen[0], low), seen[1] + total, seen[2] + m
        for uid, (low, total, m) in merged.items():
            if self.mode == "min":
                self.history[uid] = min(self.history.get(uid, math.inf), low)
                continue
            n = self.counts.get(uid, 0)
            mean = total / m
            self.history[uid] = mean if n == 0 else m / (n + m) * mean + n / (n + m) * self.history[uid]
            self.counts[uid] = n + m

    def metrics(self) -> dict[str, float]:
        """``history_size`` (questions with a history) and ``history_mean_tokens`` (their mean h)."""
        values = list(self.history.values())
        return {"history_size": float(len(values)),
                "history_mean_tokens": sum(values) / len(values) if values else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "history": dict(self.history), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"HAPO history was kept in mode {state.get('mode')!r}, this run uses "
                             f"mode {self.mode!r}")
        self.history = {str(k): float(v) for k, v in state["history"].items()}
        self.counts = {str(k): int(v) for k, v in state["counts"].items()}


# ---------------------------------------------------------------------------------- A-DLP (4.3)


class AdaptiveLengthPenalty:
    """A-DLP's reward (arXiv 2505.18298; code ``main_ppo.py::constrained_reward_fn`` and
    ``ray_trainer.py::fit``; ALGORITHMS.md 4.3.3), over the B*G completions of step ``t``:

        R_j = I_j - lambda_t * L_j          (gate=all, the paper; gate=correct: I_j - I_j lambda_t L_j)
        acc_t = (1/(B G)) sum_j 1[I_j > 0]
        lambda_{t+1} = max(0, lambda_t + lr * (acc_t - acc_ref))

    ``I_j`` = ``correct_N``. Every call of step ``t`` (one per sampling round) uses ``lambda_t``
    and adds its completions to ``acc_t``; the update is applied when the first call of a later
    step arrives (so a step's accuracy covers all its rounds, and the pending sums are part of the
    state: a resumed run applies them exactly). A step with no completions leaves lambda unchanged.
    ``lr = 0`` is S-DLP (fixed lambda). ``collectives.reduce_sum`` (cross-rank sum) makes
    ``acc_t`` the accuracy of all ranks' completions, as in verl (one process's: each rank its own).
    Shapes: ``correct_N``, lengths (N,) -> (N,) float32.
    """

    def __init__(self, lambda_init: float = 1e-3, lr: float = 1e-3, acc_ref: float = 0.62,
                 count_eos: bool = False, gate: Gate = "all") -> None:
        if lambda_init < 0 or lr < 0:
            raise ValueError(f"lambda_init={lambda_init} and lr={lr} must be >= 0")
        if not 0.0 <= acc_ref <= 1.0:
            raise ValueError(f"acc_ref={acc_ref} must be in [0, 1]")
        self.lam, self.lr, self.acc_ref = float(lambda_init), float(lr), float(acc_ref)
        self.count_eos, self.gate = bool(count_eos), check_gate(gate)
        self.pending_step: int | None = None
        self.pending_correct, self.pending_count = 0.0, 0.0
        self.collectives: Collectives = LOCAL  # UsesCollectives: the run's, set before the first step

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        if self.pending_step is not None and batch.step != self.pending_step:
            self._apply()
        correct_N = batch.correct_N.to(torch.float64)
        reward_N = correct_N - gated(self.lam * lengths_N(batch, self.count_eos), correct_N, self.gate)
        sums = torch.tensor([float((correct_N > 0).sum()), float(len(correct_N))], dtype=torch.float64)
        sums = self.collectives.reduce_sum(sums)
        self.pending_step = batch.step
        self.pending_correct += float(sums[0])
        self.pending_count += float(sums[1])
        return reward_N.to(torch.float32)

    def _apply(self) -> None:
        """lambda <- max(0, lambda + lr * (acc - acc_ref)) for the pending step (if it had rows)."""
        if self.pending_count > 0:
            acc = self.pending_correct / self.pending_count
            self.lam = max(0.0, self.lam + self.lr * (acc - self.acc_ref))
        self.pending_step, self.pending_correct, self.pending_count = None, 0.0, 0.0

    def metrics(self) -> dict[str, float]:
        """``lambda`` (used by the latest step), ``acc`` (that step's accuracy so far), ``gap``."""
        acc = self.pending_correct / self.pending_count if self.pending_count else 0.0
        return {"lambda": self.lam, "acc": acc, "gap": acc - self.acc_ref}

    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self.lam, "pending_step": self.pending_step,
                "pending_correct": self.pending_correct, "pending_count": self.pending_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lambda"])
        self.pending_step = None if state["pending_step"] is None else int(state["pending_step"])
        self.pending_correct = float(state["pending_correct"])
        self.pending_count = float(state["pending_count"])


# --------------------------------------------------------------------------- Format-Length (4.4)


def format_length_shape(x_N: torch.Tensor, turning_point: float = 0.5,
                        shape: str = "quadratic") -> torch.Tensor:
    """Format-Length's length reward R_l of ``x = L / L_max`` (arXiv 2505.19439 Eq. 2-4):

        quadratic: 1 - (1 - x/p)^2 (x <= p),  1 - 2 ((x - p)/(1 - p))^2 (x > p)   (Eq. 2)
        polyline:  x/p (x <= p),  1 - 2 (x - p)/(1 - p) (x > p)     (Eq. 4 is 2x, 3 - 4x at p = 0.5)

    0 at x = 0, 1 at x = p, -1 at x = 1; x > 1 is not clamped (code: ``x = 4/3`` gives -4.146701).
    The polyline for p != 0.5 is rlrun's generalisation (the paper states it for p = 0.5 only).
    Shapes: (N,) -> (N,) float64.
    """
    if shape not in FL_SHAPES:
        raise ValueError(f"Format-Length shape must be one of {FL_SHAPES}, got {shape!r}")
    if not 0.0 < turning_point < 1.0:
        raise ValueError(f"turning_point={turning_point} must be in (0, 1)")
    x, p = x_N.to(torch.float64), float(turning_point)
    if shape == "quadratic":
        return torch.where(x <= p, 1 - (1 - x / p) ** 2, 1 - 2 * ((x - p) / (1 - p)) ** 2)
    return torch.where(x <= p, x / p, 1 - 2 * (x - p) / (1 - p))


class FormatLengthReward:
    """Format-Length surrogate reward, no gold answer (arXiv 2505.19439 Eq. 1-5; ALGORITHMS.md 4.4.3):

        R_fl = format_weight + R_l(L / L_max)   if format_ok
             = min(0, R_l(L / L_max))           otherwise                (Eq. 5)

    It reads ``verdicts.format_ok_N`` (the verifier's format check: for the paper a non-empty
    ``\\boxed{}`` whose content parses as mathematics) and the lengths, never ``correct_N`` nor the
    gold answer. It has therefore no correctness ``gate`` (the length terms' ``correct|all``): a
    reward without gold answers cannot gate on correctness. ``format_weight``: paper 1.0 (Eq. 5);
    released code 0.5 (its format part with the Qwen-Math template, where the ``<think>`` check never
    fires; that check is not implemented).
    ``max_tokens`` = L_max; None uses each completion's generation cap (``budget_tokens_N``), as the
    paper's L_max = max response length. ``clip_unformatted=False`` gives a format-wrong completion
    R_l unclipped (the paper's "clipping disabled" ablation, as rlrun reads it).
    Shapes: ``format_ok_N``, lengths, ``budget_tokens_N`` (N,) -> (N,) float32.
    """

    def __init__(self, turning_point: float = 0.5, max_tokens: int | None = None,
                 format_weight: float = 1.0, shape: str = "quadratic", clip_unformatted: bool = True,
                 count_eos: bool = False) -> None:
        format_length_shape(torch.zeros(1), turning_point, shape)  # validates p and shape
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be >= 1 (or null: the generation cap)")
        if format_weight < 0:
            raise ValueError(f"format_weight={format_weight} must be >= 0")
        self.turning_point, self.shape = float(turning_point), shape
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.format_weight, self.clip_unformatted = float(format_weight), bool(clip_unformatted)
        self.count_eos = bool(count_eos)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        length_N = lengths_N(batch, self.count_eos)
        if self.max_tokens is None:
            max_N = batch.budget_tokens_N.to(torch.float64)
            if len(max_N) and float(max_N.min()) < 1:
                raise ValueError("Format-Length needs a generation cap >= 1 per completion "
                                 "(budget_tokens_N) or max_tokens")
        else:
            max_N = torch.full_like(length_N, float(self.max_tokens))
        r_len = format_length_shape(length_N / max_N, self.turning_point, self.shape)
        unformatted = r_len.clamp(max=0.0) if self.clip_unformatted else r_len
        format_ok = batch.format_ok_N > 0
        return torch.where(format_ok, self.format_weight + r_len, unformatted).to(torch.float32)
