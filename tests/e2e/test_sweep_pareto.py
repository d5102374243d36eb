"""A Hydra multirun (``rlrun -m ...``) draws its own Pareto picture when it ends (rlrun.analysis.sweep): the
sweep dir gets pareto.csv/json/png/svg from the runs' files, a W&B sweep run holds the table and
chart when the runs log to W&B (offline here: no network), and failed runs are left out."""
from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

from conftest import child_env

from rlrun.analysis import sweep

# 2 debug steps on the tiny model, held-out evaluation at step 0 (start) and 2 (end) on 2 problems:
# each run puts exactly 2 points (start, end) on the heldout panel.
QUICK = ("debug=cpu", "eval.problems=2")


def multirun(sweep_dir, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    """``rlrun -m`` in a child process; one torch thread, as a few seconds' run on a shared CPU
    is slowed down many times over by threads waiting on each other."""
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "rlrun", "-m", *QUICK, *overrides, f"hydra.sweep.dir={sweep_dir}"],
        check=False, capture_output=True, text=True, env=child_env(**env), timeout=600,
    )


def wandb_env(tmp_path) -> dict[str, str]:
    """W&B's own dirs under tmp_path, quiet, and patient."""
    home = tmp_path / "wandb_home"
    return {"WANDB_DIR": str(home), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_DATA_DIR": str(home / "data"),
            "WANDB_SILENT": "true", "WANDB_INIT_TIMEOUT": "300"}  # a busy shared CPU starts W&B slowly


def rows(sweep_dir) -> list[dict[str, str]]:
    with open(os.path.join(sweep_dir, "pareto.csv"), newline="") as f:
        return list(csv.DictReader(f))


def assert_pictures(sweep_dir) -> None:
    for name in ("pareto.png", "pareto.svg", "pareto.json"):
        assert os.path.getsize(os.path.join(sweep_dir, name)) > 100, name


def test_a_wandb_sweep_writes_its_picture_and_one_wandb_sweep_run(tmp_path):
    out = tmp_path / "sweep"
    result = multirun(out, "logger=wandb", "logger.mode=offline", "seed=0,1", **wandb_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Pareto picture of 2 runs written to {out / 'pareto.png'}" in result.stdout, result.stdout[-3000:]
    assert "W&B sweep run sweep-" in result.stdout, result.stdout[-3000:]
    table = rows(out)
    assert len(table) == 2 * 2  # 2 runs x (start, end)
    labels = {r["label"] for r in table}
    assert len(labels) == 2 and {label.split()[-1] for label in labels} == {"seed=0", "seed=1"}
    assert sorted((r["run_dir"], r["kind"]) for r in table) == [
        (str(out / job), kind) for job in ("0", "1") for kind in ("end", "start")]
    assert_pictures(out)
    # every run logged its own offline W&B run; the sweep logged one more, in the sweep dir
    for job in ("0", "1"):
        job_runs = glob.glob(str(out / job / "wandb" / "offline-run-*"))
        assert len(job_runs) == 1
        with open(glob.glob(os.path.join(job_runs[0], "*.wandb"))[0], "rb") as f:
            assert str(out).encode() in f.read()  # the job's W&B run is in the sweep's group
    runs = glob.glob(str(out / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    assert f"wandb sync {runs[0]}" in result.stdout
    tables = glob.glob(os.path.join(runs[0], "files", "media", "table", "pareto", "table_*.table.json"),
                       recursive=True)
    assert len(tables) == 1, "no W&B table written"
    with open(tables[0]) as f:
        logged = json.load(f)
    assert logged["columns"][:6] == ["label", "benchmark", "budget", "acc", "mean_tokens", "on_frontier"]
    assert len(logged["data"]) == 4 and {row[0] for row in logged["data"]} == labels
    with open(glob.glob(os.path.join(runs[0], "*.wandb"))[0], "rb") as f:
        record = f.read()
    assert b"pareto/scatter" in record and b"wandb/scatter/v0" in record
    assert b"sweep-" in record and str(out).encode() in record  # its name and group


def test_a_jsonl_sweep_writes_its_picture_and_no_wandb_dir(tmp_path):
    out = tmp_path / "sweep"
    result = multirun(out, "logger=jsonl", "seed=0,1", **wandb_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Pareto picture of 2 runs written to {out / 'pareto.png'}" in result.stdout
    assert len(rows(out)) == 2 * 2
    assert_pictures(out)
    assert "W&B" not in result.stdout
    assert not glob.glob(str(out / "**" / "wandb"), recursive=True)
    assert not (tmp_path / "wandb_home").exists()


def test_a_failed_job_is_named_and_left_out_of_the_picture(tmp_path):
    out = tmp_path / "sweep"
    # job 1 stops at its config check (group_size must be >= 2), which ends the multirun
    result = multirun(out, "group_size=4,1")
    assert result.returncode != 0 and "group_size=1 must be >= 2" in result.stderr
    assert f"skipping run {out / '1'}: no summary.json" in result.stdout
    assert "group_size=1 must be >= 2" in (out / "1" / "error.txt").read_text()  # the job dir says why
    assert f"Pareto picture of 1 run written to {out / 'pareto.png'}" in result.stdout
    table = rows(out)
    assert len(table) == 2 and {r["run_dir"] for r in table} == {str(out / "0")}
    assert_pictures(out)


def test_a_sweep_without_finished_runs_or_evaluations_says_so(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "0" / ".hydra").mkdir(parents=True)  # a job that failed before writing anything
    assert sweep.summarise_sweep(str(out), "sweep-x") is None
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "none of its 1 runs finished" in said  # one line
    (out / "1").mkdir()
    (out / "1" / "summary.json").write_text(json.dumps({"steps": 2, "run_dir": str(out / "1")}))
    assert sweep.summarise_sweep(str(out), "sweep-x") is None  # eval=none: no points
    said = capsys.readouterr().out
    assert f"skipping run {out / '0'}" in said and "its runs have no evaluation" in said
    assert not (out / "pareto.csv").exists()


def test_the_sweep_run_follows_the_runs_wandb_logger():
    wandb = {"_target_": sweep.WANDB_LOGGER, "mode": "online", "project": "p"}
    assert sweep.wandb_settings([None, wandb]) == {"mode": "online", "project": "p"}
    assert sweep.wandb_settings([{"_target_": sweep.WANDB_LOGGER}]) == {"mode": "offline", "project": "rlrun"}
    assert sweep.wandb_settings([{**wandb, "mode": "disabled"}]) is None
    assert sweep.wandb_settings([{"_target_": "rlrun.loggers.jsonl.JsonlLogger"}]) is None
