"""LCPO / L1 (Aggarwal & Welleck, "L1: Controlling How Long A Reasoning Model Thinks With
Reinforcement Learning", arXiv 2503.04697; ALGORITHMS.md 3.1): a target length in every prompt and a
reward for reaching it, trained with plain GRPO.

- :class:`LengthInstruction` (``algo.prompts``) draws a target ``N`` per problem and appends the
  paper's length instruction, ``Think for N tokens.`` (Exact) or ``Think for maximum N tokens.``
  (Max), to the prompt; the target goes to ``Problem.meta`` for the reward.
- :class:`L1Exact` (Eq. 1) and :class:`L1Max` (Eq. 2, and Eq. 1 on the Exact prompts of its
  mixture) are reward terms that read the target back.

Targets in ``Problem.meta``: ``target_tokens`` (int N >= 1, or None for "no target") and
``target_mode`` (``"exact"``, ``"max"`` or ``"none"``). Data may instead carry the paper's stored
field ``num_tokens`` (signed: ``N > 0`` Exact, ``-N`` with ``N >= 2`` Max, ``-1`` no target;
ALGORITHMS.md 3.1.3): :class:`LengthInstruction` then uses it instead of drawing one, and the reward
terms read it when no transform ran (data whose prompts already hold the instruction).

Length: ``n`` is ``rollouts.length_tokens_N``, the response tokens *without* EOS (rlrun's length
contract, ``types.StepBatch``). The paper's code counts the EOS token too (verl's response mask,
ALGORITHMS.md 3.0): every finished response is one token shorter here, i.e. targets sit one token
later, a reward difference of at most alpha (0.0003 for Exact).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from typing import Any

import torch

from rlrun.core.prompt_text import append_line
from rlrun.core.rewards import Gate, check_gate, gated
from rlrun.types import Problem, StepBatch

EXACT, MAX, NONE = "exact", "max", "none"
MODES = (EXACT, MAX, NONE)
MISSING_TARGET = ("an L1 reward needs a target length per prompt: use algo=lcpo or data with "
                  "num_tokens")


def instruction(tokens: int, mode: str) -> str:
    """The paper's length instruction (data script ``deepscaler_dataset.py``; ALGORITHMS.md 3.1.3):
    ``"Think for N tokens."`` (Exact) or ``"Think for maximum N tokens."`` (Max). Not the project
    page's "Think for exactly N tokens.", which the training data never contains."""
    if mode == EXACT:
        return f"Think for {tokens} tokens."
    if mode == MAX:
        return f"Think for maximum {tokens} tokens."
    raise ValueError(f"no length instruction for mode {mode!r}; valid: {EXACT}, {MAX}")


def decode_num_tokens(value: Any) -> tuple[int | None, str]:
    """The paper's signed ``num_tokens`` as ``(N, mode)`` (ALGORITHMS.md 3.1.3, pitfall 6: the sign
    is the mode, read it before taking abs): ``N > 0`` -> ``(N, "exact")``; ``-N``, ``N >= 2`` ->
    ``(N, "max")``; ``-1`` -> ``(None, "none")``. 0 (and non-integers) are invalid."""
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        raise ValueError(f"num_tokens={value!r} is not a target: N > 0 (Exact), -N with N >= 2 "
                         "(Max) or -1 (no target)")
    if value > 0:
        return value, EXACT
    return (None, NONE) if value == -1 else (-value, MAX)


def target_of(problem: Problem) -> tuple[int | None, str]:
    """``(N, mode)`` of a problem: ``meta["target_tokens"]``/``meta["target_mode"]`` (written by
    :class:`LengthInstruction`), else the data's ``meta["num_tokens"]``; neither is a configuration
    error (ALGORITHMS.md 0.2): ValueError."""
    meta = problem.meta
    if "target_tokens" in meta:
        tokens, mode = meta["target_tokens"], meta.get("target_mode", EXACT)
        if mode not in MODES or (mode == NONE) != (tokens is None):
            raise ValueError(f"problem {problem.uid}: target_tokens={tokens!r} with "
                             f"target_mode={mode!r}; modes: {', '.join(MODES)} (none has no tokens)")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
            raise ValueError(f"problem {problem.uid}: target_tokens={tokens!r} must be an int >= 1")
        return tokens, mode
    if "num_tokens" in meta:
        return decode_num_tokens(meta["num_tokens"])
    raise ValueError(MISSING_TARGET)


