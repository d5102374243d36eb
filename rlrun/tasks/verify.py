"""Answer checking for boxed integer answers (the arithmetic task).

The verifier judges, it never shapes: ``correct`` is 1 when the last ``\\boxed{...}`` of a
completion equals the gold answer as an integer, ``format_ok`` is 1 when the completion is exactly a
``<think>...</think>`` block followed by one ``\\boxed{...}`` answer.
"""
from __future__ import annotations

import re

import torch

from rlrun.types import StepBatch, Verdicts

BOX = "\\boxed{"
_INTEGER = re.compile(r"[+-]?\d+")
_IGNORED = re.compile(r"\s|,|\\[,;:! ]|\{|\}")  # spaces, thousands commas, LaTeX thin spaces


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` matching the ``{`` just before ``start``, or None if unbalanced."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` in ``text`` (nested braces kept), stripped;
    None when there is none. An unterminated box (a truncated completion) does not count."""
    position = text.rfind(BOX)
    while position >= 0:
        start = position + len(BOX)
        end = _closing_brace(text, start)
        if end is not None:
            return text[start:end].strip()
        position = text.rfind(BOX, 0, position)
    return None


def parse_integer(answer: str | None) -> int | None:
    """``"1,055"``, ``" 1055 "``, ``"-7"``, ``"{1055}"`` -> int; anything else -> None."""
    if answer is None:
        return None
    cleaned = _IGNORED.sub("", answer)
    return int(cleaned) if _INTEGER.fullmatch(cleaned) else None


def is_well_formed(text: str) -> bool:
    """``<think>...</think>`` then a single non-empty ``\\boxed{...}``, only whitespace around."""
    body = text.strip()
    if not body.startswith("<think>") or body.count("<think>") != 1 or body.count("</think>") != 1:
        return False
    answer = body.split("</think>", 1)[1].strip()
    if not answer.startswith(BOX):
        return False
    end = _closing_brace(answer, len(BOX))
    return end == len(answer) - 1 and answer[len(BOX) : end].strip() != ""


class BoxedAnswerVerifier:
    """``StepBatch -> Verdicts``: correctness of the boxed integer and the output format."""

    def __call__(self, rollouts: StepBatch) -> Verdicts:
        predicted = [extract_boxed(text) for text in rollouts.texts]
        gold = [parse_integer(answer) for answer in rollouts.answers_N]
        correct = [
            float(g is not None and parse_integer(p) == g) for p, g in zip(predicted, gold)
        ]
        well_formed = [float(is_well_formed(text)) for text in rollouts.texts]
        return Verdicts(
            correct_N=torch.tensor(correct, dtype=torch.float32),
            format_ok_N=torch.tensor(well_formed, dtype=torch.float32),
            predicted=predicted,
        )
