"""What a person watching a run sees: one progress line per step and a closing summary table.
Only rank 0 prints."""
from __future__ import annotations

import sys

from rlrun.runtime import dist


def line(text: str) -> None:
    if dist.is_main():
        print(text, flush=True)


def progress(step: int, steps: int, metrics: dict[str, float]) -> None:
    width = len(str(steps))
    line(
        f"step {step:>{width}}/{steps} | acc {metrics['acc/train']:.3f} "
        f"| tokens {metrics['length/mean_tokens']:6.1f} | reward {metrics['reward/total']:+.3f} "
        f"| {metrics['time/step_s']:.2f} s/step"
    )


def summary_table(summary: dict) -> str:
    """The closing table: held-out accuracy and mean tokens at the start and the end."""
    rows = [f"{'':<8}{'accuracy':>10}{'mean tokens':>14}{'truncated':>11}"]
    for when in ("start", "end"):
        if when in summary:
            e = summary[when]
            rows.append(f"{when:<8}{e['acc']:>10.3f}{e['mean_tokens']:>14.1f}{e['truncated_frac']:>11.3f}")
    if "start" in summary and "end" in summary:
        d_acc = summary["end"]["acc"] - summary["start"]["acc"]
        d_len = summary["end"]["mean_tokens"] / max(summary["start"]["mean_tokens"], 1e-9) - 1
        rows.append(f"{'change':<8}{d_acc:>+10.3f}{d_len:>+13.1%}")
    rows.append(f"run dir: {summary['run_dir']}")
    return "\n".join(rows)


def print_summary(summary: dict) -> None:
    if dist.is_main():
        print(summary_table(summary), file=sys.stdout, flush=True)
