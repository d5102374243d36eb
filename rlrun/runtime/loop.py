"""The training loop. It never names an algorithm, reward or engine: each step is
prompts -> budgets -> rollouts -> verdicts -> shaped reward -> advantages -> update -> weight sync
(DESIGN.md section 3), and everything method-specific sits in the pieces ``build_run`` bound.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rlrun.runtime import checkpoint, dist, report
from rlrun.core.metrics import reward_metrics, rollout_metrics
from rlrun.runtime.monitor import rank_share, run_monitors
from rlrun.types import AdvantageInput, Rollouts, Scored, StepInput, TrainBatch, Verdicts


@contextmanager
def timed(times: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    times[f"time/{stage}_s"] = times.get(f"time/{stage}_s", 0.0) + time.perf_counter() - start


@contextmanager
def sampling(rollout, **settings):
    """The rollout engine's sampling settings (``temperature``, ``top_p``) set to the given values
    (None: left as they are) for the block, then restored: the evaluation may sample unlike
    training (e.g. ``eval.temperature=0.6``, the papers' evaluation temperature)."""
    changed = {name: getattr(rollout, name) for name, value in settings.items() if value is not None}
    for name in changed:
        setattr(rollout, name, settings[name])
    try:
        yield
    finally:
        for name, value in changed.items():
            setattr(rollout, name, value)


def evaluate(run, problems, step: int = 0, verifier=None) -> dict[str, float]:
    """Accuracy and length of ``eval.samples`` samples per problem of one evaluation set, reduced
    over ranks, with the prompts and budgets of the curriculum at step 0 (``eval.budget=start``: the
    cap the run starts with, so start and end compare at the same cap) or at ``step``
    (``eval.budget=current``: the budget a shrinking curriculum has reached); then again at each cap
    of ``eval.budgets`` (``budget_<N>/acc`` ...: the points of a length/accuracy curve), sampling at
    ``eval.temperature`` / ``eval.top_p`` (null: the rollout engine's own). Answers are
    checked by ``verifier`` (default: the data group's); the checks it failed or timed out on during
    the evaluation are counted (``verify_errors``, ``verify_timeouts``, ...) when it counts them."""
    verifier = run.verifier if verifier is None else verifier
    ev = run.settings.eval
    share, budgets = rank_share(run, problems, step if ev.budget == "current" else 0)
    with sampling(run.rollout, temperature=ev.temperature, top_p=ev.top_p):
        result, _ = sample_and_score(run.rollout, verifier, share, ev.samples, budgets)
        for cap in ev.budgets:
            at_cap, _ = sample_and_score(run.rollout, verifier, share, ev.samples, [cap] * len(share))
            result.update({f"budget_{cap}/{key}": v for key, v in at_cap.items()})
    result["budget_mean_tokens"] = float(dist.gather_cat(torch.tensor(budgets, dtype=torch.float)).mean())
    result.update({key.replace("/", "_"): v for key, v in verifier_counts(verifier).items()})
    return result


def eval_sets(run) -> dict[str, tuple[list, object]]:
    """The evaluation's sets by metric name, each ``(problems, verifier)``: ``heldout``, the data
    group's held-out split and verifier, then each ``eval.benchmarks`` entry, the first
    ``eval.problems`` of it (``rlrun.analysis.evaluate.benchmark``, the helper ``rlrun-eval`` uses; a
    vendored set is shown with the data source's prompt template when it has one, so the policy
    sees the prompt it trains on). Empty when nothing is evaluated."""
    s = run.settings
    if not s.eval.at_steps:
        return {}
    from rlrun.analysis.evaluate import benchmark

    sets = {"heldout": (run.problems.held_out(s.eval.problems), run.verifier)}
    prompt = getattr(run.problems, "prompt", None)
    shared: dict = {}  # benchmarks of one kind share a verifier (math-verify's workers start once)
    for name in s.eval.benchmarks:
        sets[name] = benchmark(name, s.eval.problems, s.seed, prompt=prompt, verifiers=shared)
    return sets


def end_points(results: dict[str, dict[str, float]], budgets: tuple[int, ...]) -> dict:
    """``summary["eval"]``, the last evaluation as rlrun-pareto reads it: per set, its result at
    each ``eval.budgets`` cap (``budget_<N>: {acc, mean_tokens, truncated_frac, ...}``) and, for sets
    other than ``heldout`` (whose end point is ``summary["end"]``), the plain result (``end``)."""
    out = {}
    for name, result in results.items():
        points = {f"budget_{b}": {key.split("/", 1)[1]: v for key, v in result.items()
                                  if key.startswith(f"budget_{b}/")} for b in budgets}
        if name != "heldout":
            points["end"] = {key: v for key, v in result.items() if "/" not in key}
        if points:
            out[name] = points
    return out


def close_verifiers(sets: dict[str, tuple[list, object]]) -> None:
    """Stop the benchmarks' own verifiers (math-verify's worker processes); not the data group's."""
    own = {id(v): v for name, (_, v) in sets.items() if name != "heldout"}
    for verifier in own.values():
        if hasattr(verifier, "close"):
            verifier.close()


def sample_and_score(rollout, verifier, problems, k: int, budgets: list[int]) -> tuple[dict[str, float], Rollouts]:
    """``k`` samples per problem, reduced over ranks: acc (pass@1 averaged over the samples), mean
    tokens, truncated share, and pass@k for k > 1 (ALGORITHMS.md 5.1); and this rank's rollouts.
    Used by the in-loop evaluation and by ``rlrun-eval``."""
    from rlrun.core.evaluation import mean_pass_at_k

    rollouts = rollout.generate(problems, k, budgets)
    verdicts = verifier(rollouts)
    merged = gathered_metrics(rollouts, verdicts)
    out = {"acc": merged["acc/train"], "mean_tokens": merged["length/mean_tokens"],
           "truncated_frac": merged["length/truncated_frac"]}
    if k > 1:
        correct = dist.gather_cat(verdicts.correct_N).view(-1, k)
        out[f"pass@{k}"] = mean_pass_at_k(correct, k)
    out.update(target_deviation(rollouts))
    return out, rollouts


def target_deviation(rollouts: Rollouts) -> dict[str, float]:
    """``length_deviation``, the mean |length - target| over ranks (L1's distance, ALGORITHMS.md
    5.3; :func:`rlrun.core.evaluation.length_deviation`) over the prompts with an LCPO Exact target
    (``meta["target_tokens"]``, mode ``exact``; a Max target is a ceiling, not a distance); nothing
    when no rank has one."""
    exact = [isinstance(p.meta.get("target_tokens"), int) and p.meta.get("target_mode", "exact") == "exact"
             for p in rollouts.problems]
    target = torch.tensor([float(p.meta["target_tokens"]) if ok else 0.0
                           for p, ok in zip(rollouts.problems, exact)])
    keep_N = torch.tensor(exact, dtype=torch.bool)[rollouts.group_N]
    gap_N = (rollouts.length_tokens_N.float() - target[rollouts.group_N]).abs()[keep_N]
    total = dist.all_reduce_sum(torch.tensor([float(gap_N.sum()), float(len(gap_N))], dtype=torch.float64))
    return {"length_deviation": float(total[0] / total[1])} if total[1] > 0 else {}


def gathered_metrics(rollouts, verdicts) -> dict[str, float]:
    """Accuracy and length statistics over the completions of all ranks (percentiles included)."""
    return rollout_metrics(
        dist.gather_cat(rollouts.length_tokens_N), dist.gather_cat(rollouts.truncated_N),
        dist.gather_cat(verdicts.correct_N),
    )


@dataclass
class Sampled:
    """One step's completions (all sampling rounds), their verdicts and rewards, the keep mask."""

    rollouts: Rollouts
    verdicts: Verdicts
    scored: Scored
    keep_N: torch.Tensor
    budgets: list[int]
    rounds: int


def score(run, rollouts: Rollouts, step: int) -> tuple[Verdicts, Scored, torch.Tensor]:
    """Verdicts, shaped reward and the filter's keep mask of one sampling round."""
    verdicts = run.verifier(rollouts)
    scored = run.reward(StepInput(rollouts, verdicts, step))
    keep_N = torch.ones(len(rollouts), dtype=torch.bool)
    if run.filter is not None:
        keep_N = run.filter(advantage_input(rollouts, verdicts, scored, step))
    return verdicts, scored, keep_N


def advantage_input(rollouts: Rollouts, verdicts: Verdicts, scored: Scored, step: int) -> AdvantageInput:
    return AdvantageInput(
        reward_N=scored.reward_N, group_N=rollouts.group_N, correct_N=verdicts.correct_N,
        length_tokens_N=rollouts.length_tokens_N, truncated_N=rollouts.truncated_N,
        preference_N=scored.preference_N, logp_NT=rollouts.logp_NT, mask_NT=rollouts.mask_NT(),
        step=step,
    )


def sample(run, step: int, times: dict[str, float]) -> Sampled:
    """Sample the step's prompts; with a refilling filter (DAPO's dynamic sampling,
    ``filter.max_rounds`` > 1) sample further prompts until this rank's share of the step's prompts
    has kept groups, keeping the first ones (ALGORITHMS.md 1.4.3), or fail after max_rounds."""
    s = run.settings
    share = s.prompts_per_step // dist.world_size()
    max_rounds = getattr(run.filter, "max_rounds", 1) if run.filter is not None else 1
    rounds: list[tuple[Rollouts, Verdicts, Scored, torch.Tensor]] = []
    budgets: list[int] = []
    kept_groups = 0
    for attempt in range(max_rounds):
        extra = {"attempt": attempt} if max_rounds > 1 else {}
        problems = run.problems.batch(step, s.prompts_per_step, dist.rank(), dist.world_size(), **extra)
        if run.prompts is not None:
            problems = run.prompts(problems, step)
        budgets += run.curriculum.budgets(step, problems)
        with timed(times, "rollout"):
            rollouts = run.rollout.generate(problems, s.group_size, budgets[-len(problems):])
        with timed(times, "reward"):
            verdicts, scored, keep_N = score(run, rollouts, step)
        rounds.append((rollouts, verdicts, scored, keep_N))
        kept_groups += len(torch.unique(rollouts.group_N[keep_N]))
        # every rank samples as many rounds as the rank that is shortest of kept groups
        if max_rounds == 1 or not dist.all_reduce_max(torch.tensor([int(kept_groups < share)])).item():
            break
    else:
        message = (f"dynamic sampling kept {kept_groups} of the {share} groups this rank needs after "
                   f"algo.filter.max_rounds={max_rounds} rounds at step {step + 1}")
        if getattr(run.filter, "when_short", "error") == "error":
            raise RuntimeError(f"{message}; raise max_rounds or set algo.filter.when_short=train")
        warnings.warn(f"{message}; training on the kept groups (when_short=train)", stacklevel=2)
    rollouts_all, verdicts_all, scored_all, keep_all = zip(*rounds)
    rollouts = Rollouts.cat(list(rollouts_all))
    keep_N = torch.cat(keep_all)
    if max_rounds > 1:  # the first `share` kept groups
        first = torch.unique(rollouts.group_N[keep_N])[:share]
        keep_N &= torch.isin(rollouts.group_N, first)
    return Sampled(rollouts, Verdicts.cat(list(verdicts_all)), Scored.cat(list(scored_all)), keep_N,
                   budgets, len(rounds))


def train_step(run, step: int) -> dict[str, float]:
    times: dict[str, float] = {}
    got = sample(run, step, times)
    rollouts, verdicts, scored = got.rollouts, got.verdicts, got.scored
    with timed(times, "reward"):
        kept = got.keep_N.nonzero().squeeze(1)
        trained = rollouts.select(kept)
        inp = advantage_input(rollouts, verdicts, scored, step).select(kept)
        advantages_N = run.advantage(inp)
        if run.train_rows is not None:  # rows whose loss is masked after the advantages (DAPO)
            rows = run.train_rows(inp).nonzero().squeeze(1)
            kept, trained, inp, advantages_N = kept[rows], trained.select(rows), inp.select(rows), advantages_N[rows]
    counts = dist.all_reduce_sum(torch.tensor([float(len(rollouts)), float(len(kept))]))
    if counts[1] == 0:  # nothing to learn from on any rank: no optimizer step
        return step_metrics(run, got, times, {"rollout/skipped_update": 1.0}, counts)
    ref_logp_NT = None
    if run.loss.needs_reference:
        with timed(times, "ref_logprobs"):
            ref_logp_NT = run.trainer.logprobs(trained, reference=True)
    # One optimizer step per batch, sampled by the current weights: the update is on-policy, so
    # pi_old's log-probs are those of the update's own forward (TrainBatch.old_logp_NT = None).
    batch = TrainBatch(
        mask_NT=trained.mask_NT(), old_logp_NT=None, advantages_N=advantages_N,
        ref_logp_NT=ref_logp_NT, group_N=trained.group_N, correct_N=inp.correct_N,
    )
    with timed(times, "update"):
        stats = run.trainer.update(trained, batch, run.loss)
    with timed(times, "sync"):
        run.rollout.load_weights(run.trainer.weights())
    return step_metrics(run, got, times, stats, counts)


def step_metrics(run, got: Sampled, times: dict[str, float], stats: dict[str, float],
                 counts: torch.Tensor) -> dict[str, float]:
    """The step's metrics (DESIGN.md section 5), reduced over ranks."""
    rollouts, scored = got.rollouts, got.scored
    local = {
        **reward_metrics(scored),
        **{k: v for piece in (run.reward, run.filter, run.curriculum) if hasattr(piece, "metrics")
           for k, v in piece.metrics().items()},
        "curriculum/budget_mean_tokens": float(torch.tensor(got.budgets, dtype=torch.float).mean()),
        **stated_budget(rollouts),
        "throughput/tokens_per_s": float(rollouts.length_tokens_N.sum()) / times["time/rollout_s"],
        "rollout/rounds": float(got.rounds),
    }
    metrics = {
        **gathered_metrics(rollouts, got.verdicts),
        **verifier_counts(run.verifier),
        **dist.mean_metrics(local, weight=float(len(rollouts))),
        "rollout/sampled": float(counts[0]),
        "rollout/kept": float(counts[1]),
        **stats,
        **times,
    }
    metrics["time/step_s"] = sum(times.values())
    return metrics


def verifier_counts(verifier) -> dict[str, float]:
    """The verifier's counts since the last step (``verify/errors``, ``verify/timeouts``, ...:
    a check that failed is counted, never only scored wrong), summed over ranks."""
    if not hasattr(verifier, "metrics"):
        return {}
    counts = verifier.metrics()
    keys = sorted(counts)
    summed = dist.all_reduce_sum(torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) for k, v in zip(keys, summed)}


