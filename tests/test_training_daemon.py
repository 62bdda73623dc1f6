"""Training under the real daemon: restarts resume, GPUs run side by side, cancel stops."""

from __future__ import annotations

import os
import shutil
import signal
import time
import zlib
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.jobs import arg, trainer_exits, trainer_runs
from tests.photos import make_photos

NO_BLIP = {"caption": {"enabled": False}}


def drop(tmp_path: Path, name: str, count: int = 4, lora: str = "") -> None:
    source = tmp_path / "dropped" / name
    make_photos(source, count, size=(320, 320), seed=zlib.crc32(name.encode()) % 1000)
    if lora:
        (source / "lora.toml").write_text(lora)
    shutil.copytree(source, tmp_path / "inbox" / name)


def saved_states(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state" / "work").glob("*/train/run-*/*-state/train_state.json"))


def test_a_daemon_killed_during_training_resumes_from_the_last_state(tmp_path, config,
                                                                      fake_trainer):
    control = fake_trainer(epoch_seconds=1.0)
    cfg = config(**NO_BLIP)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    drop(tmp_path, "bob", lora="epochs = 5\n")
    deadline = time.monotonic() + 60
    while len(saved_states(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(saved_states(tmp_path)) >= 2
    daemon.kill()  # SIGKILL: the trainer is orphaned, as after a real crash
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        jobs = daemon.wait_for(all_final(1), what="the resumed job to finish")
    finally:
        daemon.stop()
    assert jobs[0]["state"] == "done", daemon.output()[-3000:]
    first, second = trainer_runs(control)
    assert "--resume" in second["argv"]
    assert int(arg(second["argv"], "--initial_epoch")) >= 3  # not restarted from epoch 1
    out = tmp_path / "outbox" / "bob"
    assert sorted(p.name for p in out.glob("bob-*.safetensors")) == [
        f"bob-{n:06d}.safetensors" for n in range(1, 6)]
    # The orphan is gone: either it ended by itself (its output pipe went with the daemon, which
    # on a busy machine happens before the restart), or the restart stopped its process group.
    if first["pid"] not in trainer_exits(control):
        assert f"job {jobs[0]['id']}: stopping its train process group" in daemon.output()
    with pytest.raises(ProcessLookupError):
        os.killpg(first["pid"], 0)


def test_two_gpus_train_two_jobs_at_once(tmp_path, config, fake_trainer):
    control = fake_trainer(epoch_seconds=0.8)
    cfg = config(gpus=[0, 1], **NO_BLIP)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        drop(tmp_path, "carol", lora="epochs = 3\n")
        drop(tmp_path, "dave", lora="epochs = 3\n")
        daemon.wait_for(lambda jobs: sum(j["state"] == "training" for j in jobs) == 2,
                        what="both jobs training at once")
        jobs = daemon.wait_for(all_final(2))
    finally:
        daemon.stop()
    assert [j["state"] for j in jobs] == ["done", "done"]
    devices = sorted(r["env"]["CUDA_VISIBLE_DEVICES"] for r in trainer_runs(control))
    assert devices == ["0", "1"]


def test_lorad_cancel_stops_a_running_training(tmp_path, config, fake_trainer):
    fake_trainer(epoch_seconds=1.0)
    cfg = config(kohya={"stop_grace_seconds": 3}, **NO_BLIP)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        drop(tmp_path, "erin", lora="epochs = 30\n")
        daemon.wait_for(lambda jobs: jobs and jobs[0]["state"] == "training")
        result = lorad(cfg, "cancel", "erin")
        assert "cancel" in result.stdout
        jobs = daemon.wait_for(all_final(1), timeout=30)
        assert jobs[0]["state"] == "cancelled"
        shown = lorad(cfg, "show", "erin").stdout
        assert "cancelled during train" in shown
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
