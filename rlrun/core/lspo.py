"""LSPO's length-aware prompt filter and filter chaining (ALGORITHMS.md 3.6).

- ``LengthAwareSampling``: LSPO (Chen et al., arXiv 2510.01459, Eq. 3): keep the prompts whose mean
  response length is among the shortest or the longest of the batch (a ``Filter``, not a budget);
  ``LSPOCurriculum`` carries it under ``curriculum=lspo``; ``ChainedFilter`` composes filters.
- ``lower_quantile`` / ``lspo_thresholds`` / ``lspo_keep``: the pure threshold and keep rule.

The token-budget schedules (Train Long, Think Short, ThinkPrune; ALGORITHMS.md 3.4-3.5) are in
``rlrun.core.budget_curricula``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlrun.core.budget_curricula import _positive_int
from rlrun.core.dapo import WHEN_SHORT, varied_groups
from rlrun.core.collectives import LOCAL, Collectives
from rlrun.types import Problem, Refills, Stateful, StepBatch


def lower_quantile(sorted_values: Sequence[float], level: float) -> float:
    """``Q(a) = inf{t : F(t) >= a}`` of the empirical distribution of ``sorted_values`` (ascending, M
    values): the k-th smallest value with ``k = ceil(a M)`` (clamped to 1..M), i.e. the smallest
    value whose cumulative share is >= a (LSPO, ALGORITHMS.md 3.6.3; ties resolve to that value).
    ``a M`` is compared with a 1e-9 tolerance so that 0.7 * 10 counts as 7, not 7.000000000000001."""
    count = len(sorted_values)
    if count == 0:
        raise ValueError("quantile of no values")
    k = min(count, max(1, math.ceil(level * count - 1e-9)))
    return float(sorted_values[k - 1])


@dataclass(frozen=True)
class Thresholds:
    """One batch's LSPO thresholds: keep ``L <= short`` or ``long <= L <= cap`` (tokens)."""

    short: float
    long: float
    cap: float


def lspo_thresholds(pool: Sequence[float], l_low: float, l_high: float, l_max: float | None = None,
                    l_max_tokens: float | None = None) -> Thresholds | None:
    """Thresholds from the mean lengths ``pool`` of the prompts that passed the accuracy filter
    (None when the pool is empty): ``short = Q(l_low)``, ``long = Q(l_high)``, ``cap = min(Q(l_max),
    l_max_tokens)`` (each bound only when set; inf otherwise). ALGORITHMS.md 3.6.3."""
    values = sorted(float(v) for v in pool)
    if not values:
        return None
    cap = math.inf
    if l_max is not None:
        cap = lower_quantile(values, l_max)
    if l_max_tokens is not None:
        cap = min(cap, float(l_max_tokens))
    return Thresholds(lower_quantile(values, l_low), lower_quantile(values, l_high), cap)


def lspo_keep(mean_length_G: torch.Tensor, survived_G: torch.Tensor, th: Thresholds | None) -> torch.Tensor:
    """LSPO's keep rule per prompt (arXiv 2510.01459; ALGORITHMS.md 3.6.3, an interpretation):

        keep_q = survived_q and (L(q) <= Q(l_low) or Q(l_high) <= L(q) <= cap)

    Shapes: ``mean_length_G`` (G,) float, ``survived_G`` (G,) bool -> bool (G,)."""
    if th is None:
        return torch.zeros_like(survived_G, dtype=torch.bool)
    short = mean_length_G <= th.short
    long = (mean_length_G >= th.long) & (mean_length_G <= th.cap)
    return survived_G.bool() & (short | long)


