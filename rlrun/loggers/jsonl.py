"""Metrics as JSON lines in the run directory: one object per step, ``{"step": s, name: value}``.

The file is the run's own record (dashboards and ``rlrun-pareto`` read it); a resumed run appends.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    def __init__(self, out_dir: str, filename: str = "metrics.jsonl") -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, filename)
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(float(v)) for k, v in metrics.items()}}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self, summary: dict[str, Any]) -> None:
        self._file.close()
