"""Token-budget curricula: step-wise budget schedules and stated budgets (ALGORITHMS.md 3.4-3.5).

- ``ExponentialBudget`` / ``LinearBudget``: Train Long, Think Short (Hammoud et al., arXiv 2508.08940,
  Sec. 3.4, 4.4, 4.6): the budget shrinks from ``max_new_tokens`` to ``final_tokens`` in ``decays``
  equal (geometric or arithmetic) drops over the run.
- ``PerDifficultyBudget``: the same schedule with a final budget per difficulty (rlrun's extension;
  the paper has one global schedule).
- ``ThinkPruneLimit``: ThinkPrune (Hou et al., arXiv 2504.01296): a hard generation limit tightened in
  rounds (4000 -> 3000 -> 2000).

LSPO's length-aware prompt filter (ALGORITHMS.md 3.6) is in ``rlrun.core.lspo``.

A curriculum returns one integer per prompt, the generation cap (``StepBatch.budget_tokens_N``):
reward terms that need the budget (the triangular length reward) read it there. Schedules are pure
functions of the 0-based step ``t``; their state is their parameters (checked on resume) and the last
observed step.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlrun.core.prompt_text import append_line
from rlrun.types import Problem, StepBatch

SHAPES = ("exponential", "linear")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def to_tokens(budget: float) -> int:
    """Integer budget: round half up, at least 1 token (``max(1, floor(B + 0.5))``). The paper does
    not say how it rounds; its Fig. 2 legend prints 178.65 as 179 and 124.67 as 125 (nearest)."""
    return max(1, math.floor(budget + 0.5))


def decay_index(step: int, decays: int, total_steps: int) -> int:
    """``k(t) = min(n, floor(t (n + 1) / T_total))``: the number of drops applied at 0-based step t,
    drop k taking effect at ``t_k = k I``, ``I = T_total / (n + 1)`` (arXiv 2508.08940 Sec. 4.4).
    Integer arithmetic, so a fractional interval needs no rounding convention. Steps past the run
    keep the last value."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(decays, step * (decays + 1) // total_steps)


def stepwise_budget(step: int, start: float, final: float, decays: int, total_steps: int,
                    shape: str = "exponential") -> float:
    """Train Long, Think Short step-wise schedule (arXiv 2508.08940 Sec. 4.4 and 4.6), k = k(t):

        exponential: B(t) = S0 d^k,  d = (Sf / S0)^(1/n)
        linear:      B(t) = S0 - k (S0 - Sf) / n   (the "equal drops" of Sec. 4.6; rlrun's reading)

    E.g. S0 = 256, Sf = 87, n = 3, T_total = 600: 256, 178.648645, 124.669291, 87 from steps 0, 150,
    300, 450 (exponential); 256, 199.666667, 143.333333, 87 (linear). Float, not rounded.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown budget shape {shape!r}; choose one of {', '.join(SHAPES)}")
    k = decay_index(step, decays, total_steps)
    if shape == "linear":
        return start - k * (start - final) / decays
    return start * ((final / start) ** (1.0 / decays)) ** k


def geometric_budget(step: int, start: float, gamma: float, interval: int) -> float:
    """``B(t) = max(1, B0 gamma^floor(t / T))`` (arXiv 2508.08940 Sec. 1, 3.4): keeps decaying for as
    long as the run lasts (no final budget). E.g. B0 = 256, gamma = 0.7, T = 150: 179.2 from t = 150,
    43.02592 at t = 750."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return max(1.0, start * gamma ** (step // interval))


