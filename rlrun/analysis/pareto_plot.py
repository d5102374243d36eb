"""The outputs of ``rlrun-pareto`` besides its tables: the picture and the W&B table and chart.

The picture: accuracy (y) against mean tokens (x), one panel per benchmark.
Drawn with matplotlib's Agg canvas (no display, no pyplot state). Per run, one colour: its start
(hollow circle), end (filled circle), budget evaluations (triangles, joined in budget order), its
budget-forced evaluations (diamonds, joined in budget order by a dash-dot line: s1's curve beside the
model's natural points) and its trajectory over training steps (a thin line through the metrics.jsonl
evaluations). The Pareto frontier is a dashed step line (the best accuracy reachable with at most x
tokens) with its points ringed in black. Every start, end and budget point carries its run's label (its overrides; those
that every run shares are named once, above the panels).
matplotlib and wandb are imported inside the functions that use them.
"""
from __future__ import annotations

import os
import textwrap
from rlrun.analysis.points import Curve, Point

MARKERS = {"start": "o", "end": "o", "eval": "^", "forced": "D", "step": "."}
LINES = {"eval": ":", "forced": "-."}  # a run's points over budgets, joined in budget order


def shared_overrides(points: list[Point]) -> list[str]:
    """The overrides every run has (when the runs differ at all): the plot names them once, in the
    title, and labels each point with the rest."""
    labels = list(dict.fromkeys(p.label for p in points))
    if len(labels) < 2:
        return []
    common = set(labels[0].split(" ")).intersection(*(label.split(" ") for label in labels[1:]))
    return [o for o in labels[0].split(" ") if o in common]


def common_prefix(points: list[Point], shared: list[str]) -> str:
    """The start every label has once the shared overrides are gone, cut after its last ``/`` or
    ``=`` (``experiment=compare/`` of ``experiment=compare/drpo``, ``.../lcpo``): said once, in the
    title, so that the labels keep only what differs."""
    texts = list(dict.fromkeys(_rest(p.label, shared) for p in points))
    if len(texts) < 2:
        return ""
    prefix = os.path.commonprefix(texts)
    cut = max(prefix.rfind("/"), prefix.rfind("="))
    return prefix[: cut + 1] if cut >= 0 and " " not in prefix[: cut + 1] else ""


def _rest(label: str, shared: list[str]) -> str:
    return " ".join(o for o in label.split(" ") if o not in shared)


def _text(p, shared: list[str], prefix: str = "") -> str:
    text = _rest(p.label, shared)[len(prefix):] or "(shared overrides only)"
    if p.kind == "start":
        text += " (start)"
    elif p.kind == "eval" and p.budget is not None:
        text += f" @{p.budget:g}"
    elif p.kind == "forced":
        text += f" forced@{p.budget:g}"
    return textwrap.fill(text, 36, break_long_words=False)


def _annotate(ax, points, shared: list[str], prefix: str = "") -> None:
    """Label every start, end and budget point; points at one spot share one stacked label (starts
    shared by several runs just say so). Labels on the right half extend to the left, and stay out
    of the layout computation so that long ones cannot squeeze the axes away."""
    spots: dict[tuple[float, float, bool], list[str]] = {}
    for p in points:
        if p.kind != "step":
            spots.setdefault((p.mean_tokens, p.acc, p.kind == "start"), []).append(_text(p, shared, prefix))
    left, right = ax.get_xlim()
    for (x, y, start), texts in spots.items():
        texts = list(dict.fromkeys(texts))
        text = f"start of {len(texts)} runs" if start and len(texts) > 1 else "\n".join(texts)
        flip = x > (left + right) / 2
        note = ax.annotate(text, (x, y), xytext=(-5 if flip else 5, 4), textcoords="offset points",
                           ha="right" if flip else "left", va="bottom", fontsize=6 if start else 7,
                           color="0.45" if start else "0.1")
        note.set_in_layout(False)


def _draw_runs(ax, points, curves, colours) -> None:
    for c in curves:  # the trajectory at the run's own cap (curves at the eval.budgets caps: clutter)
        if c.budget is None:
            ax.plot(c.mean_tokens, c.acc, "-", color=colours[c.run_dir], alpha=0.45, linewidth=1)
    for run_dir in dict.fromkeys(p.run_dir for p in points):
        for kind, style in LINES.items():
            budgets = sorted((p for p in points if p.run_dir == run_dir and p.kind == kind),
                             key=lambda p: (p.budget is None, p.budget or 0.0))
            if len(budgets) > 1:
                ax.plot([p.mean_tokens for p in budgets], [p.acc for p in budgets], style,
                        color=colours[run_dir], linewidth=1)
    for p in points:
        colour = colours[p.run_dir]
        face = "white" if p.kind == "start" else colour
        size = {"start": 45, "end": 50, "eval": 50, "forced": 35, "step": 15}[p.kind]
        ax.scatter([p.mean_tokens], [p.acc], marker=MARKERS[p.kind], s=size, facecolors=face,
                   edgecolors=colour, linewidths=1.2, zorder=3)


def _draw_frontier(ax, points) -> None:
    front = sorted((p for p in points if p.on_frontier), key=lambda p: (p.mean_tokens, -p.acc))
    if not front:
        return
    xs, ys = [p.mean_tokens for p in front], [p.acc for p in front]
    ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1.2, zorder=2)
    ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", linewidths=1.0, zorder=4)


