"""Text added to a prompt by a prompt transform (LCPO's length instruction, a curriculum's stated
budget)."""
from __future__ import annotations


def append_line(prompt: str, line: str) -> str:
    """``"<prompt> <line>"``, separated by a space, with the prompt's trailing whitespace (the task's
    ``\\n`` before the response) kept at the end: ``"Add 1+2.\\n"`` -> ``"Add 1+2. <line>\\n"``."""
    body = prompt.rstrip()
    return f"{body} {line}{prompt[len(body):]}" if body else f"{line}{prompt}"


class ChainedPrompts:
    """Prompt transforms applied in order (the algorithm's, e.g. LCPO's instruction, then the
    curriculum's stated budget); a composite (``HasParts``), so what its transforms declare
    (``ChecksReward``, ``ProvidesPromptFacts``, ``MeasuresEval``) is found in its parts."""

    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, problems: list, step: int) -> list:
        for transform in self.transforms:
            problems = transform(problems, step)
        return problems

    def parts(self) -> list:
        return list(self.transforms)
