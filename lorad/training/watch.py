"""While a training runs, each epoch Kohya saves reaches the outbox within about a second.

A thread beside the run looks at the run's folder twice a second: a whole new epoch file or
sample is harvested into the job's work folder and published into the outbox (file, samples,
manifest, contact sheet), and an epoch whose samples are all there (or whose next epoch is saved)
is announced ("epoch 4 of 16 saved") when `notify.events` asks for it. The thread works on its own
copy of the job's training record, so the run's own thread is never held up by it, and it only
reads files Kohya has finished writing (a safetensors file whose header matches its size).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from lorad.context import Context
from lorad.dataset.sheets import samples_sheet
from lorad.delivery import manifest, messages, notify
from lorad.delivery.publish import publish_epochs
from lorad.store import Job
from lorad.training.epochs import harvest

POLL_SECONDS = 0.5


class EpochWatcher:
    """Used as `with EpochWatcher(ctx, job, train, run_info): <follow the run>`."""

    def __init__(self, ctx: Context, job: Job, train: dict[str, Any], run: dict[str, Any]
                 ) -> None:
        self.ctx = ctx
        self.job = job
        self.train = copy.deepcopy(train)  # its own: harvest writes into it
        self.live_run = run  # the run's record, which the run's thread keeps up to date
        self.announced: set[int] = set(int(n) for n in train.get("epochs", {}))
        self.stopped = threading.Event()
        self.failed = ""
        self.thread = threading.Thread(target=self._loop, name=f"lorad-epochs-{job.id}",
                                       daemon=True)

    def __enter__(self) -> EpochWatcher:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stopped.set()
        self.thread.join()

    def _loop(self) -> None:
        while not self.stopped.wait(POLL_SECONDS):
            self._look_safely()

    def _look_safely(self) -> None:
        """One look; an error is logged once (the run goes on, and delivery publishes later)."""
        try:
            self.look()
        except Exception as error:
            if repr(error) != self.failed:
                self.ctx.log(self.job).exception(
                    "could not publish the newest epoch into the outbox yet (%s); it is tried "
                    "again, and delivered at the end of the training in any case", error)
            self.failed = repr(error)

    def look(self) -> list[int]:
        """Harvest and publish what the run has finished writing; the epochs newly published."""
        self.train["runs"][-1]["steps_per_epoch"] = self.live_run.get("steps_per_epoch")
        harvest(self.ctx, self.job, self.train)
        new = publish_epochs(self.ctx, self.job, self.train)
        for number in new:
            self.ctx.store.event(self.job.id, f"epoch {number} saved; it is in "
                                              f"{self.ctx.store.get(self.job.id).outbox_dir}")
        self._announce_finished()
        return new

    def _announce_finished(self) -> None:
        job = self.ctx.store.get(self.job.id)
        folder = Path(job.outbox_dir or "")
        m = manifest.read(folder)
        every = self.live_run.get("sample_every_n_epochs") or 0
        for number, entry in sorted(m.epochs.items()):
            if entry.job != job.id or number in self.announced:
                continue
            sampled = every and (number - self.live_run["offset"]) % every == 0
            if sampled and len(entry.samples) < len(m.sample_columns()) \
                    and number + 1 not in m.epochs:
                continue  # its samples are still being drawn
            self.announced.add(number)
            self._announce(job, m, number, folder)

    def _announce(self, job: Job, m: manifest.Manifest, number: int, folder: Path) -> None:
        settings = self.ctx.settings.notify
        if "epoch" not in settings.events:
            return
        title, body = messages.epoch(job, m, number, self.train.get("target"))
        entry = m.epochs[number]
        row = None
        if entry.samples:
            row = self.ctx.paths(job).root / "notify" / f"epoch-{number}.png"
            row.parent.mkdir(parents=True, exist_ok=True)
            samples_sheet([(f"epoch {number}", [folder / s for s in sorted(entry.samples)])],
                          m.sample_columns() or ["sample"] * len(entry.samples), row)
        if notify.enqueue(self.ctx.store, settings, job, "epoch", title, body, row) is not None:
            self.ctx.notify_wake.set()