@dataclass
class LengthAwareSampling:
    """LSPO's filter (arXiv 2510.01459, Eq. 3 ``L(q) = (1/G) sum_i |o_i|``; ALGORITHMS.md 3.6): per
    sampling round, a prompt survives DAPO's accuracy filter (its completions are not all correct or
    all wrong; ``accuracy_filter=False`` skips it, e.g. after ``algo=dapo``'s own filter), the
    thresholds are the quantiles of the survivors' mean lengths over the round (every rank's prompts
    when ``gather`` is given), and the prompt is kept by :func:`lspo_keep`. ``max_rounds`` /
    ``when_short`` drive the loop's refill (DAPO's dynamic sampling: first B kept prompts).

    ``l_low < l_high`` in (0, 1) are required (the paper's values were not found); ``l_max`` (a
    quantile level >= l_high) and ``l_max_tokens`` (absolute) cap the long side. Lengths are
    ``length_tokens_N`` (no EOS). Statistics (``state_dict``) count prompts seen/survived/kept.
    Shapes: ``inp`` rows (N,) -> bool keep mask (N,).
    """

    l_low: float
    l_high: float
    l_max: float | None = None
    l_max_tokens: int | None = None
    max_rounds: int = 10
    when_short: str = "train"
    accuracy_filter: bool = True
    collectives: Collectives = field(default=LOCAL, repr=False, compare=False)  # UsesCollectives
    stats: dict[str, int] = field(default_factory=dict, init=False)
    last: Thresholds | None = field(default=None, init=False)
    last_step: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.l_low < self.l_high < 1.0:
            raise ValueError(f"LSPO needs 0 < l_low < l_high < 1, got {self.l_low}, {self.l_high}")
        if self.l_max is not None and not self.l_high <= self.l_max <= 1.0:
            raise ValueError(f"LSPO l_max={self.l_max} must be in [l_high, 1] (a quantile level)")
        if self.l_max_tokens is not None:
            _positive_int("l_max_tokens", self.l_max_tokens)
        _positive_int("max_rounds", self.max_rounds)
        if self.when_short not in WHEN_SHORT:
            raise ValueError(f"when_short={self.when_short!r} is not one of {', '.join(WHEN_SHORT)}")
        self.stats = {k: 0 for k in ("rounds", "prompts", "survived", "kept_short", "kept_long")}

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        _, index_N = torch.unique(inp.group_N, return_inverse=True)
        groups = int(index_N.max()) + 1 if index_N.numel() else 0
        zeros_G = torch.zeros(groups, dtype=torch.float64)
        count_G = zeros_G.index_add(0, index_N, torch.ones(len(index_N), dtype=torch.float64))
        length = inp.length_tokens_N.detach().to(torch.float64)
        mean_G = zeros_G.index_add(0, index_N, length) / count_G
        survived_G = torch.ones(groups, dtype=torch.bool)
        if self.accuracy_filter:
            varied_N = varied_groups(inp.correct_N, inp.group_N)
            survived_G = torch.zeros(groups, dtype=torch.bool).index_put((index_N,), varied_N)
        pooled = torch.where(survived_G, mean_G, torch.full_like(mean_G, math.nan))
        pooled, _ = self.collectives.gather_prompts(pooled)
        pool = pooled[~torch.isnan(pooled)].tolist()
        self.last = lspo_thresholds(pool, self.l_low, self.l_high, self.l_max, self.l_max_tokens)
        keep_G = lspo_keep(mean_G, survived_G, self.last)
        self._count(mean_G, survived_G, keep_G, inp.step)
        return keep_G[index_N]

    def _count(self, mean_G: torch.Tensor, survived_G: torch.Tensor, keep_G: torch.Tensor, step: int) -> None:
        short_G = keep_G & (mean_G <= (self.last.short if self.last else -math.inf))
        self.stats["rounds"] += 1
        self.stats["prompts"] += len(mean_G)
        self.stats["survived"] += int(survived_G.sum())
        self.stats["kept_short"] += int(short_G.sum())
        self.stats["kept_long"] += int((keep_G & ~short_G).sum())
        self.last_step = step

    def metrics(self) -> dict[str, float]:
        """Cumulative counts and the last round's thresholds (``lspo/*``; NaN before any survivor)."""
        out = {f"lspo/{k}": float(v) for k, v in self.stats.items()}
        for name in ("short", "long", "cap"):
            out[f"lspo/threshold_{name}_tokens"] = getattr(self.last, name) if self.last else math.nan
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stats = dict(state["stats"])
        if sorted(stats) != sorted(self.stats):
            raise ValueError(f"LSPO state: stats keys {sorted(stats)} != {sorted(self.stats)}")
        self.stats = {k: int(v) for k, v in stats.items()}


class ChainedFilter:
    """Filters applied in order, each to the rows the previous ones kept (e.g. DAPO's accuracy filter,
    then LSPO's length rule on its survivors, ALGORITHMS.md 3.6.1). ``max_rounds`` is the largest of
    theirs; ``when_short`` is ``error`` if any refilling filter (``max_rounds`` > 1) says so (a filter
    that never refills, GFPO's, has no say)."""

    def __init__(self, filters: Sequence[Any]) -> None:
        if not filters:
            raise ValueError("ChainedFilter needs at least one filter")
        self.filters = list(filters)
        refills = [f for f in self.filters if isinstance(f, Refills)]
        self.max_rounds = max([1] + [f.max_rounds for f in refills])
        shorts = [f.when_short for f in refills if f.max_rounds > 1]
        self.when_short = "error" if "error" in shorts else "train"

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        keep_N = torch.ones(len(inp.reward_N), dtype=torch.bool)
        for fn in self.filters:
            rows = keep_N.nonzero().squeeze(1)
            keep_N = torch.zeros_like(keep_N).index_put((rows,), fn(inp.select(rows)).bool())
        return keep_N

    def state_dict(self) -> dict[str, Any]:
        return {str(i): f.state_dict() for i, f in enumerate(self.filters) if isinstance(f, Stateful)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, f in enumerate(self.filters):
            if isinstance(f, Stateful):
                f.load_state_dict(state[str(i)])

    def parts(self) -> list[Any]:
        """The chained filters (``HasParts``: the runtime wires their collectives)."""
        return list(self.filters)


class LSPOCurriculum:
    """``curriculum=lspo``: a fixed generation cap (``max_new_tokens``, as ``FixedBudget``) that
    carries LSPO's filter (``self.filter``) for the loop to apply (ALGORITHMS.md 3.6). If the loop
    did not apply it at a step, ``observe`` raises: a silent run without LSPO is never reported as
    LSPO. The filter's statistics are saved with the curriculum."""

    def __init__(self, max_new_tokens: int, filter: LengthAwareSampling) -> None:  # noqa: A002
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.filter = filter

    def budgets(self, step: int, problems: list[Problem]) -> list[int]:
        return [self.max_new_tokens] * len(problems)

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        if self.filter.last_step != step:
            raise RuntimeError(
                f"curriculum=lspo: LSPO's filter was not applied at step {step + 1}; this rlrun does not "
                "pass curriculum.filter to the loop (it needs run.filter = ChainedFilter([algo.filter, "
                "curriculum.filter]))")

    def state_dict(self) -> dict[str, Any]:
        return {"filter": self.filter.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.filter.load_state_dict(state["filter"])
