"""``rollout=vllm`` on a CUDA GPU (``make test-gpu`` in a venv with the ``vllm`` package; markers
``gpu`` and ``vllm``, skipped without CUDA or vLLM): sleep mode between rollouts. The engine gives
its GPU memory back during the update (measured with ``torch.cuda.mem_get_info``), wakes weights
first, takes the trainer's new weights and samples from them: the self-check after every step
compares its log-probs on the probe batch with the trainer's, so weights left as garbage or stale
after a wake-up stop the run. Not run yet: no GPU was lent to the task that wrote it."""
from __future__ import annotations

import glob
import importlib.util
import json

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.vllm,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (pip install 'rlrun[vllm]')"),
]


def test_sleep_frees_gpu_memory_and_the_woken_engine_samples_the_new_weights():
    from safetensors.torch import load_file

    from rlrun.engines.rollout.vllm import VLLMRollout
    from rlrun.tasks.arith import ArithProblems
    from rlrun.tasks.tiny_model import tiny_model_spec

    engine = VLLMRollout(tiny_model_spec(), max_model_len=512, gpu_memory_utilization=0.2, sleep=True)
    problems = ArithProblems(seed=0).held_out(4)
    torch.manual_seed(0)
    before = engine.generate(problems, 2, [32] * 4)
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep()
    free_asleep = torch.cuda.mem_get_info()[0]
    assert free_asleep - free_awake > 0.1 * torch.cuda.get_device_properties(0).total_memory  # the KV cache at least
    # new weights (all scaled by 0.5) loaded into the sleeping engine: it wakes and samples from them
    state = {}
    for file in glob.glob(f"{tiny_model_spec().path}/*.safetensors"):
        state.update(load_file(file))
    engine.load_weights({name: 0.5 * t for name, t in state.items()})
    assert not engine.asleep
    torch.manual_seed(0)
    after = engine.generate(problems, 2, [32] * 4)
    assert after.completion_ids != before.completion_ids  # not the old weights copied back


def test_a_run_with_sleep_mode_passes_the_self_check_after_every_step(tmp_path):
    from rlrun.runtime import dist, loop
    from rlrun.wiring.build import build_run
    from rlrun.wiring.cli import compose

    dist.init()
    run = build_run(compose(["debug=cpu", "eval=none", "rollout=vllm", "rollout.sleep=true", "steps=3",
                             "rollout.max_model_len=512", "rollout.gpu_memory_utilization=0.2"]), str(tmp_path))
    loop.train(run)  # the self-check (probe log-probs against the trainer's) runs after each step
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(m["rollout/logprob_gap_max"] < 1e-3 for m in lines if "rollout/logprob_gap_max" in m)
