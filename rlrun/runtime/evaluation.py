"""Evaluation: accuracy and length of ``k`` samples per problem, reduced over ranks (ALGORITHMS.md
section 5: accuracy = pass@1 averaged over the samples, pass@k with the unbiased estimator).

``sample_and_score`` is the measurement both users share: the training loop's evaluations at
``eval.at_steps`` (``Evaluator``: the held-out split and ``eval.benchmarks``, at the curriculum's
cap, at each ``eval.budgets`` cap and at each ``eval.force_budgets`` forced thinking budget) and
``rlrun-eval`` (``rlrun.analysis.evaluate``).
"""
from __future__ import annotations

from typing import Any

import torch

from rlrun.core.evaluation import mean_pass_at_k
from rlrun.core.metrics import rollout_metrics, span_metrics
from rlrun.runtime import dist
from rlrun.runtime.forcing import BudgetForced
from rlrun.runtime.sampling import counted
from rlrun.runtime.capabilities import parts_of
from rlrun.types import Closable, HasMetrics, HasPromptTemplate, MeasuresEval, Sampling, StepBatch


def gathered_metrics(batch: StepBatch) -> dict[str, float]:
    """Accuracy and length statistics over the completions of all ranks (percentiles included),
    with the means of the thinking and answer spans."""
    metrics = rollout_metrics(dist.gather_cat(batch.length_tokens_N), dist.gather_cat(batch.truncated_N),
                              dist.gather_cat(batch.correct_N))
    return {**metrics, **span_metrics(dist.gather_cat(batch.thinking_tokens_N), dist.gather_cat(batch.answer_tokens_N))}


def verifier_counts(verifier: Any) -> dict[str, float]:
    """The verifier's counts since the last call (``verify/errors``, ``verify/timeouts``, ...:
    a check that failed is counted, never only scored wrong), summed over ranks."""
    if not isinstance(verifier, HasMetrics):
        return {}
    counts = verifier.metrics()
    keys = sorted(counts)
    summed = dist.all_reduce_sum(torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) for k, v in zip(keys, summed)}


def measured(pieces: list[Any], batch: StepBatch) -> dict[str, float]:
    """The numbers that pieces declaring ``MeasuresEval`` add (LCPO's ``length_deviation``): each
    ``sum / count`` over every rank's completions, left out where no rank counted any."""
    out: dict[str, float] = {}
    for piece in pieces:
        for name, (total, count) in piece.eval_sums(batch).items():
            summed = dist.all_reduce_sum(torch.tensor([float(total), float(count)], dtype=torch.float64))
            if summed[1] > 0:
                out[name] = float(summed[0] / summed[1])
    return out


def sample_and_score(rollout, verifier, problems, k: int, budgets: list[int],
                     sampling: Sampling | None = None, measures: list[Any] = (),
                     span: str = "response") -> tuple[dict[str, float], StepBatch]:
    """``k`` samples per problem, reduced over ranks: acc (pass@1 averaged over the samples), mean
    tokens (of ``span``, ``length.span``), the thinking and answer spans' mean tokens, truncated
    share, pass@k for k > 1 (ALGORITHMS.md 5.1), and what ``measures`` add; and this rank's batch
    with the verifier's columns."""
    batch = counted(rollout.generate(problems, k, budgets, sampling), span)
    verdicts = verifier(batch)
    batch = batch.with_columns(correct_N=verdicts.correct_N, format_ok_N=verdicts.format_ok_N,
                               predicted=verdicts.predicted)
    merged = gathered_metrics(batch)
    out = {"acc": merged["acc/train"], "mean_tokens": merged["length/mean_tokens"],
           "truncated_frac": merged["length/truncated_frac"],
           "thinking_mean_tokens": merged["length/thinking_mean_tokens"],
           "answer_mean_tokens": merged["length/answer_mean_tokens"]}
    if k > 1:
        correct = dist.gather_cat(verdicts.correct_N).view(-1, k)
        out[f"pass@{k}"] = mean_pass_at_k(correct, k)
    out.update(measured(list(measures), batch))
    return out, batch


def rank_share(run, problems: list, step: int) -> tuple[list, list[int]]:
    """This rank's share of a fixed question set (every world_size-th, from its rank) with the
    run's prompt transform (LCPO's target, a stated budget) and the curriculum's caps at ``step``:
    what a monitor set and the held-out evaluation sample."""
    share = problems[dist.rank():: dist.world_size()]
    if run.prompts is not None:
        share = run.prompts(share, step)
    return share, run.curriculum.budgets(step, share)


