"""Resume that survives a kill, a half-written checkpoint and a damaged file (rlrun.runtime.checkpoint):
in process on the tiny model (``debug=cpu``), each against the same 4-step straight run; the kill
itself is recreated as the files it leaves (metrics logged past the last checkpoint, a
``step_*.partial`` staging dir). ``test_signals.py`` kills real processes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlrun.runtime import checkpoint, dist, loop
from rlrun.wiring.build import build_run
from rlrun.wiring.cli import compose

COMMON = ["debug=cpu", "eval=none", "steps=4", "checkpoint_every=1"]


def train(out_dir: Path, *extra: str) -> dict:
    dist.init()
    return loop.train(build_run(compose([*COMMON, *extra]), str(out_dir)))


def lines(run_dir: Path) -> list[dict]:
    found = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "memory/"))} for m in found]


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert [m["step"] for m in got] == [m["step"] for m in want]
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    train(out)
    return out


def killed_after(straight: Path, target: Path, step: int, checkpoints: int) -> Path:
    """``straight``'s run dir as a kill after ``step`` logged steps left it, with the first
    ``checkpoints`` step checkpoints complete."""
    shutil.copytree(straight, target)
    for directory in checkpoint.step_dirs(str(target)):
        if int(os.path.basename(directory)[5:]) > checkpoints:
            shutil.rmtree(directory)
    kept = [line for line in open(target / "metrics.jsonl") if json.loads(line)["step"] <= step]
    (target / "metrics.jsonl").write_text("".join(kept) + '{"step": 9, "acc/tr')  # a half-written line
    return target


def test_checkpoints_carry_a_manifest_and_no_staging_dir_remains(straight):
    names = sorted(os.listdir(straight / "checkpoints"))
    assert names == ["latest", "step_000001", "step_000002", "step_000003", "step_000004"]
    manifest = json.load(open(straight / "checkpoints" / "step_000004" / "manifest.json"))
    assert manifest["ranks"] == 1
    assert {"state.pt", "rng_rank0.pt", "model/model.safetensors"} <= set(manifest["files"])
    for directory in checkpoint.step_dirs(str(straight)):
        assert checkpoint.problem(directory) is None


def test_rerunning_with_resume_auto_continues_without_duplicated_or_missing_steps(straight, tmp_path, capsys):
    run = killed_after(straight, tmp_path / "run", step=3, checkpoints=2)
    summary = train(run, "resume=auto")
    assert_same(lines(run), lines(straight))
    assert summary["run_dir"] == str(run)
    assert f"resumed from {run / 'checkpoints' / 'step_000002'} after step 2" in capsys.readouterr().out


def test_a_save_killed_half_way_and_a_damaged_newest_checkpoint_are_skipped(straight, tmp_path, capsys):
    run = killed_after(straight, tmp_path / "run", step=3, checkpoints=3)
    partial = run / "checkpoints" / "step_000004.partial"  # killed while writing the step-4 checkpoint
    shutil.copytree(straight / "checkpoints" / "step_000004", partial)
    (partial / "manifest.json").unlink()
    weights = run / "checkpoints" / "step_000003" / "model" / "model.safetensors"
    with open(weights, "r+b") as f:  # the newest complete one damaged afterwards
        f.truncate(os.path.getsize(weights) // 2)
    train(run, "resume=auto")
    err = capsys.readouterr().err
    assert f"rlrun: warning: skipping checkpoint {run / 'checkpoints' / 'step_000003'}: {weights} has" in err
    assert_same(lines(run), lines(straight))
    assert not partial.exists()


def test_resume_auto_with_no_checkpoint_starts_fresh(straight, tmp_path, capsys):
    train(tmp_path / "run", "resume=auto")
    assert "resume=auto: no checkpoint in" in capsys.readouterr().out
    assert_same(lines(tmp_path / "run"), lines(straight))


def test_a_missing_rng_file_is_an_error_not_a_silent_inexact_resume(straight, tmp_path):
    ckpt = tmp_path / "step_000002"
    shutil.copytree(straight / "checkpoints" / "step_000002", ckpt)
    (ckpt / "rng_rank0.pt").unlink()
    with pytest.raises(checkpoint.ResumeError, match=f"resume={ckpt} cannot be loaded: {ckpt / 'rng_rank0.pt'} is missing"):
        train(tmp_path / "run", f"resume={ckpt}")


def test_steps_below_those_done_are_refused(straight, tmp_path):
    with pytest.raises(checkpoint.ResumeError, match="steps=3 is below the 4 steps the checkpoint .* has done; give steps >= 4"):
        train(tmp_path / "run", f"resume={straight}", "steps=3")


def test_keep_last_leaves_the_newest_checkpoints(tmp_path):
    train(tmp_path / "run", "checkpoint.keep_last=2")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["latest", "step_000003", "step_000004"]
