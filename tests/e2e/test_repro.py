"""The reproduction presets (conf/experiment/repro/, ``rlrun-repro``, ``make repro-<paper>[-small]``):
every reproduction prints its hardware and composed configs without running (``--dry-run``), every
arm runs 2 steps under ``debug=cpu`` with the tiny model (the preset's rewards, curricula, filters and
evaluation), the report puts our numbers beside the paper's (hand-computed below), and
``make repro-drpo-small debug=cpu`` runs end to end into ``repro.md`` and ``repro.png``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import child_env

from rlrun.analysis import repro

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(p.name for p in repro.repro_dir().iterdir() if p.is_dir())
# every arm of every preset (the fast tier: two workers share them)
ARMS = [pytest.param(name, arm, id=f"{name}/{arm}") for name in NAMES for arm in repro.arms(name)]


def test_the_reproductions_are_found():
    assert {"drpo", "drpo_small"} <= set(NAMES)
    assert repro.arms("drpo_small") == ["drpo", "grpo_lp"]
    with pytest.raises(ValueError, match=r"^no reproduction named 'nope'; valid: "):
        repro.arms("nope")


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_prints_the_hardware_and_every_arms_config(name, capsys):
    assert repro.main([name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ") and "\nhardware: " in out and "GPU-hours" in out
    for arm in repro.arms(name):
        assert f"## arm {arm}: rlrun experiment=repro/{name}/{arm}" in out
    assert "(dry run: nothing ran" in out


def test_a_bad_override_is_one_line_before_anything_runs(capsys, tmp_path):
    assert repro.main(["drpo_small", "--out", str(tmp_path / "out"), "steps=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrun-repro: error: steps=-1") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,arm", ARMS)
def test_every_arm_runs_two_debug_steps(name, arm, tmp_path):
    run_two_debug_steps(name, arm, tmp_path)


def run_two_debug_steps(name: str, arm: str, tmp_path: Path) -> None:
    """The arm under debug=cpu, in this process (on CUDA where there is one: tests/engines/test_gpu_scale.py)."""
    from rlrun.runtime import dist, loop
    from rlrun.wiring.build import build_run
    from rlrun.wiring.cli import compose

    dist.init()
    cfg = compose(repro.overrides_for(name, arm, ["debug=cpu"]))
    assert cfg.repro.arm == arm
    loop.train(build_run(cfg, str(tmp_path)))
    lines = repro.read_lines(tmp_path)
    benches = ["heldout", *cfg.eval.benchmarks]
    for step in (0, 2):
        assert all(f"eval/{b}/acc" in lines[step] for b in benches), sorted(lines[step])
    assert max(lines[2][f"eval/{b}/mean_tokens"] for b in benches) <= repro.DEBUG_CAP


def fake_arm(job: Path, arm: str, start: tuple[float, float], end: tuple[float, float], numbers: bool = True) -> None:
    (job / ".hydra").mkdir(parents=True)
    config = {"steps": 2, "data": {"source": {"eval_path": "builtin:math500"}},
              "repro": {"arm": arm, "paper": "P", "question": "Q?",
                        "hardware": {"gpus": 1, "gpu": "H100", "nodes": 1, "gpu_hours": 1, "note": "n"},
                        "paper_numbers": [{"arm": "m", "benchmark": "gsm8k_test", "metric": "acc_change",
                                           "value": -1.1, "source": "abstract"},
                                          {"arm": "m", "benchmark": "math500", "metric": "acc", "value": 80,
                                           "source": "Table 1"},
                                          {"arm": "m", "benchmark": "math500", "metric": "mean_tokens",
                                           "value": 2000, "source": "Table 1"}]}}
    if not numbers:
        config["repro"]["paper_numbers"] = []
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"step": 0, "eval/heldout/acc": start[0], "eval/heldout/mean_tokens": start[1],
              "eval/gsm8k_test/acc": 0.5, "eval/gsm8k_test/mean_tokens": 1000.0},
             {"step": 1, "loss": 0.1},
             {"step": 2, "loss": 0.2},
             {"step": 2, "eval/heldout/acc": end[0], "eval/heldout/mean_tokens": end[1],
              "eval/gsm8k_test/acc": 0.489, "eval/gsm8k_test/mean_tokens": 230.0}]
    (job / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_report_puts_our_numbers_beside_the_papers(tmp_path):
    fake_arm(tmp_path / "0", "m", (0.8, 4000.0), (0.75, 1000.0))
    fake_arm(tmp_path / "1", "base", (0.8, 4000.0), (0.7, 3000.0))
    arm, table = repro.ours(tmp_path / "0")
    assert arm == "m"
    # math500 (the held-out split): 75 %, 1000 tokens; change -5 points and 100 * (1000/4000 - 1) = -75 %
    assert table["math500"] == pytest.approx({"acc": 75.0, "mean_tokens": 1000.0, "acc_change": -5.0,
                                              "length_change_pct": -75.0, "start_acc": 80.0, "start_tokens": 4000.0})
    # gsm8k: 48.9 - 50 = -1.1 points; 100 * (230/1000 - 1) = -77 %
    assert table["gsm8k_test"]["acc_change"] == pytest.approx(-1.1)
    assert table["gsm8k_test"]["length_change_pct"] == pytest.approx(-77.0)
    text = repro.report("x_small", tmp_path, seconds=12.0).read_text()
    assert "| m | gsm8k_test | acc_change | -1.1 | -1.1 | abstract |" in text
    assert "| m | math500 | acc | 75.0 | 80 | Table 1 |" in text
    assert "| base | math500 | 80.0 → 70.0 | 4000 → 3000 |" in text
    assert (tmp_path / "repro.png").stat().st_size > 10_000


def test_a_paper_without_numbers_says_so_in_the_report(tmp_path):
    fake_arm(tmp_path / "0", "m", (0.8, 4000.0), (0.75, 1000.0), numbers=False)
    text = repro.report("x_small", tmp_path).read_text()
    assert "The paper prints no number this setting reproduces" in text and "| m | math500 | 80.0 → 75.0 |" in text


def test_further_caps_and_forced_budgets_are_rows_and_a_paper_number_can_name_one(tmp_path):
    fake_arm(tmp_path / "0", "m", (0.8, 4000.0), (0.75, 1000.0))
    config = yaml.safe_load((tmp_path / "0" / ".hydra" / "config.yaml").read_text())
    config["repro"]["paper_numbers"][1]["at"] = "budget_16384"  # math500 acc 80, at the 16k cap
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with (tmp_path / "0" / "metrics.jsonl").open("a") as f:  # the start's and end's further points
        f.write(json.dumps({"step": 0, "eval/heldout/budget_16384/acc": 0.84, "eval/heldout/budget_16384/mean_tokens": 5000.0,
                            "eval/heldout/force_512/acc": 0.30, "eval/heldout/force_512/mean_tokens": 600.0}) + "\n")
        f.write(json.dumps({"step": 2, "eval/heldout/budget_16384/acc": 0.78, "eval/heldout/budget_16384/mean_tokens": 1200.0,
                            "eval/heldout/force_512/acc": 0.45, "eval/heldout/force_512/mean_tokens": 580.0}) + "\n")
    _, table = repro.ours(tmp_path / "0")
    assert list(table) == ["gsm8k_test", "math500", "math500 @ budget_16384", "math500 @ force_512"]
    # 16k: 78 %, 1200 tokens; -6 points; 100 * (1200/5000 - 1) = -76 %
    assert table["math500 @ budget_16384"] == pytest.approx({"acc": 78.0, "mean_tokens": 1200.0, "acc_change": -6.0,
                                                             "length_change_pct": -76.0, "start_acc": 84.0,
                                                             "start_tokens": 5000.0})
    assert table["math500 @ force_512"]["acc_change"] == pytest.approx(15.0)  # 45 - 30
    text = repro.report("x_small", tmp_path).read_text()
    assert "| m | math500 @ budget_16384 | acc | 78.0 | 80 | Table 1 |" in text  # not the run's own cap's 75.0
    assert "| m | math500 @ force_512 | 30.0 → 45.0 | 600 → 580 |" in text


def test_a_paper_number_at_a_point_the_arms_do_not_evaluate_is_one_line(capsys, tmp_path):
    # drpo_small's numbers sit at budget_16384; with eval.budgets emptied that point is not evaluated
    assert repro.main(["drpo_small", "--out", str(tmp_path / "out"), "eval.budgets=[]"]) == 2
    err = capsys.readouterr().err
    assert err == ("rlrun-repro: error: repro.paper_numbers: at='budget_16384' (drpo, gsm8k_test) is not evaluated; "
                   "valid: none (eval.budgets and eval.force_budgets are empty)\n")
    assert not (tmp_path / "out").exists()


def test_make_repro_small_with_debug_cpu_runs_every_arm_into_repro_md(tmp_path):
    out = tmp_path / "sweep"
    done = subprocess.run(["make", "--no-print-directory", "repro-drpo-small", "debug=cpu", f"REPRO_ARGS=--out {out}"],
                          cwd=ROOT, capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = (out / "repro.md").read_text()
    assert text.startswith("# Reproduction: DRPO, Decoupled Reward Policy Optimization")
    beside = [line for line in text.splitlines() if line.split(" | ")[1:3] == ["gsm8k_test @ budget_16384", "acc_change"]
              or line.split(" | ")[1:3] == ["gsm8k_test @ budget_16384", "length_change_pct"]]
    assert len(beside) == 4  # the paper's 4 numbers (2 per arm), ours at 7.2's 16k cap beside them
    measured = [line for line in text.splitlines() if line.startswith(("| drpo | gsm8k_test", "| grpo_lp | gsm8k_test"))
                and "→" in line]
    assert len(measured) == 4  # each arm at its training cap and at 16384
    assert "| not measured |" not in text  # every paper number has ours beside it
    assert (out / "repro.png").is_file()
