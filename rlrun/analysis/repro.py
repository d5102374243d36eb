"""``rlrun-repro NAME [--dry-run] [--out DIR] [overrides...]``: one paper's reproduction, its arms
run side by side, then ``repro.md`` with our numbers beside the paper's and the Pareto plot with the
paper's points drawn in (``make repro-<paper>`` and ``make repro-<paper>-small`` call it).

``NAME`` is a folder of ``conf/experiment/repro/``: ``drpo`` (the paper's own setting) or
``drpo_small`` (the smallest honest one, ALGORITHMS.md section 7). Each yaml in it but
``common.yaml`` is one arm (the method and its baseline: the claims are relative, so a run without
its baseline tests nothing). ``common.yaml`` holds the shared settings and the ``repro`` node: the
question, the paper, the hardware, and the paper's numbers (``paper_numbers``: arm, benchmark,
metric, value, where printed). The arms run as one Hydra multirun (``rlrun -m``), so
``hydra/launcher=slurm`` puts them on SLURM; each evaluates at its start (the base model) and end on
the paper's benchmarks, budgets, samples and sampling settings (the run's own ``eval``: the same
measurement as ``rlrun-eval``, on the run's rollout engine and ranks).

``--dry-run`` prints the hardware and each arm's full composed config, runs nothing. With
``debug=cpu`` among the overrides (``make repro-drpo-small debug=cpu``) every arm runs 2 steps on the
tiny model, its generations capped at ``DEBUG_CAP`` tokens, ``DEBUG_PROBLEMS`` questions of each
evaluation set and ``DEBUG_SAMPLES`` samples per question, plus the arm's own ``repro.debug``
overrides (the sizes that cannot fit a 2-step run of 4 samples a prompt, e.g. GFPO's k, a monitor
set); each arm then runs as its own process: the same rewards, curricula, filters and evaluation
code, in minutes on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

DEBUG_CAP = 32  # new tokens per completion when debug=cpu is given (the tiny model, not the paper's)
DEBUG_SAMPLES = 2  # evaluation samples per question under debug=cpu (still avg@k and pass@k, at 2)
# questions per evaluation set under debug=cpu (with debug=cpu's own 8, evaluation took 24 of DRPO's 33 s:
# the first 8 questions of the real benchmarks average 180-450 characters, each a token of the tiny model)
DEBUG_PROBLEMS = 2


def repro_dir() -> Path:
    import rlrun.conf

    return Path(rlrun.conf.__file__).parent / "experiment" / "repro"


def arms(name: str) -> list[str]:
    """The arms of reproduction ``name``, or ValueError naming the valid names."""
    folder = repro_dir() / name
    found = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "common") if folder.is_dir() else []
    if not found:
        valid = sorted(p.name for p in repro_dir().iterdir() if p.is_dir())
        raise ValueError(f"no reproduction named {name!r}; valid: {', '.join(valid)}")
    return found


def debug_overrides(extra: list[str]) -> list[str]:
    """What ``debug=cpu`` adds to every reproduction: short generations, 2 questions of each evaluation
    set, 2 samples each (and ``overrides_for`` the same for each set of ``eval.samples_by_set``)."""
    if "debug=cpu" not in extra:
        return []
    return [f"rollout.max_new_tokens={DEBUG_CAP}", f"eval.problems={DEBUG_PROBLEMS}",
            f"eval.samples={DEBUG_SAMPLES}"]


def overrides_for(name: str, arm: str, extra: list[str]) -> list[str]:
    """The arm's command-line overrides; under ``debug=cpu`` also its own ``repro.debug`` list (the
    sizes that do not fit the tiny 2-step run, e.g. GFPO's k of G = 4, a monitor set's size)."""
    base = [f"experiment=repro/{name}/{arm}", *extra, *debug_overrides(extra)]
    if "debug=cpu" not in extra:
        return base
    from rlrun.wiring.cli import compose

    cfg = compose(base)
    own = [f"eval.samples_by_set.{k}={DEBUG_SAMPLES}" for k in cfg.eval.samples_by_set]  # {} would merge
    return [*base, *own, *(str(o) for o in (cfg.repro.get("debug") or []))]


def composed(name: str, extra: list[str]) -> dict[str, object]:
    """Each arm's composed config, validated as a run would validate it (a bad value fails here)."""
    from rlrun.wiring.cli import compose
    from rlrun.wiring.settings import validate

    out = {}
    for arm in arms(name):
        cfg = compose(overrides_for(name, arm, extra))
        validate(cfg, world_size=int(cfg.repro.hardware.gpus) if "debug=cpu" not in extra else 1)
        check_points(cfg)
        out[arm] = cfg
    return out


