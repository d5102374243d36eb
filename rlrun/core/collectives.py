"""The cross-rank operations of pieces whose statistics span every rank's completions or prompts
(DLER's batch statistics, A-DLP's accuracy, HAPO's history, GRPO-lambda's ranking, GFPO's adaptive
difficulty, LSPO's quantiles). Such a piece declares ``UsesCollectives`` (``rlrun.types``) by having a
``collectives`` attribute; it starts as :data:`LOCAL` (this process is the whole world) and the
runtime sets the real one (``rlrun.runtime.dist.collectives()``) before the first step. Core cannot
import the runtime, so the operations are passed in; each piece calls them on every rank, every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


def _same(value: torch.Tensor) -> torch.Tensor:
    return value


def _listed(value: Any) -> list[Any]:
    return [value]


def _zero() -> int:
    return 0


@dataclass(frozen=True)
class Collectives:
    """``reduce_sum(t)``: the elementwise sum of ``t`` over ranks; ``gather_cat(t)``: every rank's
    ``t`` concatenated along dim 0 in rank order; ``gather_objects(x)``: every rank's picklable
    ``x`` as a list in rank order; ``rank()``: this rank's index. The defaults are one process's."""

    reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _same
    gather_cat: Callable[[torch.Tensor], torch.Tensor] = _same
    gather_objects: Callable[[Any], list[Any]] = _listed
    rank: Callable[[], int] = _zero

    def gather_prompts(self, values_B: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every rank's per-prompt values in rank order, and where this rank's block starts
        (ranks hold equal numbers of prompts)."""
        return self.gather_cat(values_B), self.rank() * len(values_B)


LOCAL = Collectives()
