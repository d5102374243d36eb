"""The inputs of ``scripts/bench_trl.py`` (TRL's ``GRPOTrainer`` on the same work as
``scripts/bench.py``): the model (the warm-started tiny model, a given directory or a random init of
its family), the checked char tokenizer, and the task (step t's prompts, the correctness reward).

Imported by ``scripts/bench_trl.py`` (in TRL's venv, ``.venv-trl``) and by ``scripts/bench.py``
(``resolve_model``, for the same random init of a non-tiny size); both find it next to them (Python
puts the script's directory on ``sys.path``). rlrun is imported inside the functions, from this
checkout whether installed or not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # rlrun from this checkout, installed or not

PROMPTS = 8  # prompts per step (bench_trl.py: GROUP completions each)
TINY_SHAPE = {"hidden_size": 128, "num_hidden_layers": 2}


# ---------------------------------------------------------------- model and tokenizer


def _random_model_dir(args: argparse.Namespace, workdir: Path) -> Path:
    """A randomly initialised Qwen2 of the tiny model's family at the requested size, saved (TRL
    re-loads the reference model for --kl from the policy's ``name_or_path``, so it must live in a
    directory)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rlrun.tasks.tiny_model import tiny_config
    from rlrun.tasks.tokenizer import CHARS, SPECIALS

    config = tiny_config(len(SPECIALS) + len(CHARS)).to_dict()
    config.update(hidden_size=args.hidden, num_hidden_layers=args.layers, layer_types=None)
    config = Qwen2Config(**config)  # layer_types re-derived for the new layer count
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    path = workdir / f"random-h{args.hidden}-l{args.layers}"
    model.save_pretrained(str(path))
    return path


def _warm_tiny():
    """``(ModelSpec, build_info)`` of the warm-started tiny model, or exit. Never trains it:
    ``tiny_model_spec()`` would run a ~25-minute SFT when neither the package nor the cache holds
    the weights, so this only calls it when it will copy or reuse them."""
    import json as _json

    from rlrun.tasks import tiny_model as tm

    cached, shipped = tm.tiny_model_dir(), tm.SHIPPED_DIR
    if not (tm.is_complete(cached) or tm.is_complete(shipped)):
        raise SystemExit(f"bench_trl: no warm-started tiny model in {shipped} or {cached}; build it with "
                         "`make tiny-model` (or pass --weights random for a development run)")
    spec = tm.tiny_model_spec()
    info_file = Path(spec.path).parent / "build_info.json"
    info = _json.loads(info_file.read_text()) if info_file.is_file() else {}
    summary = {"name": info.get("name"), "sft_steps": (info.get("run") or {}).get("steps"),
               "heldout_accuracy": (info.get("eval") or {}).get("accuracy"),
               "heldout_mean_tokens": (info.get("eval") or {}).get("mean_tokens")}
    if "provisional" in info:
        summary["provisional"] = info["provisional"]
    return spec, summary


def resolve_model(args: argparse.Namespace, workdir: Path):
    """``(ModelSpec, weights label, build info)``: the warm-started tiny model at its own size, a
    given directory, or a random init of the same family."""
    from rlrun.engines.model import ModelSpec
    from rlrun.tasks.tokenizer import save_tokenizer

    if args.model_path:
        tokenizer_path = args.tokenizer_path or str(save_tokenizer(workdir / "tokenizer"))
        return ModelSpec(args.model_path, tokenizer_path), f"from {args.model_path}", None
    if args.weights == "warm" or (args.weights == "auto" and _is_tiny(args)):
        if not _is_tiny(args):
            raise SystemExit("bench_trl: no warm-started model of this size; pass --model-path or --weights random")
        spec, info = _warm_tiny()
        return spec, "warm-started", info
    tokenizer_path = args.tokenizer_path or str(save_tokenizer(workdir / "tokenizer"))
    return ModelSpec(str(_random_model_dir(args, workdir)), tokenizer_path), "random", None


def _is_tiny(args: argparse.Namespace) -> bool:
    return (args.hidden, args.layers) == (TINY_SHAPE["hidden_size"], TINY_SHAPE["num_hidden_layers"])


def load_tokenizer_checked(spec):
    """rlrun's own loader, then a round trip through the exact calls TRL makes (MEASURED.md, Traps:
    a wrongly resolved tokenizer silently drops spaces and newlines)."""
    from rlrun.engines.model import load_tokenizer

    tok = load_tokenizer(spec)
    tok.padding_side = "left"  # TRL left-pads prompts itself; keep the tokenizer consistent with it
    text = "Add 347+708.\n<think>\n7+8+0=15, write 5\n</think>\n\\boxed{1055}"
    ids = tok(text=[text])["input_ids"][0]  # GRPOTrainer._tokenize_prompts: processing_class(text=...)
    back = tok.batch_decode([ids], skip_special_tokens=True)[0]
    if back != text or len(ids) != len(text) + 1 or ids[0] != tok.bos_token_id:
        raise SystemExit(f"bench_trl: tokenizer round trip failed: {text!r} -> {back!r} ({len(ids)} ids)")
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise SystemExit("bench_trl: the char tokenizer should have its own <pad> token")
    return tok


# ---------------------------------------------------------------- task


def build_dataset(steps: int, seed: int):
    """Step t's prompts are rlrun's ``ArithProblems(seed, 3).batch(t, 8)``; TRL reads them in order."""
    from datasets import Dataset

    from rlrun.tasks.arith import ArithProblems

    problems = ArithProblems(seed=seed, digits=3)
    rows = [{"prompt": p.prompt, "answer": p.answer} for t in range(steps) for p in problems.batch(t, PROMPTS)]
    return Dataset.from_list(rows)


class CorrectReward:
    """1.0 when the last ``\\boxed{}`` equals the gold integer; also records completion lengths
    (tokens before EOS, EOS not counted) and rewards per call, i.e. per step."""

    __name__ = "correct"  # TRL logs rewards/<__name__>/mean

    def __init__(self, eos_ids: list[int]) -> None:
        self.eos_ids = set(eos_ids)
        self.lengths: list[list[int]] = []
        self.rewards: list[list[float]] = []

    def __call__(self, prompts, completions, completion_ids, answer, **_) -> list[float]:
        from rlrun.tasks.verify import extract_boxed, parse_integer

        rewards = [
            float(parse_integer(gold) is not None and parse_integer(extract_boxed(text)) == parse_integer(gold))
            for text, gold in zip(completions, answer)
        ]
        self.lengths.append([len(ids) - (1 if ids and ids[-1] in self.eos_ids else 0) for ids in completion_ids])
        self.rewards.append(rewards)
        return rewards
