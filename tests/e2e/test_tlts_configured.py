"""Train Long, Think Short's worked example (ALGORITHMS.md 3.4.7, arXiv 2508.08940 Sec. 3.1, 3.3)
through the configured pieces: the config composed from exactly the overrides of the command in
conf/reward/triangular.yaml's header (plus ``logger=jsonl``, which only keeps W&B out of the test), the
run built by ``build_run``, the budget stated by its curriculum, and ``run.reward`` and ``run.advantage``
applied to the example's four completions. No formula is written here: the numbers are the section's."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from rlrun.runtime import dist
from rlrun.types import Problem, StepBatch, columns
from rlrun.wiring.build import build_run
from rlrun.wiring.cli import compose

HEADER = Path(__file__).resolve().parents[2] / "conf" / "reward" / "triangular.yaml"
TEXTS = ["<think>80 tokens of reasoning</think> <answer>42</answer>",
         "<think>120 tokens of reasoning</think> <answer>42</answer>",
         "<think>87 tokens of reasoning</think> <answer>41</answer>",
         "<think>200 tokens of reasoning</think> <answer>4"]  # cut before </answer>: I_answer = 0
CORRECT, LENGTHS = [1.0, 1.0, 0.0, 0.0], [80, 120, 87, 200]
REWARD = [0.975862, 0.886207, 0.400000, 0.050000]
ADVANTAGE = [1.059735, 0.820922, -0.474183, -1.406474]


def header_command(path: Path) -> list[str]:
    """The overrides of the ``rlrun ...`` command in the yaml's header comment (a trailing backslash
    continues it on the next comment line)."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    start = next(i for i, line in enumerate(header) if line.startswith("rlrun "))
    command = ""
    for line in header[start:]:
        command += line.removesuffix("\\") + " "
        if not line.endswith("\\"):
            break
    return shlex.split(command)[1:]


def example(overrides: list[str], out_dir: Path) -> tuple[StepBatch, torch.Tensor]:
    """The reward and advantage columns of the example's group under ``rlrun <overrides>``."""
    dist.init()
    run = build_run(compose([*overrides, "logger=jsonl"]), str(out_dir))
    try:
        last = run.settings.steps - 1  # the schedule's last step: the final budget, 87
        problems = run.prompts([Problem(uid="q0", prompt="Add 40+2.\n", answer="42")], last)
        budgets = run.curriculum.budgets(last, problems)
        batch = StepBatch(problems=problems, prompt_ids=[[1]], group_size=4, step=last, texts=TEXTS,
                          length_tokens_N=torch.tensor(LENGTHS), truncated_N=torch.zeros(4, dtype=torch.bool),
                          budget_tokens_N=torch.tensor(budgets * 4), correct_N=torch.tensor(CORRECT),
                          format_ok_N=torch.ones(4), predicted=["42", "42", "41", None])
        batch = batch.with_columns(**columns(run.reward(batch)))
        return batch, run.advantage(batch)
    finally:
        run.logger.close({})


def test_the_header_names_the_papers_pieces():
    overrides = header_command(HEADER)
    assert overrides == ["algo=tlts", "curriculum=budget_exponential", "reward=[correct,triangular,tlts_format]",
                         "reward.terms.correct.weight=0.6", "reward.terms.triangular.weight=0.3",
                         "reward.terms.tlts_format.weight=0.1"]


def test_worked_example_through_the_configured_pieces(tmp_path):
    batch, advantages = example(header_command(HEADER), tmp_path)
    assert batch.problems[0].meta["budget_tokens"] == 87  # L = B(t) stated by the curriculum
    torch.testing.assert_close(batch.terms["triangular"], torch.tensor([0.919540, 0.620690, 1.0, 0.0]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.terms["tlts_format"], torch.tensor([1.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(batch.reward_N, torch.tensor(REWARD), atol=1e-6, rtol=0)
    torch.testing.assert_close(advantages, torch.tensor(ADVANTAGE), atol=1e-6, rtol=0)


def test_band_shape(tmp_path):
    batch, _ = example([*header_command(HEADER), "reward.terms.triangular.fn.band=true"], tmp_path)
    assert batch.reward_N[0].item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(batch.reward_N[1:], torch.tensor(REWARD[1:]), atol=1e-6, rtol=0)
