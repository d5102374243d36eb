"""The picture of ``make compare-embedded`` (scripts/compare_embedded.py calls :func:`draw`): held-out
accuracy (y) against mean response tokens (x), each method's end point at its mean over the seeds
with error bars of ± one sample std on both axes, the warm start's mean (one grey point: every run
starts from it), and the warm start's budget-forced curve (grey line, one point per forced
budget). matplotlib's Agg canvas; no display needed."""
from __future__ import annotations


def forced_points(data: dict) -> list[dict]:
    """``[{budget, acc, mean_tokens}]`` of the ``force_<N>`` results of an ``rlrun-eval`` eval.json
    (its first data set), in budget order."""
    sets = data.get("eval", {})
    if not sets:
        return []
    results = next(iter(sets.values()))
    points = [{"budget": int(key[len("force_"):]), "acc": float(value["acc"]),
               "mean_tokens": float(value["mean_tokens"])}
              for key, value in results.items() if key.startswith("force_")]
    return sorted(points, key=lambda p: p["budget"])


def draw(rows: list[dict], forced: list[dict], path: str, names: dict[str, str]) -> None:
    """Write the plot of the aggregated ``rows`` (compare_embedded.aggregate) and ``forced`` to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    start_x = sum(r["start_tokens"] for r in rows) / len(rows)
    start_y = sum(r["start_acc"] for r in rows) / len(rows)
    ax.plot([start_x], [start_y], "o", color="grey", markerfacecolor="white", label="warm start (mean of the runs' starts)")
    if forced:
        ax.plot([p["mean_tokens"] for p in forced], [p["acc"] for p in forced], "-s", color="grey", markersize=4,
                label="warm start, thinking forced to N tokens")
        for p in forced:
            ax.annotate(f"N={p['budget']}", (p["mean_tokens"], p["acc"]), fontsize=7, color="grey",
                        xytext=(3, -9), textcoords="offset points")
    for i, r in enumerate(rows):  # ten colours, then the same colours with another marker: no two methods alike
        ax.errorbar(r["mean_tokens"], r["acc"], xerr=r.get("mean_tokens_std") or 0.0, yerr=r.get("acc_std") or 0.0,
                    fmt="osD^v"[i // 10 % 5], color=f"C{i % 10}", capsize=3,
                    label=f"{names.get(r['method'], r['method'])} (n={len(r['seeds'])})")
    ax.set_xlabel("mean response tokens (held-out, 256-token cap)")
    ax.set_ylabel("held-out accuracy (pass@1)")
    ax.set_title("make compare-embedded: end of training, mean ± std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
