"""Faults around the inbox, through a real `lorad run`: the inbox removed and created again while
the daemon runs, and a second daemon started on the same inbox."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tests.daemon_process import lorad
from tests.test_inbox_daemon import NO_CAPTIONS, Daemon, claimed, job_named, photos, running

LOCK = ".lorad-inbox.lock"


def drop_and_time_the_claim(daemon: Daemon, staged: Path, inbox: Path, name: str) -> float:
    """Rename a staged folder into the inbox; seconds from the drop to its claim."""
    dropped = time.time()
    os.rename(staged / name, inbox / name)
    jobs = daemon.wait_for(claimed(name), timeout=30, what=f"{name} to become a job")
    claim = daemon.events(job_named(jobs, name)["id"])[0]
    assert claim.message.startswith("claimed from the inbox")
    return claim.at - dropped


def test_an_inbox_removed_and_created_again_is_watched_again_at_once(tmp_path, config):
    """The periodic rescan is 60 s away: only a renewed watch can take these folders within the
    wait (30 s). Once after the daemon noticed the inbox was gone, once with the inbox replaced
    in one go (removed and created again before the daemon looked)."""
    cfg = config(**NO_CAPTIONS, watch={"settle_seconds": 0.5, "rescan_seconds": 60})
    inbox, staged = tmp_path / "inbox", tmp_path / "staged"
    photos(staged / "alice", seed=1)
    photos(staged / "bob", seed=2)
    daemon = running(cfg, tmp_path)
    try:
        shutil.rmtree(inbox)
        daemon.wait_for(lambda jobs: f"the inbox {inbox} does not exist" in daemon.output(),
                        timeout=30, what="the daemon to notice the inbox is gone")
        inbox.mkdir()
        after_noticed = drop_and_time_the_claim(daemon, staged, inbox, "alice")
        shutil.rmtree(inbox)
        inbox.mkdir()
        after_replaced = drop_and_time_the_claim(daemon, staged, inbox, "bob")
        holder = (inbox / LOCK).read_text().split()
    finally:
        assert daemon.stop() == 0
    print(f"drop to job: {after_noticed:.2f} s after the inbox came back, "
          f"{after_replaced:.2f} s after it was replaced")
    assert after_noticed < 30 and after_replaced < 30
    assert holder[0] == str(daemon.proc.pid)  # the lock was taken again in the new inbox
    assert daemon.output().count("does not exist") == 1  # said once, not every second
    assert list(inbox.iterdir()) == []


def test_a_second_daemon_on_the_same_inbox_refuses_to_start_naming_the_first(tmp_path, config):
    """Another state_dir, the same inbox: the second exits at once with one line naming the
    first (pid and state_dir); the first keeps taking folders, and never its lock file."""
    cfg = config(**NO_CAPTIONS)
    second_cfg = tmp_path / "second.toml"
    second_cfg.write_text(cfg.read_text().replace(str(tmp_path / "state"),
                                                  str(tmp_path / "state2")))
    first = running(cfg, tmp_path, "first.log")
    try:
        started = time.monotonic()
        second = lorad(second_cfg, "run", check=False, timeout=30)
        refused_in = time.monotonic() - started
        assert first.proc.poll() is None
        photos(tmp_path / "inbox" / "alice")
        jobs = first.wait_for(claimed("alice"), timeout=30, what="the first daemon's claim")
    finally:
        assert first.stop() == 0
    print(f"the second daemon refused in {refused_in:.2f} s")
    assert second.returncode == 1
    # After the lines that say which configuration and folders it uses, one line says why not.
    assert "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert f"pid {first.proc.pid}, state_dir {tmp_path / 'state'}" in line
    assert f"already watching the inbox {tmp_path / 'inbox'}" in line
    assert [j["name"] for j in jobs] == ["alice"]
    assert LOCK not in first.output()  # never a subject, never a "file, not a folder" warning
    assert list((tmp_path / "inbox").iterdir()) == []  # the lock file goes with the daemon
    again = running(second_cfg, tmp_path, "again.log")  # the inbox is free again
    assert again.stop() == 0
