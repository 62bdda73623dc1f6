"""Train: run Kohya until the job's last epoch exists, recovering from what can be recovered.

Every run continues from the newest finished epoch: with `--resume` from its saved state when the
settings allow it, else from its weights with `--network_weights`, else from scratch. That one rule
serves a daemon restart, a retry after a crash, a step down the out-of-memory ladder and a follow-up
training (`lorad resume`). Finished epochs are hard-linked out of each run into work/<id>/epochs/
under their real numbers, so no later run can overwrite them.
"""

from __future__ import annotations

import glob
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.errors import Cancelled, StageFailed
from lorad.store import Job
from lorad.subject import subject_of
from lorad.system.children import child_env
from lorad.system.fsutil import atomic_write_text
from lorad.training.epochs import harvest, last_epoch, saved_states
from lorad.training.executor import ANY_GPU, Executor, LocalExecutor, TrainingRun
from lorad.training.followup import seed_followup
from lorad.training.kohya.command import (
    BaseArgs,
    CommandError,
    argv,
    base_args,
    check,
    compat_key,
    prompt_file_text,
    run_args,
    samples_per_prompt,
)
from lorad.training.kohya.failures import Failure, classify
from lorad.training.kohya.ladder import describe_tried, next_step
from lorad.training.kohya.progress import Progress, ProgressTracker
from lorad.training.kohya.supervisor import RunControl, RunOutcome, supervise
from lorad.training.losslog import LossLog
from lorad.training.watch import EpochWatcher
from lorad.workspace import epoch_file_name

# Failures that are the same on every try: the settings, the base model, the script, the data.
NOT_RETRIED = ("missing_model", "missing_script", "bad_args", "refused", "no_data", "disk_full")
# Machines lost under one job (a cluster's nodes) before it fails: they are no trainer's fault,
# but a job that loses every machine it lands on should not go round for ever.
MAX_LOST_MACHINES = 10


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


# ---- planning a run -------------------------------------------------------------------------
def executor_of(ctx: Context) -> Executor:
    return ctx.executor or LocalExecutor(ctx.store, ctx.settings.gpus)


def place_of(gpu: int) -> str:
    return "the cluster" if gpu == ANY_GPU else f"GPU {gpu}"


def job_base(ctx: Context, job: Job, gpu: int) -> BaseArgs:
    """The job's arguments from the presets and its subject, and the presets' notes."""
    visible, bf16 = executor_of(ctx).gpu_facts(gpu)
    try:
        return base_args(ctx.settings, subject_of(job), bf16, visible)
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
                    tokenizer_cache_dir=ctx.settings.kohya.tokenizer_cache_dir,
                    model_name=subject.model,
                    sample_at_first=bool(last) and samples_missing(ctx, job, args, last))
    try:
        check(full, family)
    except CommandError as error:
        raise StageFailed(str(error)) from None
    return Plan(number, mode, offset, last + 1, target, full, argv(ctx.settings, family, full),
                compat, source, base.notes)


def samples_missing(ctx: Context, job: Job, args: dict[str, Any], epoch: int) -> bool:
    """Whether epoch `epoch` should have a sample per prompt (sampling is on) and has fewer:
    the training was stopped while drawing them. The next run then draws them first
    (--sample_at_first)."""
    every = args.get("sample_every_n_epochs") or 0
    if not every or epoch % every:
        return False
    pattern = f"{glob.escape(job.token or '')}_e{epoch:06d}_[0-9][0-9].png"
    paths = ctx.paths(job)
    folders = [paths.samples] + ([Path(job.outbox_dir) / "samples"] if job.outbox_dir else [])
    found = {path.name for folder in folders for path in folder.glob(pattern)}
    return len(found) < len(subject_of(job).prompts())


def preview_command(ctx: Context, job: Job, gpu: int = 0) -> list[str]:
    """The command the next run of this job would use, built from the current configuration."""
    train = dict(job.train)
    train.setdefault("target", subject_of(job).total_epochs)
    runs = train.get("runs", [])
    plan = plan_run(ctx, job, gpu, train)
    return plan.argv if plan else (runs[-1]["argv"] if runs else [])


