"""rlrun's speed on the demo settings: seconds per step by stage, rollout tokens/s and peak RSS, as
one JSON object (stdout, and ``--out``). With ``--trl FILE`` (written by ``make bench-trl``) the
JSON also holds the ratio of rlrun's seconds/step to TRL's on the same work.

Settings match scripts/bench_trl.py: 8 prompts x 8 completions, at most 96 new tokens, temperature
1.0, no reference model (``--kl``: k3 KL with beta 0.04), one optimizer step per batch, the
embedded tiny model (hidden 128, 2 layers, warm-started) or ``--hidden 256 --layers 4`` (2.4M
parameters, the same random initialisation as bench_trl.py's). The median of steps 2..N is
reported (step 1 pays one-off warm-up costs).

``profile`` (what remains): one more step is run under torch's FlopCounterMode to count each stage's
matrix-product GFLOP (linear layers and attention, forward and backward); with this machine's best
fp32 matmul rate on the model's widest layer shape it gives each stage's floor in seconds (the time
if every counted FLOP ran at that rate) and the rate each stage achieved.

    python scripts/bench.py --steps 11 [--kl] [--hidden 256 --layers 4] [--trl FILE] [--out FILE]
    python scripts/bench.py --all --trl-dir outputs/bench --out outputs/bench/rlrun.json
        # both sizes, with and without KL; ratios to the trl_<config>.json files of `make bench-trl`
    python scripts/bench.py --all --trl-python .venv-trl/bin/python --out outputs/bench/rlrun.json
        # the same, with TRL run side by side: TRL then rlrun per setting, twice (`make bench`)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--kl", action="store_true", help="with a reference model (k3 KL, beta 0.04)")
    p.add_argument("--trl", help="JSON written by scripts/bench_trl.py, for the speed ratio")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="trainer.precision (one setting)")
    p.add_argument("--all", action="store_true", help="both model sizes, with and without KL, and the bf16 rows")
    p.add_argument("--trl-dir", help="directory of trl_<config>.json files (with --all)")
    p.add_argument("--trl-python", help="with --all: run scripts/bench_trl.py with this Python (TRL's venv) "
                   "side by side, TRL then rlrun for each setting, --rounds times; the ratio is of the "
                   "medians over rounds (overrides --trl-dir)")
    p.add_argument("--rounds", type=int, default=2, help="TRL/rlrun alternations per setting (--trl-python)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model=tiny")
    return p.parse_args()


def plain_generate_tokens_per_s(run, problems, group_size: int, max_new_tokens: int) -> float:
    """Useful tokens/s of one plain ``model.generate`` call on the same batch (the reference)."""
    model, tok = run.rollout.model, run.rollout.tokenizer
    rows = [ids for ids in run.rollout.encode_prompts(problems) for _ in range(group_size)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
    seconds = time.perf_counter() - start
    new = out[:, width:]
    useful = 0
    for row in new.tolist():
        useful += row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
    return useful / seconds


# (hidden, layers, kl, cap, precision): the four settings, then the tiny model at a cap its answers fit
# in (rewards are not all 0, so the update has real work)
CONFIGS = [(128, 2, False, 96, "fp32"), (128, 2, True, 96, "fp32"), (256, 4, False, 96, "fp32"),
           (256, 4, True, 96, "fp32"), (128, 2, False, 160, "fp32"), (128, 2, True, 160, "fp32"),
           # bf16: rlrun's trainer.precision=bf16 (bf16 weights, fp32 masters) against TRL's bf16=True
           (128, 2, False, 96, "bf16"), (256, 4, False, 96, "bf16")]


def config_name(hidden: int, layers: int, kl: bool, cap: int = 96, precision: str = "fp32") -> str:
    """The file stem shared with bench_trl.py's outputs: ``h128_l2`` / ``h128_l2_kl`` / ``h128_l2_cap160``
    / ``h128_l2_bf16``."""
    return (f"h{hidden}_l{layers}" + ("_kl" if kl else "") + ("" if cap == 96 else f"_cap{cap}")
            + ("" if precision == "fp32" else f"_{precision}"))


def model_overrides(hidden: int, layers: int) -> list[str]:
    """The warm-started tiny model at its own size, else bench_trl.py's random init of that size."""
    if (hidden, layers) == (128, 2):
        return []
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_trl_inputs

    workdir = Path(tempfile.mkdtemp(prefix="rlrun-bench-model-"))
    args = argparse.Namespace(hidden=hidden, layers=layers, seed=0, model_path=None, tokenizer_path=None,
                              weights="random")
    spec, _, _ = bench_trl_inputs.resolve_model(args, workdir)
    return ["model._target_=rlrun.engines.model.ModelSpec", f"+model.path={spec.path}",
            f"+model.tokenizer_path={spec.tokenizer_path}"]


