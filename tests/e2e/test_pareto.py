"""rlrun-pareto end to end on hand-written run dirs: CSV rows, frontier, pictures and a W&B table."""
import csv
import glob
import json
import os

import pytest

from rlrun.analysis import pareto

LASER = "algo=drpo reward=laser_d"
L1 = "algo=drpo reward=l1_exact"


def _eval(acc, tokens, budget=512.0):
    return {"acc": acc, "mean_tokens": tokens, "truncated_frac": 0.0, "budget_mean_tokens": budget}


def _write_run(run_dir, overrides, summary=None, eval_lines=()):
    """A run dir as rlrun writes it: .hydra/overrides.yaml, metrics.jsonl (a training line per eval
    line, to be ignored), summary.json."""
    os.makedirs(run_dir, exist_ok=True)
    if overrides is not None:
        os.makedirs(os.path.join(run_dir, ".hydra"))
        with open(os.path.join(run_dir, ".hydra", "overrides.yaml"), "w") as f:
            f.write("".join(f"- {o}\n" for o in overrides))
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step, metrics in eval_lines:
            f.write(json.dumps({"step": step, "acc/train": 0.5, "length/mean_tokens": 999.0}) + "\n")
            f.write(json.dumps({"step": step, **metrics}) + "\n")
    if summary is not None:
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump({"run_dir": str(run_dir), **summary}, f)


def _heldout(acc, tokens):
    return {"eval/heldout/acc": acc, "eval/heldout/mean_tokens": tokens, "eval/heldout/truncated_frac": 0.0}