def with_instruction(prompt: str, tokens: int, mode: str) -> str:
    """``"<question> <length instruction>"`` (paper Sec. 3: the instruction follows the question,
    separated by a space). Trailing whitespace of the prompt (the task's ``\\n`` before the
    response) stays at the end: ``"Add 1+2.\\n"`` -> ``"Add 1+2. Think for 150 tokens.\\n"``."""
    return append_line(prompt, instruction(tokens, mode))


class LengthInstruction:
    """LCPO's prompt transform (``algo.prompts``; ALGORITHMS.md 3.1.3 "Prompt augmentation" and
    "Target sampling"). Per problem, the target is

        N ~ U{min_tokens, ..., max_tokens}       (paper Sec. 4: n_gold ~ U(100, 4000); code:
                                                  random.randint(100, 4000), inclusive)
        mode = "max" with probability max_fraction, else "exact"

    drawn from a generator seeded by ``(seed, problem.uid)``, in the order of the data script
    (``randint`` then ``random() < max_fraction``). ``max_fraction`` 0 is the L1-Exact data, 0.5 the
    L1-Max data (``--use_both_both``), 1 all-Max; ``min_tokens = max_tokens = K`` is the script's
    fixed ``--num_tokens K`` (evaluation at a budget). A problem whose ``meta`` has ``num_tokens``
    keeps the data's target (``-1``: no instruction, plain correctness).

    The target depends on the problem, not on the step: the paper draws it once per example when the
    dataset is built and keeps it across epochs, and a resumed run draws the same targets. Nothing
    is state (ALGORITHMS.md 3.1.5), so there is no ``state_dict``. N does not depend on
    ``max_fraction``: switching Exact to mixed keeps every problem's N.

    ``__call__(problems, step)`` returns new Problems (B,) -> (B,) with the instruction appended to
    ``prompt`` and ``target_tokens``/``target_mode`` in ``meta``; the inputs are not modified.
    """

    provides = ("target_length",)  # ProvidesPromptFacts: what an L1 term's ``requires`` asks for

    def __init__(self, seed: int, min_tokens: int = 100, max_tokens: int = 4000,
                 max_fraction: float = 0.0) -> None:
        for name, value in (("seed", seed), ("min_tokens", min_tokens), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got min_tokens={min_tokens}, "
                             f"max_tokens={max_tokens} (paper: 100, 4000)")
        if isinstance(max_fraction, bool) or not 0.0 <= float(max_fraction) <= 1.0:
            raise ValueError(f"max_fraction={max_fraction!r} must be in [0, 1]: the share of "
                             "'Think for maximum N tokens.' prompts (L1-Exact 0, L1-Max 0.5)")
        if max_fraction > 0 and min_tokens < 2:
            raise ValueError(f"min_tokens={min_tokens}: a Max target must be >= 2 (-1 means "
                             "'no target' in the paper's num_tokens)")
        self.seed, self.min_tokens, self.max_tokens = seed, min_tokens, max_tokens
        self.max_fraction = float(max_fraction)

    def draw(self, uid: str) -> tuple[int, str]:
        """The sampled ``(N, mode)`` of the problem ``uid`` (independent of the process and of
        PYTHONHASHSEED: the generator's seed is a SHA-256 of ``seed`` and ``uid``)."""
        digest = hashlib.sha256(f"lcpo:{self.seed}:{uid}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        tokens = rng.randint(self.min_tokens, self.max_tokens)
        return tokens, MAX if rng.random() < self.max_fraction else EXACT

    def target(self, problem: Problem) -> tuple[int | None, str]:
        """``(N, mode)`` for ``problem``: the data's ``num_tokens`` when present, else :meth:`draw`."""
        if "num_tokens" in problem.meta:
            return decode_num_tokens(problem.meta["num_tokens"])
        return self.draw(problem.uid)

    def __call__(self, problems: list[Problem], step: int) -> list[Problem]:
        out = []
        for problem in problems:
            if "target_tokens" in problem.meta:
                raise ValueError(f"problem {problem.uid} already has a length target "
                                 f"(target_tokens={problem.meta['target_tokens']!r}); "
                                 "algo.prompts must run once per prompt")
            tokens, mode = self.target(problem)
            prompt = problem.prompt if mode == NONE else with_instruction(problem.prompt, tokens, mode)
            meta = {**problem.meta, "target_tokens": tokens, "target_mode": mode}
            out.append(dataclasses.replace(problem, prompt=prompt, meta=meta))
        return out

    def eval_sums(self, batch: StepBatch) -> dict[str, tuple[float, float]]:
        """``length_deviation`` as ``(sum, count)`` (``MeasuresEval``): |length - target| over the
        completions of the prompts with an Exact target (L1's distance, ALGORITHMS.md 5.3;
        :func:`rlrun.core.evaluation.length_deviation`); a Max target is a ceiling, not a distance."""
        exact = [isinstance(p.meta.get("target_tokens"), int) and p.meta.get("target_mode", EXACT) == EXACT
                 for p in batch.problems]
        target = torch.tensor([float(p.meta["target_tokens"]) if ok else 0.0
                               for p, ok in zip(batch.problems, exact)])
        keep_N = torch.tensor(exact, dtype=torch.bool)[batch.group_N]
        gap_N = (batch.length_tokens_N.float() - target[batch.group_N]).abs()[keep_N]
        return {"length_deviation": (float(gap_N.sum()), float(len(gap_N)))}

    def check_reward(self, reward: Any) -> None:
        """Fail at the start of a run, not at its first step, when the reward cannot score the
        prompts this transform writes: ValueError unless ``reward`` (a ``Composite``) has an
        :class:`L1Exact` or :class:`L1Max` term; Max prompts (``max_fraction`` > 0) need
        :class:`L1Max`; :class:`L1Max` with no Max prompts would silently train L1-Exact."""
        fns = list(getattr(reward, "fns", {}).values())
        names = ", ".join(getattr(reward, "fns", {})) or type(reward).__name__
        if not any(isinstance(fn, (L1Exact, L1Max)) for fn in fns):
            raise ValueError(f"algo=lcpo writes a target length into each prompt but the reward "
                             f"({names}) has no L1 term to score it: use reward=l1_exact or reward=l1_max")
        has_max = any(isinstance(fn, L1Max) for fn in fns)
        if self.max_fraction > 0 and not has_max:
            raise ValueError(f"algo.prompts.max_fraction={self.max_fraction} writes 'Think for "
                             "maximum N tokens.' prompts, which only reward=l1_max scores; use "
                             "reward=l1_max or algo.prompts.max_fraction=0")
        if self.max_fraction == 0 and has_max:
            raise ValueError("reward=l1_max with algo.prompts.max_fraction=0 trains on Exact prompts "
                             "only (that is L1-Exact); the paper's L1-Max mixes them 50/50: set "
                             "algo.prompts.max_fraction=0.5")


def _check_alpha(name: str, value: float) -> float:
    if isinstance(value, bool) or not (math.isfinite(float(value)) and float(value) > 0.0):
        raise ValueError(f"{name}={value!r} must be > 0 (for no length term use reward=correct)")
    return float(value)


def _targets(batch: StepBatch) -> tuple[torch.Tensor, list[str]]:
    """Per completion: the target ``N`` (float64, 0 where there is none) and the mode."""
    problems = batch.problems
    per_group = [target_of(p) for p in problems]
    group_N = batch.group_N.tolist()
    target_N = torch.tensor([float(per_group[g][0] or 0) for g in group_N], dtype=torch.float64)
    return target_N, [per_group[g][1] for g in group_N]


def _inputs(batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
    correct_N = batch.correct_N.to(torch.float64)
    length_N = batch.length_tokens_N.to(torch.float64)
    return correct_N, length_N


def exact_reward(correct_N: torch.Tensor, length_N: torch.Tensor, target_N: torch.Tensor,
                 alpha: float, gate: Gate = "all") -> torch.Tensor:
    """LCPO-Exact, Eq. 1 of arXiv 2503.04697: ``r = 1[y = y_gold] − α·|n_gold − n_y|`` (``gate=all``,
    the paper); ``gate=correct``: ``r = 1[y = y_gold]·(1 − α·|n_gold − n_y|)``, a wrong answer 0.
    Unbounded below; a correct answer far off target can score below a wrong one on target.
    Shapes: three (N,) tensors -> (N,) in their dtype."""
    return correct_N - gated(alpha * (target_N - length_N).abs(), correct_N, gate)


def max_reward(correct_N: torch.Tensor, length_N: torch.Tensor, target_N: torch.Tensor,
               alpha: float, delta: float, gate: Gate = "correct") -> torch.Tensor:
    """LCPO-Max, Eq. 2 of arXiv 2503.04697: ``r = 1[y = y_gold] · f``, ``f = clip(α·(n_gold − n_y) + δ,
    0, 1)`` (``gate=correct``, the paper); ``gate=all``: ``r = 1[y = y_gold] + (f − 1)``, a wrong answer
    ``f − 1`` (0 well within the budget, −1 far beyond). A correct answer gets δ at ``n = n_gold``, 1
    at ``n <= n_gold − (1−δ)/α``, 0 at ``n >= n_gold + δ/α``. Shapes: three (N,) tensors -> (N,) in
    their dtype."""
    factor_N = (alpha * (target_N - length_N) + delta).clamp(0.0, 1.0)
    return correct_N + gated(factor_N - 1.0, correct_N, gate)


class L1Exact:
    """Reward term of L1-Exact (``reward=l1_exact``): Eq. 1 on every prompt with a target
    (:func:`exact_reward`), correctness alone on a prompt with none (``num_tokens = -1``).

    ``alpha`` 0.0003 is the paper's (Sec. 4) and the HEAD script's; the first release, which trained
    the L1-Exact checkpoint, used 1/3000 (ALGORITHMS.md 3.1.3-3.1.4). A Max prompt is an error: Eq. 1
    would ignore "maximum"; use :class:`L1Max`. ``gate``: ``all`` (Eq. 1: wrong answers pay for
    their distance too) or ``correct`` (a wrong answer gets 0).
    Shapes: ``batch.correct_N``, ``batch.length_tokens_N`` (N,) -> (N,) float32.
    """

    requires = ("target_length",)  # RequiresPromptFacts: build_run checks at start that prompts carry targets

    def __init__(self, alpha: float = 0.0003, gate: Gate = "all") -> None:
        self.alpha, self.gate = _check_alpha("alpha", alpha), check_gate(gate)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        target_N, modes = _targets(batch)
        if MAX in modes:
            raise ValueError("reward l1_exact got a 'Think for maximum N tokens.' prompt: Max "
                             "targets are scored by reward=l1_max")
        correct_N, length_N = _inputs(batch)
        has_target_N = torch.tensor([m == EXACT for m in modes], dtype=torch.bool)
        exact_N = exact_reward(correct_N, length_N, target_N, self.alpha, self.gate)
        reward_N = torch.where(has_target_N, exact_N, correct_N)
        return reward_N.to(torch.float32)


class L1Max:
    """Reward term of L1-Max (``reward=l1_max``), the paper's dual objective (Sec. 3: "when the
    prompt requests an exact length, the model uses Eq. 1; otherwise ... Eq. 2"; ALGORITHMS.md 3.1.9
    pitfall 3, first-release semantics): per prompt,

        Max prompt   -> Eq. 2 (:func:`max_reward`) with ``max_alpha``, ``delta``
        Exact prompt -> Eq. 1 (:func:`exact_reward`) with ``exact_alpha``
        no target    -> correctness

    Defaults: ``max_alpha`` 0.001 and ``delta`` 0.5 are the first release's Max reward
    ``(clip((N − n)/500, −1, 1) + 1)/2`` (the paper gives no α for Eq. 2; HEAD's config amounts to
    0.005, LASER's L1-Max baseline says 0.01). ``exact_alpha`` 0.0003 is the paper's Eq. 1 value
    (the first release used 1/3000: ``exact_alpha=0.000333333``). Gates: ``gate`` for the Max prompts
    (``correct``, Eq. 2's product; ``all``: :func:`max_reward`), ``exact_gate`` for the Exact prompts
    (``all``, Eq. 1; ``correct``: :func:`exact_reward`).
    Shapes: ``batch.correct_N``, ``batch.length_tokens_N`` (N,) -> (N,) float32.
    """

    requires = ("target_length",)

    def __init__(self, max_alpha: float = 0.001, delta: float = 0.5, exact_alpha: float = 0.0003,
                 gate: Gate = "correct", exact_gate: Gate = "all") -> None:
        self.max_alpha = _check_alpha("max_alpha", max_alpha)
        self.exact_alpha = _check_alpha("exact_alpha", exact_alpha)
        if isinstance(delta, bool) or not 0.0 <= float(delta) <= 1.0:
            raise ValueError(f"delta={delta!r} must be in [0, 1] (the reward of a correct answer "
                             "exactly at the budget; paper 0.5)")
        self.delta = float(delta)
        self.gate, self.exact_gate = check_gate(gate), check_gate(exact_gate, "exact_gate")

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        target_N, modes = _targets(batch)
        correct_N, length_N = _inputs(batch)
        is_max_N = torch.tensor([m == MAX for m in modes], dtype=torch.bool)
        is_exact_N = torch.tensor([m == EXACT for m in modes], dtype=torch.bool)
        reward_N = torch.where(
            is_max_N, max_reward(correct_N, length_N, target_N, self.max_alpha, self.delta, self.gate),
            torch.where(is_exact_N, exact_reward(correct_N, length_N, target_N, self.exact_alpha,
                                                 self.exact_gate), correct_N),
        )
        return reward_N.to(torch.float32)
