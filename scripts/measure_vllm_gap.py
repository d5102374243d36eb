"""Measure the rollout/trainer log-prob gap of ``rollout=vllm`` in one dtype: the numbers behind
``rollout.check_tolerance`` in conf/rollout/vllm.yaml.

The vLLM engine and the DeepSpeed trainer both hold the shipped tiny model in DTYPE; the engine
samples 4 batches of 4 held-out prompts x 4 completions (temperature 1, budget 256) and the greedy
probe batch of the self-check; the trainer computes the log-probs of the same tokens. Prints one
JSON object: per batch the max and mean |engine - trainer| log-prob and the token count, the
probe's, and the overall max. Run it alone (it uses the whole CPU):

    .venv-vllm/bin/python scripts/measure_vllm_gap.py float32
    .venv-vllm/bin/python scripts/measure_vllm_gap.py bfloat16
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from bench_vllm import write  # scripts/ is this script's sys.path[0]

from rlrun.engines.rollout.vllm import VLLMRollout
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.tasks.arith import ArithProblems
from rlrun.tasks.tiny_model import tiny_model_spec


def gap(batch, trainer) -> dict:
    mask = batch.mask_NT
    diff = ((trainer.logprobs(batch).float() - batch.logp_NT) * mask).abs()
    tokens = int(mask.sum())
    return {"max": float(diff.max()), "mean": float(diff.sum()) / max(tokens, 1), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out", help="also write the JSON here (vLLM and DeepSpeed print to stdout too)")
    args = parser.parse_args()
    spec = dataclasses.replace(tiny_model_spec(), dtype=args.dtype)
    # a tolerance no gap reaches: this script measures, it does not check
    engine = VLLMRollout(spec, max_model_len=512, check_tolerance={args.dtype: {"max": 1e9, "mean": 1e9}})
    trainer = DeepSpeedTrainer(spec, total_steps=1)
    batches = []
    for seed in range(args.batches):
        torch.manual_seed(seed)
        batches.append(gap(engine.generate(ArithProblems(seed=seed).held_out(4), 4, [256] * 4), trainer))
    probe = gap(engine.probe(), trainer)
    tokens = sum(b["tokens"] for b in batches)
    write({"dtype": args.dtype, "engine": f"vllm {engine.version}", "batches": batches, "probe": probe,
           "max": max(b["max"] for b in batches),
           "mean": sum(b["mean"] * b["tokens"] for b in batches) / tokens, "tokens": tokens}, args.out)


if __name__ == "__main__":
    main()
