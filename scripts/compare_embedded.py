"""The table of ``make compare-embedded``: one row per method of the sweep, mean ± std over its seeds,
from the run dirs' files alone.

    python scripts/compare_embedded.py SWEEP_DIR [--out DIR] [--forced FORCED_JSON]

Reads each run dir of the Hydra multirun (``0/``, ``1/``, ...): ``.hydra/overrides.yaml`` (the
method is the ``experiment=compare/<method>`` override, the seed its ``seed=`` override, 0 without)
and ``summary.json`` (the held-out evaluations ``start`` and ``end``, 256 questions at T=1.0 and the
256-token cap). Per run:

- final accuracy and mean response tokens (``end``), and their values at the start;
- % length reduction against the run's start: ``100 * (1 - end_tokens / start_tokens)`` (JSON/CSV
  ``reduction_pct``; the table shows the change, negative = shorter);
- LCPO's mean |length - target| (``end.length_deviation``; held-out prompts carry a target only
  for algo=lcpo, so the other rows have none);
- AES against the run's start (O1-Pruner, ALGORITHMS.md section 5: weights 1, 3, 5);
- accuracy and tokens at the further caps of ``eval.budgets`` (``end.budget_<N>/...``);
- the run's wall time (``summary.seconds``).

Per method, every number is the mean over its runs (seeds) ± their sample standard deviation
(n − 1 in the denominator; "±" is left out with one seed), so that a difference between two rows can
be told from seed noise. ``--forced`` (default: ``forced.json`` in the sweep dir, when there) adds
the budget-forced curve of the warm start (``rlrun-eval --force-budgets ... --out``), one row per
forced budget.

Writes ``compare.md`` (the Markdown table the README shows), ``compare.csv`` (one line per run),
``compare.json`` (``methods``, ``runs``, ``forced``) and ``compare.png`` (scripts/compare_embedded_plot.py:
each method's end point with error bars, the start and the forced curve) into ``--out`` (default:
the sweep dir) and prints the table. ``rlrun-pareto SWEEP_DIR`` draws every run's own points.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from rlrun.core.evaluation import AES_WEIGHTS, aes
from rlrun.analysis.pareto import find_run_dirs, run_label

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_embedded_plot import draw, forced_points  # noqa: E402  (the script's own helper)

ORDER = ("grpo_correct", "grpo_kimi", "drpo", "gfpo", "lcpo", "laser_d", "grpo_budget", "sar", "pear",
         "canon", "gspo")
NAMES = {"grpo_correct": "GRPO + correct", "grpo_kimi": "GRPO + Kimi length reward",
         "drpo": "DRPO", "gfpo": "GFPO (16 -> 8 shortest)", "lcpo": "LCPO (L1-Exact)",
         "laser_d": "GRPO + LASER-D", "grpo_budget": "GRPO + exponential budget",
         "sar": "Dr. GRPO + SAR", "pear": "GRPO + PEAR", "canon": "CANON-Eff (alpha 0.88)",
         "gspo": "GSPO + correct"}
NUMBERS = ("start_acc", "start_tokens", "acc", "mean_tokens", "reduction_pct", "length_deviation",
           "start_length_deviation", "aes", "truncated_frac", "seconds")


def method_of(run_dir: str) -> str:
    """The ``compare/<method>`` of the run's ``experiment=`` override, else its label (overrides)."""
    label = run_label(run_dir)
    for item in label.split(" "):
        if item.startswith("experiment=compare/"):
            return item.split("/", 1)[1]
    return label


def seed_of(run_dir: str) -> int:
    """The run's ``seed=`` override (0, the comparison's seed, without one)."""
    for item in run_label(run_dir).split(" "):
        if item.startswith("seed="):
            return int(item.split("=", 1)[1])
    return 0