def shown_command(ctx: Context, job: Job) -> tuple[list[str], str]:
    """What `lorad command` prints: the exact command of the running or last run, else (the job
    has not trained yet) a preview from the current configuration; and a line that says which."""
    runs = job.train.get("runs", [])
    if not runs:
        return preview_command(ctx, job), (
            f"job {job.id} has not trained yet: a preview built from the current configuration "
            "(its first run builds its own when it starts)")
    last = runs[-1]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.get("started", 0)))
    if "ended" not in last and job.state == "training":
        how = f"running since {started}"
    else:
        how = f"the last run, started {started}"
    return last["argv"], f"job {job.id} run {last['number']} ({how}), as it was started"


# ---- the stage ------------------------------------------------------------------------------
def run(ctx: Context, job: Job, gpu: int) -> None:
    store = ctx.store
    log = ctx.log(job)
    train = dict(job.train)
    train.setdefault("target", subject_of(job).total_epochs)
    train.setdefault("start_epoch", 0)
    train.setdefault("ladder", [])
    if job.kind == "resume" and not train.get("seeded"):
        seed_followup(ctx, job, train)
        store.update(job.id, train=train)
    while True:
        harvest(ctx, job, train)
        plan = plan_run(ctx, job, gpu, train)
        if plan is None:
            train.pop("progress", None)
            store.update(job.id, train=train)
            return
        per_prompt = prepare_run_dir(ctx, job, plan)
        run_info = {"number": plan.number, "mode": plan.mode, "offset": plan.offset,
                    "first_epoch": plan.first_epoch, "target": plan.target,
                    "compat": plan.compat, "argv": plan.argv, "gpu": gpu,
                    "sample_every_n_epochs": plan.args.get("sample_every_n_epochs"),
                    "samples_per_prompt": per_prompt, "started": time.time()}
        train.setdefault("runs", []).append(run_info)
        store.update(job.id, train=train, gpu=gpu)
        store.event(job.id, f"{plan.describe()} on {place_of(gpu)}")
        log.info("%s on %s", plan.describe(), place_of(gpu))
        if plan.number == 1:
            record_notes(ctx, job, plan.notes)
        with EpochWatcher(ctx, job, train, run_info):
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
        if outcome.lost:
            _machine_lost(ctx, job, train, run_info, outcome.lost)
            continue
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


def prepare_run_dir(ctx: Context, job: Job, plan: Plan) -> int:
    """A clean run folder with the prompt file and the command; how many samples of each
    prompt the run draws ([score] samples_per_prompt)."""
    run_dir = Path(plan.args["output_dir"])
    if run_dir.exists():  # a run that was planned but never started: start it clean
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    prompts = subject_of(job).prompts()
    per_prompt = samples_per_prompt(prompts, ctx.settings.score.per_prompt())
    atomic_write_text(Path(plan.args["sample_prompts"]),
                      prompt_file_text(prompts, plan.args, per_prompt))
    atomic_write_text(run_dir / "command.txt", "\n".join(plan.argv) + "\n")
    return per_prompt


