"""What a Hydra multirun (``rlrun -m ...``) does by itself when its jobs are over: one picture.

A Hydra callback, registered in conf/config.yaml under ``hydra.callbacks``. When the sweep ends it
runs in the process that launched the jobs (with the basic launcher, the one that ran them; with
hydra-submitit, the one that submitted them and waited for their results), so it reads only the
files the runs left in the sweep dir (``hydra.sweep.dir``):

- it writes the sweep's ``pareto.png``, ``pareto.svg``, ``pareto.csv`` and ``pareto.json`` there
  (rlrun.analysis.pareto, as ``rlrun-pareto SWEEP_DIR`` would, over the runs that wrote a ``summary.json``);
- when the runs log to W&B (``logger=wandb``, the default logger, offline unless
  ``logger.mode=online``), it logs ONE more W&B run for the sweep, named ``sweep-<date>-<time>``,
  grouped by the sweep dir, job type ``sweep``, holding the Pareto table and scatter chart
  (rlrun.analysis.pareto_plot.log_pareto_to_wandb, as ``rlrun-pareto --wandb``), in the runs' mode and
  project, written under the sweep dir as theirs are under their run dirs. Offline needs no network.

It never fails the multirun: any problem is one printed line. Runs without a summary.json (failed or
unfinished) are named and left out. Hydra calls ``on_multirun_end`` only when every job succeeded; when
a job fails, the multirun stops with Hydra's error and a handler registered at exit draws the picture
of the runs that did finish (files only: W&B is itself shutting down then). A single run never calls
the multirun hooks, so it is unaffected.
"""
from __future__ import annotations

import atexit
import glob
import os
import time
from typing import Any

from hydra.experimental.callback import Callback

WANDB_LOGGER = "rlrun.loggers.wandb.WandbLogger"
def say(line: str) -> None:
    print(f"rlrun: {line}", flush=True)


def job_dirs(sweep_dir: str) -> list[str]:
    """:func:`rlrun.analysis.pareto.job_dirs`, imported when a sweep ends (not at every ``rlrun`` start)."""
    from rlrun.analysis.pareto import job_dirs as found

    return found(sweep_dir)


def finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "summary.json"))


def logger_of(run_dir: str) -> dict[str, Any] | None:
    """The ``logger`` node of a run's composed config (``.hydra/config.yaml``), or None."""
    path = os.path.join(run_dir, ".hydra", "config.yaml")
    if not os.path.isfile(path):
        return None
    from omegaconf import OmegaConf

    node = OmegaConf.load(path).get("logger")
    try:
        return OmegaConf.to_container(node, resolve=True) if node is not None else None
    except Exception:  # noqa: BLE001 - an interpolation that resolves only inside the run (${hydra:...})
        return OmegaConf.to_container(node, resolve=False)


def wandb_settings(loggers: list[dict[str, Any] | None]) -> dict[str, str] | None:
    """``{mode, project}`` of the first W&B logger among the runs' loggers (the defaults of
    conf/logger/wandb.yaml where unset), or None when no run logs to W&B or its mode is disabled."""
    for logger in loggers:
        if logger and logger.get("_target_") == WANDB_LOGGER:
            mode = str(logger.get("mode") or "offline")
            if mode == "disabled":
                return None
            return {"mode": mode, "project": str(logger.get("project") or "rlrun")}
    return None


def sweep_group(sweep_dir: str) -> str:
    """The W&B group of a sweep: its dir relative to the working directory when it lies below it
    (``outputs/multirun/<date>/<time>``), else its absolute path; W&B allows 128 characters."""
    path = os.path.abspath(sweep_dir)
    rel = os.path.relpath(path)
    name = path if rel.startswith(os.pardir) else rel
    return name[-128:]


