"""The demo (the embedded default, 100 steps, 256 held-out questions at the start and the end) with
``trainer.precision=bf16`` and with ``trainer.precision=fp32``, one after the other (``make
compare-bf16-demo``, 3.5 minutes on a 2-core CPU on 2026-12-07; this CPU's AMX runs bf16 matrix products), and the
check that the two end accuracies agree within sampling noise (3 standard errors of the difference
of two pass@1 rates, as scripts/compare_vllm_demo.py). Prints one JSON object and exits 1 when
they do not agree.

    .venv/bin/python scripts/compare_precision_demo.py [--out FILE] [overrides ...]
"""
from __future__ import annotations

from compare_vllm_demo import compare  # scripts/ is this script's sys.path[0]


def main() -> None:
    compare(__doc__, "compare_precision_demo", {p: f"trainer.precision={p}" for p in ("bf16", "fp32")})


if __name__ == "__main__":
    main()
