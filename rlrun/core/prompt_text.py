"""Text added to a prompt by a prompt transform (LCPO's length instruction, a curriculum's stated
budget)."""
from __future__ import annotations


def append_line(prompt: str, line: str) -> str:
    """``"<prompt> <line>"``, separated by a space, with the prompt's trailing whitespace (the task's
    ``\\n`` before the response) kept at the end: ``"Add 1+2.\\n"`` -> ``"Add 1+2. <line>\\n"``."""
    body = prompt.rstrip()
    return f"{body} {line}{prompt[len(body):]}" if body else f"{line}{prompt}"
