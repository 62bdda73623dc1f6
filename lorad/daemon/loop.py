"""The daemon's loop: inbox and store in, stages out.

The loop asks the store which job needs which stage and hands it to a worker; no stage calls the
next one. CPU work (prepare, deliver, captions without BLIP) runs in a small thread pool; each GPU
has one slot for a training; BLIP captioning runs in one child process at a time, on a GPU no
training needs or on the CPU. Heavy libraries live only in child processes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from typing import Any

from lorad.captioning import stage as caption
from lorad.context import Context
from lorad.dataset import stage as prepare
from lorad.delivery import messages, notify
from lorad.delivery import stage as deliver
from lorad.errors import Cancelled, CannotStart, Rejected, StageFailed
from lorad.inbox import claim as ingest
from lorad.inbox.watcher import Inbox
from lorad.settings import Settings
from lorad.store import RUNNING, Job, Store
from lorad.system import children
from lorad.system.fsutil import FULL_DISK_TEXT, DiskFull, remove_stale_temps
from lorad.system.logs import for_job, log
from lorad.system.pidlock import PidLock
from lorad.system.sdnotify import SystemdNotifier
from lorad.training import stage as train

PIPELINE = ("prepare", "caption", "train", "deliver")
REQUEST_SCAN_SECONDS = 2.0
# A stop waits for the epoch being saved (up to 0.8 x kohya.stop_grace_seconds), then for the
# trainer to exit after SIGTERM (stop_grace_seconds), then this long to record the outcomes.
STOP_MARGIN_SECONDS = 10.0
# Each EXTEND_TIMEOUT_USEC= asks systemd for the time left until that deadline plus this much.
EXTEND_MARGIN_SECONDS = 5.0


def stop_deadline_seconds(settings: Settings) -> float:
    """How long a stop waits for running work before lorad exits without it (the units'
    TimeoutStopSec= is set above this for the default stop_grace_seconds)."""
    return 1.8 * settings.kohya.stop_grace_seconds + STOP_MARGIN_SECONDS


def with_retry_hint(message: str, job_id: int) -> str:
    """A failure's message with the job's own retry command; a full disk always says so."""
    message = message.replace("lorad retry JOB", f"lorad retry {job_id}")
    if FULL_DISK_TEXT.search(message) and "free some space" not in message:
        message += f"; the disk is full: free some space on it, then run: lorad retry {job_id}"
    return message


def next_stage(job: Job, stage: str) -> str:
    if job.options.get("recaption_only") and stage == "caption":
        return "deliver"
    index = PIPELINE.index(stage)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else "done"


class Daemon:
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.wake = threading.Event()
        self.lock = PidLock(settings.state_dir)
        self.sd = SystemdNotifier.from_env()
        self.ctx: Context | None = None
        self.stopping = threading.Event()  # set by SIGTERM/SIGINT, also during start-up
        self.busy: dict[int, str] = {}
        self.slots: dict[int, int | str | None] = {gpu: None for gpu in settings.gpus}
        self.captioner: threading.Thread | None = None
        self.threads: list[threading.Thread] = []
        self.guard = threading.Lock()
        self.cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lorad-cpu")
        self.cpu_work: set[Future] = set()
        self._next_request_scan = 0.0
        self._request_error = ""
        self._reload = threading.Event()

    # ---- start and stop ------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        try:
            self.lock.acquire()
            for folder in (settings.inbox, settings.outbox, settings.failed_dir,
                           settings.work_dir):
                Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CannotStart.from_os_error(error) from error
        for folder in (settings.outbox, settings.failed_dir, settings.work_dir,
                       *settings.deliver.copy_to):
            for path in remove_stale_temps(Path(folder)):
                log.info("removed %s, half-written when lorad was stopped hard", path)
        store = Store(settings.db_path)
        self.ctx = Context(settings, store, self.stopping)
        children.reap_orphans(store)
        ingest.recover_claims(self.ctx)
        ingest.recover_rejections(self.ctx)
        for job in store.recover():
            for_job(job.id, job.token or job.name).info("continues at the %s stage", job.stage)
        self.inbox = Inbox(settings.inbox, settings.watch, self.wake)
        mode = self.inbox.start()
        self.inbox.rescan()
        self.sender = notify.Sender(store, settings.notify)
        self.sender_thread = threading.Thread(target=self.sender.run, args=(self.ctx.stopping,),
                                              name="lorad-notify", daemon=True)
        self.sender_thread.start()
        log.info("lorad is watching %s (%s), GPUs %s, state in %s", settings.inbox, mode,
                 settings.gpus, settings.state_dir)
        self.sd.ready(self.status_line())

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new folders; unfinished jobs continue at the next start")
            self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, lambda *_: (self._reload.set(), self.wake.set()))
        self.start()
        assert self.ctx is not None
        try:
            while not self.ctx.stopping.is_set():
                self.wake.clear()  # before the step: a wake-up during it is not lost
                self.step()
                self.wake.wait(self.wait_time())
        finally:
            finished = self.shutdown()
        if not finished:
            # A stage still running would hold the interpreter's exit (Python joins the CPU
            # pool's threads at exit); what it leaves behind is picked up at the next start.
            logging.shutdown()
            os._exit(0)
        return 0

    def shutdown(self) -> bool:
        """Stop taking work and wait for the running work, until the stop deadline at most.
        False when some was still running then: lorad exits without it (systemd's KillMode=mixed
        kills what is left of its children; the next start reaps them and resumes the jobs)."""
        assert self.ctx is not None
        self.sd.stopping("stopping: waiting for running work to save and stop")
        self.ctx.stopping.set()
        self.inbox.stop()
        self.sender.wake.set()
        self.cpu.shutdown(wait=False, cancel_futures=True)  # not started: waits in the store
        finished = self._wait_for_work(time.monotonic() + stop_deadline_seconds(self.settings))
        if not finished:
            self._report_unfinished()
        # A notification in flight may wait on a slow service: it stays queued in the store
        # and is sent at the next start; stopping does not wait for it.
        self.sender_thread.join(timeout=2.0)
        self.ctx.store.close()
        self.lock.release()
        log.info("lorad stopped")
        return finished

    def _running_work(self) -> list[threading.Thread | Future]:
        return ([t for t in self.threads if t.is_alive()]
                + [f for f in list(self.cpu_work) if not f.done()])

    def _wait_for_work(self, deadline: float) -> bool:
        """Wait until no stage runs (True) or the deadline passes (False), asking systemd for
        the time left (EXTEND_TIMEOUT_USEC=) every second meanwhile, and never beyond it."""
        while running := self._running_work():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sd.extend_timeout(left + EXTEND_MARGIN_SECONDS)
            first = running[0]
            if isinstance(first, threading.Thread):
                first.join(timeout=min(1.0, left))
            else:
                wait_for_futures([first], timeout=min(1.0, left))
        return True

    def _report_unfinished(self) -> None:
        assert self.ctx is not None
        waited = stop_deadline_seconds(self.settings)
        jobs = self.ctx.store.jobs(tuple(RUNNING.values()))
        for job in jobs:
            for_job(job.id, job.token or job.name).warning(
                "still %s after the stop waited %.0f s for it (1.8 x kohya.stop_grace_seconds "
                "+ %.0f s); lorad exits without it and it continues at the next start",
                job.state, waited, STOP_MARGIN_SECONDS)
        if not jobs:
            names = ", ".join(getattr(w, "name", "a CPU stage") for w in self._running_work())
            log.warning("work was still running after the stop waited %.0f s for it (%s); lorad "
                        "exits without it", waited, names)

    def reload(self) -> None:
        from lorad.daemon.reload import reload_settings

        self._reload.clear()
        self.settings = reload_settings(self)

    # ---- the loop ------------------------------------------------------------------------
    def wait_time(self) -> float:
        until_scan = self._next_request_scan - time.monotonic()
        return max(0.05, min(self.inbox.next_check_in(), until_scan, 1.0))

    def step(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        if self._reload.is_set():
            self.reload()
        for link in self.inbox.take_outside_links():
            job_id = ingest.reject_link(ctx, link, Path(link).resolve())
            if job_id is not None:
                self._announce(ctx.store.get(job_id), "rejected")
        ready = self.inbox.poll()
        if ready and not ctx.stopping.is_set():  # else they stay, for the next start
            # A claim from another filesystem copies inside this step: it pings the watchdog.
            job_ids = ingest.claim_all(ctx, ready, heartbeat=self.sd.watchdog)
            for folder, job_id in zip(ready, job_ids, strict=True):
                if job_id is not None:
                    for_job(job_id).info("%s arrived", folder.name)
        if time.monotonic() >= self._next_request_scan:
            self._scan_requests()
        self.dispatch()
        self.sd.watchdog()
        self.sd.status(self.status_line())

    def _scan_requests(self) -> None:
        """Look for resume.toml and pick.toml in the outbox. An error is logged (each new one
        once, with its traceback) and never stops the loop; the next scan tries again."""
        from lorad.training.followup import scan_requests

        ctx = self.ctx
        assert ctx is not None
        self._next_request_scan = time.monotonic() + REQUEST_SCAN_SECONDS
        try:
            scan_requests(ctx)
        except Exception as error:
            if repr(error) != self._request_error:
                log.exception("could not read the resume and pick requests in %s (%s); lorad "
                              "tries again every %g s, and says so again only if the error "
                              "changes", ctx.settings.outbox, error, REQUEST_SCAN_SECONDS)
            self._request_error = repr(error)
            return
        self._request_error = ""

    def dispatch(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        store = ctx.store
        for job in store.waiting("prepare"):
            self._submit(job, "prepare", prepare.run)
        for gpu, holder in self.slots.items():
            if holder is not None:
                continue
            job = next((j for j in store.waiting("train") if j.id not in self.busy), None)
            if job is None:
                break
            self.slots[gpu] = job.id
            self._start(job, "train", train.run, gpu, release=lambda g=gpu: self._free(g))
        self._dispatch_captions()
        for job in store.waiting("deliver"):
            self._submit(job, "deliver", deliver.run)

    def _dispatch_captions(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        waiting = [j for j in ctx.store.waiting("caption") if j.id not in self.busy]
        blip = []
        for job in waiting:
            if caption.uses_blip(ctx, job):
                blip.append(job)
            else:
                self._submit(job, "caption", caption.without_blip)
        if not blip or (self.captioner and self.captioner.is_alive()):
            return
        placed = self._caption_placement()
        if placed is None:
            return  # its GPU is training: wait for it
        gpu, env_extra = placed
        if gpu is not None:
            self.slots[gpu] = "caption"
        for job in blip:
            self.busy[job.id] = "caption"
        self.captioner = self._spawn(self._caption_batch, blip, env_extra, gpu,
                                     name="lorad-caption")

    def _caption_placement(self) -> tuple[int | None, dict[str, str]] | None:
        """Where BLIP runs now, from caption.device: (the GPU slot it takes, or None; its extra
        environment), or None when the GPU it needs is busy with a training.

        "auto" takes a free GPU slot, else the CPU; "cuda" waits for a free slot; "cuda:N"
        waits for slot N when N is one of `gpus` (so that no training shares that GPU), and
        otherwise uses GPU N, which lorad does not train on, without a slot.
        """
        device = self.settings.caption.device
        free = [g for g, holder in self.slots.items() if holder is None]
        if device == "cpu":
            return None, {"CUDA_VISIBLE_DEVICES": ""}
        if device in ("auto", "cuda"):
            if not free:
                return (None, {"CUDA_VISIBLE_DEVICES": ""}) if device == "auto" else None
            return free[0], {"CUDA_VISIBLE_DEVICES": str(free[0])}
        index = int(device.removeprefix("cuda:"))
        if index not in self.slots:
            return None, {}
        return (index, {}) if index in free else None

    def _caption_batch(self, jobs: list[Job], env_extra: dict[str, str], gpu: int | None) -> None:
        ctx = self.ctx
        assert ctx is not None
        store = ctx.store
        try:
            started = [store.get(j.id) for j in jobs if self._begin(j, "caption")]
            if not started:
                return
            for job in started:
                for_job(job.id, job.token).info("captioning its images with BLIP")

            def done(job: Job, error: Exception | None) -> None:
                self._conclude(store.get(job.id), "caption", error)
                with self.guard:
                    self.busy.pop(job.id, None)
                self.wake.set()  # its training may start while the others are captioned

            env = children.child_env(env_extra)
            caption.with_blip(ctx, started, env, ctx.stopping.is_set, done)
        finally:
            with self.guard:
                for job in jobs:
                    self.busy.pop(job.id, None)
            if gpu is not None:
                self._free(gpu)
            self.wake.set()

    # ---- running one stage of one job ----------------------------------------------------
    def _submit(self, job: Job, stage: str, fn: Callable[..., None]) -> None:
        if job.id in self.busy:
            return
        self.busy[job.id] = stage
        future = self.cpu.submit(self._stage, job.id, stage, fn)
        self.cpu_work.add(future)
        future.add_done_callback(self.cpu_work.discard)

    def _start(self, job: Job, stage: str, fn: Callable[..., None], *args: Any,
               release: Callable[[], None]) -> None:
        self.busy[job.id] = stage
        self._spawn(self._stage, job.id, stage, fn, *args, release=release,
                    name=f"lorad-{stage}-{job.id}")

    def _spawn(self, target: Callable[..., None], *args: Any, name: str,
               **kwargs: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _free(self, gpu: int) -> None:
        with self.guard:
            self.slots[gpu] = None
        self.wake.set()

    def _begin(self, job: Job, stage: str) -> bool:
        store = self.ctx.store  # type: ignore[union-attr]
        if not store.start_stage(job.id, stage):
            return False
        if job.started_at is None:
            store.update(job.id, started_at=time.time())
        return True

    def _stage(self, job_id: int, stage: str, fn: Callable[..., None], *args: Any,
               release: Callable[[], None] | None = None) -> None:
        ctx = self.ctx
        assert ctx is not None
        try:
            job = ctx.store.get(job_id)
            if not self._begin(job, stage):
                return
            job = ctx.store.get(job_id)
            error: Exception | None = None
            try:
                fn(ctx, job, *args)
            except Exception as caught:
                error = caught
            self._conclude(ctx.store.get(job_id), stage, error)
        except Exception:
            for_job(job_id).exception("the %s stage could not be recorded", stage)
        finally:
            with self.guard:
                self.busy.pop(job_id, None)
            if release:
                release()
            self.wake.set()

    def _conclude(self, job: Job, stage: str, error: Exception | None) -> None:
        """Record how a stage ended: the next stage, or the final state with its reason."""
        ctx = self.ctx
        assert ctx is not None
        store, jlog = ctx.store, for_job(job.id, job.token)
        # Each outcome is one transaction: the job's new state, its event and its notification
        # are all recorded or none is, so a crash never loses a notification (nor sends one for
        # a state that was not recorded). The sender is woken once the rows are committed.
        if isinstance(error, train.Interrupted) or (
            error is not None and ctx.stopping.is_set() and not isinstance(error, Rejected)
        ):
            with store.transaction():
                store.requeue(job.id, stage, (RUNNING[stage],))
                store.event(job.id, f"the daemon stopped during {stage}; it continues at the "
                                    "next start")
            jlog.info("stopped during %s; it continues there at the next start", stage)
            return
        if error is None and store.cancel_requested(job.id):
            error = Cancelled("cancelled by request")
        if error is None:
            following = next_stage(job, stage)
            with store.transaction():
                store.finish_stage(job.id, stage, following)
                if stage == "prepare":
                    self._queue_notification(store.get(job.id), "accepted")
                if following == "done" and job.options.get("recaption_only"):
                    # new captions only: no "LoRA ready"
                    options = {k: v for k, v in job.options.items() if k != "recaption_only"}
                    store.update(job.id, options=options)
                elif following == "done":
                    self._queue_notification(store.get(job.id), "done")
            if following == "done":
                jlog.info("done: %s", job.outbox_dir)
            self.sender.wake.set()
            return
        if isinstance(error, Rejected):
            jlog.warning("refused: %s", error)
            with store.transaction():
                store.end(job.id, "rejected", str(error))
                store.event(job.id, str(error), level="error")
                if not job.options.get("failed_path"):  # where the folder goes, said first
                    store.update(job.id, options={
                        **job.options, "failed_path": str(ingest.failed_target(ctx, job))})
                self._queue_notification(store.get(job.id), "rejected")
            self.sender.wake.set()
            ingest.hand_to_failed(ctx, store.get(job.id))  # or at the next start, after a crash
        elif isinstance(error, Cancelled):
            jlog.info("cancelled during %s", stage)
            with store.transaction():
                store.end(job.id, "cancelled", str(error))
                store.event(job.id, f"cancelled during {stage}")
        else:
            if isinstance(error, StageFailed | DiskFull):
                message = str(error)
            else:
                jlog.error("internal error in the %s stage", stage, exc_info=error)
                message = (f"internal error in the {stage} stage: {error!r}; the daemon's log "
                           "has the details")
            message = with_retry_hint(message, job.id)
            jlog.error("failed: %s", message)
            with store.transaction():
                store.end(job.id, "failed", message, stage=stage)
                store.event(job.id, message, level="error")
                self._queue_notification(store.get(job.id), "failed")
            self.sender.wake.set()

    def _announce(self, job: Job, event: str) -> None:
        if self._queue_notification(job, event):
            self.sender.wake.set()

    def _queue_notification(self, job: Job, event: str) -> bool:
        """Add the event's notification to the store's queue (the sender is not woken: inside a
        transaction, it would look before the row is committed)."""
        ctx = self.ctx
        assert ctx is not None
        settings = self.settings
        attach = None
        if event == "done":
            title, body = messages.done(job, settings)
            sheet = Path(job.outbox_dir or "") / "samples.png"
            attach = sheet if sheet.is_file() else None
        elif event == "failed":
            title, body = messages.failed(job, ctx.store, settings)
        elif event == "rejected":
            title, body = messages.rejected(job, settings)
        else:
            title, body = messages.accepted(job)
        return notify.enqueue(ctx.store, settings.notify, job, event, title, body,
                              attach) is not None

    # ---- what systemd and `lorad status` see ---------------------------------------------
    def status_line(self) -> str:
        ctx = self.ctx
        assert ctx is not None
        # Counted, not read: this runs at every turn of the loop, and the queue can be long.
        parts = [f"{ctx.store.count_state('queued')} queued"]
        for job in ctx.store.jobs(tuple(RUNNING.values())):
            if job.state == "training":
                parts.append(f"training {job.token} {job.progress:.0%}")
            else:
                parts.append(f"{job.state} {job.token or job.name}")
        parts.append(f"{ctx.store.count_finished('done', time.time() - 86400)} done today")
        return ", ".join(parts)
