"""LASER-D and LASER-DE (Liu et al., arXiv 2505.15612, Sec. 4, Eq. 3; ALGORITHMS.md 3.2.3): LASER
(``rlrun.core.laser``, whose base reward and ``len`` convention these share: the whole shaped reward,
lengths with EOS) with a target per difficulty bucket, chosen from a monitor's coverage.

LASER-D/DE targets (:class:`LaserTargets`) come from a *monitor*: K = ``targets.n_rollout``
responses per question of a monitor set of ``monitor_problems`` questions, before step 0 and before
every step with ``step % monitor_every == 0`` (the paper: after the update of every 20th step).
``monitor`` picks the set:

- ``data`` (the paper: 500 training questions): a fixed sample of the training data
  (``data.source.monitor(n)``), run by the loop (``rlrun.runtime.monitor``), which calls
  :meth:`LaserD.observe_monitor` with every rank's responses;
- ``eval``: the held-out split (``data.source.held_out(n)``), run the same way;
- ``batch``: no extra sampling; the targets come from the **training batch being scored** (this
  rank's completions, this sampling round) at the due steps, with K = G (cheap, rank-local);
- ``none``: the paper code without a monitor: every bucket uses ``targets.default_tokens``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch

from rlrun.core.laser import CORRECT, WRONG, base_score, bonus_rows, sampled_lengths
from rlrun.core.rewards import Gate, check_gate
from rlrun.types import StepBatch

BUCKETS = ("low", "medium", "high")  # hard, medium, easy
ROUND_METHODS = ("floor", "ceil")
MONITORS = ("batch", "eval", "data", "none")
REPETITION = ("detect", "as_released")


def candidate_lengths(lower: int, upper: int, interval: int, grid_start: int = 1024) -> list[int]:
    """The code's ``get_length_threshold`` (ALGORITHMS.md 3.2.3): ``[lower] + range(1024, upper +
    interval, interval)`` if ``lower < 1024`` else ``range(lower, upper + interval, interval)``.
    May exceed ``upper`` (pitfall 10): (1000, 2500, 1024) -> [1000, 1024, 2048, 3072].
    ``grid_start`` is the code's constant 1024 (rlrun makes it a knob so that a task with ~100-token
    answers gets a grid: (96, 160, 16, grid_start=96) -> [96, 112, 128, 144, 160])."""
    if lower < grid_start:
        return [lower] + list(range(grid_start, upper + interval, interval))
    return list(range(lower, upper + interval, interval))


def _group_counts(flag_N: torch.Tensor, group_N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits per group, members per group) over the group ids present; index by ``group_N``."""
    size = int(group_N.max()) + 1 if len(group_N) else 0
    hits = torch.bincount(group_N, weights=flag_N.to(torch.float64), minlength=size).round().long()
    members = torch.bincount(group_N, minlength=size)
    return hits, members


