"""``rlrun-eval`` on the tiny model: two budgets, k samples, deterministic, a vendored benchmark
through math-verify, the budget in the prompt (L1), and the results merged into a run dir's
summary.json for rlrun-pareto."""
from __future__ import annotations

import json

import pytest

from rlrun.analysis.evaluate import main


def run_eval(out, *extra):
    main(["--model", "tiny", "--out", str(out), *extra])
    return json.loads((out / "eval.json").read_text())


def test_two_budgets_on_the_built_in_task(tmp_path, capsys):
    got = run_eval(tmp_path / "a", "--data", "arith", "--n", "16", "--k", "2", "--budgets", "64,256")
    short, long = got["eval"]["arith"]["budget_64"], got["eval"]["arith"]["budget_256"]
    assert short["acc"] == 0.0 and short["truncated_frac"] == 1.0  # answers need ~120 tokens
    assert long["acc"] >= 0.8 and long["truncated_frac"] == 0.0 and 100 < long["mean_tokens"] < 160
    assert long["pass@2"] >= long["acc"] and long["samples"] == 32.0
    printed = capsys.readouterr().out
    assert "arith                 64   0.000" in printed
    again = run_eval(tmp_path / "b", "--data", "arith", "--n", "16", "--k", "2", "--budgets", "64,256")
    assert again["eval"] == got["eval"]  # same seed, same samples


def test_a_vendored_benchmark_through_math_verify_and_the_lcpo_prompt(tmp_path):
    got = run_eval(tmp_path, "--data", "aime24", "--n", "2", "--budgets", "16", "--lcpo", "--lcpo-cap", "24")
    m = got["eval"]["aime24"]["budget_16"]
    assert m["questions"] == 2.0 and m["acc"] == 0.0  # the tiny model only adds numbers
    assert m["mean_tokens"] <= 24 and m["length_deviation"] == pytest.approx(abs(m["mean_tokens"] - 16), abs=8)
    assert m["verify/errors"] == 0.0 and m["verify/timeouts"] == 0.0


def test_results_join_a_run_dirs_summary(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"steps": 3, "end": {"acc": 0.5, "mean_tokens": 9.0}}))
    run_eval(run_dir, "--data", "arith", "--n", "4", "--budgets", "64")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["eval"]["arith"]["budget_64"]["questions"] == 4.0


def test_bad_budgets_exit_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny", "--budgets", "96,lots"])
    assert exc.value.code == 2
    assert "--budgets='96,lots' must be comma-separated integers" in capsys.readouterr().err


def test_forced_budgets_beside_the_caps(tmp_path, capsys):
    # greedy: forced at 200 (above every natural thinking, ~96 tokens) is the plain response; at 64 the
    # thinking is cut mid-way and the answer written after "</think>\n" is mostly wrong
    got = run_eval(tmp_path, "--data", "arith", "--n", "16", "--temperature", "0", "--budgets", "256",
                   "--force-budgets", "64,200", "--force-answer-tokens", "32")
    arith = got["eval"]["arith"]
    assert list(arith) == ["budget_256", "force_64", "force_200"] and got["force_answer_tokens"] == 32
    assert arith["force_200"] == arith["budget_256"] and arith["budget_256"]["acc"] >= 0.9
    assert arith["force_64"]["thinking_mean_tokens"] == 64.0 and arith["force_64"]["acc"] < 0.5
    # tokens: the whole completion (64 + "</think>" + "\n" + the answer)
    assert 64 + 9 < arith["force_64"]["mean_tokens"] <= 64 + 9 + 32
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["benchmark", "budget", "acc", "pass@1", "tokens", "truncated"]
    assert printed[2].split()[:3] == ["arith", "force", "64"] and printed[3].split()[:3] == ["arith", "force", "200"]
    assert len({len(line) for line in printed[:4]}) == 1  # the budget column as wide as "force 200"


@pytest.mark.parametrize("args, message", [
    (["--force-budgets", "64,lots"], "--force-budgets='64,lots' must be comma-separated integers, e.g. 64,96,128"),
    (["--force-budgets", "0,64"], "--force-budgets='0,64': every thinking budget must be >= 1 token"),
    (["--force-budgets", "64", "--force-answer-tokens", "0"], "--force-answer-tokens=0 must be >= 1"),
    (["--force-budgets", "64", "--lcpo"], "--force-budgets with --lcpo: give one of them"),
])
def test_bad_forced_budgets_exit_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("rlrun-eval: error: ")


def test_the_documented_forcing_command_and_its_numbers(tmp_path):
    """docs/data-and-evaluation.md's `rlrun-eval --model tiny --force-budgets 64,96,128` (256 sums, T=1,
    seed 0): accuracy rises with the forced budget and stays below the natural point's."""
    got = run_eval(tmp_path, "--force-budgets", "64,96,128")["eval"]["arith"]
    acc = [got[key]["acc"] for key in ("force_64", "force_96", "force_128", "budget_256")]
    assert acc == pytest.approx([0.008, 0.465, 0.691, 0.965], abs=0.0025)  # printed to 3 decimals in the docs
    assert [got[f"force_{n}"]["thinking_mean_tokens"] <= n for n in (64, 96, 128)] == [True] * 3
