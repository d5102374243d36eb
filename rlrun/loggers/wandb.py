"""Weights & Biases logging, offline by default so that no account is needed.

Offline runs land in ``<run dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``; ``logger.mode=online`` logs live for users with an account. The W&B run id is kept
in ``<run dir>/wandb_run_id`` so that a resumed rlrun run continues the same W&B run, and
:meth:`WandbLogger.carry` gives that run the steps it lacks. Metrics also go to ``metrics.jsonl``
(the run directory's own record).
"""
from __future__ import annotations

import os
import uuid
from typing import Any

from rlrun.loggers.jsonl import JsonlLogger

MODES = ("offline", "online", "disabled")
FLUSH_S = 1.0  # seconds between writes of the W&B run's history to its .wandb file


def multirun_group() -> str | None:
    """Inside a Hydra multirun, the sweep's W&B group (:func:`rlrun.analysis.sweep.sweep_group`), the group
    of the sweep's own Pareto run too, so W&B shows a sweep's runs together; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from rlrun.analysis.sweep import sweep_group

    return sweep_group(HydraConfig.get().sweep.dir)


class WandbLogger:
    def __init__(
        self,
        out_dir: str,
        mode: str = "offline",
        project: str = "rlrun",
        name: str | None = None,
        config: dict[str, Any] | None = None,
        group: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"logger.mode={mode!r} is not one of {list(MODES)}")
        import wandb

        self.jsonl = JsonlLogger(out_dir)
        id_file = os.path.join(out_dir, "wandb_run_id")
        run_id = open(id_file).read().strip() if os.path.exists(id_file) else uuid.uuid4().hex[:8]
        with open(id_file, "w") as f:
            f.write(run_id)
        self.run = wandb.init(
            project=project,
            name=name or os.path.basename(os.path.normpath(out_dir)),
            dir=out_dir,
            mode=mode,
            id=run_id,
            resume="allow",
            config=config or {},
            group=group or multirun_group(),
            # the .wandb file gets the history every second (W&B's default is 15 s): a run killed
            # with SIGKILL keeps all but its last second of history there, and carry() fills the rest
            settings=wandb.Settings(console="off", silent=True, x_transaction_log_flush_interval=FLUSH_S),
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.jsonl.log(step, metrics)
        self.run.log(dict(metrics), step=step)

    def carry(self, lines: list[dict[str, Any]]) -> None:
        """A resumed run: log the steps ``lines`` hold (metrics.jsonl of the run being resumed, up
        to its checkpoint) that this W&B run does not have yet, so that the resumed W&B run holds
        the whole history even when the run before it was killed before W&B wrote it out (offline:
        a resumed run is a new offline-run dir with the same id, now complete). Online, W&B already
        has the steps before ``run.step``; they are not sent again."""
        have = int(self.run.step or 0)
        for line in lines:
            step = int(line["step"])
            values = {k: v for k, v in line.items() if k != "step" and v is not None}
            if step >= have and values:
                self.run.log(values, step=step)

    def close(self, summary: dict[str, Any]) -> None:
        self.jsonl.close(summary)
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                self.run.summary[key] = value
        self.run.finish()