@pytest.fixture
def runs(tmp_path):
    """A sweep of three runs (held-out evals; the third also evaluated on aime24 at two budgets) and a
    fourth run dir outside it with metrics.jsonl only and no overrides.

    held-out (acc, tokens), frontier candidates = start/end points:
      grpo     start (0.80, 400)  end (0.82, 380)   end dominated by laser_d's end
      laser_d  start (0.80, 400)  step_50 (0.84, 250), not a candidate  end (0.83, 200)  on
      l1_exact start (0.81, 410)  end (0.70, 150)   on
      default  step 0 (0.78, 420) step 10 (0.70, 300) step 20 (0.60, 100)  end on
    every start is dominated by laser_d's end (0.83 >= acc, 200 <= tokens).
    aime24: l1_exact @512 (0.2, 480) and @1024 (0.3, 900), both on.
    """
    sweep = tmp_path / "multirun"
    _write_run(sweep / "0", ["algo=grpo"], {"steps": 100, "start": _eval(0.80, 400), "end": _eval(0.82, 380)},
               [(0, _heldout(0.80, 400)), (100, _heldout(0.82, 380))])
    _write_run(sweep / "1", LASER.split(), {
        "steps": 100, "start": _eval(0.80, 400), "step_50": _eval(0.84, 250), "end": _eval(0.83, 200)},
        [(0, _heldout(0.80, 400)), (50, _heldout(0.84, 250)), (100, _heldout(0.83, 200))])
    _write_run(sweep / "2", L1.split(), {
        "steps": 100, "start": _eval(0.81, 410), "end": _eval(0.70, 150),
        "eval": {"aime24": {"budget_512": {"acc": 0.2, "mean_tokens": 480.0, "truncated_frac": 0.1},
                            "budget_1024": {"acc": 0.3, "mean_tokens": 900.0, "truncated_frac": 0.0}}}},
        [(0, _heldout(0.81, 410)), (100, {**_heldout(0.70, 150), "eval/aime24/budget_512/acc": 0.2,
                                          "eval/aime24/budget_512/mean_tokens": 480.0})])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    lone = tmp_path / "lone_run"
    _write_run(lone, None, None, [(0, _heldout(0.78, 420)), (10, _heldout(0.70, 300)),
                                  (20, _heldout(0.60, 100))])
    return sweep, lone


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pareto_cli_writes_table_frontier_and_pictures(runs, capsys):
    sweep, lone = runs
    assert pareto.main([str(sweep), str(lone)]) == 0
    rows = _rows(sweep / "pareto.csv")
    assert list(rows[0])[:6] == ["label", "benchmark", "budget", "acc", "mean_tokens", "on_frontier"]
    # grpo 2 + laser_d 3 + l1_exact 2 held-out and 2 aime24 + default 3 = 12 points
    assert len(rows) == 12
    kinds = sorted((r["label"], r["benchmark"], r["kind"], r["step"]) for r in rows)
    assert ("default", "heldout", "step", "10") in kinds and (LASER, "heldout", "step", "50") in kinds
    on = {(r["label"], r["benchmark"], r["kind"], r["budget"]) for r in rows if r["on_frontier"] == "True"}
    assert on == {(LASER, "heldout", "end", "512"), (L1, "heldout", "end", "512"),
                  ("default", "heldout", "end", ""), (L1, "aime24", "eval", "512"),
                  (L1, "aime24", "eval", "1024")}
    # AES of laser_d's end against its start: dLength = 200/400 = 0.5, dAcc = 0.03/0.8 = 0.0375
    # -> 0.5 + 3 * 0.0375 = 0.6125
    laser_end = next(r for r in rows if r["label"] == LASER and r["kind"] == "end")
    assert float(laser_end["aes"]) == pytest.approx(0.6125)
    with open(sweep / "pareto.json") as f:
        saved = json.load(f)
    assert saved["frontier"] == {"heldout": ["default", L1, LASER], "aime24": [L1, L1]}
    laser_curve = next(c for c in saved["curves"] if c["label"] == LASER)
    assert laser_curve["steps"] == [0, 50, 100] and laser_curve["mean_tokens"] == [400.0, 250.0, 200.0]
    for name in ("pareto.png", "pareto.svg"):
        assert os.path.getsize(sweep / name) > 1000
    with open(sweep / "pareto.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (sweep / "pareto.svg").read_text()
    assert "on the Pareto frontier" in capsys.readouterr().out


def test_pareto_one_benchmark_to_another_dir(runs, tmp_path):
    sweep, _ = runs
    out = tmp_path / "plots"
    assert pareto.main([str(sweep), "--benchmark", "aime24", "--out", str(out)]) == 0
    rows = _rows(out / "pareto.csv")
    assert [(r["budget"], r["on_frontier"]) for r in rows] == [("512", "True"), ("1024", "True")]
    assert os.path.getsize(out / "pareto.png") > 0 and not (sweep / "pareto.csv").exists()
    with pytest.raises(SystemExit):
        pareto.main([str(sweep), "--benchmark", "nonesuch", "--out", str(out)])


def test_pareto_logs_a_wandb_table_offline(runs, tmp_path, monkeypatch):
    sweep, _ = runs
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    assert pareto.main([str(sweep), "--wandb", "offline"]) == 0
    run_dirs = glob.glob(str(sweep / "wandb" / "offline-run-*"))
    assert len(run_dirs) == 1
    tables = glob.glob(os.path.join(run_dirs[0], "files", "media", "table", "pareto", "table_*.table.json"),
                       recursive=True)
    assert tables, "no W&B table written"
    with open(tables[0]) as f:
        table = json.load(f)
    assert table["columns"][:6] == ["label", "benchmark", "budget", "acc", "mean_tokens", "on_frontier"]
    labels = {row[0] for row in table["data"]}
    assert labels == {"algo=grpo", LASER, L1}
    on = {(row[0], row[1]) for row in table["data"] if row[5]}
    assert on == {(LASER, "heldout"), (L1, "heldout"), (L1, "aime24")}
    # the scatter chart went into the run's record (.wandb) next to the table
    with open(glob.glob(os.path.join(run_dirs[0], "*.wandb"))[0], "rb") as f:
        record = f.read()
    assert b"pareto/scatter" in record and b"wandb/scatter/v0" in record
    assert b"pareto/lines" in record and b"wandb/lineseries/v0" in record


def test_wandb_lines_one_per_run_and_the_frontier():
    from rlrun.analysis.pareto import Point
    from rlrun.analysis.pareto_plot import method_lines

    points = [Point("a", "heldout", None, 0.8, 400.0, "start", 0, "r0"),
              Point("a", "heldout", None, 0.9, 300.0, "end", 10, "r0", on_frontier=True),
              Point("b", "heldout", 256.0, 0.5, 100.0, "eval", 10, "r1", on_frontier=True),
              Point("b", "heldout", None, 0.7, 250.0, "end", 10, "r1")]
    xs, ys, keys = method_lines(points)
    assert keys == ["a", "Pareto frontier", "b"]
    assert xs == [[300.0, 400.0], [100.0, 300.0], [100.0, 250.0]]
    assert ys == [[0.9, 0.8], [0.5, 0.9], [0.5, 0.7]]


def test_forced_points_beside_the_natural_ones(tmp_path, capsys):
    """A run with its end evaluated at a cap and with the thinking forced at 64 and 128: the forced
    points are kind "forced" with their budgets, frontier candidates, drawn as their own line."""
    from rlrun.analysis.pareto_plot import method_lines

    run = tmp_path / "run"
    forced = {"force_64": {"acc": 0.1, "mean_tokens": 90.0, "truncated_frac": 0.0},
              "force_128": {"acc": 0.7, "mean_tokens": 130.0, "truncated_frac": 0.0},
              "budget_256": {"acc": 0.95, "mean_tokens": 131.0, "truncated_frac": 0.0}}
    _write_run(run, ["algo=grpo"], {"steps": 2, "start": _eval(0.9, 140, 256.0), "end": _eval(0.96, 130, 256.0),
                                    "eval": {"heldout": forced}})
    assert pareto.main([str(run), "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "pareto.csv")
    assert sorted((r["kind"], r["budget"], r["on_frontier"]) for r in rows) == [
        ("end", "256", "True"), ("eval", "256", "False"), ("forced", "128", "False"), ("forced", "64", "True"),
        ("start", "256", "False")]
    assert "* heldout    forced 64  acc 0.100  tokens     90.0  algo=grpo" in capsys.readouterr().out
    assert os.path.getsize(tmp_path / "pareto.png") > 1000
    points, _ = pareto.collect([str(run)])
    _, _, keys = method_lines(points)
    assert keys == ["algo=grpo", "Pareto frontier", "algo=grpo (forced)"]


def test_a_models_eval_json_is_read_as_its_points(tmp_path):
    """rlrun-eval --out DIR of a model (no run): its budget and forced results, labelled by the model."""
    out = tmp_path / "tiny_eval"
    out.mkdir()
    (out / "eval.json").write_text(json.dumps({"model": "tiny", "eval": {"arith": {
        "budget_256": {"acc": 0.96, "mean_tokens": 130.0}, "force_64": {"acc": 0.01, "mean_tokens": 100.0}}}}))
    assert pareto.main([str(out)]) == 0
    rows = _rows(tmp_path / "pareto.csv")
    assert sorted((r["label"], r["benchmark"], r["kind"], r["budget"]) for r in rows) == [
        ("tiny", "arith", "eval", "256"), ("tiny", "arith", "forced", "64")]


def _elr_runs(tmp_path, grpo_start=120.0, grpo_end=200.0):
    """A GRPO run (held-out start L_SFT, end L_GRPO) and a length method's run from the same start."""
    sweep = tmp_path / "sweep"
    _write_run(sweep / "0", ["algo=grpo"], {"steps": 10, "start": _eval(0.8, grpo_start), "end": _eval(0.85, grpo_end),
                                            "eval": {"aime24": {"budget_512": {"acc": 0.2, "mean_tokens": 500.0}}}})
    _write_run(sweep / "1", ["algo=gfpo"], {"steps": 10, "start": _eval(0.8, 120.0), "end": _eval(0.84, 150.0)})
    return sweep


@pytest.mark.parametrize("by", ["label", "run dir"])
def test_elr_against_a_named_grpo_run(tmp_path, capsys, by):
    # ELR = (L_GRPO - L) / (L_GRPO - L_SFT): gfpo's end (200 - 150) / (200 - 120) = 0.625; grpo's own
    # end 0, every start (120) 1; aime24 has no start: no ELR there
    sweep = _elr_runs(tmp_path)
    assert pareto.main([str(sweep), "--elr-baseline", "algo=grpo" if by == "label" else str(sweep / "0")]) == 0
    rows = _rows(sweep / "pareto.csv")
    elr = {(r["label"], r["benchmark"], r["kind"]): r["elr"] for r in rows}
    assert elr == {("algo=grpo", "heldout", "start"): "1", ("algo=grpo", "heldout", "end"): "0",
                   ("algo=gfpo", "heldout", "start"): "1", ("algo=gfpo", "heldout", "end"): "0.625",
                   ("algo=grpo", "aime24", "eval"): ""}
    printed = capsys.readouterr().out
    assert "heldout    end        acc 0.840  tokens    150.0  ELR  0.625  algo=gfpo" in printed
    assert "ELR on heldout = (L_GRPO - L)/(L_GRPO - L_SFT) with L_GRPO 200.0 (the baseline's end) and L_SFT " \
           "120.0 (its start)" in printed
    assert "ELR on aime24: none (the baseline run has no start and end evaluation on it)" in printed
    with open(sweep / "pareto.json") as f:
        assert json.load(f)["elr_baseline"] == str(sweep / "0")


def test_elr_is_left_out_when_the_baseline_did_not_grow_longer(tmp_path, capsys):
    sweep = _elr_runs(tmp_path, grpo_start=200.0, grpo_end=180.0)
    assert pareto.main([str(sweep), "--elr-baseline", "algo=grpo"]) == 0
    assert all(r["elr"] == "" for r in _rows(sweep / "pareto.csv"))
    assert ("ELR on heldout: none (the baseline's end, 180.0 tokens, is not longer than its start, 200.0: "
            "ELR measures how much of an RL run's length growth a method removes)") in capsys.readouterr().out


def test_elr_baseline_outside_the_sweep_is_read_too_and_a_bad_one_is_one_line(tmp_path, capsys):
    sweep = _elr_runs(tmp_path)
    grpo = tmp_path / "grpo_run"
    _write_run(grpo, None, {"steps": 10, "start": _eval(0.8, 100.0), "end": _eval(0.85, 300.0)})
    assert pareto.main([str(sweep / "1"), "--elr-baseline", str(grpo), "--out", str(tmp_path / "o")]) == 0
    elr = {(r["label"], r["kind"]): r["elr"] for r in _rows(tmp_path / "o" / "pareto.csv")}
    assert elr[("algo=gfpo", "end")] == "0.75"  # (300 - 150) / (300 - 100)
    with pytest.raises(SystemExit) as exc:
        pareto.main([str(sweep), "--elr-baseline", "algo=nonesuch"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --elr-baseline=algo=nonesuch is neither a run dir (with summary.json, metrics.jsonl or eval.json) "
        "nor the label of one of the runs (algo=gfpo; algo=grpo)")
