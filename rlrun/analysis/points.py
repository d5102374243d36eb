"""What a Pareto picture is made of: a run's evaluations as points on the accuracy-vs-tokens plane
and its evaluations over training steps as curves (read by ``rlrun.analysis.pareto``, drawn by
``rlrun.analysis.pareto_plot``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Point:
    """One evaluation of one run: a dot on the accuracy-vs-tokens plane."""

    label: str
    benchmark: str
    budget: float | None  # the token budget of the evaluation (a mean for the held-out eval)
    acc: float
    mean_tokens: float
    kind: str  # start | step | end | eval | forced (eval with the thinking forced to end at ``budget``)
    step: int | None
    run_dir: str
    truncated_frac: float | None = None
    on_frontier: bool = False
    aes: float | None = None  # against the run's start on the same benchmark
    elr: float | None = None  # GFPO's excess length reduction against rlrun-pareto --elr-baseline


@dataclass
class Curve:
    """One run's evaluations over training steps on one benchmark and budget (from metrics.jsonl)."""

    label: str
    benchmark: str
    budget: float | None
    run_dir: str
    steps: list[int] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    mean_tokens: list[float] = field(default_factory=list)
