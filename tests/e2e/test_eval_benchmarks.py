"""Evaluation on several benchmarks in one training run (``eval.benchmarks``: metrics
``eval/<name>/...``, the end's points in summary.json for rlrun-pareto) and ``rlrun-eval --baseline``
(O1-Pruner's AES against an earlier evaluation), on the tiny model."""
from __future__ import annotations

import json

import pytest
import torch

from rlrun.runtime.evaluation import Evaluator
from rlrun.types import Sampling
from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.analysis.evaluate import main as eval_main
from rlrun.analysis.evaluate import read_baseline
from rlrun.analysis.pareto import summary_points
from rlrun.wiring.build import build_run
from rlrun.wiring.settings import validate

KEYS = {"acc", "mean_tokens", "truncated_frac", "budget_mean_tokens", "thinking_mean_tokens", "answer_mean_tokens",
        "budget_16/acc", "budget_16/mean_tokens", "budget_16/truncated_frac", "budget_16/thinking_mean_tokens",
        "budget_16/answer_mean_tokens"}
VERIFY_KEYS = {"verify_errors", "verify_timeouts", "verify_checked"}  # math-verify's counts


def test_in_loop_eval_on_the_held_out_split_and_two_benchmarks(tmp_path):
    dist.init()
    # a 32-token cap: every answer (~120 tokens on arith) is cut, so the numbers are known exactly and
    # no math-verify worker has to start for aime24
    cfg = compose(["debug=cpu", "curriculum.max_new_tokens=32", "eval.problems=4", "eval.budgets=[16]",
                   "eval.benchmarks=[arith,aime24]"])
    summary = loop.train(build_run(cfg, str(tmp_path)))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if any(k.startswith("eval/") for k in line)]
    assert [line["step"] for line in evals] == [0, 2]
    for line in evals:
        names = {k for k in line if k.startswith("eval/")}
        assert names == ({f"eval/heldout/{k}" for k in KEYS} | {f"eval/arith/{k}" for k in KEYS}
                         | {f"eval/aime24/{k}" for k in KEYS | VERIFY_KEYS})
        assert line["eval/arith/mean_tokens"] == 32.0 and line["eval/arith/truncated_frac"] == 1.0
        assert line["eval/arith/budget_16/mean_tokens"] == 16.0 and line["eval/arith/acc"] == 0.0
        assert line["eval/aime24/acc"] == 0.0 and line["eval/aime24/mean_tokens"] <= 32.0
        assert line["eval/aime24/verify_errors"] == 0.0 and line["eval/aime24/verify_timeouts"] == 0.0
    # summary: the held-out split as before (start/end flat, its budget points under eval.heldout),
    # each benchmark's budget points and plain end point under eval.<name>
    assert summary["end"]["mean_tokens"] == 32.0 and "budget_16/acc" in summary["end"]
    assert set(summary["eval"]) == {"heldout", "arith", "aime24"}
    assert set(summary["eval"]["heldout"]) == {"budget_16"}
    assert set(summary["eval"]["arith"]) == set(summary["eval"]["aime24"]) == {"budget_16", "end"}
    assert summary["eval"]["arith"]["budget_16"] == {"acc": 0.0, "mean_tokens": 16.0, "truncated_frac": 1.0,
                                                  "thinking_mean_tokens": 16.0, "answer_mean_tokens": 0.0}
    assert summary["eval"]["arith"]["end"]["budget_mean_tokens"] == 32.0
    assert summary["eval"]["aime24"]["end"]["verify_errors"] == 0.0
    # rlrun-pareto's reading: held-out start/end/@16, arith and aime24 @16 and their end points
    points = {(p.benchmark, p.kind, p.budget) for p in summary_points(summary, "x", str(tmp_path))}
    assert points == {("heldout", "start", 32.0), ("heldout", "end", 32.0), ("heldout", "eval", 16.0),
                      ("arith", "eval", 16.0), ("arith", "eval", None),
                      ("aime24", "eval", 16.0), ("aime24", "eval", None)}


