"""Train: run Kohya until the job's last epoch exists, recovering from what can be recovered.

Every run continues from the newest finished epoch: with `--resume` from its saved state when the
settings allow it, else from its weights with `--network_weights`, else from scratch. That one rule
serves a daemon restart, a retry after a crash, a step down the out-of-memory ladder and a follow-up
training (`lorad resume`). Finished epochs are hard-linked out of each run into work/<id>/epochs/
under their real numbers, so no later run can overwrite them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.errors import Cancelled, StageFailed
from lorad.store import Job
from lorad.subject import SubjectSettings
from lorad.system.children import child_env
from lorad.system.fsutil import atomic_write_text, link_or_copy
from lorad.system.gpus import bf16_supported
from lorad.training.kohya import outputs
from lorad.training.kohya.command import (
    BaseArgs,
    CommandError,
    argv,
    base_args,
    check,
    compat_key,
    prompt_file_text,
    run_args,
)
from lorad.training.kohya.failures import Failure, classify
from lorad.training.kohya.ladder import describe_tried, next_step
from lorad.training.kohya.progress import Progress, ProgressTracker
from lorad.training.kohya.supervisor import RunControl, RunOutcome, supervise
from lorad.workspace import epoch_file_name

NOT_RETRIED = ("missing_model", "bad_args", "no_data", "disk_full")


class Interrupted(Exception):
    """The daemon is stopping: the job stays queued and continues at the next start."""


@dataclass
class Plan:
    number: int
    mode: str  # "fresh", "resume" or "weights"
    offset: int  # real epoch = offset + Kohya's epoch number
    first_epoch: int
    target: int
    args: dict[str, Any]
    argv: list[str]
    compat: str
    source: str | None
    notes: list[str]  # what the GUI presets' conversion ignored

    def describe(self) -> str:
        origin = {"fresh": "from scratch",
                  "resume": f"resuming the saved state {self.source}",
                  "weights": f"from the weights of epoch {self.first_epoch - 1}"}[self.mode]
        return f"run {self.number}: epochs {self.first_epoch}-{self.target}, {origin}"


# ---- what the job has done so far ---------------------------------------------------------
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
            if target.exists():
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
            if sample.epoch is not None:
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
    folder = ctx.paths(job).epochs
    numbers = [int(p.stem.rsplit("-", 1)[1]) for p in folder.glob("*-[0-9]*.safetensors")]
    return max(numbers, default=0)


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


# ---- planning a run -------------------------------------------------------------------------
def subject_of(job: Job) -> SubjectSettings:
    return SubjectSettings.model_validate(job.settings)


def job_base(ctx: Context, job: Job, gpu: int) -> BaseArgs:
    """The job's arguments from the presets and its subject, and the presets' notes."""
    try:
        return base_args(ctx.settings, subject_of(job), bf16_supported(gpu))
    except CommandError as error:
        raise StageFailed(str(error)) from None


def current_args(ctx: Context, job: Job, gpu: int, train: dict[str, Any],
                 base: BaseArgs | None = None) -> dict[str, Any]:
    """The job's arguments with the ladder's changes, before the run-specific ones."""
    base = base or job_base(ctx, job, gpu)
    return {**base.args, **train.get("adjust", {})}


def plan_run(ctx: Context, job: Job, gpu: int, train: dict[str, Any]) -> Plan | None:
    subject = subject_of(job)
    assert subject.model and subject.token
    paths = ctx.paths(job)
    target = train["target"]
    last = last_epoch(ctx, job)
    if last >= target:
        return None
    base = job_base(ctx, job, gpu)
    args = current_args(ctx, job, gpu, train, base)
    compat = compat_key(args)
    number = len(train.get("runs", [])) + 1
    run_dir = paths.run_dir(number)
    state = next((s for s in reversed(saved_states(ctx, job, train))
                  if s["epoch"] == last and s["compat"] == compat), None)
    mode, offset, source, resume, weights, initial = "fresh", 0, None, None, None, None
    if last and state:
        mode, offset, source, resume = "resume", state["offset"], state["path"], Path(state["path"])
        initial = state["kohya_epoch"] + 1
    elif last:
        weights = paths.epochs / epoch_file_name(subject.token, last)
        mode, offset, source = "weights", last, str(weights)
    family = ctx.settings.models[subject.model].family
    full = run_args(args, model_path=ctx.settings.models[subject.model].path,
                    train_dir=paths.training_images, output_dir=run_dir, token=subject.token,
                    epochs=target - offset, prompts_file=run_dir / "prompts.txt", resume=resume,
                    weights=weights, initial_epoch=initial,
                    tokenizer_cache_dir=ctx.settings.kohya.tokenizer_cache_dir)
    try:
        check(full, family)
    except CommandError as error:
        raise StageFailed(str(error)) from None
    return Plan(number, mode, offset, last + 1, target, full, argv(ctx.settings, family, full),
                compat, source, base.notes)


def preview_command(ctx: Context, job: Job, gpu: int = 0) -> list[str]:
    """The command the next run of this job would use (what `lorad command` prints)."""
    train = dict(job.train)
    train.setdefault("target", subject_of(job).total_epochs)
    runs = train.get("runs", [])
    if job.state in ("done", "failed", "cancelled") and runs:
        return runs[-1]["argv"]
    plan = plan_run(ctx, job, gpu, train)
    return plan.argv if plan else (runs[-1]["argv"] if runs else [])


# ---- the stage ------------------------------------------------------------------------------
def run(ctx: Context, job: Job, gpu: int) -> None:
    store = ctx.store
    log = ctx.log(job)
    train = dict(job.train)
    train.setdefault("target", subject_of(job).total_epochs)
    train.setdefault("start_epoch", 0)
    train.setdefault("ladder", [])
    if job.kind == "resume" and not train.get("seeded"):
        from lorad.training.followup import seed_followup

        seed_followup(ctx, job, train)
        store.update(job.id, train=train)
    while True:
        harvest(ctx, job, train)
        plan = plan_run(ctx, job, gpu, train)
        if plan is None:
            train.pop("progress", None)
            store.update(job.id, train=train)
            return
        prepare_run_dir(ctx, job, plan)
        run_info = {"number": plan.number, "mode": plan.mode, "offset": plan.offset,
                    "first_epoch": plan.first_epoch, "target": plan.target,
                    "compat": plan.compat, "argv": plan.argv, "gpu": gpu,
                    "started": time.time()}
        train.setdefault("runs", []).append(run_info)
        store.update(job.id, train=train, gpu=gpu)
        store.event(job.id, plan.describe() + f" on GPU {gpu}")
        log.info("%s on GPU %d", plan.describe(), gpu)
        if plan.number == 1:
            record_notes(ctx, job, plan.notes)
        outcome = _supervise(ctx, job, plan, gpu, train, run_info)
        run_info.update(ended=time.time(), exit=outcome.exit_code, how=outcome.ended,
                        seconds=round(outcome.seconds, 1))
        train["seconds"] = round(train.get("seconds", 0) + outcome.seconds, 1)
        corrupt = harvest(ctx, job, train, problems_of=plan.number)
        store.update(job.id, train=train)
        if outcome.ended == "cancelled":
            raise Cancelled("training cancelled; the finished epochs are kept")
        if outcome.ended == "interrupted":
            raise Interrupted("the daemon is stopping")
        failure = _failure(ctx, job, plan, outcome, corrupt)
        if failure is None:
            continue
        run_info["failure"] = failure.kind
        store.update(job.id, train=train)
        _recover(ctx, job, gpu, train, failure)


def record_notes(ctx: Context, job: Job, notes: list[str]) -> None:
    """What the GUI presets' conversion left out, once per job (`lorad show` lists it)."""
    for note in notes:
        ctx.store.event(job.id, note)


