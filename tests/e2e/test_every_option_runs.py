"""Every engine option (model, rollout, trainer, logger) and every experiment preset
runs 2 steps
under ``debug=cpu``, in process (DESIGN.md section 6, rule 6). Options are found by scanning conf/,
so a new yaml file is run without touching this file; the cheap groups are instantiated by
tests/configs/test_config_tree.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import debug_overrides

from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.build import build_run

CONF = Path(__file__).resolve().parents[2] / "conf"
# the first run of trainer=zero3_offload on a machine compiles DeepSpeed's CPU Adam (~70 s): the slow
# tier, beside the demo's precision check on one worker while the other rebuilds the tiny model
SLOW = {("trainer", "zero3_offload"): [pytest.mark.slow, pytest.mark.xdist_group("beside_the_rebuild")]}


def real_model_presets() -> dict[str, str]:
    """The presets of real (hub) models, one per chat format, by name: they differ from each other
    only in values (the hub id, the system turn, the caps), which tests/configs/test_model_presets.py
    checks for every one; a run swaps the hub model for the tiny one and keeps the format."""
    from omegaconf import OmegaConf

    first: dict[str, str] = {}
    for path in sorted((CONF / "model").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "chat_format" in node and "/" in str(node.path):
            first.setdefault(str(node.chat_format), path.stem)
    return {name: fmt for fmt, name in first.items()}


REAL = real_model_presets()


def options():
    for group in ("model", "rollout", "trainer", "logger", "experiment"):  # algo: test_combinations.py
        for path in sorted((CONF / group).rglob("*.yaml")):
            option = str(path.relative_to(CONF / group).with_suffix(""))
            if group == "experiment" and option.startswith("repro/"):
                continue  # tests/e2e/test_repro.py runs every arm, with its own repro.debug overrides
            if (group, option) == ("rollout", "vllm"):
                continue  # needs .venv-vllm: `rlrun debug=cpu rollout=vllm` runs in tests/engines/test_rollout_vllm.py
            if group == "model" and option not in ("hf", "tiny", "tiny_compare") and option not in REAL:
                continue  # a real model preset whose chat format another one runs (REAL)
            yield pytest.param(group, option, marks=SLOW.get((group, option), []), id=f"{group}={option}")


@pytest.mark.parametrize("group,option", list(options()))
def test_option_runs_two_debug_steps(group, option, tmp_path):
    dist.init()
    extra = debug_overrides(option) if group == "experiment" else []
    if group == "model" and (option == "hf" or option in REAL):  # the tiny model's dir, loaded the generic way
        from rlrun.tasks.tiny_model import tiny_model_spec

        spec = tiny_model_spec()
        extra = [f"model.path={spec.path}", f"model.tokenizer_path={spec.tokenizer_path}"]
    overrides = [f"{group}={option}", "debug=cpu", "eval=none", *extra]
    summary = loop.train(build_run(compose(overrides), str(tmp_path)))
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [line["step"] for line in lines] == [1, 2]
    assert summary["checkpoint"] == str(tmp_path / "checkpoints" / "step_000002")
    assert (tmp_path / "checkpoints" / "step_000002" / "model" / "model.safetensors").is_file()
