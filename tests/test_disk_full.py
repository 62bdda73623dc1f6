"""A full disk under the work area or the outbox: the job fails saying so, nothing it had is lost,
and `lorad retry` finishes it once there is space again.

The small disks are tmpfs mounts made by the test; where mounting is not allowed (no root, no
CAP_SYS_ADMIN), the tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, all_final, lorad, wait_until
from tests.jobs import trainer_runs
from tests.photos import make_photos

TRAINING = {"caption": {"enabled": False}}


@pytest.fixture
def small_disk() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a tmpfs of the given size on a folder (made if missing); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill up: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Take every free byte of folder's filesystem; returns the file to delete to free it."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):  # a megabyte at a time, then the last crumbs
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


def drop(tmp_path: Path, name: str) -> dict[str, bytes]:
    source = tmp_path / "dropped" / name
    make_photos(source, 3, size=(320, 320), seed=11)
    (source / "lora.toml").write_text("epochs = 4\n")
    shutil.copytree(source, tmp_path / "inbox" / name)
    return {path.name: path.read_bytes() for path in source.iterdir()}


def test_a_full_work_disk_fails_the_training_keeps_its_epochs_and_retry_finishes_it(
        tmp_path, config, fake_trainer, small_disk):
    fake_trainer(epoch_seconds=1.0)
    work = small_disk(tmp_path / "state" / "work", "64m")
    cfg = config(**TRAINING)
    (tmp_path / "inbox").mkdir()
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        photos = drop(tmp_path, "Fay")
        wait_until(lambda: any(work.glob("*/train/run-01/fay-000001-state/train_state.json")),
                   "the first epoch")
        filler = fill(work)
        jobs = daemon.wait_for(all_final(1), what="the job to fail")
        job = jobs[0]
        assert (job["state"], job["stage"]) == ("failed", "train"), daemon.output()[-3000:]
        shown = lorad(cfg, "show", str(job["id"])).stdout
        assert "disk is full" in shown and f"lorad retry {job['id']}" in shown, shown
        source = next(work.glob("*/source"))
        assert {p.name: p.read_bytes() for p in source.iterdir()} == photos
        assert (next(work.glob("*/train/run-01")) / "fay-000001.safetensors").is_file()
        filler.unlink()
        lorad(cfg, "retry", str(job["id"]))
        jobs = daemon.wait_for(lambda js: js[0]["state"] in ("done", "failed"),
                               what="the retried job")
    finally:
        assert daemon.stop() == 0
    assert jobs[0]["state"] == "done", daemon.output()[-3000:]
    runs = lorad(cfg, "show", str(jobs[0]["id"]), "--json").stdout
    assert '"mode": "resume"' in runs or '"mode": "weights"' in runs  # not from scratch
    out = tmp_path / "outbox" / "fay"
    assert sorted(p.name for p in out.glob("fay-*.safetensors")) == [
        f"fay-{n:06d}.safetensors" for n in range(1, 5)]


def test_a_full_outbox_fails_the_delivery_with_its_folder_named_and_retry_delivers(
        tmp_path, config, fake_trainer, small_disk):
    control = fake_trainer(epoch_seconds=2.0)
    outbox = small_disk(tmp_path / "outbox", "16m")
    cfg = config(**TRAINING)
    (tmp_path / "inbox").mkdir()
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        photos = drop(tmp_path, "Gus")
        # The trainer has started (its own record, which stays true): fill the outbox while it
        # trains, so that publishing its epochs and the delivery meet a full disk.
        wait_until(lambda: bool(trainer_runs(control)), "the trainer to start")
        filler = fill(outbox)
        jobs = daemon.wait_for(all_final(1), what="the delivery to fail")
        job = jobs[0]
        assert (job["state"], job["stage"]) == ("failed", "deliver"), daemon.output()[-3000:]
        shown = lorad(cfg, "show", str(job["id"])).stdout
        assert f"the disk holding {outbox}" in shown and "is full" in shown, shown
        assert not [p for p in outbox.rglob(".*") if p.is_file()]  # no half-written file
        source = next((tmp_path / "state" / "work").glob("*/source"))
        assert {p.name: p.read_bytes() for p in source.iterdir()} == photos
        filler.unlink()
        lorad(cfg, "retry", str(job["id"]))
        jobs = daemon.wait_for(lambda js: js[0]["state"] in ("done", "failed"),
                               what="the retried delivery")
    finally:
        assert daemon.stop() == 0
    assert jobs[0]["state"] == "done", daemon.output()[-3000:]
    assert (outbox / "gus" / "gus.safetensors").is_file()
