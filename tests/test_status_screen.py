"""`lorad status` on an ordinary terminal: every job one line, the running one on screen, the
rest counted."""

from __future__ import annotations

import time

from click.testing import CliRunner
from rich.console import Console

from lorad import cli
from lorad.store import Store
from tests.jobs import context

LONG_REASON = "the photos were refused:\n" + "\n".join(
    f"IMG_{n}.jpg is {n} pixels wide, under prepare.min_side 256: use a bigger photo of the "
    "same subject" for n in range(9))


def fill(store: Store, done: int = 9, rejected: int = 3, queued: int = 0) -> int:
    """Finished jobs first (oldest ids), then the queue, then one training job (the newest id);
    returns the training job's id."""
    now = time.time()
    for n in range(done):
        store.create_job(f"subject {n}", state="done", stage="done", token=f"subject_{n}",
                         finished_at=now - 1000 + n)
    for n in range(rejected):
        store.create_job(f"a_folder_with_a_very_long_name_number_{n}", state="rejected",
                         stage="prepare", error=LONG_REASON, finished_at=now - 500 + n)
    for n in range(queued):
        store.create_job(f"waiting_{n}", state="queued", stage="prepare")
    return store.create_job("alice smith", state="training", stage="train",
                            token="alice_smith_with_a_rather_long_token", progress=0.4,
                            progress_text="epoch 3/6 · step 120/300 · loss 0.0923 · 64.24 it/s "
                                          "· ETA 6s")


def screen(config_path, monkeypatch, *args: str, width: int = 80, height: int = 30) -> list[str]:
    """What `lorad status` shows on a terminal of that size."""
    terminal = Console(width=width, height=height, record=True, force_terminal=True,
                       soft_wrap=True)
    monkeypatch.setattr(cli, "console", terminal)
    result = CliRunner().invoke(cli.main, ["--config", str(config_path), "status", *args])
    assert result.exit_code == 0, result.output
    return terminal.export_text().splitlines()


def test_status_on_an_80_by_30_terminal_shows_the_training_job_first_one_line_per_job(
        config, monkeypatch):
    cfg = config()
    ctx = context(cfg)
    training = fill(ctx.store)
    lines = screen(cfg, monkeypatch)
    assert len(lines) == 1 + 13  # the header and every job, each on one line
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].split()[:3] == [str(training), "alice_smith_wit…", "training"]
    assert "epoch 3/6" in lines[1]
    rejected = [line for line in lines if "rejected" in line]
    assert len(rejected) == 3 and all("the photos were refused" in line for line in rejected)


def test_status_with_more_jobs_than_lines_counts_the_rest(config, monkeypatch):
    cfg = config()
    ctx = context(cfg)
    training = fill(ctx.store, done=30, rejected=6, queued=2)
    lines = screen(cfg, monkeypatch)
    assert len(lines) <= 30 and all(len(line) <= 80 for line in lines)
    assert lines[1].split()[0] == str(training)
    assert [line.split()[2] for line in lines[2:4]] == ["queued", "queued"]
    rows = lines[1:-1]
    hidden_done = 30 - sum(1 for row in rows if " done " in row)
    hidden_rejected = 6 - sum(1 for row in rows if " rejected " in row)
    assert hidden_done + hidden_rejected == 39 - len(rows) > 0
    counted = f"and {hidden_done} done" + (f", {hidden_rejected} rejected" if hidden_rejected
                                            else "")
    assert lines[-1].startswith(counted)


def test_status_active_and_recent_leave_finished_jobs_out(config, monkeypatch):
    cfg = config()
    ctx = context(cfg)
    training = fill(ctx.store, done=4, rejected=1, queued=1)
    active = screen(cfg, monkeypatch, "--active")
    assert [line.split()[0] for line in active[1:-1]] == [str(training), str(training - 1)]
    assert active[-1].startswith("and 4 done, 1 rejected")
    recent = screen(cfg, monkeypatch, "--recent", "2")
    # the newest finished: the rejected job, then the last done one
    assert [line.split()[2] for line in recent[1:-1]] == [
        "training", "queued", "rejected", "done"]
    assert recent[-1].startswith("and 3 done")


def show(config_path, *args: str) -> str:
    result = CliRunner().invoke(cli.main, ["--config", str(config_path), "show", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_job_that_is_not_running_shows_no_speed_and_no_eta(config):
    cfg = config()
    ctx = context(cfg)
    store = ctx.store
    training = fill(store, done=0, rejected=0)
    assert "64.24 it/s" in show(cfg, str(training))
    store.end(training, "failed", "Training crashed: CUDA error")
    assert store.get(training).progress_text == ""  # cleared when the job stopped running
    assert "it/s" not in show(cfg, str(training)) and "ETA" not in show(cfg, str(training))
    # a row an older lorad left with its last speed: still not shown
    stale = store.create_job("bob", state="failed", stage="train", token="bob", progress=0.5,
                             progress_text="epoch 2/6 · 64.24 it/s · ETA 6s", error="boom")
    shown = show(cfg, "bob")
    assert "progress 50%" in shown and "it/s" not in shown and "ETA" not in shown
    assert "it/s" not in "".join(line for line in screen_lines(store) if line.startswith(
        str(stale)))


def screen_lines(store: Store) -> list[str]:
    from lorad.views import status_screen

    terminal = Console(width=80, height=30, record=True)
    terminal.print(status_screen(store.jobs(), width=80, height=29))
    return terminal.export_text().splitlines()


def test_show_says_whether_a_job_is_a_new_training_or_a_follow_up(config):
    cfg = config()
    ctx = context(cfg)
    first = ctx.store.create_job("alice", state="done", stage="done", token="alice")
    ctx.store.create_job("alice", state="queued", stage="train", token="alice", kind="resume",
                         parent_id=first, train={"start_epoch": 6, "target": 9})
    assert show(cfg, str(first)).splitlines()[0] == f"job {first} alice  (new training)"
    assert show(cfg, "alice").splitlines()[0].endswith(
        f"(follow-up of job {first} (resume from epoch 6))")


def test_every_command_taking_a_job_says_it_may_be_a_token():
    taking = [name for name, command in cli.main.commands.items()
              if any(param.name == "job" for param in command.params)]
    assert len(taking) >= 8
    for name in taking:
        text = " ".join(CliRunner().invoke(cli.main, [name, "--help"]).output.split())
        assert "JOB is a job id or a token (the newest job with it)." in text, name