def summarise_sweep(sweep_dir: str, name: str, use_wandb: bool = True) -> str | None:
    """Write the sweep's Pareto files into ``sweep_dir`` from its finished runs and, when
    ``use_wandb`` and the runs log to W&B, log the sweep run ``name``. Prints what it did, one line
    each; returns the picture's path, or None when there was nothing to draw."""
    from rlrun.analysis import pareto

    runs = job_dirs(sweep_dir)
    done = [d for d in runs if finished(d)]
    if not done:
        say(f"sweep: no Pareto picture for {sweep_dir}: none of its {len(runs)} runs finished "
            "(no summary.json in any run dir)")
        return None
    for run_dir in runs:
        if run_dir not in done:
            say(f"sweep: skipping run {run_dir}: no summary.json (it failed or did not finish)")
    points, curves = pareto.collect(done)
    if not points:
        say(f"sweep: no Pareto picture for {sweep_dir}: its runs have no evaluation (eval=none?)")
        return None
    written = pareto.write_outputs(points, curves, sweep_dir)
    picture = os.path.join(sweep_dir, "pareto.png")
    others = ", ".join(os.path.basename(p) for p in written if p != picture)
    runs_text = f"{len(done)} run" + ("" if len(done) == 1 else "s")
    say(f"sweep: Pareto picture of {runs_text} written to {picture} (and {others})")
    settings = wandb_settings([logger_of(d) for d in done])
    if use_wandb and settings:
        try:
            log_sweep_run(points, sweep_dir, name, settings, done, [d for d in runs if d not in done])
        except Exception as exc:  # noqa: BLE001 - W&B trouble (no login for online, ...) must not fail the sweep
            say(f"sweep: W&B sweep run not logged: {type(exc).__name__}: {exc}")
    return picture


def log_sweep_run(points, sweep_dir: str, name: str, settings: dict[str, str], done: list[str],
                  skipped: list[str]) -> None:
    """The sweep's own W&B run: the Pareto table and scatter chart, in the runs' mode and project."""
    from rlrun.analysis.pareto import run_label
    from rlrun.analysis.pareto_plot import log_pareto_to_wandb

    config = {"sweep_dir": os.path.abspath(sweep_dir),
              "runs": {run_label(d): os.path.abspath(d) for d in done},
              "skipped": [os.path.abspath(d) for d in skipped]}
    run = log_pareto_to_wandb(points, out_dir=sweep_dir, mode=settings["mode"],
                              project=settings["project"], job_type="sweep", name=name,
                              group=sweep_group(sweep_dir), config=config)
    where = os.path.join(sweep_dir, "wandb")
    if settings["mode"] == "offline":
        found = glob.glob(os.path.join(where, f"offline-run-*-{run.id}"))
        where = found[0] if len(found) == 1 else where
        say(f"sweep: W&B sweep run {name} (offline, project {settings['project']}) written to "
            f"{where}; upload it with `wandb sync {where}`")
    else:
        say(f"sweep: W&B sweep run {name} (project {settings['project']}): {run.url or where}")


class SweepParetoCallback(Callback):
    """After ``rlrun -m ...``: the sweep's Pareto files, and its W&B run when the runs use W&B.

    Holds only strings and flags: the hydra-submitit launcher pickles the callbacks with itself."""

    def __init__(self) -> None:
        self.sweep_dir: str | None = None
        self.name: str | None = None
        self.ended = False

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0":
            return  # a sweep under a launcher that starts several ranks: rank 0 draws it
        try:
            # resolving the sweep dir here caches ${now:...}, which the sweeper and jobs then share
            self.sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
            self.name = time.strftime("sweep-%Y-%m-%d-%H-%M-%S")
            atexit.register(self.after_failed_sweep)
        except Exception as exc:  # noqa: BLE001 - a sweep without its picture still runs
            say(f"sweep: no Pareto picture will be drawn: {type(exc).__name__}: {exc}")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self.ended = True
        if self.sweep_dir is None:
            return  # not rank 0, or on_multirun_start could not read the sweep dir (it said so)
        try:
            summarise_sweep(self.sweep_dir, self.name or time.strftime("sweep-%Y-%m-%d-%H-%M-%S"))
        except Exception as exc:  # noqa: BLE001 - never fail a multirun whose jobs all succeeded
            say(f"sweep: no Pareto picture: {type(exc).__name__}: {exc}")

    def after_failed_sweep(self) -> None:
        """At exit of a multirun stopped by a failed job (on_multirun_end never ran): the picture of
        the runs that finished, without W&B."""
        if self.ended or self.sweep_dir is None:
            return
        self.ended = True
        try:
            if not job_dirs(self.sweep_dir):
                return  # the sweep stopped before any job started (e.g. a bad sweep override)
            say(f"sweep: the multirun stopped early; Pareto picture of the runs that finished "
                f"(no W&B sweep run; `rlrun-pareto {self.sweep_dir} --wandb offline` logs one)")
            summarise_sweep(self.sweep_dir, self.name or "", use_wandb=False)
        except Exception as exc:  # noqa: BLE001 - at exit, a line rather than a traceback
            say(f"sweep: no Pareto picture: {type(exc).__name__}: {exc}")
