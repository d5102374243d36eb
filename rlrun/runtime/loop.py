"""The training loop. It never names an algorithm, reward or engine: each step is
sample -> verify -> reward -> filter -> advantage -> update -> sync -> observe -> log
(DESIGN.md section 3), and everything method-specific sits in the pieces ``build_run`` bound.
Sampling (with a refilling filter's extra rounds) is ``rlrun.runtime.sampling``; evaluation is
``rlrun.runtime.evaluation``; what a piece can do beyond its call is declared in ``rlrun.types``.
"""
from __future__ import annotations

import os
import sys
import time

import torch

from rlrun.core.metrics import reward_metrics
from rlrun.runtime import checkpoint, dist, report, rundir, stopping
from rlrun.runtime.evaluation import Evaluator, end_points, gathered_metrics, verifier_counts
from rlrun.runtime.monitor import run_monitors
from rlrun.runtime.sampling import Sampled, sample, timed
from rlrun.types import CarriesHistory, ChecksRollout, HasBatchMetrics, HasMetrics, SleepsRollout, UpdatesFailed


def train_step(run, step: int) -> dict[str, float]:
    """One step: sample, verify, reward and filter (``sample``), advantages over the kept rows,
    the rows that stay in the loss, the reference's log-probs when the loss has KL, one optimizer
    step, the weights into the rollout engine. Returns the step's metrics."""
    times: dict[str, float] = {}
    got = sample(run, step, times)
    with timed(times, "reward"):
        kept = got.batch.select(got.keep_N.nonzero().squeeze(1))
        kept = kept.with_columns(advantages_N=run.advantage(kept))
        if run.train_rows is not None:  # rows whose loss is masked after the advantages (DAPO)
            kept = kept.select(run.train_rows(kept).nonzero().squeeze(1))
    counts = dist.all_reduce_sum(torch.tensor([float(len(got.batch)), float(len(kept))]))
    if counts[1] == 0:  # nothing to learn from on any rank: no optimizer step
        return step_metrics(run, got, times, {"rollout/skipped_update": 1.0}, counts)
    if isinstance(run.rollout, SleepsRollout):  # rollout.sleep: the engine's memory back for the update
        run.rollout.sleep()
    if run.loss.needs_reference:
        with timed(times, "ref_logprobs"):
            kept = kept.with_columns(ref_logp_NT=run.trainer.logprobs(kept, reference=True))
    # By default one optimizer step per batch, sampled by the current weights: the update is
    # on-policy, so pi_old's log-probs are those of the update's own forward (old_logp_NT stays
    # None); trainer.mini_batches / epochs above 1 make it PPO's several steps (the trainer's update).
    with timed(times, "update"):
        stats = run.trainer.update(kept, run.loss)
    trained = sum(len(kept.prompt_ids[int(g)]) + len(c) for g, c in zip(kept.group_N, kept.completion_ids))
    stats = {**stats, "throughput/update_tokens_per_s": trained / max(times["time/update_s"], 1e-9)}
    with timed(times, "sync"):
        run.rollout.load_weights(run.trainer.named_weights())
    return step_metrics(run, got, times, stats, counts)


def step_metrics(run, got: Sampled, times: dict[str, float], stats: dict[str, float],
                 counts: torch.Tensor) -> dict[str, float]:
    """The step's metrics (DESIGN.md section 5), reduced over ranks."""
    batch = got.batch
    local = {
        **reward_metrics(batch),
        **{k: v for piece in (run.reward, run.filter, run.curriculum, run.problems) if isinstance(piece, HasMetrics)
           for k, v in piece.metrics().items()},
        "curriculum/budget_mean_tokens": float(torch.tensor(got.budgets, dtype=torch.float).mean()),
        **(run.curriculum.batch_metrics(batch) if isinstance(run.curriculum, HasBatchMetrics) else {}),
        "throughput/tokens_per_s": float(batch.response_tokens_N.sum()) / times["time/rollout_s"],
        "rollout/rounds": float(got.rounds),
    }
    metrics = {
        **gathered_metrics(batch),
        **verifier_counts(run.verifier),
        **dist.mean_metrics(local, weight=float(len(batch))),
        "rollout/sampled": float(counts[0]),
        "rollout/kept": float(counts[1]),
        **stats,
        **times,
    }
    metrics["time/step_s"] = sum(v for k, v in times.items() if k.startswith("time/"))
    metrics["memory/peak_gb"] = max(v for k, v in times.items() if k.startswith("memory/"))
    return metrics


def advance(run, step: int, monitor_cache: dict) -> dict[str, float]:
    """One training step as ``train`` runs it: due monitor sets, the update, the curriculum's
    observation, the log line. Returns the step's metrics."""
    monitored = run_monitors(run, step, monitor_cache)
    metrics = {**train_step(run, step), **monitored}
    if isinstance(run.rollout, ChecksRollout):  # the engine's log-probs against the trainer's
        run.rollout.check(step + 1, metrics, run.trainer)
    run.curriculum.observe(step, metrics)
    run.log(step + 1, metrics)
    return metrics


