"""Rollout speed of ``rollout=vllm`` against ``rollout=hf``, side by side in one process (``make bench-vllm``,
run in .venv-vllm, which has both engines).

The work: 8 prompts x 8 completions at temperature 1.0, every completion capped at CAP new tokens, CAP
256 and 1024, on two models built in place (no downloads):

* ``tiny``: the embedded tiny model (hidden 128, 2 layers, 0.5M parameters, warm-started on the
  arithmetic task: its completions end at EOS after a few dozen tokens; its context is 512 positions,
  so its caps are cut to what fits after the prompt);
* ``qwen2-25m``: a Qwen2-shaped model of 24.9M parameters (hidden 512, 3 layers, 8 heads, 2 KV heads,
  MLP 1408, a 32,000-token vocabulary, tied embeddings), randomly initialised, with a word-level
  tokenizer of the same size: its completions run to the cap.

For each model and cap, each engine samples the same batch ROUNDS times after one warm-up call; reported
are the median seconds per rollout and the sampled tokens per second (every completion token, EOS
included). The engines alternate (HF, vLLM, HF, vLLM, ...) so that both see the same machine state.

    python scripts/bench_vllm.py [--rounds 3] [--out outputs/bench/vllm.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

GROUP, PROMPTS, CAPS = 8, 8, (256, 1024)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", default="tiny,qwen2-25m")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args()


def build_25m(directory: Path):
    """The randomly initialised 24.9M-parameter Qwen2 and its 32,000-token word-level tokenizer."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from rlrun.engines.model import ModelSpec

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = list(string.printable[:95]) + ["\n"]
    words = [f"<w{i}>" for i in range(32000 - len(specials) - len(chars))]
    vocab = {tok: i for i, tok in enumerate(specials + chars + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    tokenizer.save_pretrained(str(directory / "tokenizer"))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=512, num_hidden_layers=3, num_attention_heads=8,
                         num_key_value_heads=2, intermediate_size=1408, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(str(directory / "model"))
    params = sum(p.numel() for p in model.parameters())
    return ModelSpec(path=str(directory / "model"), tokenizer_path=str(directory / "tokenizer")), params, 2048


def model_for(name: str, workdir: Path):
    if name == "tiny":
        from rlrun.engines.model import load_model
        from rlrun.tasks.tiny_model import tiny_model_spec

        spec = tiny_model_spec()
        return spec, sum(p.numel() for p in load_model(spec).parameters()), 512
    if name == "qwen2-25m":
        return build_25m(workdir)
    raise SystemExit(f"bench_vllm.py: unknown model {name!r}; valid: tiny, qwen2-25m")


def timed(engine, problems, cap: int, rounds: int) -> dict:
    engine.generate(problems, GROUP, [cap] * len(problems))  # warm-up (vLLM compiles, caches fill)
    seconds, tokens = [], []
    for r in range(rounds):
        torch.manual_seed(r)
        began = time.perf_counter()
        batch = engine.generate(problems, GROUP, [cap] * len(problems))
        seconds.append(time.perf_counter() - began)
        tokens.append(sum(len(ids) for ids in batch.completion_ids))
    median = statistics.median(seconds)
    return {"s_per_rollout": round(median, 3), "tokens": int(statistics.median(tokens)),
            "tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens, seconds)), 1),
            "rounds_s": [round(s, 3) for s in seconds]}


def main() -> None:
    args = parse_args()
    names = args.models.split(",")
    if len(names) > 1:  # one process per model: a vLLM engine keeps its KV cache until its process ends
        import subprocess

        result: dict = {}
        for name in names:  # each writes its JSON to a file: vLLM logs to stdout
            part = Path(tempfile.mkdtemp(prefix="rlrun-bench-vllm-")) / "part.json"
            subprocess.run([sys.executable, __file__, "--models", name, "--rounds", str(args.rounds),
                            "--out", str(part)], stdout=sys.stderr, check=True)
            one = json.loads(part.read_text())
            result = {**one, "models": {**result.get("models", {}), **one["models"]}}
        write(result, args.out)
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from rlrun.engines.rollout.hf import HFRollout
    from rlrun.engines.rollout.vllm import VLLMRollout
    from rlrun.tasks.arith import ArithProblems

    problems = ArithProblems(seed=0).held_out(PROMPTS)
    workdir = Path(tempfile.mkdtemp(prefix="rlrun-bench-vllm-"))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
              "work": f"{PROMPTS} prompts x {GROUP} completions, temperature 1.0", "models": {}}
    for name in names:
        spec, params, context = model_for(name, workdir)
        hf = HFRollout(spec)
        vllm = VLLMRollout(spec, max_model_len=context)
        result["vllm"] = vllm.version
        prompt_len = max(len(ids) for ids in hf.encode_prompts(problems))
        rows = {}
        for cap in CAPS:
            fits = min(cap, context - prompt_len)
            print(f"bench_vllm: {name} ({params / 1e6:.1f}M parameters), cap {cap} ({fits} fits)", file=sys.stderr,
                  flush=True)
            got_hf = timed(hf, problems, fits, args.rounds)
            got_vllm = timed(vllm, problems, fits, args.rounds)
            rows[f"cap{cap}"] = {"cap_used": fits, "hf": got_hf, "vllm": got_vllm,
                                 "vllm_speedup": round(got_hf["s_per_rollout"] / got_vllm["s_per_rollout"], 2)}
        result["models"][name] = {"parameters": params, "rows": rows}
    write(result, args.out)


def write(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
