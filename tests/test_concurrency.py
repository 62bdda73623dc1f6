"""`lorad status`, `show` and `logs` from other processes while the daemon works: never "database
is locked", never a job caught half-way through an update."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from lorad.store import ACTIVE, FINAL, RUNNING
from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.photos import make_photos


def half_updated(job: dict[str, Any]) -> list[str]:
    """What in one job's `show --json` could only be seen half-way through an update."""
    found = []
    state, stage = job["state"], job["stage"]
    if state not in ("claiming", *ACTIVE, *FINAL):
        found.append(f"unknown state {state}")
    if state in RUNNING.values() and RUNNING.get(stage) != state:
        found.append(f"state {state} with stage {stage}")
    if state == "queued" and stage not in RUNNING:
        found.append(f"queued for stage {stage}")
    if state == "done" and (stage != "done" or job["error"] or not job["finished_at"]):
        found.append(f"done with stage {stage}, error {job['error']}")
    if state in ("failed", "rejected") and not job["error"]:
        found.append(f"{state} without its reason")
    if not 0.0 <= job["progress"] <= 1.0:
        found.append(f"progress {job['progress']}")
    messages = [event["message"] for event in job["events"]]
    if state in ("failed", "rejected") and job["error"] not in messages:
        found.append(f"{state}, but its reason is not among its events")
    sent_for = {note["event"] for note in job["notifications"]}
    if state == "done" and "done" not in sent_for:
        found.append("done, but its notification was not queued with it")
    if state not in FINAL and sent_for & {"done", "failed", "rejected"}:
        found.append(f"{state}, yet notified of its end {sorted(sent_for)}")
    return found


class Reader:
    """Runs the commands a person would, in a loop, each as its own process."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.calls = 0
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        self.calls += 1
        done = lorad(self.config, *args, check=False)
        if done.returncode != 0 or "locked" in done.stderr:
            self.problems.append(f"lorad {' '.join(args)}: exit {done.returncode}: "
                                 + done.stderr[-500:])
        return done

    def loop(self) -> None:
        while not self.stop.is_set():
            listed = self.run("status", "--json")
            self.run("status")
            if listed.returncode != 0:
                continue
            for job in json.loads(listed.stdout):
                shown = self.run("show", str(job["id"]), "--json")
                if shown.returncode == 0:
                    self.problems += [f"job {job['id']}: {p}"
                                      for p in half_updated(json.loads(shown.stdout))]
                if job["stage"] in ("train", "deliver", "done"):
                    self.run("logs", str(job["id"]), "-n", "5")


def test_status_show_and_logs_from_other_processes_never_lock_or_see_a_half_update(
        tmp_path, config, fake_trainer, hook):
    fake_trainer(epoch_seconds=1.0, step_seconds=0.002)
    cfg = config(gpus=[0, 1], caption={"enabled": False}, notify={"urls": [hook.url]})
    (tmp_path / "inbox").mkdir()
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    readers = [Reader(cfg), Reader(cfg)]
    try:
        for reader in readers:
            reader.thread.start()
        for index, name in enumerate(("ann", "ben", "cat", "dan")):
            source = tmp_path / "dropped" / name
            make_photos(source, 3, size=(320, 320), seed=60 + index)
            (source / "lora.toml").write_text("epochs = 3\n")
            shutil.copytree(source, tmp_path / "inbox" / name)
        jobs = daemon.wait_for(all_final(4), timeout=180, what="the four jobs")
    finally:
        for reader in readers:
            reader.stop.set()
        for reader in readers:
            reader.thread.join(timeout=60)
        assert daemon.stop() == 0
    assert [j["state"] for j in jobs] == ["done"] * 4, daemon.output()[-3000:]
    calls = sum(reader.calls for reader in readers)
    assert calls >= 20, f"only {calls} commands ran while the daemon worked"
    problems = [p for reader in readers for p in reader.problems]
    assert not problems, "\n".join(problems[:20])
