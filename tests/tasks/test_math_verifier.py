"""MathVerifier: math-verify equivalences, the fast path, and timeouts and errors that are counted
(never silently scored wrong) from the main thread and from other threads."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from rlrun.tasks.math_verifier import MathVerifier, fast_verdict
from rlrun.types import Problem, StepBatch

# 9^(9^9) has ~3.7e8 digits: math-verify's comparison of it with 1 ran for over 240 s without
# finishing when called directly (math_verify.verify, timeouts off), so it always outlives 1 s.
HANGS = "\\boxed{9^{9^{9}}}"


def rollouts(pairs: list[tuple[str, str]]) -> StepBatch:
    """One group of size 1 per (gold answer, completion text)."""
    n = len(pairs)
    return StepBatch(
        problems=[Problem(f"p{i}", "?", gold) for i, (gold, _) in enumerate(pairs)], group_size=1,
        prompt_ids=[[1]] * n, completion_ids=[[5]] * n, texts=[text for _, text in pairs],
        length_tokens_N=torch.ones(n, dtype=torch.long), truncated_N=torch.zeros(n, dtype=torch.bool),
        budget_tokens_N=torch.full((n,), 256),
    )


@pytest.fixture(scope="module")
def verifier():
    checker = MathVerifier(timeout_s=5.0, workers=2)
    yield checker
    checker.close()


EQUIVALENT = [
    ("\\frac{1}{2}", "so \\boxed{0.5}"),
    ("\\dfrac12", "\\boxed{1/2}"),
    ("3", "\\boxed{3.0}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}"),
    ("10\\%", "\\boxed{10}"),  # math-verify drops the percent sign: 10% == 10 (and != 0.1, below)
    ("x=5", "\\boxed{5}"),
    ("(1,2)", "\\boxed{(1, 2)}"),
    ("\\text{(A)}", "\\boxed{A}"),  # choice letters
    ("2\\text{ cm}", "\\boxed{2}"),  # units are dropped
    ("2", "\\boxed{2\\text{ cm}}"),
    ("$\\frac{1}{2}$", "\\boxed{\\boxed{0.5}}"),  # dollars around the gold; a box in a box
    ("\\boxed{18}", "\\boxed{18.0}"),  # a boxed gold answer is unwrapped
    ("\\{1,2\\}", "\\boxed{\\{2, 1\\}}"),
    ("1,000", "\\boxed{1000}"),
]
DIFFERENT = [
    ("1/3", "\\boxed{0.33}"),
    ("2", "\\boxed{3}"),
    ("\\sqrt{2}", "\\boxed{1.41}"),
    ("10\\%", "\\boxed{0.1}"),
    ("\\text{(A)}", "\\boxed{B}"),
    ("1,2", "\\boxed{12}"),  # not an integer with a thousands comma: math-verify decides
    ("5", "\\boxed{}"),  # an empty box is an answer, and wrong
]


def test_equivalent_answers_are_correct(verifier):
    verdicts = verifier(rollouts(EQUIVALENT))
    assert verdicts.correct_N.tolist() == [1.0] * len(EQUIVALENT)
    assert verdicts.format_ok_N.tolist() == [1.0] * len(EQUIVALENT)
    assert verifier.last_status == ["ok"] * len(EQUIVALENT)
    assert verdicts.predicted[3] == "\\frac{\\sqrt3}{2}"
    assert verdicts.predicted[10] == "0.5"


def test_different_answers_are_wrong(verifier):
    verdicts = verifier(rollouts(DIFFERENT))
    assert verdicts.correct_N.tolist() == [0.0] * len(DIFFERENT)
    assert verdicts.format_ok_N.tolist() == [1.0] * len(DIFFERENT)
    assert verifier.last_status == ["ok"] * len(DIFFERENT)
    assert verdicts.predicted == ["0.33", "3", "1.41", "0.1", "B", "12", ""]


def test_box_inside_an_expression_the_last_opened_box_counts(verifier):
    # extract_boxed takes the last "\boxed{" that closes: here the inner one.
    verdicts = verifier(rollouts([("2", "\\boxed{\\frac{1}{\\boxed{2}}}")]))
    assert verdicts.predicted == ["2"]
    assert verdicts.correct_N.tolist() == [1.0]


def test_no_box_is_no_answer(verifier):
    verifier.metrics()
    verdicts = verifier(rollouts([("5", "the answer is 5"), ("5", "cut off \\boxed{5"), ("5", "\\boxed{5}")]))
    assert verdicts.correct_N.tolist() == [0.0, 0.0, 1.0]
    assert verdicts.format_ok_N.tolist() == [0.0, 0.0, 1.0]
    assert verdicts.predicted == [None, None, "5"]
    assert verifier.last_status == ["no_answer", "no_answer", "ok"]
    assert verifier.metrics() == {"verify/errors": 0.0, "verify/timeouts": 0.0, "verify/checked": 1.0}


@pytest.mark.parametrize(
    "gold, predicted, expected",
    [("18", " 18 ", True), ("\\frac{1}{2}", "\\frac {1}{2}", True), ("1,055", "1055", True),
     ("-7", "+7", False), ("2", "3", False), ("5", "", False), ("1,2", "12", None), ("3", "3.0", None),
     ("1" * 40, "1" * 40, True), ("1" * 40, "1" * 39, None)],
)
def test_fast_verdict(gold, predicted, expected):
    assert fast_verdict(gold, predicted) is expected


def test_fast_path_starts_no_worker():
    checker = MathVerifier()
    verdicts = checker(rollouts([("1,055", "\\boxed{1055}"), ("7", "\\boxed{8}"), ("x+1", "\\boxed{x + 1}")]))
    assert verdicts.correct_N.tolist() == [1.0, 0.0, 1.0]
    assert all(worker.process is None for worker in checker._workers)


def test_unreadable_gold_is_an_error_not_a_wrong_answer(verifier):
    verifier.metrics()
    verdicts = verifier(rollouts([("", "\\boxed{5}"), ("\\frac12", "\\boxed{0.5}")]))
    assert verdicts.correct_N.tolist() == [0.0, 1.0]
    assert verifier.last_status == ["error", "ok"]
    assert verifier.metrics() == {"verify/errors": 1.0, "verify/timeouts": 0.0, "verify/checked": 2.0}


def check_timeout(checker: MathVerifier) -> None:
    """A hanging item times out within seconds, the item after it on the same worker is still
    judged, the counts say so, and the next call works."""
    checker(rollouts([("1", "\\boxed{1}"), ("2", "\\boxed{\\sqrt{4}}")]))  # workers up and warm
    checker.metrics()
    start = time.monotonic()
    verdicts = checker(rollouts([("1", HANGS), ("\\frac12", "\\boxed{0.5}"), ("2", "\\boxed{3}")]))
    assert time.monotonic() - start < 1.0 + 15.0  # the timeout, plus a replacement worker's start
    assert verdicts.correct_N.tolist() == [0.0, 1.0, 0.0]
    assert verdicts.format_ok_N.tolist() == [1.0, 1.0, 1.0]
    assert checker.last_status == ["timeout", "ok", "ok"]
    assert checker.metrics() == {"verify/errors": 0.0, "verify/timeouts": 1.0, "verify/checked": 3.0}
    verdicts = checker(rollouts([("\\frac{1}{2}", "\\boxed{\\dfrac{2}{4}}")]))
    assert verdicts.correct_N.tolist() == [1.0]
    assert checker.last_status == ["ok"]
    assert checker.metrics() == {"verify/errors": 0.0, "verify/timeouts": 0.0, "verify/checked": 1.0}


def test_timeout_on_the_main_thread():
    checker = MathVerifier(timeout_s=1.0, workers=1)
    try:
        check_timeout(checker)
    finally:
        checker.close()
    assert all(worker.process is None for worker in checker._workers)


def test_timeout_on_another_thread():
    checker = MathVerifier(timeout_s=1.0, workers=2)
    failures: list[BaseException] = []

    def body() -> None:
        try:
            check_timeout(checker)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            failures.append(error)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=60)
    checker.close()
    assert not thread.is_alive()
    if failures:
        raise failures[0]