def prepare_run_dir(ctx: Context, job: Job, plan: Plan) -> None:
    run_dir = Path(plan.args["output_dir"])
    if run_dir.exists():  # a run that was planned but never started: start it clean
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    atomic_write_text(Path(plan.args["sample_prompts"]),
                      prompt_file_text(subject_of(job).prompts(), plan.args))
    atomic_write_text(run_dir / "command.txt", "\n".join(plan.argv) + "\n")


def _supervise(ctx: Context, job: Job, plan: Plan, gpu: int, train: dict[str, Any],
               run_info: dict[str, Any]) -> RunOutcome:
    store = ctx.store
    span = max(1, train["target"] - train["start_epoch"])
    done_before = plan.first_epoch - 1 - train["start_epoch"]

    def on_progress(progress: Progress) -> None:
        real_epoch = plan.offset + progress.epoch if progress.epoch else plan.first_epoch
        within = progress.epoch_fraction
        fraction = (real_epoch - 1 - train["start_epoch"] + within) / span
        fraction = max(fraction, done_before / span)
        text = progress.describe(epoch_offset=plan.offset, epochs_total=train["target"])
        train["progress"] = progress.as_dict()
        if progress.steps_per_epoch and not run_info.get("steps_per_epoch"):
            run_info["steps_per_epoch"] = int(progress.steps_per_epoch)
        store.set_progress(job.id, fraction, text, train=train)

    env = child_env({**ctx.settings.kohya.env, "CUDA_VISIBLE_DEVICES": str(gpu)})
    control = RunControl(on_progress=on_progress,
                         cancelled=lambda: store.cancel_requested(job.id),
                         stopping=ctx.stopping,
                         stall_seconds=ctx.settings.kohya.stall_minutes * 60,
                         grace_seconds=ctx.settings.kohya.stop_grace_seconds)
    header = (f"=== lorad job {job.id} {plan.describe()} at "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n" + " \\\n  ".join(plan.argv))
    return supervise(store, job.id, plan.argv, cwd=ctx.settings.kohya.sd_scripts, env=env,
                     log_path=ctx.paths(job).train_log, header=header, control=control,
                     tracker=ProgressTracker())


def _failure(ctx: Context, job: Job, plan: Plan, outcome: RunOutcome, corrupt: list[str]
             ) -> Failure | None:
    if outcome.ended == "stalled":
        minutes = ctx.settings.kohya.stall_minutes
        return Failure("stalled", f"the trainer printed nothing for {minutes:g} minutes and was "
                                  "stopped")
    wrote = last_epoch(ctx, job) >= plan.target
    if corrupt and outcome.exit_code == 0:
        return Failure("corrupt", f"the trainer wrote a corrupt model file: {corrupt[0]}")
    return classify(outcome.tail, outcome.exit_code, wrote)


def _recover(ctx: Context, job: Job, gpu: int, train: dict[str, Any], failure: Failure) -> None:
    """Decide what the next run changes, or fail the stage with everything that was tried."""
    store, log = ctx.store, ctx.log(job)
    if failure.kind == "oom":
        args = current_args(ctx, job, gpu, train)
        step = next_step(args, bf16_supported(gpu))
        if step is None:
            tried = describe_tried(train["ladder"]) if train["ladder"] else "nothing left to try"
            raise StageFailed(f"out of GPU memory; already tried: {tried}. A GPU with more "
                              "memory, or a smaller resolution or network_dim in lora.toml "
                              "[train], is needed")
        changes = {k: v for k, v in step.args.items() if args.get(k) != v}
        changes.update({k: None for k in args if k not in step.args})
        train["adjust"] = {**train.get("adjust", {}), **changes}
        train["ladder"].append(step.name)
        store.update(job.id, train=train)
        store.event(job.id, f"out of GPU memory; retrying with: {step.name}", level="warning",
                    data={"changes": changes})
        log.warning("out of GPU memory; retrying with %s", step.name)
        return
    if failure.kind == "disk_full":  # retrying would only fill it again
        raise StageFailed(f"{failure.message} to {ctx.paths(job).train}; free some space there, "
                          f"then run: lorad retry {job.id} (the finished epochs are kept)")
    if failure.kind in NOT_RETRIED:
        raise StageFailed(failure.message)
    attempts = store.get(job.id).attempts + 1
    store.update(job.id, attempts=attempts)
    limit = ctx.settings.kohya.max_attempts
    if attempts >= limit:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise StageFailed(f"{failure.message} (gave up after {tries})")
    store.event(job.id, f"{failure.message}; trying again ({attempts + 1} of {limit}), from the "
                        "last finished epoch", level="warning")
    log.warning("%s; trying again (%d of %d)", failure.message, attempts + 1, limit)