def training_buckets(score_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
    """Training bucket of each completion (code ``compute_length_reward_larse_d``): acc = #(score
    == 1)/n of its group; ``high`` (2) if acc ≥ 2/3, ``medium`` (1) if acc ≥ 1/3, else ``low`` (0).
    Compared as integers (3k ≥ 2n), which equals the code's float test. (N,) -> (N,) long."""
    hits, members = _group_counts(score_N == CORRECT, group_N)
    k, n = hits[group_N], members[group_N]
    return (3 * k >= n).long() + (3 * k >= 2 * n).long()


def monitor_buckets(correct_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor:
    """Monitor bucket (code ``count_accuracy_bands_metrics``): format-agnostic acc; ``low`` (0) if
    acc ≤ 1/3, ``medium`` (1) if acc ≤ 2/3, else ``high`` (2). Note the boundaries differ from
    :func:`training_buckets` (pitfall 4). (N,) -> (N,) long."""
    hits, members = _group_counts(correct_N.bool(), group_N)
    k, n = hits[group_N], members[group_N]
    return (3 * k > n).long() + (3 * k > 2 * n).long()


@dataclass
class LaserTargets:
    """LASER-D's per-bucket targets L_A (paper Eq. 3; code ``_choose_target_length``; ALGORITHMS.md
    3.2.3). :meth:`update` stores the monitor's coverage ``P_{l,d}`` = share of all responses of the
    questions in bucket d with ``len ≤ l``, for every candidate ``l`` of
    ``candidate_lengths(lower_bound, upper_bound, interval)``. :meth:`targets` then gives

        L_A(d) = min({fallback} ∪ {l : ECR_d(l) ≥ expected_n_correct}),
        floor: |C| = int(n·2/3), int(n/3), 1 and ECR = int(P·|C|)     (released scripts)
        ceil:  |C| = ceil(n·2/3), ceil(n/3), 1 and ECR = P·|C|         (the paper: 6, 3, 1)

    for (high, medium, low), ``n = n_rollout`` (the code's default 8, never the configured G,
    pitfall 2), ``fallback`` = the longest response of the training batch. Before any update every
    bucket gets ``default_tokens`` (the code's ``target_length``, 8192 in the scripts).
    State: the coverage counts and the step they were measured at (the repo does not checkpoint
    them, ALGORITHMS.md 3.2.5).
    """

    lower_bound: int = 1024
    upper_bound: int = 16384
    interval: int = 1024
    round_method: str = "floor"
    expected_n_correct: float = 1
    n_rollout: int = 8
    default_tokens: int = 8192
    grid_start: int = 1024  # the code's constant (see candidate_lengths)
    candidates: list[int] = field(init=False)
    within: dict[str, list[int]] | None = field(init=False, default=None)
    totals: dict[str, int] = field(init=False, default_factory=dict)
    questions: dict[str, int] = field(init=False, default_factory=dict)
    measured_at: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.round_method not in ROUND_METHODS:
            raise ValueError(f"round_method={self.round_method!r}; valid: {', '.join(ROUND_METHODS)}")
        if not (1 <= self.lower_bound and 1 <= self.interval and self.n_rollout >= 1 and self.default_tokens >= 1):
            raise ValueError("lower_bound, interval, n_rollout and default_tokens must be >= 1")
        self.candidates = candidate_lengths(self.lower_bound, self.upper_bound, self.interval, self.grid_start)

    def update(self, correct_N: torch.Tensor, length_N: torch.Tensor, group_N: torch.Tensor, step: int) -> None:
        """Replace the coverage table with the monitor's K responses per question: ``correct_N``
        (format-agnostic 0/1), ``length_N`` (tokens with EOS), ``group_N`` (question id). (N,) each."""
        bucket_N = monitor_buckets(correct_N, group_N)
        self.within = {d: [int(((bucket_N == b) & (length_N <= l)).sum()) for l in self.candidates]
                       for b, d in enumerate(BUCKETS)}
        self.totals = {d: int((bucket_N == b).sum()) for b, d in enumerate(BUCKETS)}
        first = [int((group_N == g).nonzero()[0]) for g in torch.unique(group_N).tolist()]
        self.questions = {d: int((bucket_N[first] == b).sum()) for b, d in enumerate(BUCKETS)}
        self.measured_at = int(step)

    def coverage(self, bucket: str) -> list[float]:
        """P_{l,d} for every candidate (0.0 for an empty bucket)."""
        assert self.within is not None, "no monitor statistics yet"
        total = self.totals[bucket]
        return [w / total if total else 0.0 for w in self.within[bucket]]

    def needed(self, bucket: str) -> float:
        """|C_d|, the fewest correct responses of n for a question to be in bucket d."""
        share = {"high": self.n_rollout * 2 / 3, "medium": self.n_rollout * 1 / 3}.get(bucket)
        if share is None:
            return 1
        return int(share) if self.round_method == "floor" else math.ceil(share)

    def targets(self, fallback: int) -> dict[str, int]:
        """L_A per bucket (see the class docstring); ``default_tokens`` before any update."""
        if self.within is None:
            return {d: self.default_tokens for d in BUCKETS}
        result = {}
        for d in BUCKETS:
            target, need = int(fallback), self.needed(d)
            for length, ratio in zip(self.candidates, self.coverage(d)):
                ecr = int(ratio * need) if self.round_method == "floor" else ratio * need
                if ecr >= self.expected_n_correct and length < target:
                    target = length
            result[d] = target
        return result

    def metrics(self) -> dict[str, float]:
        """Monitor statistics to log: questions per bucket and coverage at each candidate."""
        if self.within is None:
            return {}
        out: dict[str, float] = {"laser/monitor_step": float(self.measured_at or 0)}
        for d in BUCKETS:
            out[f"laser/monitor_{d}_questions"] = float(self.questions[d])
            for length, ratio in zip(self.candidates, self.coverage(d)):
                out[f"laser/coverage_{d}/length_{length}"] = ratio
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"candidates": list(self.candidates), "within": self.within, "totals": dict(self.totals),
                "questions": dict(self.questions), "measured_at": self.measured_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["candidates"]) != self.candidates:
            raise ValueError(f"checkpoint's LASER candidate lengths {list(state['candidates'])} differ "
                             f"from this config's {self.candidates}")
        self.within = None if state["within"] is None else {d: list(v) for d, v in state["within"].items()}
        self.totals, self.questions = dict(state["totals"]), dict(state["questions"])
        self.measured_at = state["measured_at"]


class LaserD:
    """LASER-D (paper Sec. 4, Eq. 3; code ``compute_length_reward_larse_d``; ALGORITHMS.md 3.2.3):

        r_i = R_i + alpha · 1[R_i = 1] · 1[len_i ≤ L_A(bucket of i's group)]   (gate=correct, the paper)
        r_i = R_i + alpha · 1[len_i ≤ L_A(bucket of i's group)]               (gate=all)

    buckets by :func:`training_buckets`, ``L_A`` from ``targets`` (:class:`LaserTargets`) with the
    batch's longest response as fallback (rank-local here; the whole batch in verl).
    ``monitor`` says where the coverage comes from (module docstring): ``data``/``eval`` (the loop
    samples ``monitor_problems`` questions and calls :meth:`observe_monitor` before step 0 and before
    every step with ``step % monitor_every == 0``), ``batch`` (the training batch), ``none``
    (default targets).
    State: ``targets``. :meth:`metrics` gives the current targets and monitor statistics to log.
    """

    def __init__(self, targets: LaserTargets | None = None, alpha: float = 0.5, monitor: str = "data",
                 monitor_every: int = 20, monitor_problems: int = 500, gate: Gate = "correct") -> None:
        if monitor not in MONITORS:
            raise ValueError(f"monitor={monitor!r}; valid: {', '.join(MONITORS)}")
        if monitor_every < 1:
            raise ValueError(f"monitor_every must be >= 1, got {monitor_every}")
        if monitor_problems < 1:
            raise ValueError(f"monitor_problems must be >= 1, got {monitor_problems}")
        self.monitor_problems = monitor_problems
        self.targets = targets if targets is not None else LaserTargets()
        self.alpha, self.monitor, self.monitor_every = float(alpha), monitor, monitor_every
        self.gate = check_gate(gate)
        self.last_targets: dict[str, int] = {}

    def observe_monitor(self, correct_N: torch.Tensor, length_N: torch.Tensor, group_N: torch.Tensor,
                        step: int) -> None:
        """The monitor's responses (K per question; correctness format-agnostic, lengths with EOS,
        question ids): the targets for steps ``step .. step + monitor_every − 1`` come from them."""
        self.targets.update(correct_N, length_N, group_N, step)

    def due(self, step: int) -> bool:
        """Whether the monitor must run before ``step`` (0-based): ``step % monitor_every == 0``."""
        return self.monitor != "none" and step % self.monitor_every == 0

    def bucket_targets(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base score, len, L_A per completion) of the step, refreshing the batch monitor if due."""
        score_N = base_score(batch.correct_N, batch.format_ok_N)
        length_N, group_N = sampled_lengths(batch), batch.group_N
        if self.monitor == "batch" and (self.due(batch.step) or self.targets.within is None):
            self.targets.update(batch.correct_N, length_N, group_N, batch.step)
        elif self.monitor in ("eval", "data") and self.targets.within is None:
            raise RuntimeError(f"LASER-D monitor={self.monitor!r} needs the loop to run the monitor set "
                               "(observe_monitor); use monitor=batch or monitor=none")
        fallback = int(length_N.max()) if len(length_N) else self.targets.default_tokens
        self.last_targets = self.targets.targets(fallback)
        table = torch.tensor([self.last_targets[d] for d in BUCKETS])
        return score_N, length_N, table[training_buckets(score_N, group_N)]

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        score_N, length_N, target_N = self.bucket_targets(batch)
        return score_N + self.alpha * (bonus_rows(score_N, self.gate) & (length_N <= target_N)).float()

    def metrics(self) -> dict[str, float]:
        out = {f"laser/target_{d}_tokens": float(t) for d, t in self.last_targets.items()}
        return {**out, **self.targets.metrics()}

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targets.load_state_dict(state["targets"])


class LaserDE(LaserD):
    """LASER-DE (paper Table 2; code ``compute_length_reward_larse_de``; ALGORITHMS.md 3.2.3): LASER-D
    plus an exploration bonus for wrong, well-formed responses longer than the target:

        R_i = 1:     r_i = 1 + alpha · 1[len_i ≤ L_A]
        R_i = −0.5:  r_i = −0.5 + alpha · 1[len_i > L_A] · (1 − repetitive(y_i))
        R_i = −1:    r_i = −1

    ``gate=all`` is that (the paper: wrong answers have a length term, the exploration bonus);
    ``gate=correct`` drops the exploration bonus (a wrong answer gets R_i = −0.5 whatever its length:
    LASER-D). ``repetition="detect"``: :func:`repetition_start` on the token ids (what the code intends);
    ``"as_released"``: never repetitive (the released detector gets a tensor and never fires,
    pitfall 6). Same state and monitor as :class:`LaserD`.
    """

    def __init__(self, targets: LaserTargets | None = None, alpha: float = 0.5, monitor: str = "data",
                 monitor_every: int = 20, monitor_problems: int = 500, repetition: str = "detect",
                 gate: Gate = "all") -> None:
        super().__init__(targets, alpha, monitor, monitor_every, monitor_problems, gate)
        if repetition not in REPETITION:
            raise ValueError(f"repetition={repetition!r}; valid: {', '.join(REPETITION)}")
        self.repetition = repetition

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        score_N, length_N, target_N = self.bucket_targets(batch)
        bonus_N = ((score_N == CORRECT) & (length_N <= target_N)).float()
        explore_N = (score_N == WRONG) & (length_N > target_N)
        if self.gate == "correct":  # no length term for wrong answers: no exploration bonus
            explore_N = torch.zeros_like(explore_N)
        if self.repetition == "detect":
            ids = batch.completion_ids
            for i in explore_N.nonzero().squeeze(1).tolist():
                explore_N[i] = repetition_start(ids[i]) >= len(ids[i])
        return score_N + self.alpha * (bonus_N + explore_N.float())


def repetition_start(tokens: list[int], gram: int = 4) -> int:
    """The code's ``detect_token_ngram_repetition_optimized_reversed`` on token ids (ALGORITHMS.md
    3.2.3): the position where a repetition starts, or ``len(tokens)`` when there is none.
    ``len ≤ 2·gram``: none. Gram size g = 2 (len < 30), 3 (< 100), else min(4, gram); hits k = 2
    (len < 200) else 3. Scanning starts i from the end, a g-gram (skipping grams of one repeated
    token when g > 2) seen k times with two consecutive starts closer than len // 3 returns its
    first start; then (len ≥ 4g) the first 2g-window seen twice returns the smaller start."""
    tokens = [int(t) for t in tokens]
    size = len(tokens)
    if size <= gram * 2:
        return size
    g = 2 if size < 30 else 3 if size < 100 else min(4, gram)
    hits = 2 if size < 200 else 3
    starts: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in range(size - g, -1, -1):
        key = tuple(tokens[i:i + g])
        if g > 2 and len(set(key)) == 1:
            continue
        starts[key].append(i)
        if len(starts[key]) >= hits:
            ordered = sorted(starts[key])
            if any(b - a < size // 3 for a, b in pairwise(ordered)):
                return ordered[0]
    if size >= 4 * g:
        seen: dict[tuple[int, ...], int] = {}
        for i in range(size - 2 * g, -1, -1):
            key = tuple(tokens[i:i + 2 * g])
            if key in seen:
                return min(i, seen[key])
            seen[key] = i
    return size