def check_points(cfg) -> None:
    """Each paper number's ``at`` names a point the arms evaluate (``budget_<N>`` with N in
    ``eval.budgets``, ``force_<N>`` with N in ``eval.force_budgets``), or ValueError naming the valid ones."""
    valid = [f"budget_{n}" for n in cfg.eval.budgets] + [f"force_{n}" for n in cfg.eval.force_budgets]
    for row in cfg.repro.paper_numbers:
        at = row.get("at")
        if at is not None and at not in valid:
            raise ValueError(f"repro.paper_numbers: at={at!r} ({row.arm}, {row.benchmark}) is not evaluated; "
                             f"valid: {', '.join(valid) or 'none (eval.budgets and eval.force_budgets are empty)'}")


def describe(name: str, cfg) -> str:
    r = cfg.repro
    hw = r.hardware
    return "\n".join([
        f"# {r.paper}", f"question: {r.question}",
        f"hardware: {hw.gpus} x {hw.gpu} on {hw.nodes} node(s), about {hw.gpu_hours} GPU-hours for all arms "
        f"({hw.note})",
        f"command: make repro-{name.replace('_', '-')} (SLURM: add REPRO_ARGS=hydra/launcher=slurm)"])


def dry_run(name: str, extra: list[str]) -> int:
    from omegaconf import OmegaConf

    configs = composed(name, extra)
    print(describe(name, next(iter(configs.values()))))
    for arm, cfg in configs.items():
        print(f"\n## arm {arm}: rlrun {' '.join(overrides_for(name, arm, extra))}")
        print(OmegaConf.to_yaml(cfg, resolve=False).rstrip())
    runs = "; ".join(" ".join(c) for c in commands(name, extra, "OUT"))
    print(f"\n(dry run: nothing ran; the arms run as: {runs})")
    return 0


def commands(name: str, extra: list[str], out: str) -> list[list[str]]:
    """The arms as one multirun (``hydra/launcher=slurm`` puts them on SLURM); under ``debug=cpu``
    one run per arm, each with its own debug overrides, into the same layout (``out/<i>``)."""
    exe = str(Path(sys.executable).with_name("rlrun"))
    if "debug=cpu" in extra:
        return [[exe, *overrides_for(name, arm, extra), f"hydra.run.dir={out}/{i}"] for i, arm in enumerate(arms(name))]
    experiments = ",".join(f"repro/{name}/{arm}" for arm in arms(name))
    return [[exe, "-m", f"experiment={experiments}", f"hydra.sweep.dir={out}", *extra]]


def read_lines(run_dir: Path) -> dict[int, dict]:
    """``metrics.jsonl`` merged by step."""
    merged: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        merged.setdefault(int(entry["step"]), {}).update(entry)
    return merged


POINT = re.compile(r"^eval/([^/]+)/((?:budget|force)_\d+)/acc$")  # eval.budgets' and eval.force_budgets' keys


