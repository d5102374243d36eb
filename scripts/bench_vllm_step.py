"""The whole training step with KL, rlrun with ``rollout=vllm`` against Hugging Face TRL's GRPOTrainer
with its own vLLM colocate mode, on the same work, side by side (``make bench-vllm`` runs it after
scripts/bench_vllm.py).

The work is scripts/bench_trl.py's (the embedded tiny model, ``ArithProblems(seed 0, digits 3)``,
8 prompts x 8 completions, at most 96 new tokens, temperature 1.0, top-p 1.0, k3 KL with beta 0.04
against a frozen reference, lr 1e-5, one optimizer step per batch, float32 training). Measured: the
wall seconds of each whole step (rollout, reward, reference log-probs, update, weight sync into the
engine and, for rlrun, its self-check on the probe batch), median of steps 2..STEPS (step 1 pays the
warm-up); for rlrun also with ``rollout=hf`` on the same machine state. Each round runs TRL, then
rlrun with vLLM, then rlrun with HF, each in its own process (one vLLM engine per process); the
reported numbers are medians over the rounds.

Where the work differs (TRL's choices, not settable from GRPOConfig): TRL's vLLM samples in bfloat16
(vLLM downcasts the float32 checkpoint; TRL's ``LLM(...)`` passes no dtype) and TRL corrects the loss
by the vLLM/trainer importance ratio (on by default, left on); rlrun's engine samples in float32.

    python scripts/bench_vllm_step.py --trl-python .venv-trl-vllm/bin/python [--steps 11] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from bench_vllm import write  # scripts/ is this script's sys.path[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trl-python", required=True, help="the Python of a venv with TRL and vLLM (make bench-vllm "
                   "builds .venv-trl-vllm)")
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--rlrun-worker", choices=["vllm", "hf"], help=argparse.SUPPRESS)  # one rlrun run, internal
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be >= 2 (step 1 is the warm-up)")
    return args


def rlrun_steps(rollout: str, steps: int) -> dict:
    """rlrun on the work above in this process: each step as ``rlrun`` runs it (``loop.advance``:
    the step, then the engine's self-check), timed by the wall clock."""
    import torch
    from hydra import compose, initialize_config_module

    from rlrun.runtime import dist, loop
    from rlrun.wiring.build import build_run

    overrides = [f"steps={steps}", "prompts_per_step=8", "group_size=8", "curriculum.max_new_tokens=96",
                 f"rollout={rollout}", "rollout.temperature=1.0", "rollout.top_p=1.0", "logger=jsonl",
                 "eval=none", f"checkpoint_every={steps + 1}", "algo.loss.kl_coef=0.04", "trainer.optim.lr=1e-5"]
    with initialize_config_module(config_module="rlrun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dist.init()
    run = build_run(cfg, tempfile.mkdtemp(prefix="rlrun-bench-step-"))
    torch.manual_seed(0)
    if hasattr(run.rollout, "check"):
        run.rollout.check(0, None, run.trainer)  # as at the start of a run
    wall, metrics, cache = [], [], {}
    for step in range(steps):
        began = time.perf_counter()
        metrics.append(loop.advance(run, step, cache))
        wall.append(time.perf_counter() - began)
    run.logger.close({})
    timed = metrics[1:]
    med = lambda key: statistics.median(m.get(key, 0.0) for m in timed)  # noqa: E731
    return {"s_per_step_median": statistics.median(wall[1:]), "s_per_step_all": [round(s, 4) for s in wall],
            "stage_s_median": {s: med(f"time/{s}_s") for s in ("rollout", "reward", "ref_logprobs", "update", "sync")},
            "mean_completion_tokens": med("length/mean_tokens"), "mean_accuracy": med("acc/train"),
            "logprob_gap_max": max((m.get("rollout/logprob_gap_max", 0.0) for m in metrics), default=0.0)}


def in_process(python: str, script_args: list[str], out: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    subprocess.run([python, *script_args, "--out", out], check=True, stdout=subprocess.DEVNULL, env=env)
    with open(out) as f:
        return json.load(f)


def one_round(args: argparse.Namespace, tmp: str) -> dict:
    trl = in_process(args.trl_python, [os.path.join(ROOT, "scripts", "bench_trl.py"), "--vllm", "--kl",
                                       "--steps", str(args.steps)], os.path.join(tmp, "trl.json"))
    mine = {name: in_process(sys.executable, [os.path.abspath(__file__), "--trl-python", args.trl_python,
                                              "--steps", str(args.steps), "--rlrun-worker", name],
                             os.path.join(tmp, f"rlrun_{name}.json")) for name in ("vllm", "hf")}
    return {"trl_vllm": {k: trl.get(k) for k in ("s_per_step_median", "s_per_step_all", "stage_s_median",
                                                 "mean_completion_tokens", "mean_reward", "vllm_version")},
            "rlrun_vllm": mine["vllm"], "rlrun_hf": mine["hf"]}


def main() -> None:
    args = parse_args()
    if args.rlrun_worker:
        import torch

        torch.set_num_threads(int(os.environ.get("RLRUN_THREADS", "2")))
        write(rlrun_steps(args.rlrun_worker, args.steps), args.out)  # stdout: the parent discards it
        return
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-step-") as tmp:
        rounds = []
        for index in range(args.rounds):
            rounds.append(one_round(args, tmp))
            print(json.dumps({"round": index + 1, **{k: v["s_per_step_median"] for k, v in rounds[-1].items()}}),
                  file=sys.stderr, flush=True)
    med = {k: statistics.median(r[k]["s_per_step_median"] for r in rounds) for k in rounds[0]}
    write({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "steps": args.steps, "s_per_step_median": med,
           "rlrun_vllm_vs_trl_vllm": med["rlrun_vllm"] / med["trl_vllm"], "rounds": rounds}, args.out)


if __name__ == "__main__":
    main()
