"""The demo (the embedded default: GRPO on the built-in arithmetic task, 100 steps, held-out
evaluation of 256 questions at the start and the end) with ``rollout=vllm`` and with ``rollout=hf``,
one after the other in this venv (``make compare-vllm-demo`` runs it in .venv-vllm, ~5 minutes on
a 2-core CPU), and the check that the two end accuracies agree within sampling noise.

Noise: the two end accuracies are pass@1 rates over n = 256 questions each; their difference has
standard error sqrt(2 p (1 - p) / n) at the pooled rate p, with p kept within [1/n, 1 - 1/n] (a rate
of 0 or 1 would claim no noise at all). They agree when the difference is at most 3 standard
errors. Prints one JSON object (start and end accuracy and mean tokens of each engine, the wall
seconds, the difference and its bound) and exits 1 when they do not agree.

    .venv-vllm/bin/python scripts/compare_vllm_demo.py [--out FILE] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from bench_vllm import write  # scripts/ is this script's sys.path[0]

ENGINES = ("vllm", "hf")


def run_demo(arm: str, out_dir: str, overrides: list[str]) -> dict:
    """The demo with the override ``arm`` (e.g. ``rollout=vllm``): its start and end points, its seconds."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlrun", arm, f"hydra.run.dir={out_dir}", *overrides],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    pick = lambda point: {k: point[k] for k in ("acc", "mean_tokens")}  # noqa: E731
    return {"start": pick(summary["start"]), "end": pick(summary["end"]), "seconds": time.perf_counter() - began}


def agreement(first: float, second: float, n: int) -> dict:
    """The difference of two pass@1 rates over ``n`` questions each and its 3-standard-error bound."""
    pooled = min(max((first + second) / 2, 1 / n), 1 - 1 / n)
    bound = 3 * math.sqrt(2 * pooled * (1 - pooled) / n)
    return {"difference": first - second, "bound": bound, "within_noise": abs(first - second) <= bound}


def compare(doc: str, prog: str, arms: dict[str, str]) -> None:
    """The demo once per arm (name -> override, two arms), the first's end accuracy checked against
    the second's within noise; one JSON printed (and written to --out), exit 1 past the bound."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--questions", type=int, default=256, help="held-out questions (eval.problems)")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for both runs")
    args = parser.parse_args()
    overrides = [f"eval.problems={args.questions}", *args.overrides]
    with tempfile.TemporaryDirectory(prefix=f"rlrun-{prog}-") as tmp:
        runs = {name: run_demo(arm, os.path.join(tmp, name), overrides) for name, arm in arms.items()}
    first, second = arms
    result = {"date": time.strftime("%Y-%m-%d"), "runs": runs,
              **agreement(runs[first]["end"]["acc"], runs[second]["end"]["acc"], args.questions)}
    write(result, args.out)
    if not result["within_noise"]:
        print(f"{prog}: the end accuracies differ by {result['difference']:+.3f}, more than the noise bound "
              f"{result['bound']:.3f} ({first} {runs[first]['end']['acc']:.3f}, {second} "
              f"{runs[second]['end']['acc']:.3f})", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    compare(__doc__, "compare_vllm_demo", {engine: f"rollout={engine}" for engine in ENGINES})

if __name__ == "__main__":
    main()
