"""Stopping and reloading lorad the way systemd does: SIGTERM, then a start; SIGHUP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess, all_final, lorad, status, wait_until
from tests.notify_socket import NotifySocket
from tests.photos import make_photos


def drop(tmp_path: Path, name: str, lora_toml: str = "", inbox: str = "inbox") -> None:
    """A subject folder copied into the inbox, the way a person does it."""
    source = tmp_path / "photos" / name
    make_photos(source, 4)
    if lora_toml:
        (source / "lora.toml").write_text(lora_toml)
    shutil.copytree(source, tmp_path / inbox / name)


def trainer_runs(control: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(f"{control}.runs.jsonl").read_text().splitlines()]


def epochs_by_run(config: Path, job: int) -> dict[int, int]:
    """Finished epoch -> the run that trained it, from `lorad show --json`."""
    train = json.loads(lorad(config, "show", str(job), "--json").stdout)["train"]
    return {int(epoch): info["run"] for epoch, info in train.get("epochs", {}).items()}


def test_sigterm_during_training_keeps_every_finished_epoch_and_resumes_after_a_restart(
        tmp_path, config, fake_trainer):
    control = fake_trainer(epoch_seconds=1.0)
    cfg = config(caption={"enabled": False}, kohya={"stop_grace_seconds": 2.0})
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", {"NOTIFY_SOCKET": notify.address})
    daemon.start()
    try:
        drop(tmp_path, "Carol", "epochs = 5\n")
        first_state = tmp_path / "state" / "work"
        wait_until(lambda: any(first_state.glob("*/train/*/carol-000001-state/train_state.json")),
                   "the first epoch's saved state", daemon)
    finally:
        assert daemon.stop() == 0
        notify.close()

    said = daemon.output()  # no silent seconds: what the stop waits for, and for how long
    assert "stopping: waiting for training carol to save and stop (at most" in said
    planned = re.findall(r"(waiting up to 2 s for epoch \d+ to be saved|stopping the trainer now)",
                         said)
    assert len(planned) == 1, said  # said once
    [job] = status(cfg)
    assert (job["state"], job["stage"]) == ("queued", "train"), job
    kept = epochs_by_run(cfg, job["id"])
    last = max(kept)
    assert 1 <= last < 5 and set(kept) == set(range(1, last + 1)) and set(kept.values()) == {1}
    stopping = notify.index("STOPPING", "1")
    assert 0 <= stopping < notify.index("EXTEND_TIMEOUT_USEC"), notify.messages
    assert "job 1 (carol): stopped during train; it continues there at the next start" in (
        daemon.output())

    daemon.start()
    try:
        [job] = daemon.wait_for(all_final(1), what="the resumed job to finish")
    finally:
        assert daemon.stop() == 0
    assert job["state"] == "done", job
    first, second = trainer_runs(control)
    resume = second["argv"][second["argv"].index("--resume") + 1]
    assert resume.endswith(f"carol-{last:06d}-state")
    assert "--resume" not in first["argv"]
    trained = epochs_by_run(cfg, job["id"])
    assert trained == {epoch: 1 if epoch <= last else 2 for epoch in range(1, 6)}
    outbox = sorted(p.name for p in (tmp_path / "outbox" / "carol").glob("carol-*.safetensors"))
    assert outbox == [f"carol-{epoch:06d}.safetensors" for epoch in range(1, 6)]


def test_sigterm_during_captioning_abandons_it_and_the_job_waits_at_caption(tmp_path, config):
    slow = tmp_path / "slow-python"  # a captioning process that never answers
    slow.write_text('#!/bin/sh\necho $$ > "$0.pid"\nexec sleep 600\n')
    slow.chmod(0o755)
    cfg = config(caption={"python": str(slow)})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        drop(tmp_path, "Dave")
        pid_file = Path(f"{slow}.pid")
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "captioning",
                   daemon)
    finally:
        assert daemon.stop(timeout=30) == 0
    [job] = status(cfg)
    assert (job["state"], job["stage"]) == ("queued", "caption"), job
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()  # no orphan left


def test_sighup_applies_a_safe_change_and_says_a_new_inbox_needs_a_restart(tmp_path, config):
    cfg = config(caption={"enabled": False})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    assert daemon.proc is not None
    try:
        wait_until(lambda: "lorad is watching" in daemon.output(), "the start", daemon)
        cfg.write_text(cfg.read_text() + "\nno_such_key = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration not reloaded" in daemon.output(), "a refusal", daemon)
        config(caption={"enabled": False}, default_model="sdxl",
               inbox=str(tmp_path / "new-inbox"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in daemon.output(), "the reload", daemon)
        drop(tmp_path, "Erin")  # into the inbox lorad still watches
        daemon.wait_for(lambda jobs: jobs and jobs[0]["model"], what="the job's model")
    finally:
        assert daemon.stop() == 0
    [job] = status(cfg)
    assert job["model"] == "sdxl"  # default_model: applied to new jobs
    assert "inbox changed in the configuration; restart lorad to apply it" in daemon.output()
    refused = next(line for line in daemon.output().splitlines() if "not reloaded" in line)
    assert "no_such_key'; remove it" in refused  # the reason, on the same line
    assert not os.path.exists(tmp_path / "new-inbox")
