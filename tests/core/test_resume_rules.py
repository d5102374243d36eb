"""The rules of rlrun.wiring.resume_config on composed configs (no model, no run): which keys a
resume restores, takes from the command line, or refuses."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.wiring.resume_config import named_keys, record, restored


@pytest.fixture
def saved(tmp_path):
    """A checkpoint dir whose run was `rlrun debug=cpu group_size=2 steps=4 logger=jsonl`."""
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    torch.save({"step": 2, "pieces": {}, "extra": {}}, ckpt / "state.pt")  # 2 steps done
    (ckpt / "config.json").write_text(json.dumps(record(compose(["debug=cpu", "group_size=2", "steps=4"]))))
    return ckpt


def resume(saved, tmp_path, *overrides: str):
    out = tmp_path / "out"
    cfg = restored(compose(list(overrides)), str(saved), list(overrides), compose([]), str(out))
    return cfg, out


def test_named_keys_leave_out_hydras_own():
    assert named_keys(["steps=3", "+a.b=1", "~c", "algo=drpo", "hydra.run.dir=x", "hydra/launcher=slurm",
                       "model/x@y=z"]) == ["steps", "a.b", "c", "algo", "model.x"]


def test_what_the_command_line_does_not_name_is_restored(saved, tmp_path):
    cfg, out = resume(saved, tmp_path, f"resume={saved}", "steps=6", "eval.every=3")
    assert (cfg.group_size, cfg.prompts_per_step, cfg.steps, cfg.eval.every) == (2, 2, 6, 3)
    assert cfg.checkpoint_every == 6  # debug=cpu's ${steps}, still an interpolation
    assert cfg.eval.problems == 8  # debug=cpu's, not the default 256
    assert cfg.logger._target_ == "rlrun.loggers.jsonl.JsonlLogger"  # not the default W&B
    entry = json.loads((out / "resumes.jsonl").read_text())
    assert entry["changed"] == {"steps": [4, 6], "eval.every": [0, 3], "resume": [None, str(saved)]}
    assert {"group_size", "prompts_per_step", "eval.problems", "logger._target_"} <= set(entry["restored"])
    assert entry["forced"] == []


def test_a_changed_group_size_is_refused_with_both_values(saved, tmp_path):
    with pytest.raises(ConfigError, match=r"group_size \(2 in the run, 8 given\)"):
        resume(saved, tmp_path, f"resume={saved}", "group_size=8")
    assert not (tmp_path / "out").exists()


def test_a_group_option_is_refused_as_one_override(saved, tmp_path):
    with pytest.raises(ConfigError, match=r"would change the experiment: algo=drpo changes \d+ keys, e\.g\. "):
        resume(saved, tmp_path, f"resume={saved}", "algo=drpo")


def test_what_a_global_preset_sets_counts_as_given(saved, tmp_path):
    # debug=cpu is a _global_ preset: the command line names no key, yet the group_size=4 it sets
    # differs from the defaults, so it is a value the user asked for, and the run had 2
    with pytest.raises(ConfigError, match=r"would change the experiment: group_size \(2 in the run, 4 given\);"):
        resume(saved, tmp_path, f"resume={saved}", "debug=cpu")
    cfg, _ = resume(saved, tmp_path, f"resume={saved}", "debug=cpu", "group_size=2")  # the same command
    assert (cfg.group_size, cfg.trainer.micro_batch_size) == (2, 4)


def test_allow_changes_takes_the_change(saved, tmp_path):
    cfg, out = resume(saved, tmp_path, f"resume={saved}", "group_size=8", "resume_allow_changes=true")
    assert cfg.group_size == 8 and cfg.prompts_per_step == 2
    entry = json.loads((out / "resumes.jsonl").read_text())
    assert entry["forced"] == ["group_size"] and entry["changed"]["group_size"] == [2, 8]
    assert OmegaConf.select(cfg, "resume_allow_changes") is True