class BudgetSchedule:
    """A curriculum whose budget B(t) is a pure function of the step (and of the prompt's difficulty).

    The budget is the generation cap of each prompt unless ``cap_tokens`` is set: then the cap is
    ``cap_tokens`` and B(t) is only *stated* (Train Long, Think Short writes it into the prompt and
    peaks its triangular reward there, which needs room above it, up to 2B). Either way
    :meth:`prompts` records ``to_tokens(B(t))`` as ``problem.meta["budget_tokens"]`` (what
    :class:`rlrun.core.budget_rewards.TriangularLengthReward` reads) and, with ``prompt_line``, appends
    that line with ``{budget}`` filled in to the prompt (``"Add 1+2.\\n"`` -> ``"Add 1+2. <line>\\n"``).
    ``state_dict`` = the parameters (a resume with other parameters is an error, not a silent new
    schedule) and the last observed step."""

    provides = ("stated_budget",)  # ProvidesPromptFacts: meta["budget_tokens"], read by budget rewards

    def __init__(self, params: dict[str, Any], prompt_line: str | None = None,
                 cap_tokens: int | None = None) -> None:
        if prompt_line is not None:
            if not isinstance(prompt_line, str) or "{budget}" not in prompt_line:
                raise ValueError(f"prompt_line={prompt_line!r} must be a string containing {{budget}} "
                                 "(or null for no line)")
            try:
                prompt_line.format(budget=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"prompt_line={prompt_line!r} has a placeholder other than {{budget}}: "
                                 f"{exc}") from exc
        if cap_tokens is not None:
            _positive_int("cap_tokens", cap_tokens)
        self.params = {**params, "prompt_line": prompt_line, "cap_tokens": cap_tokens}
        self.last_step: int | None = None

    def budget(self, step: int, problem: Problem | None = None) -> float:
        raise NotImplementedError

    def budgets(self, step: int, problems: list[Problem]) -> list[int]:
        """Generation cap per prompt at ``step``: ``cap_tokens`` if set, else ``to_tokens(B(t))``.
        Shapes: (B,) -> B ints."""
        cap = self.params["cap_tokens"]
        return [cap if cap is not None else to_tokens(self.budget(step, p)) for p in problems]

    def prompts(self, problems: list[Problem], step: int) -> list[Problem]:
        """The problems with the stated budget in ``meta["budget_tokens"]`` (and the prompt line);
        the inputs are not modified."""
        line = self.params["prompt_line"]
        out = []
        for problem in problems:
            tokens = to_tokens(self.budget(step, problem))
            prompt = problem.prompt if line is None else append_line(problem.prompt, line.format(budget=tokens))
            out.append(dataclasses.replace(problem, prompt=prompt, meta={**problem.meta, "budget_tokens": tokens}))
        return out

    def batch_metrics(self, batch: StepBatch) -> dict[str, float]:
        """``curriculum/stated_budget_mean_tokens``: the mean budget stated to the step's prompts
        (``meta["budget_tokens"]``, all sampling rounds; ``HasBatchMetrics``)."""
        stated = [p.meta["budget_tokens"] for p in batch.problems if "budget_tokens" in p.meta]
        return {"curriculum/stated_budget_mean_tokens": sum(stated) / len(stated)} if stated else {}

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """The schedule does not adapt; only the step is recorded (for the checkpoint)."""
        self.last_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = dict(state.get("params", {})) if isinstance(state, Mapping) else None
        if saved != self.params:
            raise ValueError(f"{type(self).__name__}: the checkpoint's schedule {saved} differs from the "
                             f"configured one {self.params}; resume with the same curriculum settings")
        self.last_step = state.get("last_step")