@pytest.mark.parametrize("benchmarks, message", [
    ("[arith,math50]", ("eval.benchmarks=[arith,math50]: math50 is not a benchmark (did you mean math500?); "
                        "valid: arith, aime24, aime25, aime_1983_2023, amc, amc23, gsm8k_test, gsm8k_train, "
                        "math500, math_train, minerva, olympiadbench")),
    ("[heldout]", "eval.benchmarks=[heldout]: heldout is not a benchmark; valid: arith, aime24,"),
    ("[math500,math500]", "eval.benchmarks=[math500,math500] lists math500 twice"),
])
def test_bad_benchmark_names_fail_in_validation(benchmarks, message):
    with pytest.raises(ConfigError) as exc:
        validate(compose(["debug=cpu", f"eval.benchmarks={benchmarks}"]), world_size=1)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_eval_none_still_validates():
    s = validate(compose(["eval=none"]), world_size=1)
    assert s.eval.at_steps == () and s.eval.benchmarks == ()
    s = validate(compose(["eval.benchmarks=[arith,math500]"]), world_size=1)
    assert s.eval.benchmarks == ("arith", "math500")


def test_rlrun_eval_aes_against_a_baseline_eval_json(tmp_path, capsys):
    baseline = tmp_path / "base" / "eval.json"
    baseline.parent.mkdir()
    baseline.write_text(json.dumps({"model": "base", "eval": {
        "arith": {"budget_256": {"acc": 0.5, "mean_tokens": 200.0},
                  "budget_64": {"acc": 0.0, "mean_tokens": 64.0}},  # accuracy 0: AES undefined
        "aime24": {"budget_256": {"acc": 0.1, "mean_tokens": 900.0}}}}))  # not evaluated here
    eval_main(["--model", "tiny", "--out", str(tmp_path / "new"), "--data", "arith", "--n", "4",
               "--budgets", "64,256,128", "--baseline", str(baseline)])
    record = json.loads((tmp_path / "new" / "eval.json").read_text())
    assert record["baseline"] == str(baseline) and record["aes_weights"] == {"alpha": 1.0, "beta": 3.0, "gamma": 5.0}
    got = record["eval"]["arith"]["budget_256"]
    acc, tokens = got["acc"], got["mean_tokens"]
    assert acc >= 0.5 and 100 < tokens < 200  # the tiny model: most right, ~130 tokens
    # O1-Pruner: dLength = (200 - tokens) / 200, dAcc = (acc - 0.5) / 0.5 >= 0 -> AES = dLength + 3 dAcc
    # (e.g. acc 1.0, 130 tokens: 0.35 + 3 * 1.0 = 3.35)
    assert got["aes"] == pytest.approx((200.0 - tokens) / 200.0 + 3 * (acc - 0.5) / 0.5, abs=1e-12)
    assert (got["baseline_acc"], got["baseline_mean_tokens"]) == (0.5, 200.0)
    assert record["eval"]["arith"]["budget_64"]["aes"] is None
    assert "aes" not in record["eval"]["arith"]["budget_128"]  # the baseline has no budget_128
    table = capsys.readouterr().out.splitlines()
    assert table[0].endswith("truncated      aes")
    assert table[1].startswith("arith                 64") and table[1].endswith("        -")
    assert table[2].endswith(f"{got['aes']:>9.3f}")


def test_baseline_from_a_run_dir_prefers_its_summary(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"eval": {"arith": {"budget_64": {"acc": 0.1, "mean_tokens": 9}}}}))
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 2, "eval": {
        "arith": {"budget_64": {"acc": 0.2, "mean_tokens": 8}},
        "heldout": {"budget_16": {"acc": 0.0, "mean_tokens": 16}}}}))
    assert read_baseline(str(tmp_path))["arith"]["budget_64"]["acc"] == 0.2
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 2}))  # no results there: eval.json
    assert read_baseline(str(tmp_path))["arith"]["budget_64"]["acc"] == 0.1


