"""The trainer's optimizer settings: AdamW's hyperparameters, the learning-rate schedule (constant or
cosine after a linear warmup) and the parameter groups (no weight decay on biases and norms)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SCHEDULES = ("constant", "cosine")


@dataclass
class OptimSettings:
    """AdamW and its learning-rate schedule: linear warmup from lr/(warmup_steps+1) to ``lr`` over
    ``warmup_steps`` steps, then constant or cosine decay to 0 at ``total_steps``. Weight decay
    applies to matrices only (parameters with >= 2 dimensions), not to biases and norms."""

    lr: float = 1.0e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    grad_clip: float = 1.0  # max global L2 norm of the gradient; 0 = no clipping
    warmup_steps: int = 0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r} is not one of {SCHEDULES}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based):
    warmup ``(step + 1) / (warmup_steps + 1)`` while ``step < warmup_steps``; then 1 (constant) or
    ``0.5 (1 + cos(π p))`` with ``p = (step - warmup_steps) / max(1, total_steps - warmup_steps)``
    clipped to [0, 1] (cosine)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _ndim(p: torch.nn.Parameter) -> int:
    return len(getattr(p, "ds_shape", p.shape))  # a ZeRO-3 partitioned param is 1-D locally


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay, vectors (biases, norm gains) do not."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if _ndim(p) >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if _ndim(p) < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
