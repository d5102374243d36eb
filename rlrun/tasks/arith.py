"""The built-in reasoning task: multi-digit addition, worked column by column with carries.

A problem is ``Add 347+708.\\n`` (both operands have exactly ``digits`` digits); the gold answer
is the sum as a decimal string. A well-formed response, the format of real reasoning models::

    <think>
    7+8+0=15, write 5, carry 1
    4+0+1=05, write 5, carry 0
    3+7+0=10, write 0, carry 1
    so 1055
    wait, 4+0+1=05? yes            <- 0-3 redundant re-checks, after the answer is stated
    </think>
    \\boxed{1055}

Every column line has the same width (sum written with two digits), so the distance from a line to
the digits it reads is fixed: this is what lets a 2-layer model learn it (MEASURED.md). The chain of
thought genuinely helps: the tiny model's direct answers (``<think></think>\\boxed{..}``) are wrong.

The supervised warm start (:func:`sample_trace`) mixes in the phenomenon length-aware RL studies:
``recheck_frac`` of the traces are padded with 1-3 re-checks that add nothing (overthinking), and
``short_frac`` (<= 5 %) answer at once with an empty think block, which the model cannot learn to
get right (underthinking). The answer is stated (``so 1055``) before any re-check, so removing the
re-checks never changes the answer (MEASURED.md, trace-design rule 2).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from rlrun.types import Problem

PROMPT = "Add {a}+{b}.\n"
HELD_OUT_MODULUS = 16  # one operand pair in 16 is reserved for held_out(), never trained on
_TRAIN_STREAM, _HELD_OUT_STREAM, _POOL_STREAM, _MONITOR_STREAM = 1, 2, 3, 4


def is_held_out_pair(a: int, b: int) -> bool:
    """Fixed partition of operand pairs (independent of the seed): held-out pairs are never drawn
    for training, so held-out accuracy measures generalisation."""
    return zlib.crc32(f"{a}+{b}".encode()) % HELD_OUT_MODULUS == 0


def check_batch_args(step: int, size: int, rank: int, world_size: int, attempt: int) -> None:
    """The arguments of a data source's ``batch`` (every source takes the same), or ValueError."""
    if step < 0 or size < 0 or attempt < 0:
        raise ValueError(f"step={step}, size={size} and attempt={attempt} must be >= 0")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    if size % world_size:
        raise ValueError(f"prompts per step ({size}) must be divisible by the number of ranks ({world_size})")


class ArithProblems:
    """Deterministic stream of addition problems with ``digits``-digit operands.

    ``batch(step, size)`` depends only on ``(seed, digits, step, size, attempt)``, so a resumed run
    sees the prompts it would have seen; ``attempt`` > 0 gives further prompts for the same step
    (refills of dynamic sampling); ``rank`` takes rows ``rank*size/world_size`` up to the next rank's
    first row of that same batch. ``held_out(n)`` draws from another RNG stream and from operand
    pairs that training never uses (:func:`is_held_out_pair`).

    ``pool`` = P makes questions come back (for methods with a per-question history, HAPO): training
    draws each step's prompts without replacement from a fixed pool of P training problems (uids
    ``...-pool-<i>``), so a question recurs about every P / prompts_per_step steps. ``monitor(n)``
    is a fixed sample of n training problems (a monitor set, LASER-D), from its own RNG stream.
    """

    def __init__(self, seed: int, digits: int = 3, pool: int | None = None) -> None:
        if digits < 1:
            raise ValueError(f"data.source.digits={digits} must be >= 1")
        if pool is not None and pool < 1:
            raise ValueError(f"data.source.pool={pool} must be >= 1 (or null: a new question every time)")
        self.pool = pool
        self.seed = int(seed)
        self.digits = int(digits)
        self.low = 0 if digits == 1 else 10 ** (digits - 1)
        self.high = 10**digits - 1

    def batch(
        self, step: int, size: int, rank: int = 0, world_size: int = 1, attempt: int = 0
    ) -> list[Problem]:
        check_batch_args(step, size, rank, world_size, attempt)
        key = [self.seed, _TRAIN_STREAM, step] + ([attempt] if attempt else [])
        share = size // world_size
        first = rank * share
        if self.pool is not None:
            if size > self.pool:
                raise ValueError(f"prompts per step ({size}) exceed data.source.pool={self.pool}")
            picked = np.random.default_rng(key).choice(self.pool, size, replace=False)
            pool = self.pool_problems()
            return [pool[int(i)] for i in picked[first: first + share]]
        pairs = self._pairs(np.random.default_rng(key), size, held_out=False)
        tag = f"t{step}" + (f"r{attempt}" if attempt else "")
        return [
            self._problem(a, b, f"arith-d{self.digits}-s{self.seed}-{tag}-{first + i}")
            for i, (a, b) in enumerate(pairs[first : first + share])
        ]

    def held_out(self, n: int) -> list[Problem]:
        rng = np.random.default_rng([self.seed, _HELD_OUT_STREAM])
        pairs = self._pairs(rng, n, held_out=True)
        return [
            self._problem(a, b, f"arith-d{self.digits}-s{self.seed}-heldout-{i}")
            for i, (a, b) in enumerate(pairs)
        ]

    def pool_problems(self) -> list[Problem]:
        """The fixed training pool (``pool`` problems)."""
        if not hasattr(self, "_pool"):
            rng = np.random.default_rng([self.seed, _POOL_STREAM])
            self._pool = [self._problem(a, b, f"arith-d{self.digits}-s{self.seed}-pool-{i}")
                          for i, (a, b) in enumerate(self._pairs(rng, self.pool, held_out=False))]
        return self._pool

    def monitor(self, n: int) -> list[Problem]:
        """A fixed sample of ``n`` training problems (the same for the whole run)."""
        rng = np.random.default_rng([self.seed, _MONITOR_STREAM])
        return [self._problem(a, b, f"arith-d{self.digits}-s{self.seed}-monitor-{i}")
                for i, (a, b) in enumerate(self._pairs(rng, n, held_out=False))]

    def _pairs(self, rng: np.random.Generator, n: int, held_out: bool) -> list[tuple[int, int]]:
        pairs: list[tuple[int, int]] = []
        while len(pairs) < n:  # rejection sampling: 15/16 of pairs are training pairs
            a, b = (int(v) for v in rng.integers(self.low, self.high + 1, size=2))
            if is_held_out_pair(a, b) == held_out:
                pairs.append((a, b))
        return pairs

    def _problem(self, a: int, b: int, uid: str) -> Problem:
        return Problem(
            uid=uid,
            prompt=PROMPT.format(a=a, b=b),
            answer=str(a + b),
            meta={"digits": self.digits, "a": a, "b": b},
        )


