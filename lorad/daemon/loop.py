"""The daemon's loop: start, one step at a time, signals, and a stop with a deadline.

Each step takes the folders that settled in the inbox, reads the outbox's resume and pick
requests, and asks the scheduler to start what the store says is waiting. No stage calls the
next one; how a stage ended is recorded by `outcome.conclude`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from typing import Any

from lorad.cluster import make_executor
from lorad.context import Context
from lorad.daemon import readiness, reload
from lorad.daemon.outcome import announce
from lorad.daemon.scheduler import Scheduler
from lorad.delivery import notify, requests
from lorad.errors import CannotStart
from lorad.inbox import claim, refuse
from lorad.inbox.lock import InboxLock
from lorad.inbox.watcher import Inbox
from lorad.settings import ConfigError, Settings, find_config, load_settings
from lorad.store import RUNNING, Store
from lorad.system import children
from lorad.system.fsutil import remove_stale_temps
from lorad.system.logs import for_job, log
from lorad.system.pidlock import PidLock
from lorad.system.sdnotify import SystemdNotifier

REQUEST_SCAN_SECONDS = 2.0
# A stop waits for the epoch being saved (up to 0.8 x kohya.stop_grace_seconds), then for the
# trainer to exit after SIGTERM (stop_grace_seconds), then this long to record the outcomes.
STOP_MARGIN_SECONDS = 10.0
# Each EXTEND_TIMEOUT_USEC= asks systemd for the time left until that deadline plus this much.
EXTEND_MARGIN_SECONDS = 5.0
WAITING_NOTE_SECONDS = 10.0  # while a stop waits, it says so this often


def stop_deadline_seconds(settings: Settings) -> float:
    """How long a stop waits for running work before lorad exits without it (the units'
    TimeoutStopSec= is set above this for the default stop_grace_seconds)."""
    return 1.8 * settings.kohya.stop_grace_seconds + STOP_MARGIN_SECONDS


class Daemon:
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.wake = threading.Event()
        self.lock = PidLock(settings.state_dir)
        self.inbox_lock = InboxLock(settings.inbox, settings.state_dir)
        self.sd = SystemdNotifier.from_env()
        self.stopping = threading.Event()  # set by SIGTERM/SIGINT, also during start-up
        self.ctx: Context | None = None  # once started
        self.scheduler: Scheduler | None = None
        self.next_request_scan = 0.0
        self._request_error = ""
        self._reload = threading.Event()
        self.training_problems: list[str] = []  # why trainings cannot start (readiness)

    # ---- start and stop ------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        try:
            self.lock.acquire()
            for folder in (settings.inbox, settings.outbox, settings.failed_dir,
                           settings.work_dir):
                Path(folder).mkdir(parents=True, exist_ok=True)
            self.inbox_lock.acquire()  # one daemon per inbox, beside one per state_dir
        except OSError as error:
            raise CannotStart.from_os_error(error) from error
        for folder in (settings.outbox, settings.failed_dir, settings.work_dir,
                       *settings.deliver.copy_to):
            for path in remove_stale_temps(Path(folder)):
                log.info("removed %s, half-written when lorad was stopped hard", path)
        store = Store(settings.db_path)
        self.ctx = ctx = Context(settings, store, self.stopping)
        ctx.executor = make_executor(settings, store)  # may connect to a cluster
        self.scheduler = Scheduler(ctx, settings.gpus, self.wake)
        self.assess_training()
        children.reap_orphans(store)
        ctx.executor.recover()
        claim.recover_claims(ctx)
        refuse.recover_rejections(ctx)
        for job in store.recover():
            for_job(job.id, job.token or job.name).info("continues at the %s stage", job.stage)
        self.inbox = Inbox(settings.inbox, settings.watch, self.wake, lock=self.inbox_lock)
        mode = self.inbox.start()
        self.inbox.rescan()
        self.sender = notify.Sender(store, settings.notify, wake=ctx.notify_wake)
        self.sender_thread = threading.Thread(target=self.sender.run, args=(ctx.stopping,),
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

    def request_reload(self, *_: Any) -> None:
        self._reload.set()
        self.wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.start()
        try:
            while not self.stopping.is_set():
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
        assert self.ctx is not None and self.scheduler is not None
        self.sd.stopping("stopping: waiting for running work to save and stop")
        self.stopping.set()
        self.inbox.stop()
        self.ctx.notify_wake.set()
        self.scheduler.cpu.shutdown(wait=False, cancel_futures=True)  # not started: stays queued
        finished = self._wait_for_work(time.monotonic() + stop_deadline_seconds(self.settings))
        if not finished:
            self._report_unfinished()
        # A notification in flight may wait on a slow service: it stays queued in the store
        # and is sent at the next start; stopping does not wait for it.
        self.sender_thread.join(timeout=2.0)
        self.ctx.store.close()
        self.inbox_lock.release()
        self.lock.release()
        log.info("lorad stopped")
        return finished

    def _wait_for_work(self, deadline: float) -> bool:
        """Wait until no stage runs (True) or the deadline passes (False), asking systemd for
        the time left (EXTEND_TIMEOUT_USEC=) every second meanwhile, and never beyond it."""
        assert self.scheduler is not None
        told = 0.0
        while running := self.scheduler.running():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if time.monotonic() - told >= WAITING_NOTE_SECONDS:  # no silent seconds after Ctrl-C
                told = time.monotonic()
                self._say_waiting(left)
            self.sd.extend_timeout(left + EXTEND_MARGIN_SECONDS)
            first = running[0]
            if isinstance(first, threading.Thread):
                first.join(timeout=min(1.0, left))
            else:
                wait_for_futures([first], timeout=min(1.0, left))
        return True

    def _say_waiting(self, left: float) -> None:
        assert self.ctx is not None
        jobs = self.ctx.store.jobs(tuple(RUNNING.values()))
        names = ", ".join(f"{job.state} {job.token or job.name}" for job in jobs) or "a stage"
        log.info("stopping: waiting for %s to save and stop (at most %.0f s more)", names, left)

    def _report_unfinished(self) -> None:
        assert self.ctx is not None and self.scheduler is not None
        waited = stop_deadline_seconds(self.settings)
        jobs = self.ctx.store.jobs(tuple(RUNNING.values()))
        for job in jobs:
            for_job(job.id, job.token or job.name).warning(
                "still %s after the stop waited %.0f s for it (1.8 x kohya.stop_grace_seconds "
                "+ %.0f s); lorad exits without it and it continues at the next start",
                job.state, waited, STOP_MARGIN_SECONDS)
        if not jobs:
            names = ", ".join(getattr(w, "name", "a CPU stage") for w in self.scheduler.running())
            log.warning("work was still running after the stop waited %.0f s for it (%s); lorad "
                        "exits without it", waited, names)

    def reload(self) -> None:
        """Read the configuration again and apply what can change while jobs run."""
        assert self.ctx is not None
        self._reload.clear()
        try:
            new = load_settings(self.config_path)
        except ConfigError as error:
            problems = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
            log.error("configuration not reloaded, the running one stays: %s", problems)
            return
        merged, warnings = reload.merge(self.settings, new)
        for warning in warnings:
            log.warning("%s", warning)
        self.settings = self.ctx.settings = merged
        self.inbox.settings = merged.watch
        self.sender.configure(merged.notify)
        log.info("configuration reloaded from %s (new jobs and runs use it)",
                 self.config_path or find_config(None) or "the defaults")
        self.assess_training()

    def assess_training(self) -> None:
        """Decide whether trainings can start; log one line per problem (jobs wait meanwhile)."""
        assert self.scheduler is not None
        before = self.training_problems
        found = self.scheduler.readiness = readiness.assess(self.settings)
        self.training_problems = found.problems()
        if before and not self.training_problems:
            log.info("trainings can start: Kohya and the base models are in place")
        for problem in self.training_problems:
            log.warning("trainings cannot start: %s; jobs wait at the train stage until a "
                        "reload (SIGHUP) fixes it", problem)

    # ---- the loop ------------------------------------------------------------------------
    def wait_time(self) -> float:
        until_scan = self.next_request_scan - time.monotonic()
        return max(0.05, min(self.inbox.next_check_in(), until_scan, 1.0))

    def step(self) -> None:
        ctx, scheduler = self.ctx, self.scheduler
        assert ctx is not None and scheduler is not None
        if self._reload.is_set():
            self.reload()
        for link in self.inbox.take_outside_links():
            job_id = refuse.reject_link(ctx, link, Path(link).resolve())
            if job_id is not None:
                announce(ctx, ctx.store.get(job_id), "rejected")
        ready = self.inbox.poll()
        if ready and not ctx.stopping.is_set():  # else they stay, for the next start
            # A claim from another filesystem copies inside this step: it pings the watchdog.
            job_ids = claim.claim_all(ctx, ready, heartbeat=self.sd.watchdog)
            for folder, job_id in zip(ready, job_ids, strict=True):
                if job_id is None:
                    continue
                job = ctx.store.get(job_id)
                if job.state == "rejected":  # a folder that no claim could ever take
                    announce(ctx, job, "rejected")
                else:
                    for_job(job_id).info("%s arrived", folder.name)
        if time.monotonic() >= self.next_request_scan:
            self._scan_requests()
        scheduler.dispatch()
        self.sd.watchdog()
        self.sd.status(self.status_line())

    def _scan_requests(self) -> None:
        """Look for resume.toml and pick.toml in the outbox. An error is logged (each new one
        once, with its traceback) and never stops the loop; the next scan tries again."""
        assert self.ctx is not None
        self.next_request_scan = time.monotonic() + REQUEST_SCAN_SECONDS
        try:
            requests.scan_requests(self.ctx)
        except Exception as error:
            if repr(error) != self._request_error:
                log.exception("could not read the resume and pick requests in %s (%s); lorad "
                              "tries again every %g s, and says so again only if the error "
                              "changes", self.settings.outbox, error, REQUEST_SCAN_SECONDS)
            self._request_error = repr(error)
            return
        self._request_error = ""

    # ---- what systemd and `lorad status` see ---------------------------------------------
    def status_line(self) -> str:
        assert self.ctx is not None
        store = self.ctx.store
        # Counted, not read: this runs at every turn of the loop, and the queue can be long.
        parts = [f"{store.count_state('queued')} queued"]
        for job in store.jobs(tuple(RUNNING.values())):
            if job.state == "training":
                parts.append(f"training {job.token} {job.progress:.0%}")
            else:
                parts.append(f"{job.state} {job.token or job.name}")
        parts.append(f"{store.count_finished('done', time.time() - 86400)} done today")
        return ", ".join(parts)
