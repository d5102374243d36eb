"""``rlrun-pareto``: accuracy against mean tokens over the runs of a sweep, with the Pareto frontier.

Reads, from files alone (no W&B account, no network), a Hydra multirun dir (its run dirs ``0/``,
``1/``, ...) or run dirs given one by one. Per run dir:

- ``summary.json``: the held-out evaluations ``start`` (step 0), ``step_<N>`` and ``end`` (benchmark
  ``heldout``, budget = the eval's ``budget_mean_tokens``), and optionally
  ``eval: {<benchmark>: {budget_<N>: {acc, mean_tokens, truncated_frac}}}`` for the trained model
  evaluated at several budgets (one point per budget: L1's curve over budgets, ALGORITHMS.md 5.4), and
  ``force_<N>`` results of budget forcing (kind ``forced``: s1's curve over forced thinking budgets);
- ``metrics.jsonl``: the ``eval/<benchmark>/[budget_<N>/]acc|mean_tokens`` lines, a curve over
  training steps per run (and the points themselves when ``summary.json`` is missing);
- ``.hydra/overrides.yaml``: the run's label, its overrides joined by spaces ("default" if none).

A directory holding only an ``eval.json`` that ``rlrun-eval --out DIR`` wrote (a model, not a run) is
read too: its ``eval`` results are its points, labelled with the evaluated model.

The frontier is computed per benchmark (accuracies of different sets are not comparable) over the
start, end and budget points; intermediate ``step_<N>`` evaluations are drawn as the run's
trajectory but are not candidates, since the frontier compares finished configurations. Each point
also gets its AES against its run's start on the same benchmark (O1-Pruner weights 1, 3, 5), and with
``--elr-baseline RUN`` (a run dir, or the label of one run: a GRPO run) GFPO's excess length reduction
ELR = (L_GRPO - L)/(L_GRPO - L_SFT), L_GRPO the baseline's end and L_SFT its start (its warm start),
for the start, step and end points of each benchmark where the baseline has both and L_GRPO > L_SFT.
Writes ``pareto.csv``, ``pareto.json``, ``pareto.png`` and ``pareto.svg``. A multirun
(``rlrun -m ...``) does the same by itself when it ends (rlrun.analysis.sweep), and logs a W&B sweep run
when its runs use W&B.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from dataclasses import asdict

from rlrun.analysis.points import Curve, Point
from rlrun.core.evaluation import AES_WEIGHTS, aes, excess_length_reduction, pareto_frontier
from rlrun.analysis.pareto_plot import (  # they import matplotlib, wandb lazily
    log_pareto_to_wandb,
    plot_pareto,
)

FRONTIER_KINDS = ("start", "end", "eval", "forced")
ELR_KINDS = ("start", "step", "end")  # evaluated as the baseline's start and end were (the run's own cap)
CSV_COLUMNS = ("label", "benchmark", "budget", "acc", "mean_tokens", "on_frontier", "kind", "step",
               "truncated_frac", "aes", "elr", "run_dir")
_EVAL_KEY = re.compile(r"^eval/(?P<bench>[^/]+)/(?:budget_(?P<budget>\d+)/)?(?P<name>acc|mean_tokens)$")


JOB_DIR_MARKERS = (".hydra", "summary.json", "metrics.jsonl", "rlrun.log")
MAX_DEPTH = 4  # hydra.sweep.subdir may nest (e.g. by override); job dirs lie at most this deep


def find_run_dirs(paths: list[str]) -> list[str]:
    """Each path is a run dir (it holds summary.json, metrics.jsonl or eval.json) or a sweep dir, whose
    run dirs are its job dirs that hold one of them (:func:`job_dirs`, in Hydra's order)."""
    found: list[str] = []
    for path in paths:
        if _is_run_dir(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such directory: {path}")
        found += [d for d in job_dirs(path) if _is_run_dir(d)]
    if not found:
        raise FileNotFoundError(f"no run dir (with summary.json, metrics.jsonl or eval.json) in {paths}")
    return found


def job_dirs(sweep_dir: str) -> list[str]:
    """The job dirs under a sweep dir, finished or not: those holding Hydra's ``.hydra/`` or a file
    a run writes, at any depth up to MAX_DEPTH (not below a job dir, nor into hidden dirs such as
    ``.submitit`` or into ``wandb/``), in Hydra's order (0, 1, ..., 10 by value, then other names)."""
    found = []
    for root, dirs, _ in os.walk(sweep_dir):
        rel = os.path.relpath(root, sweep_dir)
        if rel != "." and any(os.path.exists(os.path.join(root, m)) for m in JOB_DIR_MARKERS):
            found.append(root)
            dirs[:] = []
            continue
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = [] if depth >= MAX_DEPTH else [d for d in dirs if not d.startswith(".") and d != "wandb"]
    return sorted(found, key=lambda d: [(not part.isdigit(), int(part) if part.isdigit() else 0, part)
                                        for part in os.path.relpath(d, sweep_dir).split(os.sep)])


def _is_run_dir(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in ("summary.json", "metrics.jsonl", "eval.json"))


def run_label(run_dir: str) -> str:
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        return "default"
    import yaml  # a dependency of omegaconf / hydra

    with open(path) as f:
        overrides = yaml.safe_load(f) or []
    return " ".join(str(o) for o in overrides) or "default"


def _budget(value) -> float | None:
    return None if value is None else float(value)


def _point(label, run_dir, benchmark, budget, result, kind, step) -> Point | None:
    acc, tokens = result.get("acc"), result.get("mean_tokens")
    if acc is None or tokens is None or not math.isfinite(acc) or not math.isfinite(tokens):
        return None  # no evaluation, or a NaN one
    return Point(label, benchmark, budget, float(acc), float(tokens), kind, step, run_dir,
                 result.get("truncated_frac"))


def summary_points(summary: dict, label: str, run_dir: str) -> list[Point]:
    """The points of one run's summary.json (see the module docstring for the layout)."""
    steps = summary.get("steps")
    found = []
    for key, result in summary.items():
        kind, step = None, None
        if key == "start":
            kind, step = "start", 0
        elif key == "end":
            kind, step = "end", steps
        elif re.fullmatch(r"step_\d+", key):
            kind, step = "step", int(key[5:])
        if kind is not None and isinstance(result, dict):
            found.append(_point(label, run_dir, "heldout", _budget(result.get("budget_mean_tokens")),
                                result, kind, step))
    for benchmark, budgets in (summary.get("eval") or {}).items():
        for key, result in budgets.items() if isinstance(budgets, dict) else ():
            forced = re.fullmatch(r"force_(\d+)", key)
            budget = float(key[len("budget_"):]) if key.startswith("budget_") else float(forced[1]) if forced else None
            found.append(_point(label, run_dir, benchmark, budget, result, "forced" if forced else "eval", steps))
    return [p for p in found if p is not None]


def read_curves(run_dir: str, label: str) -> list[Curve]:
    """The ``eval/...`` lines of metrics.jsonl, one curve per benchmark and budget, in step order."""
    path = os.path.join(run_dir, "metrics.jsonl")
    by_key: dict[tuple[str, float | None], dict[int, dict[str, float]]] = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line) if line.strip() else {}
                for key, value in record.items():
                    m = _EVAL_KEY.match(key)
                    if m and value is not None and math.isfinite(value) and "step" in record:
                        series = by_key.setdefault((m["bench"], _budget(m["budget"])), {})
                        series.setdefault(int(record["step"]), {})[m["name"]] = float(value)
    curves = []
    for (benchmark, budget), series in by_key.items():
        curve = Curve(label, benchmark, budget, run_dir)
        for step in sorted(series):
            if {"acc", "mean_tokens"} <= series[step].keys():
                curve.steps.append(step)
                curve.acc.append(series[step]["acc"])
                curve.mean_tokens.append(series[step]["mean_tokens"])
        curves.append(curve)
    return [c for c in curves if c.steps]


def curve_points(curves: list[Curve]) -> list[Point]:
    """Points from metrics.jsonl alone (a run without summary.json): first step start, last end."""
    found = []
    for c in curves:
        for i, step in enumerate(c.steps):
            kind = "start" if i == 0 and step == 0 else "end" if i == len(c.steps) - 1 else "step"
            found.append(Point(c.label, c.benchmark, c.budget, c.acc[i], c.mean_tokens[i], kind, step,
                               c.run_dir))
    return found


def mark_frontier(points: list[Point]) -> None:
    """Set ``on_frontier`` per benchmark over the start/end/eval points, and ``aes`` against the run's
    start on the same benchmark (left None when there is none or its accuracy is 0)."""
    for benchmark in {p.benchmark for p in points}:
        candidates = [p for p in points if p.benchmark == benchmark and p.kind in FRONTIER_KINDS]
        for i in pareto_frontier([(p.acc, p.mean_tokens) for p in candidates]):
            candidates[i].on_frontier = True
    starts = {(p.run_dir, p.benchmark): p for p in points if p.kind == "start"}
    for p in points:
        base = starts.get((p.run_dir, p.benchmark))
        if base is not None and p is not base and base.acc > 0 and base.mean_tokens > 0:
            p.aes = aes(p.acc, p.mean_tokens, base.acc, base.mean_tokens, **AES_WEIGHTS)


def elr_baseline(name: str, paths: list[str]) -> tuple[str, list[str]]:
    """The run dir that ``--elr-baseline`` names (a run dir, or the label of exactly one run under
    ``paths``) and the paths to read: ``paths``, plus the baseline's run dir when it is outside them.
    ValueError with a one-line reason otherwise."""
    run_dirs = find_run_dirs(paths)
    if _is_run_dir(name):
        same = [d for d in run_dirs if os.path.samefile(d, name)]
        return (same[0], paths) if same else (name, [*paths, name])
    named = [d for d in run_dirs if run_label(d) == name]
    if len(named) == 1:
        return named[0], paths
    if named:
        raise ValueError(f"--elr-baseline={name} is the label of {len(named)} runs ({', '.join(named)}); "
                         "give its run dir")
    labels = "; ".join(sorted({run_label(d) for d in run_dirs}))
    raise ValueError(f"--elr-baseline={name} is neither a run dir (with summary.json, metrics.jsonl or "
                     f"eval.json) nor the label of one of the runs ({labels})")


def mark_elr(points: list[Point], baseline_dir: str) -> list[str]:
    """Set ``elr`` (GFPO's Eq. 4, :func:`rlrun.core.evaluation.excess_length_reduction`) of the
    ``ELR_KINDS`` points of every benchmark where the baseline run has a start (L_SFT: its warm start)
    and an end (L_GRPO) with L_GRPO > L_SFT; one line per benchmark saying what was used, or why not."""
    notes = []
    for benchmark in sorted({p.benchmark for p in points}):
        own = {p.kind: p for p in points if p.run_dir == baseline_dir and p.benchmark == benchmark
               and p.kind in ("start", "end")}
        if len(own) < 2:
            notes.append(f"ELR on {benchmark}: none (the baseline run has no start and end evaluation on it)")
            continue
        grpo, sft = own["end"].mean_tokens, own["start"].mean_tokens
        if not grpo > sft:
            notes.append(f"ELR on {benchmark}: none (the baseline's end, {grpo:.1f} tokens, is not longer than its "
                         f"start, {sft:.1f}: ELR measures how much of an RL run's length growth a method removes)")
            continue
        for p in points:
            if p.benchmark == benchmark and p.kind in ELR_KINDS:
                p.elr = excess_length_reduction(grpo, sft, p.mean_tokens)
        notes.append(f"ELR on {benchmark} = (L_GRPO - L)/(L_GRPO - L_SFT) with L_GRPO {grpo:.1f} (the baseline's "
                     f"end) and L_SFT {sft:.1f} (its start)")
    return notes


def collect(paths: list[str], benchmark: str | None = None) -> tuple[list[Point], list[Curve]]:
    """All points (frontier marked) and curves of the runs under ``paths``, for one benchmark or all."""
    points, curves = [], []
    for run_dir in find_run_dirs(paths):
        label = run_label(run_dir)
        run_curves = read_curves(run_dir, label)
        summary_path, evaluated = os.path.join(run_dir, "summary.json"), os.path.join(run_dir, "eval.json")
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                points += summary_points(json.load(f), label, run_dir)
        elif os.path.isfile(evaluated):  # rlrun-eval --out DIR of a model: its results only
            with open(evaluated) as f:
                record = json.load(f)
            named = label if label != "default" else str(record.get("model", label))
            points += summary_points({"eval": record.get("eval") or {}}, named, run_dir)
        else:
            points += curve_points(run_curves)
        curves += run_curves
    if benchmark is not None:
        points = [p for p in points if p.benchmark == benchmark]
        curves = [c for c in curves if c.benchmark == benchmark]
    mark_frontier(points)
    return points, curves


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def write_tables(points: list[Point], curves: list[Curve], out_dir: str, elr_baseline: str | None = None) -> list[str]:
    csv_path, json_path = os.path.join(out_dir, "pareto.csv"), os.path.join(out_dir, "pareto.json")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for p in points:
            row = asdict(p)
            writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    frontier: dict[str, list[str]] = {}
    for p in sorted(points, key=lambda p: p.mean_tokens):
        if p.on_frontier:
            frontier.setdefault(p.benchmark, []).append(p.label)
    with open(json_path, "w") as f:
        json.dump({"points": [asdict(p) for p in points], "frontier": frontier,
                   "curves": [asdict(c) for c in curves], "aes_weights": AES_WEIGHTS,
                   "elr_baseline": elr_baseline}, f, indent=2)
    return [csv_path, json_path]


def write_outputs(points: list[Point], curves: list[Curve], out_dir: str, elr_baseline: str | None = None) -> list[str]:
    """Write pareto.csv, pareto.json, pareto.png and pareto.svg into ``out_dir`` (made if missing);
    returns their paths. Used by ``rlrun-pareto`` and after a sweep (rlrun.analysis.sweep)."""
    os.makedirs(out_dir, exist_ok=True)
    return write_tables(points, curves, out_dir, elr_baseline) + plot_pareto(points, curves, out_dir)


def default_out_dir(paths: list[str]) -> str:
    """The sweep dir (the first path when it is not a run dir itself), else the run dirs' parent."""
    if not _is_run_dir(paths[0]):
        return paths[0]
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlrun-pareto", description="Accuracy vs mean tokens over a sweep's runs, with the "
        "Pareto frontier: writes pareto.csv, pareto.json, pareto.png and pareto.svg.")
    parser.add_argument("paths", nargs="+", metavar="SWEEP_DIR [RUN_DIR ...]",
                        help="a Hydra multirun dir (run dirs 0/, 1/, ...) and/or run dirs")
    parser.add_argument("--out", help="where to write (default: the sweep dir)")
    parser.add_argument("--benchmark", help="keep this benchmark only (default: all, one panel each)")
    parser.add_argument("--wandb", choices=("offline", "online"),
                        help="also log the table and a scatter chart to a W&B run in this mode")
    parser.add_argument("--elr-baseline", metavar="RUN",
                        help="a GRPO run (its run dir, or the label of one of the runs): adds GFPO's excess length "
                             "reduction (L_GRPO - L)/(L_GRPO - L_SFT), L_GRPO its end and L_SFT its start")
    args = parser.parse_args(argv)
    paths, base = list(args.paths), None
    if args.elr_baseline is not None:
        try:
            base, paths = elr_baseline(args.elr_baseline, paths)
        except ValueError as exc:
            parser.error(str(exc))
    points, curves = collect(paths, args.benchmark)
    if not points:
        parser.error(f"no evaluation found in {args.paths}" +
                     (f" for benchmark {args.benchmark!r}" if args.benchmark else ""))
    notes = mark_elr(points, base) if base is not None else []
    out_dir = args.out or default_out_dir(args.paths)
    written = write_outputs(points, curves, out_dir, base)
    for p in sorted(points, key=lambda p: (p.benchmark, p.mean_tokens)):
        mark = "*" if p.on_frontier else " "
        elr = "" if base is None else f"  ELR {p.elr:6.3f}" if p.elr is not None else f"  ELR {'-':>6}"
        budget = f" {p.budget:g}" if p.kind == "forced" else ""
        print(f"{mark} {p.benchmark:<10} {p.kind + budget:<10} acc {p.acc:.3f}  tokens {p.mean_tokens:8.1f}{elr}  "
              f"{p.label}")
    for note in notes:
        print(note)
    if args.wandb:
        log_pareto_to_wandb(points, out_dir=out_dir, mode=args.wandb)
    print("* = on the Pareto frontier; wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
