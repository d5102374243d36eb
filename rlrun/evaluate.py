"""``rlrun-eval``: accuracy and length of a model on benchmarks at a list of token budgets
(ALGORITHMS.md section 5: accuracy = pass@1 averaged over k samples per question, mean tokens of
all samples, pass@k with the unbiased estimator).

    rlrun-eval --model tiny --data arith --budgets 96,256
    rlrun-eval --model outputs/<run>/checkpoints/step_000100 --data math500,aime24 --k 4 --budgets 1024,4096
    rlrun-eval --model /path/to/hf-model --data amc --lcpo --budgets 512,1024   # budget in the prompt

``--model`` is ``tiny`` (the shipped model), a checkpoint directory rlrun wrote (its ``model/`` and
``tokenizer/``), or any Hugging Face model directory. ``--data`` names ``arith`` (the built-in task's
held-out split) or vendored benchmarks (``builtin:<name>``, see ``rlrun/tasks/benchmarks``). A
budget is the generation cap; with ``--lcpo`` it is also written into the prompt as L1's "Think for
N tokens." (the cap is then ``--lcpo-cap``) and the mean |length - N| is reported. Results are
printed and written as JSON to ``--out`` (default: the checkpoint's run directory, else the
current directory): ``eval.json``, and under ``"eval"`` in the run's ``summary.json`` when there is
one, which ``rlrun-pareto`` reads. Same seed, same samples (CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlrun-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="tiny, a checkpoint dir, or a Hugging Face model dir")
    p.add_argument("--tokenizer", help="tokenizer dir (default: next to the model)")
    p.add_argument("--data", default="arith", help="comma-separated: arith and/or builtin benchmark names")
    p.add_argument("--budgets", default="256", help="comma-separated token budgets, e.g. 96,256")
    p.add_argument("--k", type=int, default=1, help="samples per question")
    p.add_argument("--n", type=int, default=None, help="questions per benchmark (default: all; arith: 256)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lcpo", action="store_true", help="write the budget into the prompt (L1)")
    p.add_argument("--lcpo-cap", type=int, default=8192, help="generation cap with --lcpo")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per answer check (math-verify)")
    p.add_argument("--out", help="directory for eval.json")
    args = p.parse_args(argv)
    try:
        args.budget_list = [int(b) for b in args.budgets.split(",")]
    except ValueError:
        p.error(f"--budgets={args.budgets!r} must be comma-separated integers, e.g. 96,256")
    if not args.budget_list or min(args.budget_list) < 1:
        p.error(f"--budgets={args.budgets!r}: every budget must be >= 1")
    if args.k < 1:
        p.error(f"--k={args.k} must be >= 1")
    return args


def model_spec(model: str, tokenizer: str | None):
    """``(ModelSpec, run dir or None)`` for ``tiny``, an rlrun checkpoint, or a model directory."""
    from rlrun.engines.model import ModelSpec
    from rlrun.tasks.tiny_model import tiny_model_spec

    if model == "tiny":
        return tiny_model_spec(), None
    path = Path(model)
    if (path / "model").is_dir():  # a checkpoint rlrun wrote: <run>/checkpoints/step_N/
        tok = tokenizer or (str(path / "tokenizer") if (path / "tokenizer").is_dir() else None)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return ModelSpec(str(path / "model"), tok), run_dir
    if not path.is_dir() and not tokenizer:
        raise SystemExit(f"rlrun-eval: error: --model={model} is not tiny, a checkpoint dir or a model dir")
    return ModelSpec(model, tokenizer), None


def benchmark(name: str, n: int | None, seed: int, timeout: float):
    """``(problems, verifier)`` of one benchmark."""
    if name == "arith":
        from rlrun.tasks.arith import ArithProblems
        from rlrun.tasks.verify import BoxedAnswerVerifier

        return ArithProblems(seed=seed).held_out(n or 256), BoxedAnswerVerifier()
    from rlrun.tasks.jsonl_data import DatasetProblems, builtin_names
    from rlrun.tasks.math_verifier import MathVerifier

    if name.removeprefix("builtin:") not in builtin_names():
        raise SystemExit(f"rlrun-eval: error: --data {name} is not a benchmark; valid: arith, "
                         + ", ".join(builtin_names()))
    source = DatasetProblems(path=f"builtin:{name.removeprefix('builtin:')}", seed=seed)
    return source.held_out(n or 10**9), MathVerifier(timeout_s=timeout)


def evaluate_at(rollout, problems, verifier, budget: int, args) -> dict[str, float]:
    """Metrics of ``k`` samples per problem at one budget (``rlrun.loop.sample_and_score``, the
    in-loop evaluation's), plus L1's deviation with ``--lcpo`` and the verifier's counts."""
    import torch

    from rlrun.loop import sample_and_score

    caps = [budget] * len(problems)
    if args.lcpo:
        import dataclasses

        from rlrun.core.lcpo import EXACT, with_instruction

        problems = [dataclasses.replace(p, prompt=with_instruction(p.prompt, budget, EXACT)) for p in problems]
        caps = [args.lcpo_cap] * len(problems)
    torch.manual_seed(args.seed)
    out, rollouts = sample_and_score(rollout, verifier, problems, args.k, caps)
    out.setdefault(f"pass@{args.k}", out["acc"])  # pass@1 is the accuracy
    out.update({"questions": float(len(problems)), "samples": float(len(problems) * args.k)})
    if args.lcpo:
        from rlrun.core.evaluation import length_deviation

        out["length_deviation"] = length_deviation(rollouts.length_tokens_N.float(), float(budget))
    if hasattr(verifier, "metrics"):
        out.update(verifier.metrics())
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from rlrun.engines.rollout.hf import HFRollout

    spec, run_dir = model_spec(args.model, args.tokenizer)
    rollout = HFRollout(spec, temperature=args.temperature, top_p=args.top_p)
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'benchmark':<16}{'budget':>8}{'acc':>8}{'pass@' + str(args.k):>9}{'tokens':>9}{'truncated':>11}")
    for name in args.data.split(","):
        problems, verifier = benchmark(name, args.n, args.seed, args.timeout)
        for budget in args.budget_list:
            m = evaluate_at(rollout, problems, verifier, budget, args)
            results.setdefault(name, {})[f"budget_{budget}"] = m
            print(f"{name:<16}{budget:>8}{m['acc']:>8.3f}{m[f'pass@{args.k}']:>9.3f}{m['mean_tokens']:>9.1f}"
                  f"{m['truncated_frac']:>11.3f}", flush=True)
        if hasattr(verifier, "close"):
            verifier.close()
    out_dir = Path(args.out or run_dir or os.getcwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "k": args.k, "temperature": args.temperature, "top_p": args.top_p,
              "seed": args.seed, "lcpo": args.lcpo, "eval": results}
    (out_dir / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = out_dir / "summary.json"
    if summary.is_file():  # a run dir: rlrun-pareto reads the budgets from its summary
        data = json.loads(summary.read_text())
        data["eval"] = {**data.get("eval", {}), **results}
        summary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out_dir / 'eval.json'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
