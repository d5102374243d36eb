"""rlrun's speed on the demo settings: seconds per step by stage, rollout tokens/s and peak RSS, as
one JSON object (stdout, and ``--out``). With ``--trl FILE`` (written by ``make bench-trl``) the
JSON also holds the ratio of rlrun's seconds/step to TRL's on the same work.

Settings match scripts/bench_trl.py: 8 prompts x 8 completions, at most 96 new tokens, temperature
1.0, no reference model, the embedded tiny model, one optimizer step per batch. The median of steps
2..N is reported (step 1 pays one-off warm-up costs).

    python scripts/bench.py --steps 11 [--kl] [--trl outputs/bench/trl.json] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--kl", action="store_true", help="with a reference model (k3 KL, beta 0.04)")
    p.add_argument("--trl", help="JSON written by scripts/bench_trl.py, for the speed ratio")
    p.add_argument("--out", help="also write the JSON here")
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


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("RLRUN_THREADS", "2")))
    from hydra import compose, initialize_config_module

    from rlrun import dist, loop
    from rlrun.run import build_run

    overrides = [
        f"steps={args.steps}", "prompts_per_step=8", "group_size=8", "curriculum.max_new_tokens=96",
        "rollout.temperature=1.0", "rollout.top_p=1.0", "logger=jsonl", "eval=none",
        f"checkpoint_every={args.steps + 1}", f"algo.loss.kl_coef={0.04 if args.kl else 0.0}",
        *args.overrides,
    ]
    with initialize_config_module(config_module="rlrun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dist.init()
    out_dir = tempfile.mkdtemp(prefix="rlrun-bench-")
    run = build_run(cfg, out_dir)
    torch.manual_seed(0)
    steps = [loop.train_step(run, step) for step in range(args.steps)]
    timed = steps[1:] if len(steps) > 1 else steps
    med = lambda key: statistics.median(m.get(key, 0.0) for m in timed)  # noqa: E731
    stages = ["rollout", "reward", "ref_logprobs", "update", "sync"]
    problems = run.problems.batch(10_000, 8)
    result = {
        "engine": "rlrun",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "torch_version": torch.__version__,
        "settings": {"prompts": 8, "group_size": 8, "max_new_tokens": 96, "temperature": 1.0,
                     "kl": args.kl, "steps": args.steps, "overrides": args.overrides},
        "model_params": sum(p.numel() for p in run.rollout.model.parameters()),
        "s_per_step_median": med("time/step_s"),
        "s_per_step_all": [round(m["time/step_s"], 4) for m in steps],
        "stage_s_median": {s: med(f"time/{s}_s") for s in stages},
        "rollout_tokens_per_s": med("throughput/tokens_per_s"),
        "plain_generate_tokens_per_s": plain_generate_tokens_per_s(run, problems, 8, 96),
        "mean_completion_tokens": med("length/mean_tokens"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    result["rollout_vs_plain_generate"] = result["rollout_tokens_per_s"] / result["plain_generate_tokens_per_s"]
    if args.trl and os.path.exists(args.trl):
        trl = json.load(open(args.trl))
        result["trl_s_per_step_median"] = trl["s_per_step_median"]
        result["ratio_to_trl"] = result["s_per_step_median"] / trl["s_per_step_median"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