def _supervise(ctx: Context, job: Job, plan: Plan, gpu: int, train: dict[str, Any],
               run_info: dict[str, Any]) -> RunOutcome:
    store = ctx.store
    span = max(1, train["target"] - train["start_epoch"])
    done_before = plan.first_epoch - 1 - train["start_epoch"]
    losses = LossLog(ctx.paths(job).loss_log)
    executor = executor_of(ctx)
    current: list[TrainingRun] = []

    def report(progress: Progress) -> None:
        real_epoch = plan.offset + progress.epoch if progress.epoch else plan.first_epoch
        within = progress.epoch_fraction
        fraction = (real_epoch - 1 - train["start_epoch"] + within) / span
        fraction = max(fraction, done_before / span)
        text = progress.describe(epoch_offset=plan.offset, epochs_total=train["target"])
        if current and not current[0].placed:  # e.g. "waiting for a free place in the cluster"
            text = run_info.get("where") or text
        train["progress"] = progress.as_dict()
        if progress.steps_per_epoch and not run_info.get("steps_per_epoch"):
            run_info["steps_per_epoch"] = int(progress.steps_per_epoch)
        store.set_progress(job.id, fraction, text, train=train)
        losses.record(progress.step, real_epoch, progress.loss)

    header = (f"=== lorad job {job.id} {plan.describe()} at "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n" + " \\\n  ".join(plan.argv))

    def start() -> TrainingRun:
        current.append(executor.start(job.id, plan.argv, cwd=ctx.settings.kohya.sd_scripts,
                                      env=child_env(ctx.settings.kohya.env), gpu=gpu))
        return current[0]

    def on_progress(progress: Progress) -> None:
        where, placed = (current[0].where, current[0].placed) if current else ("", False)
        if current and where != run_info.get("where"):
            run_info["where"] = where
            if gpu == ANY_GPU:  # the executor placed it (or says why it waits)
                store.event(job.id, f"run {plan.number} {'runs on' if placed else 'is'} {where}")
        report(progress)

    control = RunControl(on_progress=on_progress,
                         cancelled=lambda: store.cancel_requested(job.id),
                         stopping=ctx.stopping,
                         stall_seconds=ctx.settings.kohya.stall_minutes * 60,
                         grace_seconds=ctx.settings.kohya.stop_grace_seconds,
                         say=lambda line: _tell(ctx, job, line), epoch_offset=plan.offset)
    return supervise(start, log_path=ctx.paths(job).train_log, header=header, control=control,
                     tracker=ProgressTracker())


def _tell(ctx: Context, job: Job, line: str) -> None:
    """A line for the log (the terminal, the journal) and the job's events."""
    ctx.log(job).info("%s", line)
    ctx.store.event(job.id, line)


def _failure(ctx: Context, job: Job, plan: Plan, outcome: RunOutcome, corrupt: list[str]
             ) -> Failure | None:
    if outcome.ended == "stalled":
        minutes = ctx.settings.kohya.stall_minutes
        return Failure("stalled", f"the trainer printed nothing for {minutes:g} minutes and was "
                                  "stopped")
    wrote = last_epoch(ctx, job) >= plan.target
    if corrupt and outcome.exit_code == 0:
        return Failure("corrupt", f"the trainer wrote a corrupt model file: {corrupt[0]}")
    return classify(outcome.tail, outcome.exit_code, wrote, outcome.training_started)


def _machine_lost(ctx: Context, job: Job, train: dict[str, Any], run_info: dict[str, Any],
                  why: str) -> None:
    """The machine under a run was lost: no attempt is counted; the next run continues from
    the newest epoch that reached this machine, wherever the executor places it."""
    lost = train.get("machines_lost", 0) + 1
    train["machines_lost"] = lost
    run_info["lost"] = why
    ctx.store.update(job.id, train=train)
    if lost > MAX_LOST_MACHINES:
        raise StageFailed(f"{why}; {lost} machines were lost under this job, so it stops here "
                          f"(lorad retry {job.id} continues it from its newest epoch)")
    newest = last_epoch(ctx, job)
    origin = f"from epoch {newest}" if newest else "from the start"
    ctx.store.event(job.id, f"{why}; run {run_info['number']} continues on another machine "
                            f"{origin} (not counted as a trainer failure)", level="warning")
    ctx.log(job).warning("%s; continuing %s on another machine", why, origin)


def _recover(ctx: Context, job: Job, gpu: int, train: dict[str, Any], failure: Failure) -> None:
    """Decide what the next run changes, or fail the stage with everything that was tried."""
    store, log = ctx.store, ctx.log(job)
    if failure.kind == "oom":
        args = current_args(ctx, job, gpu, train)
        step = next_step(args, executor_of(ctx).gpu_facts(gpu)[1])
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
