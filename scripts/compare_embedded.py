"""The table of ``make compare-embedded``: one row per method of the sweep, from its files alone.

    python scripts/compare_embedded.py SWEEP_DIR [--out DIR]

Reads each run dir of the Hydra multirun (``0/``, ``1/``, ...): ``.hydra/overrides.yaml`` (the
method is the ``experiment=compare/<method>`` override) and ``summary.json`` (the held-out
evaluations ``start`` and ``end``, 256 questions at T=1.0 and the 256-token cap). Per method:

- final accuracy and mean response tokens (``end``), and their values at the start;
- % length reduction against the run's start: ``100 * (1 - end_tokens / start_tokens)`` (JSON/CSV
  ``reduction_pct``; the table shows the change, negative = shorter);
- LCPO's mean |length - target| (``end.length_deviation``; held-out prompts carry a target only
  for algo=lcpo, so the other rows have none);
- AES against the run's start (O1-Pruner, ALGORITHMS.md section 5: weights 1, 3, 5);
- accuracy and tokens at the further caps of ``eval.budgets`` (``end.budget_<N>/...``);
- the run's wall time (``summary.seconds``).

Writes ``compare.md`` (the Markdown table the README shows), ``compare.csv`` and ``compare.json``
into ``--out`` (default: the sweep dir) and prints the Markdown table. The Pareto plot of the same
sweep is ``rlrun-pareto SWEEP_DIR``'s.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from rlrun.core.evaluation import AES_WEIGHTS, aes
from rlrun.analysis.pareto import find_run_dirs, run_label

ORDER = ("grpo_correct", "grpo_kimi", "drpo", "gfpo", "lcpo", "laser_d", "grpo_budget")
NAMES = {"grpo_correct": "GRPO + correct", "grpo_kimi": "GRPO + Kimi length reward",
         "drpo": "DRPO", "gfpo": "GFPO (16 -> 8 shortest)", "lcpo": "LCPO (L1-Exact)",
         "laser_d": "GRPO + LASER-D", "grpo_budget": "GRPO + exponential budget"}


def method_of(run_dir: str) -> str:
    """The ``compare/<method>`` of the run's ``experiment=`` override, else its label (overrides)."""
    label = run_label(run_dir)
    for item in label.split(" "):
        if item.startswith("experiment=compare/"):
            return item.split("/", 1)[1]
    return label


def row(run_dir: str) -> dict:
    """One method's numbers (ValueError naming the file when its summary lacks start or end)."""
    path = os.path.join(run_dir, "summary.json")
    with open(path) as f:
        summary = json.load(f)
    if "start" not in summary or "end" not in summary:
        raise ValueError(f"{path} has no start/end evaluation (eval.at_steps must hold 0 and steps)")
    start, end = summary["start"], summary["end"]
    out = {
        "method": method_of(run_dir),
        "start_acc": start["acc"], "start_tokens": start["mean_tokens"],
        "acc": end["acc"], "mean_tokens": end["mean_tokens"],
        "reduction_pct": 100.0 * (1.0 - end["mean_tokens"] / start["mean_tokens"]),
        "length_deviation": end.get("length_deviation"),
        "start_length_deviation": start.get("length_deviation"),
        "aes": aes(end["acc"], end["mean_tokens"], start["acc"], start["mean_tokens"], **AES_WEIGHTS),
        "truncated_frac": end.get("truncated_frac"),
        "steps": summary.get("steps"), "seconds": summary.get("seconds"), "run_dir": run_dir,
    }
    for key, value in end.items():
        if key.startswith("budget_") and key.count("/") == 1:
            out[key] = value
    return out


def _fmt(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    caps = sorted({int(k.split("/")[0][len("budget_"):]) for r in rows for k in r
                   if k.startswith("budget_") and k.endswith("/acc")})
    head = ["method", "acc start → end", "tokens start → end", "length change", "AES", "LCPO |len − target|"]
    head += [f"acc / tokens at cap {c}" for c in caps] + ["wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        deviation = ("–" if r["length_deviation"] is None else
                     f"{r['start_length_deviation']:.1f} → {r['length_deviation']:.1f}")
        cells = [NAMES.get(r["method"], r["method"]), f"{r['start_acc']:.3f} → {r['acc']:.3f}",
                 f"{r['start_tokens']:.1f} → {r['mean_tokens']:.1f}", f"{-r['reduction_pct']:+.1f} %",
                 _fmt(r["aes"], 3), deviation]
        cells += [f"{_fmt(r.get(f'budget_{c}/acc'), 3)} / {_fmt(r.get(f'budget_{c}/mean_tokens'), 1)}"
                  for c in caps]
        cells.append("–" if r["seconds"] is None else f"{r['seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="the Hydra multirun dir of make compare-embedded")
    p.add_argument("--out", default=None, help="where to write compare.md/csv/json (default: sweep dir)")
    args = p.parse_args(argv)
    run_dirs = find_run_dirs([args.sweep_dir])
    done = [d for d in run_dirs if os.path.isfile(os.path.join(d, "summary.json"))]
    for d in sorted(set(run_dirs) - set(done)):
        print(f"compare-embedded: {d} has no summary.json (run failed or unfinished); left out",
              file=sys.stderr)
    if not done:
        print(f"compare-embedded: no finished run under {args.sweep_dir}", file=sys.stderr)
        return 2
    rows = sorted((row(d) for d in done),
                  key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER), r["method"]))
    out = args.out or args.sweep_dir
    os.makedirs(out, exist_ok=True)
    table = markdown(rows)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(rows, f, indent=2)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k))
    with open(os.path.join(out, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(table, end="")
    print(f"compare-embedded: wrote compare.md, compare.csv, compare.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