def stated_budget(rollouts: Rollouts) -> dict[str, float]:
    """``curriculum/stated_budget_mean_tokens`` when the curriculum states a budget per prompt."""
    stated = [p.meta["budget_tokens"] for p in rollouts.problems if "budget_tokens" in p.meta]
    return {"curriculum/stated_budget_mean_tokens": sum(stated) / len(stated)} if stated else {}


def advance(run, step: int, monitor_cache: dict) -> dict[str, float]:
    """One training step as ``train`` runs it: due monitor sets, the update, the curriculum's
    observation, the log line. Returns the step's metrics."""
    monitored = run_monitors(run, step, monitor_cache)
    metrics = {**train_step(run, step), **monitored}
    run.curriculum.observe(step, metrics)
    run.log(step + 1, metrics)
    return metrics


def train(run) -> dict:
    """Run ``run.settings.steps`` steps (continuing from a checkpoint when resuming) and return the
    summary that is also written to ``summary.json``."""
    s = run.settings
    began = time.perf_counter()
    start, summary = 0, {"run_dir": s.out_dir, "steps": s.steps}
    if s.resume:
        start, saved = checkpoint.restore(run, checkpoint.latest(s.resume))
        summary.update(saved)
        report.line(f"resumed from {s.resume} after step {start}")
    else:  # each rank its own stream: ranks must not draw the same samples
        checkpoint.seed_all(s.seed + 1000 * dist.rank())
    sets = eval_sets(run)

    def maybe_evaluate(step: int) -> None:
        if step in s.eval.at_steps:
            results = {name: evaluate(run, problems, step, verifier) for name, (problems, verifier) in sets.items()}
            summary["start" if step == 0 else "end" if step == s.steps else f"step_{step}"] = results["heldout"]
            points = end_points(results, s.eval.budgets) if step == s.steps else {}
            if points:  # the run's points for rlrun-pareto
                summary["eval"] = points
            run.log(step, {f"eval/{name}/{k}": v for name, result in results.items() for k, v in result.items()})

    if start == 0:
        maybe_evaluate(0)
    monitor_cache: dict = {}
    for step in range(start, s.steps):
        metrics = advance(run, step, monitor_cache)
        report.progress(step + 1, s.steps, metrics)
        maybe_evaluate(step + 1)
        if (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
            checkpoint.save(run, step + 1, extra=summary)
    summary["seconds"] = time.perf_counter() - began  # this process's wall time, evaluations included
    summary["checkpoint"] = checkpoint.save(run, s.steps, extra=summary)
    close_verifiers(sets)
    run.finish(summary)
    return summary
