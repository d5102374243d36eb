"""``rlrun-eval``: accuracy and length of a model on benchmarks at a list of token budgets
(ALGORITHMS.md section 5: accuracy = pass@1 averaged over k samples per question, mean tokens of
all samples, pass@k with the unbiased estimator).

    rlrun-eval --model tiny --data arith --budgets 96,256
    rlrun-eval --model outputs/<run>/checkpoints/step_000100 --data math500,aime24 --k 4 --budgets 1024,4096
    rlrun-eval --model /path/to/hf-model --data amc --lcpo --budgets 512,1024   # budget in the prompt
    rlrun-eval --model tiny --force-budgets 64,96,128   # s1's budget forcing (thinking stopped at N)

``--model`` is ``tiny`` (the shipped model), a checkpoint directory rlrun wrote (its ``model/`` and
``tokenizer/``), or any Hugging Face model directory. ``--data`` names ``arith`` (the built-in task's
held-out split) or vendored benchmarks (``builtin:<name>``, see ``rlrun/tasks/benchmarks``). A
budget is the generation cap; with ``--lcpo`` it is also written into the prompt as L1's "Think for
N tokens." (the cap is then ``--lcpo-cap``) and the mean |length - N| is reported. A forced budget
(``--force-budgets``, s1's budget forcing, ``rlrun.runtime.forcing``) stops the thinking at N tokens,
writes the model's ``think_end`` and ``answer_cue`` after it and lets the model answer within
``--force-answer-tokens`` more (default 128); its results are ``force_<N>`` beside ``budget_<N>``. Results are
printed and written as JSON to ``--out`` (default: the checkpoint's run directory, else the
current directory): ``eval.json``, and under ``"eval"`` in the run's ``summary.json`` when there is
one, which ``rlrun-pareto`` reads. Same seed, same samples (CPU).

``--baseline PATH`` (an earlier ``eval.json``, or a run dir or ``summary.json`` holding ``"eval"``
results) adds O1-Pruner's AES of this model against the baseline's accuracy and mean tokens
(``rlrun.core.evaluation.aes``, weights 1, 3, 5) for every benchmark and budget both have: an
``aes`` column, and ``aes``, ``baseline_acc``, ``baseline_mean_tokens`` per result in the JSON, which
also names the baseline (``"baseline": PATH``).

    rlrun-eval --model outputs/<run>/checkpoints/step_000100 --data aime24 --budgets 4096 --baseline base/eval.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlrun.core.evaluation import AES_WEIGHTS
from rlrun.runtime.forcing import DEFAULT_ANSWER_TOKENS
from rlrun.tasks.eval_sets import benchmark, check_benchmark


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlrun-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="tiny (or tiny_compare), a checkpoint dir, or a Hugging Face model dir")
    p.add_argument("--tokenizer", help="tokenizer dir (default: next to the model)")
    p.add_argument("--chat-format", choices=("plain", "chatml", "deepseek_r1"),
                   help="how the prompt is put to the model (default: a checkpoint's own run's, else plain)")
    p.add_argument("--system-prompt", help="the system turn of --chat-format")
    p.add_argument("--generation-suffix", help="written after the assistant header, e.g. '<think>\\n'")
    p.add_argument("--data", default="arith", help="comma-separated: arith and/or builtin benchmark names")
    p.add_argument("--budgets", default="256", help="comma-separated token budgets, e.g. 96,256")
    p.add_argument("--force-budgets", default="", metavar="N,...",
                   help="comma-separated thinking budgets to force (s1's budget forcing): the thinking stopped "
                        "at N tokens, the model's think_end and answer_cue written, the answer sampled after them")
    p.add_argument("--force-answer-tokens", type=int, default=DEFAULT_ANSWER_TOKENS, metavar="A",
                   help="cap on what the model samples after a forced budget (a response that ended its thinking "
                        f"by itself before N: N + A tokens in all; default {DEFAULT_ANSWER_TOKENS})"),
    p.add_argument("--k", type=int, default=1, help="samples per question")
    p.add_argument("--n", type=int, default=None, help="questions per benchmark (default: all; arith: 256)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lcpo", action="store_true", help="write the budget into the prompt (L1)")
    p.add_argument("--lcpo-cap", type=int, default=8192, help="generation cap with --lcpo")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per answer check (math-verify)")
    p.add_argument("--out", help="directory for eval.json")
    p.add_argument("--baseline", metavar="PATH",
                   help="an earlier eval.json (or a run dir / summary.json with results): adds AES against it")
    args = p.parse_args(argv)
    try:
        args.budget_list = [int(b) for b in args.budgets.split(",")]
    except ValueError:
        p.error(f"--budgets={args.budgets!r} must be comma-separated integers, e.g. 96,256")
    if not args.budget_list or min(args.budget_list) < 1:
        p.error(f"--budgets={args.budgets!r}: every budget must be >= 1")
    try:
        args.force_list = [int(b) for b in args.force_budgets.split(",")] if args.force_budgets else []
    except ValueError:
        p.error(f"--force-budgets={args.force_budgets!r} must be comma-separated integers, e.g. 64,96,128")
    if args.force_list and min(args.force_list) < 1:
        p.error(f"--force-budgets={args.force_budgets!r}: every thinking budget must be >= 1 token")
    if args.force_answer_tokens < 1:
        p.error(f"--force-answer-tokens={args.force_answer_tokens} must be >= 1")
    if args.force_list and args.lcpo:
        p.error("--force-budgets with --lcpo: give one of them (--lcpo writes the budget into the prompt)")
    if args.k < 1:
        p.error(f"--k={args.k} must be >= 1")
    return args


def model_spec(model: str, tokenizer: str | None, chat: dict | None = None):
    """``(ModelSpec, run dir or None)`` for ``tiny`` (or ``tiny_compare``, make compare-embedded's warm
    start), an rlrun checkpoint, or a model directory;
    ``chat``: ModelSpec's chat fields given on the command line (over a checkpoint's own)."""
    chat = chat or {}
    from rlrun.engines.model import ModelSpec
    from rlrun.tasks.tiny_model import tiny_compare_spec, tiny_model_spec

    if model in ("tiny", "tiny_compare"):
        if chat:
            raise SystemExit(f"rlrun-eval: error: --model {model} is plain text (no chat format); leave out "
                             "--chat-format/--system-prompt/--generation-suffix")
        return (tiny_model_spec() if model == "tiny" else tiny_compare_spec()), None
    path = Path(model)
    if (path / "model").is_dir():  # a checkpoint rlrun wrote: <run>/checkpoints/step_N/
        tok = tokenizer or (str(path / "tokenizer") if (path / "tokenizer").is_dir() else None)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return ModelSpec(str(path / "model"), tok, **{**run_chat(path), **chat}), run_dir
    if not path.is_dir() and not tokenizer:
        raise SystemExit(f"rlrun-eval: error: --model={model} is not tiny, a checkpoint dir or a model dir")
    return ModelSpec(model, tokenizer, **chat), None


def run_chat(checkpoint: Path) -> dict:
    """The chat format the checkpoint's run trained with (its ``config.json``), as ModelSpec fields."""
    from rlrun.runtime.checkpoint import CONFIG

    try:
        model = json.loads((checkpoint / CONFIG).read_text())["resolved"]["model"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return {}
    return {k: model[k] for k in ("chat_format", "system_prompt", "generation_suffix") if k in model}


def evaluate_at(rollout, problems, verifier, budget: int, args, forced: bool = False) -> dict[str, float]:
    """Metrics of ``k`` samples per problem at one budget (``rlrun.runtime.evaluation.sample_and_score``,
    the in-loop evaluation's), a thinking budget forced when ``forced`` (``rlrun.runtime.forcing``),
    plus L1's deviation with ``--lcpo`` and the verifier's counts."""
    import torch

    from rlrun.runtime.evaluation import sample_and_score
    from rlrun.types import HasMetrics

    caps = [budget] * len(problems)
    if args.lcpo:
        import dataclasses

        from rlrun.core.lcpo import EXACT, with_instruction

        problems = [dataclasses.replace(p, prompt=with_instruction(p.prompt, budget, EXACT)) for p in problems]
        caps = [args.lcpo_cap] * len(problems)
    if forced:
        from rlrun.runtime.forcing import BudgetForced

        rollout = BudgetForced(rollout, args.force_answer_tokens)
    torch.manual_seed(args.seed)
    out, rollouts = sample_and_score(rollout, verifier, problems, args.k, caps)
    out.setdefault(f"pass@{args.k}", out["acc"])  # pass@1 is the accuracy
    out.update({"questions": float(len(problems)), "samples": float(len(problems) * args.k)})
    if args.lcpo:
        from rlrun.core.evaluation import length_deviation

        out["length_deviation"] = length_deviation(rollouts.length_tokens_N.float(), float(budget))
    if isinstance(verifier, HasMetrics):
        out.update(verifier.metrics())
    return out


def read_baseline(path: str) -> dict:
    """The ``eval`` results (``{benchmark: {budget_<N>: {acc, mean_tokens, ...}}}``) of an earlier
    evaluation: an ``eval.json`` rlrun-eval wrote, a run's ``summary.json``, or a directory holding
    one (its ``summary.json`` when that has results, since rlrun-eval adds its own there, else its
    ``eval.json``). ValueError with a one-line reason when there are none."""
    where = Path(path)
    if not where.exists():
        raise ValueError(f"--baseline={path}: no such file or directory")
    files = [where / "summary.json", where / "eval.json"] if where.is_dir() else [where]
    for file in files:
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--baseline={path}: {file.name} cannot be read: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        results = data.get("eval") if isinstance(data, dict) else None
        if isinstance(results, dict) and results:
            return results
    raise ValueError(f"--baseline={path}: no \"eval\" results in {', '.join(f.name for f in files)}; "
                     "give an eval.json written by rlrun-eval, or a run dir or summary.json holding one")


def baseline_point(baseline: dict, name: str, key: str) -> dict | None:
    """The baseline's result for one benchmark and budget (``key``: ``budget_<N>`` or ``force_<N>``),
    when it has accuracy and mean tokens."""
    budgets = baseline.get(name)
    point = budgets.get(key) if isinstance(budgets, dict) else None
    if isinstance(point, dict) and all(isinstance(point.get(k), (int, float)) for k in ("acc", "mean_tokens")):
        return point
    return None


def check_shared(baseline: dict, path: str, names: list[str], keys: list[str]) -> None:
    """ValueError unless the baseline has at least one of this evaluation's benchmark/budget pairs."""
    if any(baseline_point(baseline, n, key) is not None for n in names for key in keys):
        return
    has = "; ".join(f"{n} at {', '.join(v)}" for n, v in baseline.items() if isinstance(v, dict))
    raise ValueError(f"--baseline={path} shares no benchmark and budget with this evaluation "
                     f"({', '.join(names)} at {', '.join(keys)}); it has: {has}")


def add_aes(m: dict, base: dict) -> None:
    """``aes`` of a result against the baseline's (O1-Pruner's AES, weights ``AES_WEIGHTS``), with
    the baseline's numbers beside it; ``aes`` is None when the baseline's accuracy or length is 0
    (the relative changes are then undefined)."""
    from rlrun.core.evaluation import aes

    m["baseline_acc"], m["baseline_mean_tokens"] = float(base["acc"]), float(base["mean_tokens"])
    try:
        m["aes"] = aes(m["acc"], m["mean_tokens"], m["baseline_acc"], m["baseline_mean_tokens"], **AES_WEIGHTS)
    except ValueError:
        m["aes"] = None


def fail(message: str) -> None:
    """Exit as argparse does on a bad argument: one line on stderr, status 2."""
    print(f"rlrun-eval: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = [name.removeprefix("builtin:") for name in args.data.split(",")]
    baseline = None
    try:
        for name in names:
            check_benchmark(name, "--data ")
        if args.baseline is not None:
            baseline = read_baseline(args.baseline)
            check_shared(baseline, args.baseline, names, [key for key, _, _ in points_of(args)])
    except ValueError as exc:
        fail(str(exc))
    from rlrun.engines.rollout.hf import HFRollout

    chat = {key: value for key, value in (("chat_format", args.chat_format), ("system_prompt", args.system_prompt),
                                          ("generation_suffix", args.generation_suffix)) if value is not None}
    try:
        spec, run_dir = model_spec(args.model, args.tokenizer, chat)
    except ValueError as exc:  # a chat format that cannot be (plain with a system prompt)
        fail(str(exc))
    rollout = HFRollout(spec, temperature=args.temperature, top_p=args.top_p)
    results = evaluate_all(rollout, names, args, baseline)
    out_dir = Path(args.out or run_dir or os.getcwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "k": args.k, "temperature": args.temperature, "top_p": args.top_p,
              "seed": args.seed, "lcpo": args.lcpo, "eval": results}
    if args.force_list:
        record["force_answer_tokens"] = args.force_answer_tokens
    if args.baseline is not None:
        record.update(baseline=args.baseline, aes_weights=AES_WEIGHTS)
    (out_dir / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = out_dir / "summary.json"
    if summary.is_file():  # a run dir: rlrun-pareto reads the budgets from its summary
        data = json.loads(summary.read_text())
        data["eval"] = {**data.get("eval", {}), **results}
        summary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out_dir / 'eval.json'}")
    sys.stdout.flush()


def points_of(args) -> list[tuple[str, str, bool]]:
    """``(result key, budget column, forced)`` of every budget: ``budget_<N>`` (a cap) and
    ``force_<N>`` (a forced thinking budget, shown as ``force <N>``)."""
    return ([(f"budget_{b}", str(b), False) for b in args.budget_list]
            + [(f"force_{b}", f"force {b}", True) for b in args.force_list])


def evaluate_all(rollout, names: list[str], args, baseline: dict | None) -> dict:
    """Every benchmark at every budget, printed as a table row each (with AES against the baseline
    where it has the same benchmark and budget); ``{benchmark: {budget_<N>|force_<N>: metrics}}``."""
    results: dict[str, dict[str, dict]] = {}
    verifiers: dict = {}
    aes_head = f"{'aes':>9}" if baseline is not None else ""
    width = max(8, *(len(cell) + 1 for _, cell, _ in points_of(args)))
    print(f"{'benchmark':<16}{'budget':>{width}}{'acc':>8}{'pass@' + str(args.k):>9}{'tokens':>9}{'truncated':>11}"
          + aes_head)
    for name in names:
        problems, verifier = benchmark(name, args.n or (256 if name == "arith" else 10**9), args.seed,
                                       args.timeout, verifiers=verifiers)
        for key, cell, forced in points_of(args):
            m = evaluate_at(rollout, problems, verifier, int(key.split("_")[1]), args, forced)
            base = baseline_point(baseline, name, key) if baseline is not None else None
            if base is not None:
                add_aes(m, base)
            results.setdefault(name, {})[key] = m
            aes_cell = "" if baseline is None else f"{m['aes']:>9.3f}" if m.get("aes") is not None else f"{'-':>9}"
            print(f"{name:<16}{cell:>{width}}{m['acc']:>8.3f}{m[f'pass@{args.k}']:>9.3f}{m['mean_tokens']:>9.1f}"
                  f"{m['truncated_frac']:>11.3f}{aes_cell}", flush=True)
    from rlrun.types import Closable

    for verifier in verifiers.values():
        if isinstance(verifier, Closable):
            verifier.close()
    return results


if __name__ == "__main__":
    main()
