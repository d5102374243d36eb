"""Faults and bad input on the real ``rlrun`` command: each gives one line on stderr naming the bad
value or file and what to do, a non-zero exit, and leaves what was written before intact."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import child_env
from rlrun.runtime import checkpoint

QUICK = ["debug=cpu", "eval=none"]


def rlrun(*args: str, preexec=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlrun", *args], capture_output=True, text=True,
                          env=child_env(OMP_NUM_THREADS="1", **env), timeout=300, preexec_fn=preexec)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("rlrun: error: "), lines
    return lines[0]


def snapshot(directory) -> dict[str, str]:
    """Every file under ``directory`` with the SHA-256 of its bytes."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.mark.parametrize("path,says", [
    ("/nonexistent/model", "model.path=/nonexistent/model does not exist; give a model dir"),
    ("{tmp}/notamodel", "model.path={tmp}/notamodel is not a model dir (no config.json or tokenizer files in it: "
                        "notes.txt)"),
    ("{tmp}/notamodel/notes.txt", "model.path={tmp}/notamodel/notes.txt is a file, not a model dir"),
    ("Qwen/Qwen2.5-0.5B", "model.path=Qwen/Qwen2.5-0.5B is not a local dir and could not be fetched from the "
                          "Hugging Face Hub ("),
], ids=["missing", "not-a-model-dir", "a-file", "hub-id-offline"])
def test_a_bad_model_path_is_one_line_and_leaves_no_run_dir(path, says, tmp_path):
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "notes.txt").write_text("hello")
    out = tmp_path / "run"
    done = rlrun(*QUICK, "model=hf", f"model.path={path.format(tmp=tmp_path)}", f"hydra.run.dir={out}",
                 HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert one_error_line(done).startswith(f"rlrun: error: {says.format(tmp=tmp_path)}")
    assert not out.exists()


def limit_file_size(limit: int):
    def apply() -> None:  # in the child: no file may grow past ``limit`` bytes (EFBIG, "File too large")
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous_one(tmp_path):
    out = tmp_path / "run"
    args = [*QUICK, "steps=4", "checkpoint_every=2", f"hydra.run.dir={out}"]
    first = rlrun(*args[:-2], "steps=2", "checkpoint_every=2", f"hydra.run.dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    kept = snapshot(out / "checkpoints")
    # the next save cannot write its model weights (~2 MB): the disk as good as full
    done = rlrun(*args, "resume=auto", preexec=limit_file_size(1 << 20))
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith(f"rlrun: error: the checkpoint after step 4 could not be written to "
                           f"{out / 'checkpoints' / 'step_000004.partial'} (")
    assert (f"the previous checkpoint {out / 'checkpoints' / 'step_000002'} and metrics.jsonl are intact"
            in line)
    assert snapshot(out / "checkpoints") == kept  # nothing staged left, the old checkpoint as it was
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert checkpoint.problem(str(out / "checkpoints" / "step_000002")) is None
    again = rlrun(*args, "resume=auto")  # space again: the run finishes from step 2
    assert again.returncode == 0, again.stderr[-2000:]
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_written(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], check=True)
    try:
        out = disk / "run"
        done = rlrun(*QUICK, "steps=6", "checkpoint_every=2", f"hydra.run.dir={out}")  # ~8 MB a checkpoint
        assert done.returncode == 1
        line = one_error_line(done)
        assert line.startswith(f"rlrun: error: the checkpoint after step 4 could not be written to "
                               f"{out / 'checkpoints' / 'step_000004.partial'} (")
        assert " MiB free on its disk); the previous checkpoint " in line
        assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_000002"]
        assert checkpoint.problem(str(out / "checkpoints" / "step_000002")) is None
        assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = rlrun(*QUICK, "steps=6", "checkpoint_every=2", f"hydra.run.dir={out}", "resume=auto")
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_unwritable_run_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    done = rlrun(*QUICK, f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert done.returncode == 2
    assert one_error_line(done).startswith(f"rlrun: error: cannot write the run dir {tmp_path / 'file' / 'run'}")


def nan_reward_from(step: int) -> list[str]:
    """A reward term (tests/reward_terms.py) that is NaN from loop step ``step`` (0-based) on."""
    return [f"+reward.terms.nan={{weight:0.0,fn:{{_target_:reward_terms.NaNFromStep,step:{step}}}}}"]


def with_tests_on_path() -> dict[str, str]:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}


def test_nan_updates_are_skipped_and_counted(tmp_path):
    out = tmp_path / "run"
    done = rlrun(*QUICK, "steps=4", "checkpoint_every=2", "trainer.max_bad_steps=0", *nan_reward_from(2),
                 f"hydra.run.dir={out}", **with_tests_on_path())
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["optim/skipped_steps"] for m in lines] == [0.0, 0.0, 1.0, 2.0]
    assert [m["optim/grad_norm"] is None for m in lines] == [False, False, True, True]  # NaN: null in JSON
    weights = [snapshot(out / "checkpoints" / f"step_00000{k}" / "model")["model.safetensors"] for k in (2, 4)]
    assert weights[0] == weights[1]  # no optimizer step at all (AdamW's momentum would move them)


