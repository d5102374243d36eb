"""The demo (the embedded default, 100 steps, 256 held-out questions at the start and the end) with
``trainer.precision=bf16`` and with ``trainer.precision=fp32``, one after the other (``make
compare-bf16-demo``, ~5 minutes on a 2-core CPU; this CPU's AMX runs bf16 matrix products), and the
check that the two end accuracies agree within sampling noise (3 standard errors of the difference
of two pass@1 rates, as scripts/compare_vllm_demo.py). Prints one JSON object and exits 1 when
they do not agree.

    .venv/bin/python scripts/compare_precision_demo.py [--out FILE] [overrides ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from bench_vllm import write  # scripts/ is this script's sys.path[0]
from compare_vllm_demo import agreement, run_demo

PRECISIONS = ("bf16", "fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--questions", type=int, default=256, help="held-out questions (eval.problems)")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for both runs")
    args = parser.parse_args()
    overrides = [f"eval.problems={args.questions}", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="rlrun-precision-demo-") as tmp:
        runs = {p: run_demo(f"trainer.precision={p}", os.path.join(tmp, p), overrides) for p in PRECISIONS}
    result = {"date": time.strftime("%Y-%m-%d"), "runs": runs,
              **agreement(runs["bf16"]["end"]["acc"], runs["fp32"]["end"]["acc"], args.questions)}
    write(result, args.out)
    if not result["within_noise"]:
        print(f"compare_precision_demo: the end accuracies differ by {result['difference']:+.3f}, more than "
              f"the noise bound {result['bound']:.3f} (bf16 {runs['bf16']['end']['acc']:.3f}, fp32 "
              f"{runs['fp32']['end']['acc']:.3f})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
