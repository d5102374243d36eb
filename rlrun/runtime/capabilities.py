"""Where the runtime asks what a piece can do: the capabilities declared in ``rlrun.types``
(``Stateful``, ``HasMetrics``, ``UsesCollectives``, ...) are looked up here, in a composite's parts
too (``HasParts``: a reward's terms, chained filters, chained prompt transforms)."""
from __future__ import annotations

from typing import Any

from rlrun.types import HasParts, ProvidesPromptFacts, UsesCollectives


def parts_of(*pieces: Any) -> list[Any]:
    """The pieces and, depth first, the parts of each composite among them; None is skipped."""
    out: list[Any] = []
    for piece in pieces:
        if piece is None:
            continue
        out.append(piece)
        if isinstance(piece, HasParts):
            out.extend(parts_of(*piece.parts()))
    return out


def having(capability: type, *pieces: Any) -> list[Any]:
    """Those of the pieces and their parts that declare ``capability``."""
    return [p for p in parts_of(*pieces) if isinstance(p, capability)]


def provided_facts(*pieces: Any) -> set[str]:
    """The prompt facts (``Problem.meta`` keys' meaning) the pieces' transforms write."""
    return {fact for p in having(ProvidesPromptFacts, *pieces) for fact in p.provides}


def wire_collectives(collectives: Any, *pieces: Any) -> None:
    """Give every piece (and part) that declares ``UsesCollectives`` the run's collectives."""
    for piece in having(UsesCollectives, *pieces):
        piece.collectives = collectives