def test_max_bad_steps_in_a_row_stop_the_run_with_the_last_good_state(tmp_path):
    out = tmp_path / "run"
    done = rlrun(*QUICK, "steps=6", "checkpoint_every=100", "trainer.max_bad_steps=2", *nan_reward_from(1),
                 f"hydra.run.dir={out}", **with_tests_on_path())
    assert done.returncode == 1
    ckpt = out / "checkpoints" / "step_000002"
    assert one_error_line(done) == (
        "rlrun: error: the loss or its gradients were NaN or inf in 2 updates in a row (trainer.max_bad_steps=2); "
        "each was skipped (optim/skipped_steps) during step 3; the run stopped: the last good state is in "
        f"{ckpt}; look for a reward or advantage that gives NaN (reward/* in metrics.jsonl), lower "
        "trainer.optim.lr, or raise trainer.max_bad_steps")
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert checkpoint.problem(str(ckpt)) is None and not (out / "summary.json").exists()


def test_two_runs_started_in_the_same_second_get_their_own_run_dirs(tmp_path):
    # the seconds the two runs may start in are all taken already: each must claim a dir of its own
    import datetime

    now = datetime.datetime.now()
    taken = set()
    for offset in range(-2, 40):
        moment = now + datetime.timedelta(seconds=offset)
        taken.add(tmp_path / "outputs" / moment.strftime("%Y-%m-%d") / moment.strftime("%H-%M-%S"))
    for directory in taken:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "other-run.txt").write_text("mine")
    command = [sys.executable, "-m", "rlrun", *QUICK, "steps=1", "trainer.micro_batch_size=8"]
    env = child_env(OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    run_dirs = [out.strip().splitlines()[-1].removeprefix("run dir: ") for out, _ in outs]
    assert run_dirs[0] != run_dirs[1]
    for run_dir in run_dirs:
        assert os.path.dirname(run_dir) in {str(d.parent) for d in taken} and run_dir.rsplit("-", 1)[-1] in "123"
        assert len((tmp_path / run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert all((d / "other-run.txt").read_text() == "mine" and os.listdir(d) == ["other-run.txt"] for d in taken)


def test_the_run_dir_resolver_claims_a_fresh_path_in_each_process(tmp_path):
    script = ("import sys; from rlrun.wiring import run_dirs; "
              "print(run_dirs.fresh(sys.argv[1]), run_dirs.fresh(sys.argv[1] + '-other'))")
    found = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                            check=True).stdout.split() for _ in range(3)]
    base = str(tmp_path / "run")
    assert found == [[base, base], [base + "-1", base + "-1"], [base + "-2", base + "-2"]]
    assert sorted(os.listdir(tmp_path)) == ["run", "run-1", "run-2"]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A finished 2-step run with a checkpoint after each step."""
    out = tmp_path_factory.mktemp("two") / "run"
    done = rlrun(*QUICK, "steps=2", "checkpoint_every=1", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def trainer_file(ckpt) -> str:
    """The largest file DeepSpeed wrote under ``trainer/`` (its model and optimizer states)."""
    files = [p for p in (ckpt / "trainer").rglob("*") if p.is_file()]
    return str(max(files, key=lambda p: p.stat().st_size).relative_to(ckpt))


@pytest.mark.parametrize("damaged", ["state.pt", "rng_rank0.pt", "trainer", "model/model.safetensors"])
def test_a_damaged_checkpoint_file_is_named_and_nothing_is_changed(damaged, two_checkpoints, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    newest = run / "checkpoints" / "step_000002"
    rel = trainer_file(newest) if damaged == "trainer" else damaged
    whole = os.path.getsize(newest / rel)
    with open(newest / rel, "r+b") as f:  # truncated, as a kill or a full disk leaves it
        f.truncate(whole // 2)
    before = snapshot(run / "checkpoints")
    # given explicitly: refused in one line naming the file
    done = rlrun(*QUICK, "steps=3", f"resume={newest}", f"hydra.run.dir={tmp_path / 'other'}")
    assert done.returncode == 2
    assert one_error_line(done) == (f"rlrun: error: resume={newest} cannot be loaded: {newest / rel} has "
                                    f"{whole // 2} bytes, the manifest says {whole}")
    assert snapshot(run / "checkpoints") == before and not (tmp_path / "other").exists()
    if damaged != "state.pt":  # the fallback below does not depend on which file is damaged
        return
    # resume=auto: one warning naming the file, then the checkpoint before it
    done = rlrun(*QUICK, "steps=3", "checkpoint_every=1", "resume=auto", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("rlrun: warning:")]
    assert warnings == [f"rlrun: warning: skipping checkpoint {newest}: {newest / rel} has {whole // 2} bytes, "
                        f"the manifest says {whole}; trying the one before"]
    assert f"resumed from {run / 'checkpoints' / 'step_000001'} after step 1" in done.stdout
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_dangling_latest_is_not_trusted(two_checkpoints, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    (run / "checkpoints" / "latest").write_text("step_000009")  # names a checkpoint that is not there
    done = rlrun(*QUICK, "steps=3", "checkpoint_every=1", "resume=auto", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints' / 'step_000002'} after step 2" in done.stdout
    assert (run / "checkpoints" / "latest").read_text() == "step_000003"


def test_steps_below_those_done_are_refused_before_a_run_dir_is_left(two_checkpoints, tmp_path):
    out = tmp_path / "other"
    done = rlrun(*QUICK, "steps=1", f"resume={two_checkpoints}", f"hydra.run.dir={out}")
    assert done.returncode == 2
    newest = two_checkpoints / "checkpoints" / "step_000002"
    assert one_error_line(done) == (f"rlrun: error: steps=1 is below the 2 steps the checkpoint {newest} has done; "
                                    "give steps >= 2")
    assert not out.exists()