class ExponentialBudget(BudgetSchedule):
    """Train Long, Think Short, exponential decay (arXiv 2508.08940 Sec. 3.4, 4.4; ALGORITHMS.md 3.4).

    Two parameterisations (give exactly one):

    - step-wise (the paper's main runs): ``final_tokens`` Sf, ``decays`` n, ``total_steps`` T_total:
      ``B(t) = S0 d^k(t)``, ``d = (Sf/S0)^(1/n)``, ``k(t) = min(n, floor(t (n+1) / T_total))``; reaches Sf
      at ``t = n T_total / (n+1)`` and stays there (see :func:`stepwise_budget`).
    - geometric: ``gamma`` and ``interval`` T: ``B(t) = max(1, S0 gamma^floor(t/T))``, no floor at a final
      budget (:func:`geometric_budget`).

    ``S0 = max_new_tokens``. The cap returned is ``to_tokens(B(t))`` for every prompt.
    """

    def __init__(self, max_new_tokens: int, final_tokens: int | None = None, decays: int | None = None,
                 total_steps: int | None = None, gamma: float | None = None,
                 interval: int | None = None, prompt_line: str | None = None,
                 cap_tokens: int | None = None) -> None:
        _positive_int("max_new_tokens", max_new_tokens)
        stated = {"prompt_line": prompt_line, "cap_tokens": cap_tokens}
        stepwise = (final_tokens, decays, total_steps)
        if gamma is None and interval is None:
            if any(v is None for v in stepwise):
                raise ValueError("ExponentialBudget needs final_tokens, decays and total_steps "
                                 "(or gamma and interval instead)")
            _check_stepwise(max_new_tokens, final_tokens, decays, total_steps)
            super().__init__({"shape": "exponential", "start": max_new_tokens, "final": final_tokens,
                              "decays": decays, "total_steps": total_steps}, **stated)
            return
        if final_tokens is not None or decays is not None or gamma is None or interval is None:
            raise ValueError("ExponentialBudget: give gamma and interval, or final_tokens and decays "
                             "(with total_steps), not a mix")
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
        _positive_int("interval", interval)
        super().__init__({"shape": "geometric", "start": max_new_tokens, "gamma": float(gamma),
                          "interval": interval}, **stated)

    def budget(self, step: int, problem: Problem | None = None) -> float:
        p = self.params
        if p["shape"] == "geometric":
            return geometric_budget(step, p["start"], p["gamma"], p["interval"])
        return stepwise_budget(step, p["start"], p["final"], p["decays"], p["total_steps"])


def _check_stepwise(start: int, final: Any, decays: Any, total_steps: Any) -> None:
    _positive_int("final_tokens", final)
    _positive_int("decays", decays)
    _positive_int("total_steps", total_steps)
    if final > start:
        raise ValueError(f"final_tokens={final} must be <= max_new_tokens={start} (the budget shrinks)")


class LinearBudget(BudgetSchedule):
    """Train Long, Think Short, linear decay (arXiv 2508.08940 Sec. 4.6, "roughly three equal budget
    drops"; ALGORITHMS.md 3.4.3): ``B(t) = S0 - k(t) (S0 - Sf) / n`` at the step-wise schedule's drop
    times, ``S0 = max_new_tokens`` (see :func:`stepwise_budget`)."""

    def __init__(self, max_new_tokens: int, final_tokens: int, decays: int, total_steps: int,
                 prompt_line: str | None = None, cap_tokens: int | None = None) -> None:
        _positive_int("max_new_tokens", max_new_tokens)
        _check_stepwise(max_new_tokens, final_tokens, decays, total_steps)
        super().__init__({"shape": "linear", "start": max_new_tokens, "final": final_tokens,
                          "decays": decays, "total_steps": total_steps}, prompt_line, cap_tokens)

    def budget(self, step: int, problem: Problem | None = None) -> float:
        p = self.params
        return stepwise_budget(step, p["start"], p["final"], p["decays"], p["total_steps"], "linear")