@pytest.mark.parametrize("content, message", [
    (None, "--baseline={path}: no such file or directory"),
    ("{not json", "--baseline={path}: eval.json cannot be read: Expecting property name"),
    ('{"model": "tiny"}', '--baseline={path}: no "eval" results in eval.json; give an eval.json'),
    ('{"eval": {"aime24": {"budget_64": {"acc": 0.5, "mean_tokens": 9}}}}',
     ("--baseline={path} shares no benchmark and budget with this evaluation (arith at budget_64, "
      "budget_256); it has: aime24 at budget_64")),
])
def test_bad_baseline_exits_with_one_line_before_loading_a_model(tmp_path, capsys, content, message):
    path = tmp_path / "eval.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        eval_main(["--model", "/no/such/model", "--data", "arith", "--budgets", "64,256", "--baseline", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrun-eval: error: " + message.format(path=path)) and err.count("\n") == 1


def test_rlrun_eval_bad_benchmark_name_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        eval_main(["--model", "tiny", "--data", "arith,math50"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("rlrun-eval: error: --data math50 is not a benchmark (did you mean "
                                       "math500?); valid: arith, aime24, aime25, aime_1983_2023, amc, amc23, "
                                       "gsm8k_test, gsm8k_train, math500, math_train, minerva, olympiadbench\n")


def test_eval_samples_at_its_own_temperature_and_restores_the_rollouts(tmp_path):
    """eval.temperature=0: greedy evaluation, the same whatever the random state, while the rollout
    engine keeps sampling training batches at its own temperature (where two seeds differ): the
    evaluation passes its Sampling to generate, the engine's own settings are never changed."""
    dist.init()
    run = build_run(compose(["debug=cpu", "eval.temperature=0", "eval.top_p=0.5", "eval.problems=4"]),
                    str(tmp_path))
    assert (run.rollout.temperature, run.rollout.top_p) == (1.0, 1.0)
    problems = run.problems.held_out(4)
    results, texts = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        results.append(Evaluator(run).evaluate(problems))
        assert (run.rollout.temperature, run.rollout.top_p) == (1.0, 1.0)
        torch.manual_seed(seed)
        texts.append(run.rollout.generate(problems, 2, [256] * 4).texts)  # the training sampler
    assert results[0] == results[1]
    assert texts[0] != texts[1]
    # Sampling(None, ...) keeps the engine's own value: top_p 0.9 alone samples unlike greedy
    torch.manual_seed(0)
    nucleus = run.rollout.generate(problems, 2, [256] * 4, Sampling(temperature=None, top_p=0.9)).texts
    torch.manual_seed(0)
    assert nucleus != run.rollout.generate(problems, 2, [256] * 4, Sampling(temperature=0.0)).texts
    with pytest.raises(ConfigError, match=r"eval.temperature=-1 must be >= 0"):
        validate(compose(["eval.temperature=-1"]), world_size=1, out_dir=str(tmp_path))


def test_a_set_takes_its_own_samples_per_problem(tmp_path):
    """eval.samples_by_set: the held-out split at 3 samples (pass@3 logged), arith at eval.samples=1."""
    dist.init()
    run = build_run(compose(["debug=cpu", "eval.problems=4", "eval.benchmarks=[arith]",
                             "+eval.samples_by_set={heldout: 3}"]), str(tmp_path))
    got = Evaluator(run)(0)
    assert "pass@3" in got["heldout"] and not any(k.startswith("pass@") for k in got["arith"]), got
    with pytest.raises(ConfigError, match=r"^eval.samples_by_set.aime24=16: the name must be an evaluated set "
                                          r"\(heldout, arith\) and the samples >= 1$"):
        validate(compose(["eval.benchmarks=[arith]", "+eval.samples_by_set={aime24: 16}"]), world_size=1,
                 out_dir=str(tmp_path))