class Recorder:
    """Wraps the rollout engine's ``generate`` to count what it computed: prompt positions (prefill)
    and sampled positions (every row until its EOS or budget; finished rows leave the batch)."""

    def __init__(self, rollout) -> None:
        self.generate, self.positions = rollout.generate, []
        rollout.generate = self

    def __call__(self, problems, group_size, budgets, sampling=None):
        out = self.generate(problems, group_size, budgets, sampling)
        prompt = sum(len(p) for p in out.prompt_ids) * group_size
        self.positions.append(prompt + int(out.sampled_tokens_N.sum()))
        return out


def sdpa_cpu_flops() -> dict:
    """FlopCounterMode formulas for the CPU flash-attention kernels (torch counts only the CUDA ones)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: fc.sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *a, **kw: fc.sdpa_backward_flop_count(g, q, k, v),
    }


def stage_flops(run, step: int) -> dict[str, float]:
    """GFLOP of matrix products (linear layers, attention; forward and backward) in each stage of
    one more training step, counted by torch's FlopCounterMode around the rollout's ``generate``
    and the trainer's ``logprobs`` (reference) and ``update``. Elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from rlrun.runtime import loop

    counted: dict[str, float] = {}
    patched = [(run.rollout, "generate", "rollout"), (run.trainer, "logprobs", "ref_logprobs"),
               (run.trainer, "update", "update")]
    originals = []
    for owner, name, stage in patched:
        fn = getattr(owner, name)
        originals.append((owner, name, fn))

        def counting(*args, _fn=fn, _stage=stage, **kwargs):
            with FlopCounterMode(display=False, custom_mapping=sdpa_cpu_flops()) as counter:
                out = _fn(*args, **kwargs)
            counted[_stage] = counted.get(_stage, 0.0) + counter.get_total_flops() / 1e9
            return out

        setattr(owner, name, counting)
    try:
        loop.train_step(run, step)
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    return counted


def matmul_peak_gflops(rows: int, hidden: int, inner: int, repeats: int = 20) -> float:
    """This machine's fp32 matmul rate on the model's widest layer shape (rows x hidden @ hidden x
    inner), best of ``repeats``: the rate the counted FLOPs could at most run at."""
    a, b = torch.randn(rows, hidden), torch.randn(hidden, inner)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * rows * hidden * inner / best / 1e9