def _legend(ax, points, colours, shared: list[str], prefix: str) -> None:
    """What the markers mean, and (up to 10 runs) which colour is which run."""
    from matplotlib.lines import Line2D

    grey = "0.35"
    handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor=grey,
               label="start (step 0)"),
        Line2D([], [], marker="o", linestyle="", color=grey, label="end of training"),
        Line2D([], [], marker="^", linestyle=":", color=grey, label="eval at a budget"),
        Line2D([], [], color=grey, alpha=0.45, label="trajectory over steps"),
        Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
               label="Pareto frontier"),
    ]
    if any(p.kind == "forced" for p in points):
        handles.insert(3, Line2D([], [], marker="D", linestyle="-.", color=grey,
                                 label="thinking forced to end at a budget"))
    runs = {p.run_dir: _rest(p.label, shared)[len(prefix):] or "(shared overrides only)" for p in points}
    if 1 < len(runs) <= 10:
        handles += [Line2D([], [], marker="o", linestyle="", color=colours[d], label=textwrap.shorten(text, 40))
                    for d, text in runs.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")


def plot_pareto(points: list[Point], curves: list[Curve], out_dir: str) -> list[str]:
    """Write ``pareto.png`` and ``pareto.svg`` into ``out_dir``; returns their paths."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    benchmarks = sorted({p.benchmark for p in points})
    run_dirs = list(dict.fromkeys([p.run_dir for p in points] + [c.run_dir for c in curves]))
    fig = Figure(figsize=(6.5 * len(benchmarks), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    cmap = colormaps["tab10"]
    colours = {d: cmap(i % 10) for i, d in enumerate(run_dirs)}
    axes = fig.subplots(1, len(benchmarks), squeeze=False)[0]
    shared = shared_overrides(points)
    prefix = common_prefix(points, shared)
    said = shared + ([f"{prefix}<label>"] if prefix else [])
    if said:
        fig.suptitle(textwrap.fill("every run: " + " ".join(said), 110, break_long_words=False),
                     fontsize=8)
    for ax, benchmark in zip(axes, benchmarks):
        mine = [p for p in points if p.benchmark == benchmark]
        _draw_runs(ax, mine, [c for c in curves if c.benchmark == benchmark], colours)
        _draw_frontier(ax, mine)
        ax.set_title(benchmark)
        ax.set_xlabel("mean tokens (all responses)")
        ax.set_ylabel("accuracy (pass@1)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.12, y=0.08)
        _annotate(ax, mine, shared, prefix)
        _legend(ax, mine, colours, shared, prefix)
    paths = [os.path.join(out_dir, "pareto.png"), os.path.join(out_dir, "pareto.svg")]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths


def method_lines(points: list[Point]) -> tuple[list[list[float]], list[list[float]], list[str]]:
    """One line per run and benchmark (its points in order of mean tokens) and one per benchmark's
    Pareto frontier, as ``(xs, ys, keys)`` for ``wandb.plot.line_series``."""
    series: dict[str, list[Point]] = {}
    for p in points:
        tag = f" [{p.benchmark}]" if len({q.benchmark for q in points}) > 1 else ""
        series.setdefault(p.label + (" (forced)" if p.kind == "forced" else "") + tag, []).append(p)
        if p.on_frontier:
            series.setdefault(f"Pareto frontier{tag}", []).append(p)
    xs, ys, keys = [], [], []
    for key, mine in series.items():
        mine = sorted(mine, key=lambda p: (p.mean_tokens, p.acc))
        xs.append([p.mean_tokens for p in mine])
        ys.append([p.acc for p in mine])
        keys.append(key)
    return xs, ys, keys


def log_pareto_to_wandb(points: list[Point], run=None, out_dir: str | None = None, mode: str = "offline",
                        project: str = "rlrun", job_type: str = "pareto", name: str | None = None,
                        group: str | None = None, config: dict | None = None):
    """Log the points as a ``wandb.Table`` (``pareto/table``), a scatter chart of accuracy against
    mean tokens (``pareto/scatter``, ``wandb.plot.scatter``) and the same with one line per run and
    one for the Pareto frontier (``pareto/lines``, ``wandb.plot.line_series``). Without ``run``, starts a run in
    ``mode`` (offline by default) writing under ``out_dir``, with the given project, job type, name,
    group and config (``rlrun-pareto --wandb`` and the sweep run of rlrun.analysis.sweep), and finishes it.
    Returns the run."""
    import wandb

    columns = ["label", "benchmark", "budget", "acc", "mean_tokens", "on_frontier", "kind", "step"]
    table = wandb.Table(columns=columns)
    for p in points:
        table.add_data(p.label, p.benchmark, p.budget, p.acc, p.mean_tokens, p.on_frontier, p.kind, p.step)
    own = run is None
    if own:
        run = wandb.init(project=project, job_type=job_type, name=name, group=group, config=config or {},
                         dir=out_dir, mode=mode, settings=wandb.Settings(console="off", silent=True))
    chart = wandb.plot.scatter(table, "mean_tokens", "acc", title="accuracy vs mean tokens")
    xs, ys, keys = method_lines(points)
    lines = wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title="accuracy vs mean tokens, per run",
                                   xname="mean tokens")
    run.log({"pareto/table": table, "pareto/scatter": chart, "pareto/lines": lines})
    if own:
        run.finish()
    return run
