"""The ``hkust-nlp/Laser`` length controller: a generation-cap schedule from the LASER code
(``verl/trainer/ppo/len_ctrl.py``), not in the paper (Liu et al., arXiv 2505.15612; ALGORITHMS.md
3.3). Its cap is ``StepBatch.budget_tokens_N`` (``curriculum=laser_controller``); LASER's rewards are in
``rlrun.core.laser`` and ``rlrun.core.laser_d``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlrun.types import Problem

CONTROLLER_MODES = ("constant", "interval_reduction", "monitor_clip_ratio", "monitor_passk")
CLIP_RATIO_OF = ("current_cap", "as_released")


@dataclass
class LaserLengthController:
    """The ``hkust-nlp/Laser`` generation-cap schedule (``verl/trainer/ppo/len_ctrl.py``; not in the
    paper; ALGORITHMS.md 3.3.3). The cap ``current`` starts at ``max_new_tokens``; a *reduction* is
    ``current = max(current − reduction, min_new_tokens)``. With s = step + 1 (1-based):

    - ``constant``: the cap never moves (what every released script runs).
    - ``interval_reduction``: reduce at the start of s when s ≥ start_step and (s − start_step) %
      interval == 0 (first cut at s = start_step), i.e. cap(s) = max(max_new_tokens − reduction ·
      (⌊(s − start_step)/interval⌋ + 1), min_new_tokens).
    - ``monitor_clip_ratio``: c = the previous step's clip ratio; if s ≥ start_step, count
      consecutive steps with c ≤ target_clip_ratio; at target_acc_times, reduce and reset.
      A step without the statistic reuses the last one. ``clip_ratio="current_cap"`` (default)
      reads ``length/truncated_frac`` (cut by the current cap); ``"as_released"`` measures against
      ``max_new_tokens``, i.e. 0 once the cap is below it (pitfall 1: then it reduces every
      target_acc_times steps).
    - ``monitor_passk``: m = previous step's metric ``passk_metric`` (pass@k after truncation to
      current − reduction minus pass@k of the full responses); reduce if |m| ≤ target_comparison_num
      or m ≥ 0; a step without it reuses the last one. rlrun's loop does not compute it yet.

    ``min_new_tokens`` None = ``max_new_tokens`` (the code's default: the cap never moves).
    Monitor rules run in :meth:`observe` after step s for step s + 1; the rule at s = 1 has no
    statistic and does nothing, as in the code. State: the cap and counters (checkpointed; the
    repo restarts them on resume, pitfall 3). Shapes: ``problems`` (B,) -> list of B ints.
    """

    max_new_tokens: int
    mode: str = "constant"
    min_new_tokens: int | None = None
    start_step: int = 1
    interval: int = 10
    reduction: int = 1024
    target_clip_ratio: float = 0.1
    target_acc_times: int = 5
    target_comparison_num: float = 0.1
    clip_ratio: str = "current_cap"
    passk_metric: str = "laser/passk_difference"
    current: int = field(init=False)
    good_steps: int = field(init=False, default=0)
    last_value: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in CONTROLLER_MODES:
            raise ValueError(f"mode={self.mode!r}; valid: {', '.join(CONTROLLER_MODES)}")
        if self.clip_ratio not in CLIP_RATIO_OF:
            raise ValueError(f"clip_ratio={self.clip_ratio!r}; valid: {', '.join(CLIP_RATIO_OF)}")
        if self.min_new_tokens is None:
            self.min_new_tokens = self.max_new_tokens
        if not 1 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"need 1 <= min_new_tokens <= max_new_tokens, got {self.min_new_tokens}, "
                             f"{self.max_new_tokens}")
        if self.interval < 1 or self.reduction < 0 or self.target_acc_times < 1:
            raise ValueError("need interval >= 1, reduction >= 0, target_acc_times >= 1")
        self.current = self.max_new_tokens

    def cap(self, step: int) -> int:
        """The generation cap at 0-based ``step``."""
        s = step + 1
        if self.mode == "interval_reduction":
            cuts = (s - self.start_step) // self.interval + 1 if s >= self.start_step else 0
            return max(self.max_new_tokens - self.reduction * cuts, self.min_new_tokens)
        return self.current

    def budgets(self, step: int, problems: list[Problem]) -> list[int]:
        return [self.cap(step)] * len(problems)

    def advance(self, s: int, value: float | None) -> None:
        """The code's monitor rule at the start of 1-based step s with the previous step's
        statistic ``value`` (None: missing, the code's −1 / {})."""
        if value is None:
            if self.last_value is None:
                return
            value = self.last_value
        if self.mode == "monitor_clip_ratio":
            if s >= self.start_step:
                self.good_steps = self.good_steps + 1 if value <= self.target_clip_ratio else 0
                if self.good_steps >= self.target_acc_times:
                    self._reduce()
                    self.good_steps = 0
            self.last_value = value
        elif self.mode == "monitor_passk" and s >= self.start_step:
            self.last_value = value
            if abs(value) <= self.target_comparison_num or value >= 0:
                self._reduce()

    def _reduce(self) -> None:
        self.current = max(self.current - self.reduction, self.min_new_tokens)

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """After 0-based ``step`` (s = step + 1): apply the monitor rule of step s + 1."""
        if self.mode == "monitor_clip_ratio":
            value = metrics.get("length/truncated_frac")
            if value is not None and self.clip_ratio == "as_released" and self.current < self.max_new_tokens:
                value = 0.0
            self.advance(step + 2, value)
        elif self.mode == "monitor_passk":
            self.advance(step + 2, metrics.get(self.passk_metric))

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "good_steps": self.good_steps, "last_value": self.last_value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"current", "good_steps", "last_value"}:
            raise ValueError(f"not a LaserLengthController state: {sorted(state)}")
        self.current, self.good_steps = int(state["current"]), int(state["good_steps"])
        self.last_value = state["last_value"]