def bench_one(hidden: int, layers: int, kl: bool, steps: int, extra: list[str], cap: int = 96,
              precision: str = "fp32") -> dict:
    from hydra import compose, initialize_config_module

    from rlrun.runtime import dist, loop
    from rlrun.wiring.build import build_run

    overrides = [
        f"steps={steps}", "prompts_per_step=8", "group_size=8", f"curriculum.max_new_tokens={cap}",
        "rollout.temperature=1.0", "rollout.top_p=1.0", "logger=jsonl", "eval=none",
        f"checkpoint_every={steps + 1}", f"algo.loss.kl_coef={0.04 if kl else 0.0}",
        f"trainer.precision={precision}", *model_overrides(hidden, layers), *extra,
    ]
    with initialize_config_module(config_module="rlrun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dist.init()
    out_dir = tempfile.mkdtemp(prefix="rlrun-bench-")
    run = build_run(cfg, out_dir)
    recorder = Recorder(run.rollout)
    torch.manual_seed(0)
    per_step = [loop.train_step(run, step) for step in range(steps)]
    gflop = stage_flops(run, steps)
    run.logger.close({})
    timed = per_step[1:] if len(per_step) > 1 else per_step
    med = lambda key: statistics.median(m.get(key, 0.0) for m in timed)  # noqa: E731
    positions = recorder.positions[1:] if len(recorder.positions) > 1 else recorder.positions
    stages = ["rollout", "reward", "ref_logprobs", "update", "sync"]
    problems = run.problems.batch(10_000, 8)
    result = {
        "config": config_name(hidden, layers, kl, cap, precision),
        "settings": {"prompts": 8, "group_size": 8, "max_new_tokens": cap, "temperature": 1.0, "precision": precision,
                     "kl": kl, "steps": steps, "hidden": hidden, "layers": layers, "overrides": extra},
        "model_params": sum(p.numel() for p in run.rollout.model.parameters()),
        "s_per_step_median": med("time/step_s"),
        "s_per_step_all": [round(m["time/step_s"], 4) for m in per_step],
        "stage_s_median": {s: med(f"time/{s}_s") for s in stages},
        "rollout_tokens_per_s": med("throughput/tokens_per_s"),
        "rollout_positions_per_s": statistics.median(
            p / m["time/rollout_s"] for p, m in zip(positions, timed)),
        "plain_generate_tokens_per_s": plain_generate_tokens_per_s(run, problems, 8, cap),
        "mean_completion_tokens": med("length/mean_tokens"),
        "mean_accuracy": med("acc/train"),
    }
    cfg_m = run.rollout.model.config
    peak = matmul_peak_gflops(64 * (cap + 16), cfg_m.hidden_size, cfg_m.intermediate_size)
    result["profile"] = {"matmul_peak_gflops": peak, "stage_gflop": gflop,
                         "stage_floor_s": {s: gflop[s] / peak for s in gflop}}
    result["rollout_vs_plain_generate"] = result["rollout_tokens_per_s"] / result["plain_generate_tokens_per_s"]
    return with_achieved_rates(result)


def with_achieved_rates(result: dict) -> dict:
    """``profile.stage_gflops_achieved``: each stage's counted GFLOP over its reported median time."""
    gflop, seconds = result["profile"]["stage_gflop"], result["stage_s_median"]
    result["profile"]["stage_gflops_achieved"] = {s: gflop[s] / seconds[s] for s in gflop if seconds.get(s, 0) > 0}
    return result


def with_ratio(result: dict, trl_file: str | None) -> dict:
    if trl_file and os.path.exists(trl_file):
        trl = json.load(open(trl_file))
        result["trl_s_per_step_median"] = trl["s_per_step_median"]
        result["ratio_to_trl"] = result["s_per_step_median"] / trl["s_per_step_median"]
    return result


def trl_once(python: str, hidden: int, layers: int, kl: bool, cap: int, steps: int, precision: str = "fp32") -> dict:
    """One run of scripts/bench_trl.py (TRL's GRPOTrainer on the same setting) in TRL's venv."""
    # without the single-process group rlrun set up here (TRL's accelerate would join its port)
    dist_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars}
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-trl-") as tmp:
        out = os.path.join(tmp, "trl.json")
        cmd = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_trl.py"), "--out", out,
               "--steps", str(steps), "--hidden", str(hidden), "--layers", str(layers),
               "--max-new-tokens", str(cap)]
        cmd += (["--kl"] if kl else []) + (["--bf16"] if precision == "bf16" else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(out) as f:
            return json.load(f)


def side_by_side(python: str, hidden: int, layers: int, kl: bool, cap: int, steps: int, rounds: int,
                 extra: list[str], precision: str = "fp32") -> dict:
    """TRL then rlrun on one setting, ``rounds`` times in a row (the machine's speed drifts by
    10-20 % over minutes, so each ratio compares runs minutes apart at most). Seconds per step and
    stage times are medians over the rounds; ``rounds`` keeps each round's pair."""
    pairs, results = [], []
    for _ in range(rounds):
        trl = trl_once(python, hidden, layers, kl, cap, steps, precision)
        results.append(bench_one(hidden, layers, kl, steps, extra, cap, precision))
        pairs.append({"trl": trl["s_per_step_median"], "rlrun": results[-1]["s_per_step_median"]})
    med = statistics.median
    result = results[-1]
    result["s_per_step_median"] = med(r["s_per_step_median"] for r in results)
    result["stage_s_median"] = {k: med(r["stage_s_median"][k] for r in results) for k in result["stage_s_median"]}
    result["trl_s_per_step_median"] = med(p["trl"] for p in pairs)
    result["ratio_to_trl"] = result["s_per_step_median"] / result["trl_s_per_step_median"]
    result["rounds"] = [{**p, "ratio": p["rlrun"] / p["trl"]} for p in pairs]
    return with_achieved_rates(result)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("RLRUN_THREADS", "2")))
    header = {
        "engine": "rlrun",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "torch_version": torch.__version__,
    }
    if args.all:
        results = []
        for hidden, layers, kl, cap, precision in CONFIGS:
            name = config_name(hidden, layers, kl, cap, precision)
            trl = os.path.join(args.trl_dir, f"trl_{name}.json") if args.trl_dir else None
            if args.trl_python:
                results.append(side_by_side(args.trl_python, hidden, layers, kl, cap, args.steps, args.rounds,
                                            args.overrides, precision))
            else:
                results.append(with_ratio(bench_one(hidden, layers, kl, args.steps, args.overrides, cap, precision),
                                          trl))
            print(json.dumps({k: results[-1].get(k) for k in ("config", "s_per_step_median", "ratio_to_trl")}),
                  flush=True)
        result = {**header, "configs": results}
    else:
        result = {**header, **with_ratio(bench_one(args.hidden, args.layers, args.kl, args.steps,
                                                   args.overrides, args.max_new_tokens, args.precision), args.trl)}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