def change(start: dict, end: dict, prefix: str) -> dict[str, float]:
    """acc (%) and mean tokens at the end under ``prefix`` (``eval/<set>/`` or ``eval/<set>/budget_<N>/``),
    with their change from the start (the base model) where the start measured them."""
    acc0, acc1 = start.get(f"{prefix}acc"), end[f"{prefix}acc"]
    tok0, tok1 = start.get(f"{prefix}mean_tokens"), end[f"{prefix}mean_tokens"]
    row = {"acc": 100 * acc1, "mean_tokens": tok1}
    if acc0 is not None and tok0:
        row.update(acc_change=100 * (acc1 - acc0), length_change_pct=100 * (tok1 / tok0 - 1))
        row.update(start_acc=100 * acc0, start_tokens=tok0)
    return row


def ours(run_dir: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """The arm's name and, per benchmark (the held-out split by its data set's name), acc (%), mean
    tokens, and their change from the start (the base model) to the end, at the run's own cap; and the
    same at each further cap and forced budget of the run's ``eval`` (label ``<set> @ budget_<N>`` /
    ``<set> @ force_<N>``, the names of metrics.jsonl; a paper number's ``at:`` picks one)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    lines = read_lines(run_dir)
    start, end = lines.get(0, {}), lines.get(int(cfg.steps), {})
    heldout = str(OmegaConf.select(cfg, "data.source.eval_path") or "heldout").removeprefix("builtin:")
    table: dict[str, dict[str, float]] = {}
    names = {key.split("/")[1] for key in end if key.startswith("eval/") and key.endswith("/acc")}
    points = sorted((m[1], m[2]) for m in map(POINT.match, end) if m)
    for bench in sorted(names):
        label = heldout if bench == "heldout" else bench
        table[label] = change(start, end, f"eval/{bench}/")
        for point in sorted((p for b, p in points if b == bench), key=lambda p: (p[0], int(p.split("_")[1]))):
            table[f"{label} @ {point}"] = change(start, end, f"eval/{bench}/{point}/")
    return str(cfg.repro.arm), table


def label_of(row) -> str:
    """A paper number's label in ``ours``' table: its benchmark, at its ``at`` point if it names one
    (e.g. ``at: budget_32768`` where the paper evaluates at a longer cap than the training cap)."""
    at = row.get("at")
    return f"{row.benchmark} @ {at}" if at else str(row.benchmark)


def report(name: str, out: Path, seconds: float | None = None) -> Path:
    """``repro.md`` (and ``repro.png``) in ``out`` from the arms' run dirs."""
    from omegaconf import OmegaConf

    jobs = sorted(p for p in out.iterdir() if (p / "metrics.jsonl").is_file())
    if not jobs:
        raise ValueError(f"no run dirs with metrics.jsonl in {out}")
    results = dict(ours(job) for job in jobs)
    cfg = OmegaConf.load(jobs[0] / ".hydra" / "config.yaml")
    lines = [describe(name, cfg).replace("# ", "# Reproduction: ", 1), ""]
    if seconds is not None:
        lines.append(f"Wall time of the arms: {seconds:.0f} s. Run dirs: {', '.join(j.name for j in jobs)}.")
    lines += ["", "## The paper's numbers beside ours", ""]
    if not cfg.repro.paper_numbers:  # e.g. a claim about a trend (the arms compare with each other)
        lines.append("The paper prints no number this setting reproduces (the yaml's header says what it tests).")
    else:
        lines += ["| arm | benchmark | metric | ours | paper | where the paper prints it |", "|---|---|---|---|---|---|"]
    for row in cfg.repro.paper_numbers:
        mine = results.get(str(row.arm), {}).get(label_of(row), {}).get(str(row.metric))
        shown = "not measured" if mine is None else f"{mine:.1f}"
        lines.append(f"| {row.arm} | {label_of(row)} | {row.metric} | {shown} | {row.value} | {row.source} |")
    lines += ["", "## Every number we measured (start = the base model before training)", "",
              "`<set> @ budget_<N>`: at the further cap N of `eval.budgets`; `<set> @ force_<N>`: the thinking "
              "forced to end at N (`eval.force_budgets`); the plain rows at the run's own cap.", "",
              "| arm | benchmark | acc % (start → end) | mean tokens (start → end) |", "|---|---|---|---|"]
    for arm, table in sorted(results.items()):
        for bench, row in table.items():
            acc = f"{row.get('start_acc', float('nan')):.1f} → {row['acc']:.1f}"
            tok = f"{row.get('start_tokens', float('nan')):.0f} → {row['mean_tokens']:.0f}"
            lines.append(f"| {arm} | {bench} | {acc} | {tok} |")
    lines += ["", "![accuracy against mean tokens](repro.png)", ""]
    plot(results, cfg.repro.paper_numbers, out / "repro.png")
    path = out / "repro.md"
    path.write_text("\n".join(lines))
    return path


def plot(results: dict, paper_numbers, path: Path) -> None:
    """Accuracy against mean tokens: each arm's end point per benchmark (filled), the base model's
    (start, grey), the curve of its further caps (solid) and forced budgets (dotted; the base model's
    in grey: s1's budget forcing, L1's baseline), and the paper's points where it prints both accuracy
    and tokens (open)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for arm, table in sorted(results.items()):
        for bench, row in table.items():
            if " @ " in bench:
                continue
            ax.scatter(row["mean_tokens"], row["acc"], label=f"{arm} / {bench} (ours)")
            if "start_tokens" in row:
                ax.scatter(row["start_tokens"], row["start_acc"], color="grey", marker="x")
            for kind, style in (("budget", "-"), ("force", ":")):  # its further caps / forced budgets, a curve
                curve = [r for b, r in table.items() if b.startswith(f"{bench} @ {kind}_")]
                if curve:
                    ax.plot([r["mean_tokens"] for r in curve], [r["acc"] for r in curve], style, marker=".",
                            label=f"{arm} / {bench} ({'caps' if kind == 'budget' else 'forced'})")
                    starts = [r for r in curve if "start_tokens" in r]
                    if starts:
                        ax.plot([r["start_tokens"] for r in starts], [r["start_acc"] for r in starts], style,
                                color="grey", marker="x")
    printed: dict[tuple[str, str], dict[str, float]] = {}
    for row in paper_numbers:
        printed.setdefault((str(row.arm), label_of(row)), {})[str(row.metric)] = float(row.value)
    for (arm, bench), values in sorted(printed.items()):
        if "acc" in values and "mean_tokens" in values:
            ax.scatter(values["mean_tokens"], values["acc"], facecolors="none", edgecolors="black",
                       label=f"{arm} / {bench} (paper)")
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlrun-repro", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="a folder of conf/experiment/repro/, e.g. drpo_small")
    p.add_argument("--dry-run", action="store_true", help="print the hardware and each arm's config; run nothing")
    p.add_argument("--out", help="the sweep dir (default outputs/repro/<name>/<date_time>)")
    p.add_argument("--report-only", action="store_true", help="write repro.md from --out's finished arms")
    args, extra = p.parse_known_args(argv)
    try:
        arms(args.name)
        if args.dry_run:
            return dry_run(args.name, extra)
        out = Path(args.out or f"outputs/repro/{args.name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        if args.report_only:
            print(f"wrote {report(args.name, out)}")
            return 0
        composed(args.name, extra)  # a bad override fails before any arm starts
    except Exception as exc:  # noqa: BLE001 (Hydra's and rlrun's config errors alike: one line)
        print(f"rlrun-repro: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    for cmd in commands(args.name, extra, str(out)):
        done = subprocess.run(cmd, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
        if done.returncode != 0:
            print(f"rlrun-repro: the arms failed (exit {done.returncode}); their run dirs are in {out}", file=sys.stderr)
            return done.returncode
    print(f"wrote {report(args.name, out, time.perf_counter() - began)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
