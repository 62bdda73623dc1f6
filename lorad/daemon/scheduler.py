"""Which work runs where: CPU stages in a small thread pool, one training per GPU slot, and one
BLIP captioning process at a time, on a GPU no training needs or on the CPU.

The scheduler only starts work; how a stage ended is recorded by `outcome.conclude`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lorad.captioning import stage as caption
from lorad.context import Context
from lorad.daemon.outcome import conclude
from lorad.daemon.readiness import Readiness, assess
from lorad.dataset import stage as prepare
from lorad.delivery import stage as deliver
from lorad.store import Job
from lorad.system import children
from lorad.system.logs import for_job
from lorad.training import stage as train
from lorad.training.executor import ANY_GPU

Slot = int | str | None  # a GPU slot holds nothing, a training's job id, or "caption"


class Scheduler:
    def __init__(self, ctx: Context, gpus: list[int], wake: threading.Event) -> None:
        self.ctx = ctx
        self.wake = wake
        self.busy: dict[int, str] = {}
        self.slots: dict[int, Slot] = {gpu: None for gpu in gpus}
        # Where trainings run: this machine's GPU slots, or an executor that queues them itself.
        self.executor = train.executor_of(ctx)
        self.captioner: threading.Thread | None = None
        self.threads: list[threading.Thread] = []
        self.guard = threading.Lock()
        self.cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lorad-cpu")
        self.cpu_work: set[Future] = set()
        # Whether trainings can start, and why not: set by the loop at start and every reload.
        # Whether trainings can start (Kohya, the base models); the loop decides it again at
        # every reload.
        self.readiness: Readiness = assess(ctx.settings)

    # ---- what runs now -------------------------------------------------------------------
    def dispatch(self) -> None:
        store = self.ctx.store
        for job in store.waiting("prepare"):
            self.submit(job, "prepare", prepare.run)
        self.dispatch_trainings()
        self.dispatch_captions()
        for job in store.waiting("deliver"):
            self.submit(job, "deliver", deliver.run)

    def dispatch_trainings(self) -> None:
        """One training per free GPU slot; with an executor that has no slots (a cluster), every
        waiting training starts and waits in the executor for a place. A training that cannot
        start (no Kohya, no base model) waits, saying why."""
        waiting = iter(self.trainable())
        if self.executor.slots is None:
            for job in waiting:
                self.start(job, "train", train.run, ANY_GPU, release=self.wake.set)
            return
        for gpu, holder in self.slots.items():
            if holder is not None or gpu not in self.executor.slots:
                continue
            job = next(waiting, None)
            if job is None:
                break
            self.slots[gpu] = job.id
            self.start(job, "train", train.run, gpu, release=lambda g=gpu: self.free(g))

    def trainable(self) -> list[Job]:
        """The jobs waiting for a GPU slot whose training can start now; each of the others is
        told why it waits (its progress text, and an event when the reason changes)."""
        ready = []
        for job in self.ctx.store.waiting("train"):
            if job.id in self.busy:
                continue
            reason = self.readiness.blocker(job.model)
            if reason is None:
                ready.append(job)
            elif job.progress_text != (text := f"waiting for training: {reason}"):
                self.ctx.store.set_progress(job.id, job.progress, text)
                self.ctx.store.event(job.id, text, "warning")
                for_job(job.id, job.token).warning("%s", text)
        return ready

    def dispatch_captions(self) -> None:
        ctx = self.ctx
        waiting = [j for j in ctx.store.waiting("caption") if j.id not in self.busy]
        blip = []
        for job in waiting:
            if caption.uses_blip(ctx, job):
                blip.append(job)
            else:
                self.submit(job, "caption", caption.without_blip)
        if not blip or (self.captioner and self.captioner.is_alive()):
            return
        placed = self.caption_placement()
        if placed is None:
            return  # its GPU is training: wait for it
        gpu, env_extra = placed
        if gpu is not None:
            self.slots[gpu] = "caption"
        for job in blip:
            self.busy[job.id] = "caption"
        self.captioner = self.spawn(self._caption_batch, blip, env_extra, gpu,
                                    name="lorad-caption")

    def caption_placement(self) -> tuple[int | None, dict[str, str]] | None:
        """Where BLIP runs now, from caption.device: (the GPU slot it takes, or None; its extra
        environment), or None when the GPU it needs is busy with a training.

        "auto" takes a free GPU slot, else the CPU; "cuda" waits for a free slot; "cuda:N"
        waits for slot N when N is one of `gpus` (so that no training shares that GPU), and
        otherwise uses GPU N, which lorad does not train on, without a slot.
        """
        device = self.ctx.settings.caption.device
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

    def running(self) -> list[threading.Thread | Future]:
        """The stages still running (threads and CPU work)."""
        return ([t for t in self.threads if t.is_alive()]
                + [f for f in list(self.cpu_work) if not f.done()])

    # ---- running one stage of one job ----------------------------------------------------
    def submit(self, job: Job, stage: str, fn: Callable[..., None]) -> None:
        if job.id in self.busy:
            return
        self.busy[job.id] = stage
        future = self.cpu.submit(self._stage, job.id, stage, fn)
        self.cpu_work.add(future)
        future.add_done_callback(self.cpu_work.discard)

    def start(self, job: Job, stage: str, fn: Callable[..., None], *args: Any,
              release: Callable[[], None]) -> None:
        self.busy[job.id] = stage
        self.spawn(self._stage, job.id, stage, fn, *args, release=release,
                   name=f"lorad-{stage}-{job.id}")

    def spawn(self, target: Callable[..., None], *args: Any, name: str,
              **kwargs: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def free(self, gpu: int) -> None:
        with self.guard:
            self.slots[gpu] = None
        self.wake.set()

    def _begin(self, job: Job, stage: str) -> bool:
        store = self.ctx.store
        if not store.start_stage(job.id, stage):
            return False
        if job.started_at is None:
            store.update(job.id, started_at=time.time())
        return True

    def _stage(self, job_id: int, stage: str, fn: Callable[..., None], *args: Any,
               release: Callable[[], None] | None = None) -> None:
        ctx = self.ctx
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
            conclude(ctx, ctx.store.get(job_id), stage, error)
        except Exception:
            for_job(job_id).exception("the %s stage could not be recorded", stage)
        finally:
            with self.guard:
                self.busy.pop(job_id, None)
            if release:
                release()
            self.wake.set()

    def _caption_batch(self, jobs: list[Job], env_extra: dict[str, str], gpu: int | None
                       ) -> None:
        ctx = self.ctx
        store = ctx.store
        try:
            started = [store.get(j.id) for j in jobs if self._begin(j, "caption")]
            if not started:
                return
            for job in started:
                for_job(job.id, job.token).info("captioning its images with BLIP")

            def done(job: Job, error: Exception | None) -> None:
                conclude(ctx, store.get(job.id), "caption", error)
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
                self.free(gpu)
            self.wake.set()