class PerDifficultyBudget(BudgetSchedule):
    """Train Long, Think Short's step-wise schedule with a final budget per difficulty (rlrun's
    extension: the paper, ALGORITHMS.md 3.4, runs one global schedule). Every prompt starts at
    ``S0 = max_new_tokens`` and drops at the same steps ``t_k``; a prompt of difficulty ``d =
    problem.meta[difficulty_key]`` ends at ``Sf(d) = final_tokens[str(d)]``:

        B(t, d) = stepwise_budget(t, S0, Sf(d), n, T_total, shape)

    so harder prompts keep more tokens. A difficulty missing from ``final_tokens`` (or a prompt without
    ``meta[difficulty_key]``) is an error. For the built-in task the difficulty is ``meta["digits"]``.
    """

    def __init__(self, max_new_tokens: int, final_tokens: Mapping[Any, int], decays: int, total_steps: int,
                 shape: str = "exponential", difficulty_key: str = "digits", prompt_line: str | None = None,
                 cap_tokens: int | None = None) -> None:
        _positive_int("max_new_tokens", max_new_tokens)
        if not isinstance(final_tokens, Mapping) or not final_tokens:
            raise ValueError(f"final_tokens must map difficulty -> tokens, got {final_tokens!r}")
        finals = {str(k): v for k, v in final_tokens.items()}
        for final in finals.values():
            _check_stepwise(max_new_tokens, final, decays, total_steps)
        if shape not in SHAPES:
            raise ValueError(f"unknown budget shape {shape!r}; choose one of {', '.join(SHAPES)}")
        super().__init__({"shape": shape, "start": max_new_tokens, "final": finals, "decays": decays,
                          "total_steps": total_steps, "difficulty_key": difficulty_key}, prompt_line, cap_tokens)

    def final_for(self, problem: Problem) -> int:
        key = self.params["difficulty_key"]
        if key not in problem.meta:
            raise ValueError(f"problem {problem.uid} has no meta[{key!r}] (its difficulty)")
        difficulty = str(problem.meta[key])
        if difficulty not in self.params["final"]:
            raise ValueError(f"no final budget for {key}={difficulty} (problem {problem.uid}); add "
                             f"curriculum.final_tokens.'{difficulty}'=<tokens>")
        return self.params["final"][difficulty]

    def budget(self, step: int, problem: Problem | None = None) -> float:
        if problem is None:
            raise ValueError("PerDifficultyBudget needs the problem (its difficulty)")
        p = self.params
        return stepwise_budget(step, p["start"], self.final_for(problem), p["decays"], p["total_steps"],
                               p["shape"])


class ThinkPruneLimit(BudgetSchedule):
    """ThinkPrune's hard length limit (arXiv 2504.01296; ALGORITHMS.md 3.5): the generation cap is L
    and a response cut at L scores 0 (the reward's job: ``reward=dler_truncation``).

    Limits ``[max_new_tokens, *later_limits]`` (strictly decreasing) are the rounds. The paper runs
    each round as a new run from the previous round's checkpoint: ``later_limits=[]`` and
    ``max_new_tokens`` = that round's limit. With later limits, one run tightens in place: round
    ``r(t) = min(R-1, floor(t / round_steps))``, or with ``round_steps=None`` the run is split evenly,
    ``r(t) = min(R-1, floor(t R / total_steps))`` (the optimizer state then carries over, unlike the
    paper's separate runs).
    """

    def __init__(self, max_new_tokens: int, later_limits: Sequence[int] = (), round_steps: int | None = None,
                 total_steps: int | None = None, prompt_line: str | None = None,
                 cap_tokens: int | None = None) -> None:
        limits = [_positive_int("max_new_tokens", max_new_tokens)]
        limits += [_positive_int("later_limits[]", v) for v in later_limits]
        if any(b >= a for a, b in zip(limits, limits[1:])):
            raise ValueError(f"limits {limits} must decrease strictly (max_new_tokens, then later_limits)")
        if round_steps is not None:
            _positive_int("round_steps", round_steps)
        elif len(limits) > 1:
            _positive_int("total_steps (needed without round_steps)", total_steps)
        needs_total = round_steps is None and len(limits) > 1
        super().__init__({"limits": limits, "round_steps": round_steps,
                          "total_steps": total_steps if needs_total else None}, prompt_line, cap_tokens)

    def round_of(self, step: int) -> int:
        """0-based round index at 0-based ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        p, rounds = self.params, len(self.params["limits"])
        if rounds == 1:
            return 0
        if p["round_steps"] is not None:
            return min(rounds - 1, step // p["round_steps"])
        return min(rounds - 1, step * rounds // p["total_steps"])

    def budget(self, step: int, problem: Problem | None = None) -> float:
        return float(self.params["limits"][self.round_of(step)])
