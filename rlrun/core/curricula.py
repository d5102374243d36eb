"""Token-budget curricula: how many new tokens each prompt may generate at a step (ALGORITHMS.md 0.2,
step 6). ``FixedBudget`` is the no-curriculum baseline."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlrun.types import Problem


class FixedBudget:
    """The same generation cap for every prompt at every step: ``budget_b = max_new_tokens``.

    No paper: plain GRPO with a fixed maximum response length (DeepSeekMath arXiv 2402.03300,
    Sec. 4.2: 1024). Stateless: ``state_dict`` is empty, so a resumed run takes the cap from its
    config. Shapes: ``problems`` (B,) -> list of B ints.
    """

    def __init__(self, max_new_tokens: int) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens

    def budgets(self, step: int, problems: list[Problem]) -> list[int]:
        return [self.max_new_tokens] * len(problems)

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """Nothing to learn from the step."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping) or state:
            raise ValueError(f"FixedBudget has no state; got {state!r}")