def train(run, source: str | None = ...) -> dict:  # type: ignore[assignment]
    """Run ``run.settings.steps`` steps (continuing from checkpoint dir ``source`` when given, None:
    a fresh start; left out, the checkpoint ``resume=`` names) and return the summary that is also
    written to ``summary.json``. A signal (``rlrun.runtime.stopping``) ends the run after the
    current step with a checkpoint: :class:`Stopped` is raised."""
    s = run.settings
    began = time.perf_counter()
    start, summary = 0, {"run_dir": s.out_dir, "steps": s.steps}
    if source is ...:
        source = checkpoint.resolve(s.resume, s.out_dir, dist.world_size()) if s.resume else None
    if source is not None:
        checkpoint.check_steps(source, s.steps)
        start, saved = checkpoint.restore(run, source)
        summary.update({k: v for k, v in saved.items() if k not in ("run_dir", "steps")})
        if dist.is_main():
            rundir.drop_metrics_after(s.out_dir, start)  # re-running in the same run dir
            if isinstance(run.logger, CarriesHistory):  # W&B: the steps a killed run did not write out
                run_dir = os.path.normpath(os.path.join(source, os.pardir, os.pardir))
                run.logger.carry(rundir.metrics_through(run_dir, start))
        report.line(f"resumed from {source} after step {start}")
    else:  # each rank its own stream: ranks must not draw the same samples
        if s.resume == "auto":
            report.line(f"resume=auto: no checkpoint in {s.out_dir} yet, starting fresh")
        checkpoint.seed_all(s.seed + 1000 * dist.rank())
    if isinstance(run.rollout, ChecksRollout):  # at start: weight names, the engine's log-probs on a probe
        run.rollout.check(start, None, run.trainer)
    evaluator = Evaluator(run)
    if start == 0:
        evaluate(run, evaluator, 0, summary)
    monitor_cache: dict = {}
    stop = stopping.Stop().install()
    try:
        for step in range(start, s.steps):
            try:
                metrics = advance(run, step, monitor_cache)
            except UpdatesFailed as exc:
                give_up(run, step, summary, exc)
            report.progress(step + 1, s.steps, metrics)
            evaluate(run, evaluator, step + 1, summary)
            signum = stop.agreed()
            if signum is not None and step + 1 < s.steps:
                stop_after(run, step + 1, summary, signum, evaluator, stop)
            if (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
                save(run, step + 1, summary)
        summary["seconds"] = time.perf_counter() - began  # this process's wall time, evaluations included
        summary["checkpoint"] = save(run, s.steps, summary)
    finally:
        stop.uninstall()
    evaluator.close()
    run.finish(summary)
    return summary


def save(run, step: int, summary: dict) -> str:
    return checkpoint.save(run, step, extra=summary, keep_last=run.settings.checkpoint.keep_last)


def stop_after(run, step: int, summary: dict, signum: int, evaluator: Evaluator, stop: stopping.Stop) -> None:
    """The end of a signalled run: a checkpoint after ``step``, the loggers closed, the signal passed
    on to a job scheduler's own handler (submitit's requeue), one line."""
    import signal

    summary["checkpoint"] = save(run, step, summary)
    summary["stopped_after_step"] = step
    evaluator.close()
    run.finish(summary)
    name = signal.Signals(signum).name
    message = (f"stopped by {name} after step {step}/{run.settings.steps}; checkpoint {summary['checkpoint']}; "
               f"continue with resume=auto in the same run dir (hydra.run.dir={run.settings.out_dir}) "
               f"or resume={run.settings.out_dir}")
    said = stop.passes_on(signum)
    if said and dist.is_main():  # the scheduler's handler may exit: say it first
        print(f"rlrun: {message}", file=sys.stderr, flush=True)
    stop.pass_on(signum)
    raise stopping.Stopped(signum, message, said)


def give_up(run, step: int, summary: dict, exc: UpdatesFailed) -> None:
    """Updates kept failing during step ``step + 1``: the weights are still those of the last good
    update, so the state after ``step`` steps is checkpointed (unless that checkpoint exists) and
    the run stops with one line (:class:`UpdatesFailed`)."""
    kept = "no step was completed; nothing was checkpointed"
    if step > 0:
        final = os.path.join(run.settings.out_dir, "checkpoints", f"step_{step:06d}")
        kept = f"the last good state is in {final if os.path.isdir(final) else save(run, step, summary)}"
    raise UpdatesFailed(f"{exc} during step {step + 1}; the run stopped: {kept}; look for a reward or advantage "
                        "that gives NaN (reward/* in metrics.jsonl), lower trainer.optim.lr, or raise "
                        "trainer.max_bad_steps") from exc


def evaluate(run, evaluator: Evaluator, step: int, summary: dict) -> None:
    """The evaluation after ``step`` steps when it is due: into the summary (``start``, ``end``,
    ``step_<N>``; the end points rlrun-pareto reads under ``eval``) and the log."""
    if not evaluator.due(step):
        return
    s = run.settings
    results = evaluator(step)
    summary["start" if step == 0 else "end" if step == s.steps else f"step_{step}"] = results["heldout"]
    points = end_points(results, s.eval.budgets, s.eval.force_budgets) if step == s.steps else {}
    if points:  # the run's points for rlrun-pareto
        summary["eval"] = points
    run.log(step, {f"eval/{name}/{k}": v for name, result in results.items() for k, v in result.items()})
