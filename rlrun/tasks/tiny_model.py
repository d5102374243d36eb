"""The tiny warm-started policy: a 0.5M-parameter Qwen2 that adds 3-digit numbers in a chain of
thought, padded with redundant re-checks that length-aware RL can remove.

``tiny_model_spec()`` (``conf/model/tiny.yaml``) returns a :class:`ModelSpec` for
``$RLRUN_CACHE/tiny-arith-v1`` (default ``$XDG_CACHE_HOME/rlrun``, else ``~/.cache/rlrun``). On
first use it copies the weights shipped in this package (``rlrun/tasks/tiny_model/``) there, or, if
the package has none, trains them (a few minutes of CPU). The model is then loaded like any hub
model, by ``rlrun.engines.model``. Layout: ``<dir>/model/`` (config + safetensors),
``<dir>/tokenizer/`` (kept apart, see :mod:`rlrun.tasks.tokenizer`), ``<dir>/build_info.json``.

Rebuild and re-ship the weights (prints held-out accuracy at T=1.0 and mean response tokens)::

    python -m rlrun.tasks.tiny_model build --ship            # 1500 SFT steps, seed 0 (~10 min
                                                             # alone on 2 cores, ~24 min shared)
    python -m rlrun.tasks.tiny_model build --seconds 420     # or a wall-clock budget
    python -m rlrun.tasks.tiny_model evaluate                # the cached / shipped model

The *compare* variant (``model=tiny_compare``, ``$RLRUN_CACHE/tiny-arith-compare-v1``), the common
warm start of ``make compare-embedded``, is the tiny model after 800 more SFT steps on a mix with two
additions:

- half the prompts end with L1's length instruction ("Think for N tokens." / "Think for maximum N
  tokens.", N ~ U{100..200}) whose N has nothing to do with the trace. The model reads the sentence
  (its accuracy does not drop when a prompt carries one) but has not learnt to obey it: the
  position of an L1 paper's base model, which understands the words but ignores the budget, so that
  LCPO has something to learn. The tiny model, which never saw it, gets every such prompt wrong.
- 20 % of the traces are terse (:func:`rlrun.tasks.arith.terse_trace`: ``x+y=tt`` per column with
  the carries left to the answer line, ~58 tokens instead of ~118), which the model gets right less
  often: a shortcut that buys length with accuracy, the trade-off a naive length penalty falls into
  and the length-aware methods claim to avoid. Without it the task has no trade-off to show: every
  length method ends at the re-check-free ~117 tokens with no accuracy lost (README, "Comparison on
  the built-in task").

::

    python -m rlrun.tasks.tiny_model build --variant compare --ship   # ~6 min alone on 2 cores
    python -m rlrun.tasks.tiny_model evaluate --variant compare
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rlrun.engines.model import ModelSpec, load_tokenizer
from rlrun.tasks.arith import ArithProblems, TraceMix
from rlrun.tasks.sft import SFTConfig, evaluate, instruct, train
from rlrun.tasks.tokenizer import save_tokenizer

CACHE_NAME = "tiny-arith-v1"
SHIPPED_DIR = Path(__file__).with_name("tiny_model")
COMPARE_NAME = "tiny-arith-compare-v1"
COMPARE_SHIPPED_DIR = Path(__file__).with_name("tiny_model_compare")
# continued from the shipped tiny model: lower peak lr, half the prompts instructed, terse traces
COMPARE_SFT = SFTConfig(steps=800, lr=1e-3, warmup_frac=0.05, instructed_frac=0.5,
                        mix=TraceMix(terse_frac=0.2))
EVAL_PROBLEMS = 256


def tiny_config(vocab_size: int):
    """hidden 128, 2 layers, 4 heads (2 KV heads), MLP 512, tied embeddings: 505K parameters."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=512, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def cache_root() -> Path:
    if os.environ.get("RLRUN_CACHE"):
        return Path(os.environ["RLRUN_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "rlrun"


def tiny_model_dir(variant: str = "base") -> Path:
    return cache_root() / (COMPARE_NAME if variant == "compare" else CACHE_NAME)


def is_complete(directory: Path) -> bool:
    """True when ``directory`` holds a loadable model and tokenizer."""
    needed = ["model/config.json", "model/model.safetensors", "tokenizer/tokenizer.json"]
    return all((directory / name).is_file() for name in needed)


def _install(fill, target: Path) -> None:
    """Fill a temporary sibling of ``target`` with ``fill(path)``, then rename it into place, so
    that concurrent processes (ranks) never see a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging)
        if target.exists() and not is_complete(target):
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:  # another process installed it first
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_tree(source: Path):
    return lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True)


# after "</think>" the tiny model writes "\n\\boxed{...}" (rlrun.tasks.arith): a forced answer starts there
TINY_ANSWER_CUE = "\n"


def tiny_model_spec(dtype: str = "float32") -> ModelSpec:
    """The tiny model's :class:`ModelSpec`, installing it into the cache on first use."""
    target = tiny_model_dir()
    if not is_complete(target):
        if is_complete(SHIPPED_DIR):
            _install(_copy_tree(SHIPPED_DIR), target)
        else:
            print(f"rlrun: no shipped tiny model, training one into {target}", file=sys.stderr)
            _install(lambda staging: build(staging, SFTConfig()), target)
    return ModelSpec(path=str(target / "model"), tokenizer_path=str(target / "tokenizer"),
                     dtype=dtype, answer_cue=TINY_ANSWER_CUE)


def tiny_compare_spec(dtype: str = "float32") -> ModelSpec:
    """The compare variant's :class:`ModelSpec` (module docstring), installed on first use from
    the package or, if the package has none, built from the tiny model (~6 min alone)."""
    target = tiny_model_dir("compare")
    if not is_complete(target):
        if is_complete(COMPARE_SHIPPED_DIR):
            _install(_copy_tree(COMPARE_SHIPPED_DIR), target)
        else:
            print(f"rlrun: no shipped compare tiny model, training one into {target}", file=sys.stderr)
            _install(lambda staging: build_compare(staging, COMPARE_SFT), target)
    return ModelSpec(path=str(target / "model"), tokenizer_path=str(target / "tokenizer"),
                     dtype=dtype, answer_cue=TINY_ANSWER_CUE)


def evaluate_dir(directory: Path, digits: int = 3, n: int = EVAL_PROBLEMS, seed: int = 0,
                 temperature: float = 1.0, instructed: SFTConfig | None = None) -> dict[str, float]:
    """Held-out metrics of the model in ``directory``, loaded the way rlrun loads any model; with
    ``instructed``, every prompt carries that config's length instruction."""
    from rlrun.engines.rollout.hf import HFRollout

    spec = ModelSpec(path=str(directory / "model"), tokenizer_path=str(directory / "tokenizer"))
    rollout = HFRollout(spec, temperature=temperature)
    problems = ArithProblems(seed, digits).held_out(n)
    if instructed is not None:
        problems = instruct(problems, instructed)
    return evaluate(rollout, problems, seed=seed)


def build_compare(out: Path, cfg: SFTConfig) -> dict:
    """Continue the tiny model's SFT with ``cfg`` (instructed prompts, terse traces) into ``out``;
    returns the build record with held-out metrics on plain and on instructed prompts."""
    from transformers import Qwen2ForCausalLM

    out = Path(out)
    base = Path(tiny_model_spec().path).parent
    shutil.copytree(base / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    tokenizer = load_tokenizer(ModelSpec(path=str(out / "tokenizer")))
    model = Qwen2ForCausalLM.from_pretrained(str(base / "model"), dtype=torch.float32)
    run = train(model, tokenizer, cfg)
    model.save_pretrained(str(out / "model"))
    settings = {"problems": EVAL_PROBLEMS, "temperature": 1.0, "top_p": 1.0}
    record = {"name": COMPARE_NAME, "from": CACHE_NAME, "sft": asdict(cfg), "run": run,
              "eval": {**settings, **evaluate_dir(out, cfg.digits, seed=cfg.seed)},
              "eval_instructed": {**settings, **evaluate_dir(out, cfg.digits, seed=cfg.seed,
                                                             instructed=cfg)},
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "build_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def build(out: Path, cfg: SFTConfig) -> dict:
    """Train the tiny model with ``cfg`` and save it to ``out``; returns the build record (also
    written to ``out/build_info.json``) with the held-out evaluation at T=1.0."""
    from transformers import Qwen2ForCausalLM

    out = Path(out)
    tokenizer_dir = save_tokenizer(out / "tokenizer")
    tokenizer = load_tokenizer(ModelSpec(path=str(tokenizer_dir)))
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(tiny_config(len(tokenizer)))
    run = train(model, tokenizer, cfg)
    model.save_pretrained(str(out / "model"))
    metrics = evaluate_dir(out, cfg.digits, seed=cfg.seed)
    record = {"name": CACHE_NAME, "sft": asdict(cfg), "run": run,
              "eval": {"problems": EVAL_PROBLEMS, "temperature": 1.0, "top_p": 1.0, **metrics},
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "build_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _report(metrics: dict[str, float]) -> str:
    return (f"held-out accuracy (T=1.0, top_p=1.0): {metrics['accuracy']:.3f}  "
            f"mean response tokens: {metrics['mean_tokens']:.1f}  "
            f"format_ok: {metrics['format_ok']:.3f}  re-check share of tokens: "
            f"{metrics['recheck_token_frac']:.3f}  short answers: {metrics['short_frac']:.3f} "
            f"(accuracy {metrics['short_accuracy']:.2f})  terse: {metrics.get('terse_frac', 0):.3f} "
            f"(accuracy {metrics.get('terse_accuracy', float('nan')):.2f})  "
            f"truncated: {metrics['truncated_frac']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlrun.tasks.tiny_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="train (SFT) the tiny model and evaluate it")
    make.add_argument("--steps", type=int, default=SFTConfig.steps)
    make.add_argument("--seconds", type=float, default=None, help="wall-clock budget instead")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", type=Path, default=None, help=f"default: the cache, {CACHE_NAME}")
    make.add_argument("--ship", action="store_true", help="also copy it into the package")
    check = sub.add_parser("evaluate", help="held-out accuracy and length of a built model")
    check.add_argument("--dir", type=Path, default=None, help="default: the cached model")
    check.add_argument("--n", type=int, default=EVAL_PROBLEMS)
    check.add_argument("--temperature", type=float, default=1.0)
    for command in (make, check):
        command.add_argument("--threads", type=int, default=2)
        command.add_argument("--variant", choices=("base", "compare"), default="base",
                             help="the tiny model or its compare variant (module docstring)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    compare = args.variant == "compare"
    if args.command == "evaluate":
        spec = tiny_compare_spec() if compare else tiny_model_spec()
        directory = args.dir or Path(spec.path).parent
        print(_report(evaluate_dir(directory, n=args.n, temperature=args.temperature)))
        if compare:
            print("instructed prompts: " + _report(evaluate_dir(
                directory, n=args.n, temperature=args.temperature, instructed=COMPARE_SFT)))
        return
    base = COMPARE_SFT if compare else SFTConfig()
    steps = args.steps if args.steps != SFTConfig.steps else base.steps
    cfg = replace(base, steps=steps, seconds=args.seconds, seed=args.seed)
    out = args.out or tiny_model_dir(args.variant)
    record = build_compare(out, cfg) if compare else build(out, cfg)
    record["command"] = "python -m rlrun.tasks.tiny_model " + " ".join(argv or sys.argv[1:])
    (out / "build_info.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.ship:
        shipped = COMPARE_SHIPPED_DIR if compare else SHIPPED_DIR
        shutil.rmtree(shipped, ignore_errors=True)
        shutil.copytree(out, shipped)
    print(f"built {out} in {record['run']['seconds']:.0f} s ({record['run']['steps']} steps)")
    print(_report(record["eval"]))
    if compare:
        print("instructed prompts: " + _report(record["eval_instructed"]))


if __name__ == "__main__":
    main()