def row(run_dir: str) -> dict:
    """One method's numbers (ValueError naming the file when its summary lacks start or end)."""
    path = os.path.join(run_dir, "summary.json")
    with open(path) as f:
        summary = json.load(f)
    if "start" not in summary or "end" not in summary:
        raise ValueError(f"{path} has no start/end evaluation (eval.at_steps must hold 0 and steps)")
    start, end = summary["start"], summary["end"]
    out = {
        "method": method_of(run_dir), "seed": seed_of(run_dir),
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


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n − 1; None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per method (in ``ORDER``): ``<key>`` the mean over its runs and ``<key>_std`` the
    sample std of every number present in all of them, ``seeds`` the seeds."""
    methods: dict[str, list[dict]] = {}
    for r in runs:
        methods.setdefault(r["method"], []).append(r)
    out = []
    for method in sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
        rows = sorted(methods[method], key=lambda r: r["seed"])
        keys = [k for k in rows[0] if (k in NUMBERS or k.startswith("budget_"))
                and all(isinstance(r.get(k), (int, float)) for r in rows)]
        agg = {"method": method, "seeds": [r["seed"] for r in rows]}
        for key in keys:
            agg[key], agg[f"{key}_std"] = mean_std([float(r[key]) for r in rows])
        for key in ("length_deviation", "start_length_deviation"):
            agg.setdefault(key, None)
        out.append(agg)
    return out


def _fmt(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pm(r: dict, key: str, digits: int, sign: bool = False) -> str:
    value = r.get(key)
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    std = r.get(f"{key}_std")
    return text if std is None else f"{text} ± {std:.{digits}f}"


def markdown(rows: list[dict], forced: list[dict] = ()) -> str:
    """The table of :func:`aggregate`'s rows (end numbers as mean ± std over the seeds), then the
    forced budgets' rows (one evaluation of the warm start each)."""
    caps = sorted({int(k.split("/")[0][len("budget_"):]) for r in rows for k in r
                   if k.startswith("budget_") and k.endswith("/acc")})
    head = ["method", "seeds", "acc start → end", "tokens start → end", "length change %", "AES",
            "LCPO \\|len − target\\|"]
    head += [f"acc / tokens at cap {c}" for c in caps] + ["wall time / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        change = {"v": None if r.get("reduction_pct") is None else -r["reduction_pct"], "v_std": r.get("reduction_pct_std")}
        deviation = ("–" if r["length_deviation"] is None else
                     f"{r['start_length_deviation']:.1f} → {_pm(r, 'length_deviation', 1)}")
        cells = [NAMES.get(r["method"], r["method"]), str(len(r["seeds"])),
                 f"{r['start_acc']:.3f} → {_pm(r, 'acc', 3)}", f"{r['start_tokens']:.1f} → {_pm(r, 'mean_tokens', 1)}",
                 _pm(change, "v", 1, sign=True), _pm(r, "aes", 3), deviation]
        cells += [f"{_pm(r, f'budget_{c}/acc', 3)} / {_pm(r, f'budget_{c}/mean_tokens', 1)}" for c in caps]
        cells.append("–" if r.get("seconds") is None else f"{r['seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    for f in forced:
        cells = [f"warm start, thinking forced to {f['budget']} tokens", "1", f"{f['acc']:.3f}",
                 f"{f['mean_tokens']:.1f}", "–", "–", "–"] + ["–"] * len(caps) + ["–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_forced(path: str | None) -> list[dict]:
    """The forced curve of ``rlrun-eval --force-budgets ... --out PATH``: ``[{budget, acc,
    mean_tokens}]`` in budget order ([] without a file)."""
    if path is None or not os.path.isfile(path):
        return []
    with open(path) as f:
        data = json.load(f)
    return forced_points(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="the Hydra multirun dir of make compare-embedded")
    p.add_argument("--out", default=None, help="where to write compare.md/csv/json/png (default: sweep dir)")
    p.add_argument("--forced", default=None, help="rlrun-eval --force-budgets output (default: SWEEP_DIR/forced.json)")
    args = p.parse_args(argv)
    run_dirs = find_run_dirs([args.sweep_dir])
    done = [d for d in run_dirs if os.path.isfile(os.path.join(d, "summary.json"))]
    for d in sorted(set(run_dirs) - set(done)):
        print(f"compare-embedded: {d} has no summary.json (run failed or unfinished); left out",
              file=sys.stderr)
    if not done:
        print(f"compare-embedded: no finished run under {args.sweep_dir}", file=sys.stderr)
        return 2
    runs = sorted((row(d) for d in done),
                  key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER), r["method"], r["seed"]))
    rows = aggregate(runs)
    forced = read_forced(args.forced or os.path.join(args.sweep_dir, "forced.json"))
    out = args.out or args.sweep_dir
    os.makedirs(out, exist_ok=True)
    table = markdown(rows, forced)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"methods": rows, "runs": runs, "forced": forced}, f, indent=2)
    columns = sorted({k for r in runs for k in r}, key=lambda k: (k not in ("method", "seed"), k))
    with open(os.path.join(out, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(runs)
    draw(rows, forced, os.path.join(out, "compare.png"), {m: NAMES.get(m, m) for m in ORDER})
    print(table, end="")
    print(f"compare-embedded: wrote compare.md, compare.csv, compare.json, compare.png to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