def columns(a: int, b: int, digits: int) -> list[tuple[int, int, int, int]]:
    """``(x, y, carry_in, column_sum)`` per column, units first."""
    steps, carry = [], 0
    for k in range(digits):
        x, y = a // 10**k % 10, b // 10**k % 10
        total = x + y + carry
        steps.append((x, y, carry, total))
        carry = total // 10
    return steps


def _column_text(x: int, y: int, carry: int, total: int) -> str:
    return f"{x}+{y}+{carry}={total:02d}"


def worked_trace(a: int, b: int, digits: int, rechecks: tuple[int, ...] = ()) -> str:
    """The full response: column lines, ``so <answer>``, a re-check line per column index in
    ``rechecks``, then ``</think>`` and the boxed answer."""
    steps = columns(a, b, digits)
    lines = [f"{_column_text(*s)}, write {s[3] % 10}, carry {s[3] // 10}\n" for s in steps]
    checks = [f"wait, {_column_text(*steps[k])}? yes\n" for k in rechecks]
    answer = a + b
    return f"<think>\n{''.join(lines)}so {answer}\n{''.join(checks)}</think>\n\\boxed{{{answer}}}"


def terse_trace(a: int, b: int, digits: int) -> str:
    """A compressed chain of thought: one ``x+y=tt`` line per column, units first, without the
    carry (neither added in nor written down), then the answer:
    ``<think>\n7+8=15\n4+0=04\n3+7=10\nso 1055\n</think>\n\boxed{1055}``. About half the worked
    trace's length; the carries must be added while writing the answer, in one go, so the model gets
    these wrong more often when a column carries: a shortcut that trades accuracy for length (on
    the hard questions), the trade-off a naive length penalty falls into."""
    lines = "".join(f"{x}+{y}={x + y:02d}\n" for x, y, _, _ in columns(a, b, digits))
    return f"<think>\n{lines}so {a + b}\n</think>\n\\boxed{{{a + b}}}"


def short_trace(a: int, b: int) -> str:
    """A direct answer with an empty chain of thought (what underthinking looks like)."""
    return f"<think></think>\n\\boxed{{{a + b}}}"


@dataclass(frozen=True)
class TraceMix:
    """Shares of the warm-start traces: ``short_frac`` direct answers, ``recheck_frac`` worked
    traces padded with ``1..max_rechecks`` re-checks (uniform), ``terse_frac`` compressed traces
    (:func:`terse_trace`), the rest plain worked traces."""

    recheck_frac: float = 0.4
    short_frac: float = 0.03
    max_rechecks: int = 3
    terse_frac: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.short_frac <= 0.05 and 0 <= self.recheck_frac and 0 <= self.terse_frac
                and self.short_frac + self.recheck_frac + self.terse_frac <= 1):
            raise ValueError(f"{self}: need short_frac <= 0.05 and recheck + short + terse <= 1")
        if self.max_rechecks < 1:
            raise ValueError(f"max_rechecks={self.max_rechecks} must be >= 1")


def sample_trace(problem: Problem, rng: np.random.Generator, mix: TraceMix = TraceMix()) -> str:
    """One warm-start response for ``problem`` (every trace's boxed answer is the gold answer)."""
    a, b, digits = problem.meta["a"], problem.meta["b"], problem.meta["digits"]
    u = rng.random()
    if u < mix.short_frac:
        return short_trace(a, b)
    if u < mix.short_frac + mix.recheck_frac:
        count = int(rng.integers(1, mix.max_rechecks + 1))
        picked = rng.choice(digits, size=count, replace=count > digits)
        return worked_trace(a, b, digits, tuple(int(k) for k in picked))
    if u < mix.short_frac + mix.recheck_frac + mix.terse_frac:
        return terse_trace(a, b, digits)
    return worked_trace(a, b, digits)
