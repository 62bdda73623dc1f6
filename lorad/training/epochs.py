"""A training's epochs and saved states: every finished epoch of every run, linked into the job's
work/<id>/epochs/ under its real number (so that no later run can overwrite it), its samples into
work/<id>/samples/, and the saved states a later run may resume from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.store import Job
from lorad.system.fsutil import link_or_copy
from lorad.training.kohya import outputs
from lorad.workspace import epoch_file_name, epoch_files


def harvest(ctx: Context, job: Job, train: dict[str, Any], problems_of: int | None = None
            ) -> list[str]:
    """Link every finished epoch and sample of every run into the job's folders.

    Returns the problems found (corrupt model files, which are never harvested) in the outputs
    of run number `problems_of`, or of every run when it is None: a file that an earlier run
    left half-written (it crashed, or was killed with the daemon) is not the latest run's fault.
    """
    paths, token = ctx.paths(job), job.token or ""
    epochs = train.setdefault("epochs", {})
    problems = []
    for run in train.get("runs", []):
        run_dir = paths.run_dir(run["number"])
        if not run_dir.is_dir():
            continue
        for found in outputs.epoch_files(run_dir, token):
            real = run["target"] if found.epoch is None else run["offset"] + found.epoch
            target = paths.epochs / epoch_file_name(token, real)
            if target.exists():  # linked before, maybe by the thread publishing during the run
                epochs.setdefault(str(real), {"file": str(target), "run": run["number"],
                                              "at": target.stat().st_mtime})
                continue
            problem = outputs.safetensors_problem(found.path)
            if problem:
                if problems_of in (None, run["number"]):
                    problems.append(problem)
                continue
            link_or_copy(found.path, target)
            epochs[str(real)] = {"file": str(target), "run": run["number"], "at": time.time()}
        spe = run.get("steps_per_epoch") or 0
        for sample in outputs.samples(run_dir, token):
            if sample.epoch == 0:  # --sample_at_first: the weights the run started from
                name = f"{token}_e{run['first_epoch'] - 1:06d}_{sample.prompt:02d}.png"
            elif sample.epoch is not None:
                name = f"{token}_e{run['offset'] + sample.epoch:06d}_{sample.prompt:02d}.png"
            else:
                step = (run["first_epoch"] - 1) * spe + (sample.step or 0)
                epoch = run["first_epoch"] + max(0, (sample.step or 1) - 1) // max(spe, 1)
                name = f"{token}_e{epoch:06d}_s{step:08d}_{sample.prompt:02d}.png"
            target = paths.samples / name
            if not target.exists():
                link_or_copy(sample.path, target)
    return problems


def last_epoch(ctx: Context, job: Job) -> int:
    """The newest epoch the job has finished (0 for none)."""
    return max(epoch_files(ctx.paths(job).epochs, job.token or ""), default=0)


def saved_states(ctx: Context, job: Job, train: dict[str, Any]) -> list[dict[str, Any]]:
    """Every usable saved state: its folder, real epoch and the settings it was saved with."""
    paths = ctx.paths(job)
    states = list(train.get("inherited_states", []))
    for run in train.get("runs", []):
        for state in outputs.state_folders(paths.run_dir(run["number"])):
            states.append({"path": str(state.path), "epoch": run["offset"] + state.epoch,
                           "kohya_epoch": state.epoch, "offset": run["offset"],
                           "compat": run["compat"]})
    return [s for s in states if Path(s["path"], "train_state.json").is_file()]
