"""Monitor sets: the loop samples a fixed question set with the current policy for pieces that
choose their targets from it (LASER-D/DE, ALGORITHMS.md 3.2.3 "monitor and target choice").

A reward term asks for a monitor by declaring ``NeedsMonitor`` (``rlrun.types``) with ``monitor`` in ``MONITOR_SOURCES`` (``data``: a fixed sample of
the training data, ``data.source.monitor(n)``; ``eval``: the held-out split, ``data.source.held_out(n)``),
``monitor_problems`` (n), ``targets.n_rollout`` (K responses per question), ``due(step)`` and
``observe_monitor(correct_N, length_N, group_N, step)``. Before a due step the loop samples K
responses per question (each rank its share of the questions, the run's prompt transform and the
curriculum's budgets of that step), gathers every rank's responses in question order and passes them
on, so every rank computes the same targets. Correctness is the verifier's (format-agnostic),
lengths count EOS (``StepBatch.sampled_tokens_N``).
"""
from __future__ import annotations

import torch

from rlrun.runtime import dist
from rlrun.runtime.evaluation import rank_share
from rlrun.runtime.sampling import counted
from rlrun.types import HasMonitorSet, NeedsMonitor, Problem

MONITOR_SOURCES = ("data", "eval")


def monitored_pieces(reward) -> dict:
    """The reward terms (by name) that need the runtime to sample a monitor set."""
    return {name: fn for name, fn in reward.fns.items()
            if isinstance(fn, NeedsMonitor) and fn.monitor in MONITOR_SOURCES}


def check_source(problems, pieces: dict) -> None:
    """Fail at start when the data source cannot give a monitor set (ValueError, one line)."""
    for piece in pieces.values():
        if piece.monitor == "data" and not isinstance(problems, HasMonitorSet):
            raise ValueError(f"{type(piece).__name__} monitor={piece.monitor} needs data.source.monitor(n), "
                             f"which {type(problems).__name__} lacks; use monitor=batch")


def monitor_set(run, piece) -> list[Problem]:
    n = piece.monitor_problems
    return run.problems.monitor(n) if piece.monitor == "data" else run.problems.held_out(n)


def run_monitors(run, step: int, cache: dict) -> dict[str, float]:
    """Sample and hand over every due monitor before 0-based ``step``; ``cache`` keeps each piece's
    question set between calls. Returns ``monitor/<term>/{acc,mean_tokens,questions}``."""
    out: dict[str, float] = {}
    for name, piece in monitored_pieces(run.reward).items():
        if not piece.due(step):
            continue
        if name not in cache:
            cache[name] = monitor_set(run, piece)
        questions = cache[name]
        rank, world = dist.rank(), dist.world_size()
        share, budgets = rank_share(run, questions, step)
        batch = counted(run.rollout.generate(share, piece.targets.n_rollout, budgets), run.settings.length.span)
        correct = run.verifier(batch).correct_N.to(torch.float32)
        question = rank + world * batch.group_N  # index in the monitor set, the same on every rank
        correct, length, question = (dist.gather_cat(x) for x in
                                     (correct, batch.sampled_tokens_N.to(torch.float32), question))
        order = torch.argsort(question, stable=True)
        piece.observe_monitor(correct[order], length[order], question[order].long(), step)
        out.update({f"monitor/{name}/acc": float(correct.mean()),
                    f"monitor/{name}/mean_tokens": float(length.mean()),
                    f"monitor/{name}/questions": float(len(questions))})
    return out