class Evaluator:
    """The training run's evaluations (``eval`` settings, ``rlrun.wiring.settings.EvalSettings``):
    the held-out split of the data group (``eval/heldout/...``) and each ``eval.benchmarks`` entry
    (``eval/<name>/...``, the first ``eval.problems`` of it, shown with the data source's prompt
    template when it has one, so the policy sees the prompt it trains on), at the steps of
    ``eval.at_steps``."""

    def __init__(self, run) -> None:
        self.run = run
        s = run.settings
        self.sets: dict[str, tuple[list, Any]] = {}
        # eval.force_budgets: the engine must sample from token ids (ContinuesFromIds), checked here at start
        self.forced = BudgetForced(run.rollout, s.eval.force_answer_tokens) if s.eval.force_budgets else None
        if not s.eval.at_steps:
            return
        from rlrun.tasks.eval_sets import benchmark

        self.sets["heldout"] = (run.problems.held_out(s.eval.problems), run.verifier)
        prompt = run.problems.prompt if isinstance(run.problems, HasPromptTemplate) else None
        shared: dict = {}  # benchmarks of one kind share a verifier (math-verify's workers start once)
        for name in s.eval.benchmarks:
            self.sets[name] = benchmark(name, s.eval.problems, s.seed, prompt=prompt, verifiers=shared)

    def due(self, step: int) -> bool:
        return step in self.run.settings.eval.at_steps

    def __call__(self, step: int) -> dict[str, dict[str, float]]:
        """Every set's result at ``step`` by set name."""
        return {name: self.evaluate(problems, step, verifier, name) for name, (problems, verifier) in self.sets.items()}

    def evaluate(self, problems, step: int = 0, verifier=None, name: str = "heldout") -> dict[str, float]:
        """Accuracy and length of ``eval.samples`` samples per problem of one set (or the set
        ``name``'s own of ``eval.samples_by_set``), with the prompts
        and budgets of the curriculum at step 0 (``eval.budget=start``: the cap the run starts with,
        so start and end compare at the same cap) or at ``step`` (``eval.budget=current``); then
        again at each cap of ``eval.budgets`` (``budget_<N>/acc`` ...: the points of a
        length/accuracy curve) and with the thinking forced to end at each ``eval.force_budgets``
        budget (``force_<N>/acc`` ...: s1's budget forcing, ``rlrun.runtime.forcing``), sampling at
        ``eval.temperature`` / ``eval.top_p`` (null: the rollout engine's). The checks the verifier
        failed or timed out on are counted (``verify_errors``)."""
        run = self.run
        verifier = run.verifier if verifier is None else verifier
        ev = run.settings.eval
        share, budgets = rank_share(run, problems, step if ev.budget == "current" else 0)
        sampling = Sampling(temperature=ev.temperature, top_p=ev.top_p)
        measures = [p for p in parts_of(run.prompts) if isinstance(p, MeasuresEval)]
        k = ev.samples_by_set.get(name, ev.samples)
        span = run.settings.length.span
        result, _ = sample_and_score(run.rollout, verifier, share, k, budgets, sampling, measures, span)
        caps = [(f"budget_{cap}", run.rollout, cap) for cap in ev.budgets]
        caps += [(f"force_{cap}", self.forced, cap) for cap in ev.force_budgets]
        for name, engine, cap in caps:
            at_cap, _ = sample_and_score(engine, verifier, share, k, [cap] * len(share), sampling, measures, span)
            result.update({f"{name}/{key}": v for key, v in at_cap.items()})
        result["budget_mean_tokens"] = float(dist.gather_cat(torch.tensor(budgets, dtype=torch.float)).mean())
        result.update({key.replace("/", "_"): v for key, v in verifier_counts(verifier).items()})
        return result

    def close(self) -> None:
        """Stop the benchmarks' own verifiers (math-verify's worker processes); not the data group's."""
        own = {id(v): v for name, (_, v) in self.sets.items() if name != "heldout"}
        for verifier in own.values():
            if isinstance(verifier, Closable):
                verifier.close()


def end_points(results: dict[str, dict[str, float]], budgets: tuple[int, ...],
               force_budgets: tuple[int, ...] = ()) -> dict:
    """``summary["eval"]``, the last evaluation as rlrun-pareto reads it: per set, its result at
    each ``eval.budgets`` cap (``budget_<N>: {acc, mean_tokens, truncated_frac, ...}``), at each
    ``eval.force_budgets`` forced budget (``force_<N>: {...}``) and, for sets other than ``heldout``
    (whose end point is ``summary["end"]``), the plain result (``end``)."""
    out = {}
    names = [f"budget_{b}" for b in budgets] + [f"force_{b}" for b in force_budgets]
    for name, result in results.items():
        points = {point: {key.split("/", 1)[1]: v for key, v in result.items() if key.startswith(f"{point}/")}
                  for point in names}
        if name != "heldout":
            points["end"] = {key: v for key, v in result.items() if "/" not in key}
        if points:
            out[name] = points
    return out
