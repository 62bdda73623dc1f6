"""The daemon's loop in-process: how it stops, where BLIP runs, and what one bad step costs."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorad.captioning import stage as caption
from lorad.context import Context
from lorad.daemon import loop as daemon
from lorad.daemon.loop import Daemon
from lorad.daemon.scheduler import Scheduler
from lorad.delivery import requests
from lorad.settings import Settings, load_settings
from lorad.store import Store
from lorad.system import children
from lorad.system.sdnotify import SystemdNotifier
from tests.notify_socket import NotifySocket


@pytest.fixture(autouse=True)
def _lorad_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lorad")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def started(cfg: Path, notify: NotifySocket) -> Daemon:
    """A daemon started as `lorad run` starts it (signals aside), talking to `notify`."""
    lorad = Daemon(load_settings(cfg), cfg)
    lorad.sd = SystemdNotifier(notify.address)
    lorad.start()
    return lorad


# ---- stopping -------------------------------------------------------------------------------
def test_a_stop_waits_no_longer_than_its_deadline_and_names_the_job_still_running(
        config, notify, monkeypatch, caplog):
    monkeypatch.setattr(daemon, "STOP_MARGIN_SECONDS", 0.5)
    lorad = started(config(kohya={"stop_grace_seconds": 0.5}), notify)  # deadline: 1.4 s
    assert lorad.ctx is not None
    job_id = lorad.ctx.store.create_job("stuck", state="training", stage="train", token="stuck")
    driver = threading.Event()  # a trainer stuck in the GPU driver never returns
    assert lorad.scheduler is not None
    lorad.scheduler.spawn(driver.wait, name=f"lorad-train-{job_id}")
    result: list[bool] = []
    began = time.monotonic()
    stopper = threading.Thread(target=lambda: result.append(lorad.shutdown()), daemon=True)
    stopper.start()
    stopper.join(timeout=15)
    took = time.monotonic() - began
    driver.set()
    notify.close()
    assert not stopper.is_alive(), "the stop waited for the stuck training past its deadline"
    assert result == [False] and 1.4 <= took < 5, took
    extensions = [int(m["EXTEND_TIMEOUT_USEC"]) / 1e6 for m in notify.messages
                  if "EXTEND_TIMEOUT_USEC" in m]
    assert extensions, notify.messages
    margin = daemon.EXTEND_MARGIN_SECONDS
    assert all(seconds <= 1.4 + margin for seconds in extensions)  # never past the deadline
    assert extensions == sorted(extensions, reverse=True)  # the time left, counting down
    assert (f"job {job_id} (stuck): still training after the stop waited 1 s" in caplog.text)
    assert "lorad exits without it and it continues at the next start" in caplog.text


def test_a_stop_with_nothing_running_returns_at_once(config, notify):
    lorad = started(config(), notify)
    began = time.monotonic()
    assert lorad.shutdown() is True
    assert time.monotonic() - began < 3
    notify.close()
    assert notify.index("EXTEND_TIMEOUT_USEC") == -1  # nothing to wait for


# ---- where BLIP runs ------------------------------------------------------------------------
def scheduler_for(settings: Settings) -> Scheduler:
    return Scheduler(Context(settings, Store(settings.db_path)), settings.gpus, threading.Event())


def test_blip_on_a_gpu_lorad_trains_on_waits_for_it_and_holds_its_slot(config, monkeypatch):
    settings = load_settings(config(gpus=[0, 1], caption={"device": "cuda:1"}))
    scheduler = scheduler_for(settings)
    scheduler.ctx.store.create_job("ann", state="queued", stage="caption", token="ann")
    monkeypatch.setattr(caption, "uses_blip", lambda ctx, job: True)
    spawned: list[tuple] = []

    def spawn(target: object, *args: object, name: str) -> threading.Thread:
        spawned.append(args)
        return threading.Thread(target=lambda: None)  # never started: not alive

    monkeypatch.setattr(scheduler, "spawn", spawn)
    try:
        scheduler.slots[1] = 7  # job 7 trains on GPU 1
        scheduler.dispatch_captions()
        assert spawned == [] and scheduler.slots == {0: None, 1: 7}  # GPU 0 is free, not its
        scheduler.slots[1] = None
        scheduler.dispatch_captions()
        [(jobs, env, gpu)] = spawned
        assert gpu == 1 and env == {} and [job.name for job in jobs] == ["ann"]
        assert scheduler.slots == {0: None, 1: "caption"}  # no training starts on GPU 1 meanwhile
    finally:
        scheduler.cpu.shutdown()
        scheduler.ctx.store.close()


def test_blip_on_a_gpu_lorad_does_not_train_on_takes_no_slot(config, monkeypatch):
    settings = load_settings(config(gpus=[0], caption={"device": "cuda:1"}))
    scheduler = scheduler_for(settings)
    scheduler.slots[0] = 7
    assert scheduler.caption_placement() == (None, {})
    scheduler.cpu.shutdown()
    scheduler.ctx.store.close()


# ---- one bad step ---------------------------------------------------------------------------
def test_an_error_reading_outbox_requests_is_logged_once_and_the_loop_goes_on(
        config, notify, monkeypatch, caplog):
    lorad = started(config(), notify)
    calls = []

    def broken(ctx: Context) -> None:
        calls.append(ctx)
        raise PermissionError(13, "Permission denied", str(ctx.settings.outbox / "x"))

    monkeypatch.setattr(requests, "scan_requests", broken)
    try:
        for _ in range(3):
            lorad.next_request_scan = 0.0
            lorad.step()  # does not raise
    finally:
        lorad.shutdown()
    assert len(calls) == 3
    assert caplog.text.count("could not read the resume and pick requests") == 1
    assert "Permission denied" in caplog.text


# ---- a crash's leftovers --------------------------------------------------------------------
def test_reaping_a_leftover_process_group_names_its_jobs(tmp_path, caplog):
    store = Store(tmp_path / "lorad.db")
    proc = children.spawn(store, "caption", [4, 5],
                          [sys.executable, "-c", "import time; time.sleep(60)"])
    # The leader's parent reaps it at once, as init does for an orphan (a zombie left unreaped
    # would still count as a member of its group).
    reaper = threading.Thread(target=proc.wait, daemon=True)
    reaper.start()
    try:
        children.reap_orphans(store)  # as the next start does after a crash
        reaper.join(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        store.close()
    assert proc.returncode != 0
    assert (f"job 4: stopping its caption process group {proc.pid}, left by a previous run (it "
            "also worked for job 5)") in caplog.text
    assert f"job 5: stopping its caption process group {proc.pid}" in caplog.text

