"""Claiming: a settled folder moves out of the inbox into exactly one job, whatever happens.

The crash windows are real crashes: a forked child process claims the folder and os._exit()s at
the named point (no cleanup, no rollback runs), then the start-up recovery runs here and the test
checks the promise: the folder is whole in the inbox with no job, or whole in one queued job,
never both and never neither.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lorad.context import Context
from lorad.inbox import claim as ingest
from lorad.inbox import refuse
from lorad.inbox.watcher import Inbox
from lorad.settings import Settings, WatchSettings
from lorad.store import Store
from lorad.system.sdnotify import SystemdNotifier
from tests.notify_socket import NotifySocket

CRASHED = 77  # the child's exit status when it reached its crash point


def make_context(state: Path, inbox: Path) -> Context:
    settings = Settings(inbox=inbox, outbox=state.parent / "outbox", state_dir=state)
    for folder in (settings.inbox, settings.outbox, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return Context(settings, Store(settings.db_path))


def claim_one(ctx: Context, folder: Path, *heartbeat: ingest.Heartbeat) -> int | None:
    """Claim one settled folder as the daemon does (in a batch of one): its job id, or None."""
    return ingest.claim_all(ctx, [folder], *heartbeat)[0]


@pytest.fixture(autouse=True)
def _no_lorad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LORAD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return make_context(tmp_path / "state", tmp_path / "inbox")


def drop(inbox: Path, name: str, files: int = 3) -> dict[str, bytes]:
    """A subject folder with a subfolder, a link inside it, and some photos; its contents."""
    folder = inbox / name
    (folder / "more").mkdir(parents=True)
    for index in range(files):
        (folder / f"photo_{index}.jpg").write_bytes(f"{name} photo {index}".encode() * 100)
    (folder / "more" / "extra.jpg").write_bytes(b"extra" * 10)
    (folder / "link.jpg").symlink_to("photo_0.jpg")
    return tree(folder)


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes (links as '-> target') of everything below folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def outcome(ctx: Context, name: str, contents: dict[str, bytes]) -> str:
    """Check the claiming promise for one dropped folder; "inbox" or "job" says where it is."""
    inbox, work = ctx.settings.inbox, ctx.settings.work_dir
    jobs = ctx.store.jobs()
    parked = [p.name for p in inbox.rglob(ingest.CLAIM_PREFIX + "*")]
    assert parked == [], f"a parked copy was left behind: {parked}"
    if not jobs:
        assert tree(inbox / name) == contents, "the folder is not whole in the inbox"
        assert list(work.iterdir()) == [], "an undone claim left a work folder"
        return "inbox"
    assert len(jobs) == 1, f"one folder, {len(jobs)} jobs"
    job = jobs[0]
    assert job.state == "queued" and job.stage == "prepare"
    assert not (inbox / name).exists(), "the folder is both in the inbox and in a job"
    assert job.source_dir and tree(Path(job.source_dir)) == contents
    assert [p.name for p in Path(job.work_dir or "").iterdir()] == ["source"]
    assert [e.message for e in ctx.store.events(job.id)][-1].startswith("claimed from the inbox")
    return "job"


# ---- other filesystems ---------------------------------------------------------------------


def exdev_between(inbox: Path, state: Path) -> Callable[..., None]:
    """os.rename that fails with EXDEV for moves between the inbox and the state folder."""
    real = os.rename

    def rename(src: os.PathLike | str, dst: os.PathLike | str, *args, **kwargs) -> None:
        sides = {Path(src).is_relative_to(inbox), Path(dst).is_relative_to(inbox)}
        if sides == {True, False} and state in (*Path(src).parents, *Path(dst).parents):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        real(src, dst, *args, **kwargs)

    return rename


@pytest.fixture
def tmpfs_inbox(tmp_path: Path) -> Iterator[Path]:
    """An inbox on /dev/shm when that is another filesystem than tmp_path (a real EXDEV)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm to put an inbox on another filesystem")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the temporary folder")
    root = Path(tempfile.mkdtemp(prefix="lorad-test-", dir=shm))
    yield root / "inbox"
    shutil.rmtree(root, ignore_errors=True)


def test_a_claim_moves_the_folder_in_one_rename_and_queues_the_job(ctx, monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")
    renames = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append((a, b)), real(a, b)))
    monkeypatch.setattr(ingest, "copy_tree_verified", None)  # never called on one filesystem
    job_id = claim_one(ctx, ctx.settings.inbox / "alice")
    job = ctx.store.get(job_id)
    assert renames == [(ctx.settings.inbox / "alice", Path(job.source_dir))]
    assert outcome(ctx, "alice", contents) == "job"
    assert job.name == "alice" and job.inbox_path == str(ctx.settings.inbox / "alice")


def test_across_filesystems_the_folder_is_copied_verified_then_removed(tmp_path, tmpfs_inbox):
    ctx = make_context(tmp_path / "state", tmpfs_inbox)
    contents = drop(tmpfs_inbox, "alice")
    job_id = claim_one(ctx, tmpfs_inbox / "alice")
    assert job_id is not None
    assert outcome(ctx, "alice", contents) == "job"
    source = Path(ctx.store.get(job_id).source_dir)
    assert source.stat().st_dev == tmp_path.stat().st_dev != tmpfs_inbox.stat().st_dev
    assert list(tmpfs_inbox.iterdir()) == []


def test_across_filesystems_by_exdev_the_folder_is_copied_verified_then_removed(ctx, monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")
    monkeypatch.setattr(os, "rename", exdev_between(ctx.settings.inbox, ctx.settings.state_dir))
    assert claim_one(ctx, ctx.settings.inbox / "alice") is not None
    assert outcome(ctx, "alice", contents) == "job"


def test_a_long_copy_from_another_filesystem_keeps_the_watchdog_fed(ctx, monkeypatch, tmp_path):
    """The daemon claims inside one step of its loop: the heartbeat (its WATCHDOG=1) comes
    between folders and between the files of each copy, not only when the step ends."""
    for name in ("alice", "bob"):
        drop(ctx.settings.inbox, name, files=5)
    monkeypatch.setattr(os, "rename", exdev_between(ctx.settings.inbox, ctx.settings.state_dir))
    notify = NotifySocket(tmp_path / "notify.sock")
    notifier = SystemdNotifier(notify.address, watchdog_usec=2)  # every ping is due at once
    try:
        job_ids = ingest.claim_all(ctx, [ctx.settings.inbox / "alice", ctx.settings.inbox / "bob"],
                                   heartbeat=notifier.watchdog)
    finally:
        notify.close()
    assert None not in job_ids
    files = 2 * 6  # five photos and one in a subfolder each (the link is not copied as a file)
    pings = [m for m in notify.messages if m == {"WATCHDOG": "1"}]
    assert len(pings) >= 2 + files, len(pings)


def test_the_heartbeat_comes_while_a_folder_is_copied(ctx, monkeypatch):
    drop(ctx.settings.inbox, "alice", files=5)
    monkeypatch.setattr(os, "rename", exdev_between(ctx.settings.inbox, ctx.settings.state_dir))
    partial = ctx.settings.job_dir(1) / ".source.partial"
    copied_so_far = []

    def heartbeat() -> None:
        copied_so_far.append(len(list(partial.rglob("*.jpg"))) if partial.exists() else 0)

    assert claim_one(ctx, ctx.settings.inbox / "alice", heartbeat) == 1
    during = [count for count in copied_so_far if 0 < count < 6]
    assert during, copied_so_far  # called with the copy half done, not only before or after


def test_a_copy_that_does_not_verify_is_undone_and_the_folder_stays_in_the_inbox(ctx, monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")
    monkeypatch.setattr(os, "rename", exdev_between(ctx.settings.inbox, ctx.settings.state_dir))

    def bad_copy(source: Path, target: Path, heartbeat: Callable[[], None]) -> None:
        shutil.copytree(source, target, symlinks=True)
        (target / "photo_1.jpg").write_bytes(b"bit rot")
        raise OSError(f"copy of {source} to {target} does not match the original")

    monkeypatch.setattr(ingest, "copy_tree_verified", bad_copy)
    assert claim_one(ctx, ctx.settings.inbox / "alice") is None
    assert outcome(ctx, "alice", contents) == "inbox"


def test_a_folder_that_cannot_be_moved_stays_in_the_inbox_with_no_job(ctx, monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(src))

    monkeypatch.setattr(os, "rename", refuse)
    assert claim_one(ctx, ctx.settings.inbox / "alice") is None
    monkeypatch.undo()
    assert outcome(ctx, "alice", contents) == "inbox"
    assert claim_one(ctx, ctx.settings.inbox / "alice") is not None  # "will try again"
    assert outcome(ctx, "alice", contents) == "job"


def test_a_folder_that_vanished_before_the_claim_leaves_no_job(ctx):
    assert claim_one(ctx, ctx.settings.inbox / "gone") is None
    assert ctx.store.jobs() == [] and list(ctx.settings.work_dir.iterdir()) == []


def test_the_claiming_row_is_committed_durably_before_the_folder_moves(ctx, monkeypatch):
    """synchronous=FULL for that one commit: a power cut cannot undo the row yet keep the move."""
    seen = []
    create = ctx.store.create_job

    def spy(*args: object, **kwargs: object) -> int:
        seen.append(ctx.store.conn.execute("PRAGMA synchronous").fetchone()[0])
        return create(*args, **kwargs)

    monkeypatch.setattr(ctx.store, "create_job", spy)
    drop(ctx.settings.inbox, "alice")
    assert claim_one(ctx, ctx.settings.inbox / "alice") is not None
    assert seen == [2]  # FULL
    assert ctx.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again


def test_a_leftover_work_folder_is_set_aside_never_claimed_into(ctx):
    leftover = ctx.settings.job_dir(1) / "source"
    leftover.mkdir(parents=True)
    (leftover / "old.jpg").write_bytes(b"an earlier job's photo")
    contents = drop(ctx.settings.inbox, "alice")
    assert claim_one(ctx, ctx.settings.inbox / "alice") == 1
    assert outcome(ctx, "alice", contents) == "job"
    kept = ctx.settings.work_dir / "000001.orphaned" / "source"
    assert tree(kept) == {"old.jpg": b"an earlier job's photo"}


def test_folders_claimed_together_each_get_their_own_job_even_if_one_cannot_be_taken(ctx):
    contents = {name: drop(ctx.settings.inbox, name) for name in ("alice", "bob", "carol")}
    folders = [ctx.settings.inbox / name for name in ("alice", "gone", "bob", "carol")]
    job_ids = ingest.claim_all(ctx, folders)
    assert job_ids[1] is None and None not in (job_ids[0], job_ids[2], job_ids[3])
    for job_id in (job_ids[0], job_ids[2], job_ids[3]):
        job = ctx.store.get(job_id)
        assert job.state == "queued" and tree(Path(job.source_dir)) == contents[job.name]
    assert len(ctx.store.jobs()) == 3 and list(ctx.settings.inbox.iterdir()) == []


def test_a_link_out_of_the_inbox_is_moved_to_failed_with_its_reason(ctx):
    link = ctx.settings.inbox / "etc"
    link.symlink_to("/etc")
    job_id = refuse.reject_link(ctx, link, Path("/etc"))
    job = ctx.store.get(job_id)
    assert job.state == "rejected" and "outside the inbox" in (job.error or "")
    moved = ctx.settings.failed_dir / "etc"
    assert os.readlink(moved) == "/etc" and not link.is_symlink()
    assert "outside the inbox" in (ctx.settings.failed_dir / "etc.error.txt").read_text()


def test_a_link_is_moved_to_failed_even_when_rename_crosses_mounts(ctx, monkeypatch):
    """Under systemd the inbox and failed/ can be two mounts: rename() fails with EXDEV, and the
    link is made again in failed/ before the original goes."""
    link = ctx.settings.inbox / "etc"
    link.symlink_to("/etc")

    def exdev(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))

    monkeypatch.setattr(os, "rename", exdev)
    job_id = refuse.reject_link(ctx, link, Path("/etc"))
    assert job_id is not None and ctx.store.get(job_id).state == "rejected"
    moved = ctx.settings.failed_dir / "etc"
    assert os.readlink(moved) == "/etc" and not link.is_symlink()
    assert ctx.store.get(job_id).options["failed_path"] == str(moved)


def test_a_link_that_vanished_before_it_was_refused_leaves_no_job(ctx):
    """Removed by its owner between the scan and the refusal: nothing to record, no crash."""
    assert refuse.reject_link(ctx, ctx.settings.inbox / "etc", Path("/etc")) is None
    assert ctx.store.jobs() == []


# ---- a burst --------------------------------------------------------------------------------


def test_a_burst_of_50_folders_becomes_50_jobs_without_duplicates(tmp_path, ctx):
    """50 folders renamed into the inbox at once while the watcher and claims run, as in the
    daemon's loop; a real native observer, settle 0.3 s."""
    staging = tmp_path / "staging"
    contents = {f"subject {n:02d}": drop(staging, f"subject {n:02d}") for n in range(50)}
    wake = threading.Event()
    box = Inbox(ctx.settings.inbox, WatchSettings(settle_seconds=0.3, mode="native"), wake)
    assert box.start() == "native"
    claimed: list[int] = []
    try:
        box.poll()
        dropped_at = time.monotonic()
        for name in contents:
            os.rename(staging / name, ctx.settings.inbox / name)
        deadline = time.monotonic() + 30
        while len(claimed) < 50 and time.monotonic() < deadline:
            job_ids = ingest.claim_all(ctx, box.poll())
            assert None not in job_ids
            claimed += job_ids
            wake.wait(box.next_check_in())
            wake.clear()
        took = time.monotonic() - dropped_at
        time.sleep(0.5)  # nothing more turns up
        assert box.poll() == []
    finally:
        box.stop()
    jobs = ctx.store.jobs()
    assert len(claimed) == len(set(claimed)) == len(jobs) == 50
    assert sorted(j.name for j in jobs) == sorted(contents)
    for job in jobs:
        assert job.state == "queued"
        assert tree(Path(job.source_dir)) == contents[job.name]
    assert list(ctx.settings.inbox.iterdir()) == []
    assert took < 0.3 + 5.0, f"50 folders took {took:.1f}s to register"


# ---- crash windows --------------------------------------------------------------------------


def _crash_child(ctx: Context, name: str, point: str, exdev: bool) -> None:
    """In a child process: claim inbox/name and die (os._exit) at `point`."""
    settings = ctx.settings
    ctx = make_context(settings.state_dir, settings.inbox)  # the child's own connection

    def die(*args: object, **kwargs: object) -> None:
        os._exit(CRASHED)

    if exdev:
        os.rename = exdev_between(settings.inbox, settings.state_dir)  # type: ignore[assignment]
    if point == "after the row, before the rename":
        ingest._take = die
    elif point == "after the rename, before the update":
        ingest._finish_claims = die
    elif point == "parked, not copied":
        ingest.copy_tree_verified = die
    elif point == "copied, not verified":
        ingest.copy_tree_verified = lambda src, dst, heartbeat: (
            shutil.copytree(src, dst, symlinks=True), die())
    elif point == "in place, inbox copy not removed":
        ingest._remove_parked = die
    elif point == "in place, inbox copy half removed":
        ingest._remove_parked = lambda parked: (
            (parked / "photo_1.jpg").unlink(), shutil.rmtree(parked / "more"), die())
    else:
        raise AssertionError(point)
    claim_one(ctx, settings.inbox / name)


def crash_claim(ctx: Context, name: str, point: str, *, exdev: bool = False) -> None:
    """Claim in a forked child that dies at `point`: nothing after it runs, no cleanup."""
    pid = os.fork()
    if pid == 0:
        try:
            _crash_child(ctx, name, point, exdev)
        except BaseException:
            traceback.print_exc()
        os._exit(1)  # the crash point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == CRASHED, f"{point} was not reached"


WINDOWS = [
    # (crash point, across filesystems, where the folder must be after recovery)
    ("after the row, before the rename", False, "inbox"),
    ("after the rename, before the update", False, "job"),
    ("after the row, before the rename", True, "inbox"),
    ("parked, not copied", True, "inbox"),
    ("copied, not verified", True, "inbox"),
    ("in place, inbox copy not removed", True, "job"),
    ("in place, inbox copy half removed", True, "job"),
    ("after the rename, before the update", True, "job"),
]


@pytest.mark.parametrize(("point", "exdev", "where"), WINDOWS,
                         ids=[f"{'other fs: ' if x else ''}{p}" for p, x, _ in WINDOWS])
def test_a_crash_while_claiming_leaves_the_folder_in_the_inbox_or_in_its_job(ctx, point, exdev,
                                                                             where):
    contents = drop(ctx.settings.inbox, "alice")
    crash_claim(ctx, "alice", point, exdev=exdev)
    assert [j.state for j in ctx.store.jobs()] == ["claiming"]
    ingest.recover_claims(make_context(ctx.settings.state_dir, ctx.settings.inbox))
    assert outcome(ctx, "alice", contents) == where
    if where == "inbox":  # and the next claim takes it as usual
        assert claim_one(ctx, ctx.settings.inbox / "alice") is not None
        assert outcome(ctx, "alice", contents) == "job"


def _crash_in_a_burst(ctx: Context, names: list[str]) -> None:
    """Claim the folders together; die after the second one has moved."""
    ctx = make_context(ctx.settings.state_dir, ctx.settings.inbox)
    take = ingest._take
    moved = []

    def take_then_die(folder: Path, paths: object, job_id: int, heartbeat: object) -> None:
        if len(moved) == 2:
            os._exit(CRASHED)
        take(folder, paths, job_id, heartbeat)
        moved.append(folder)

    ingest._take = take_then_die
    ingest.claim_all(ctx, [ctx.settings.inbox / name for name in names])


def test_a_crash_in_the_middle_of_a_burst_keeps_every_folder_once(ctx):
    names = ["alice", "bob", "carol", "dave"]
    contents = {name: drop(ctx.settings.inbox, name) for name in names}
    pid = os.fork()
    if pid == 0:
        try:
            _crash_in_a_burst(ctx, names)
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == CRASHED
    assert [j.state for j in ctx.store.jobs()] == ["claiming"] * 4
    ingest.recover_claims(ctx)
    jobs = {j.name: j for j in ctx.store.jobs()}
    assert sorted(jobs) == ["alice", "bob"]
    for name, job in jobs.items():
        assert job.state == "queued" and tree(Path(job.source_dir)) == contents[name]
    assert sorted(p.name for p in ctx.settings.inbox.iterdir()) == ["carol", "dave"]
    for name in ("carol", "dave"):
        assert tree(ctx.settings.inbox / name) == contents[name]
    assert sorted(p.name for p in ctx.settings.work_dir.iterdir()) == [
        f"{jobs['alice'].id:06d}", f"{jobs['bob'].id:06d}"]


def test_a_recovery_that_fails_now_is_left_for_the_next_start(ctx, monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")
    crash_claim(ctx, "alice", "parked, not copied", exdev=True)

    def broken(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error", str(src))

    monkeypatch.setattr(os, "rename", broken)
    ingest.recover_claims(ctx)  # logs, does not raise: the daemon starts anyway
    assert [j.state for j in ctx.store.jobs()] == ["claiming"]
    monkeypatch.undo()
    ingest.recover_claims(ctx)
    assert outcome(ctx, "alice", contents) == "inbox"


@pytest.mark.parametrize("exdev", [False, True], ids=["one fs", "other fs"])
def test_recovery_never_touches_a_new_folder_dropped_under_the_same_name(ctx, exdev):
    first = drop(ctx.settings.inbox, "alice")
    crash_claim(ctx, "alice", "after the rename, before the update", exdev=exdev)
    second = drop(ctx.settings.inbox, "alice", files=5)  # corrected, dropped again
    ingest.recover_claims(ctx)
    [job] = ctx.store.jobs()
    assert job.state == "queued" and tree(Path(job.source_dir)) == first
    assert tree(ctx.settings.inbox / "alice") == second


def test_an_undone_claim_puts_the_folder_back_beside_a_new_one_of_the_same_name(ctx):
    first = drop(ctx.settings.inbox, "alice")
    crash_claim(ctx, "alice", "copied, not verified", exdev=True)
    second = drop(ctx.settings.inbox, "alice", files=5)
    ingest.recover_claims(ctx)
    assert ctx.store.jobs() == []
    assert tree(ctx.settings.inbox / "alice") == second
    assert tree(ctx.settings.inbox / "alice-2") == first


# ---- cancelled while claiming ---------------------------------------------------------------


def test_a_job_cancelled_while_its_folder_moves_ends_cancelled_with_its_folder_kept(ctx,
                                                                                  monkeypatch):
    contents = drop(ctx.settings.inbox, "alice")
    take = ingest._take

    def cancel_then_take(folder: Path, paths: object, job_id: int, heartbeat: object) -> None:
        assert ctx.store.request_cancel(job_id).state == "cancelled"  # `lorad cancel 1` now
        take(folder, paths, job_id, heartbeat)

    monkeypatch.setattr(ingest, "_take", cancel_then_take)
    job_id = claim_one(ctx, ctx.settings.inbox / "alice")
    job = ctx.store.get(job_id)
    assert (job.state, job.cancel_requested) == ("cancelled", 1)
    assert job.source_dir and tree(Path(job.source_dir)) == contents
    assert not (ctx.settings.inbox / "alice").exists()
    assert ctx.store.waiting("prepare") == []  # never queued, so never stuck
    assert "cancelled while it was being claimed" in ctx.store.events(job_id)[-1].message


@pytest.mark.parametrize(("point", "exdev", "where"), [
    ("after the rename, before the update", False, "work area"),
    ("parked, not copied", True, "inbox"),
], ids=["moved", "parked"])
def test_a_claim_cancelled_then_interrupted_keeps_its_job_cancelled_and_its_folder_whole(
        ctx, point, exdev, where):
    contents = drop(ctx.settings.inbox, "alice")
    crash_claim(ctx, "alice", point, exdev=exdev)
    [job] = ctx.store.jobs()
    ctx.store.request_cancel(job.id)
    ingest.recover_claims(ctx)
    job = ctx.store.get(job.id)
    assert job.state == "cancelled"
    assert [p.name for p in ctx.settings.inbox.rglob(ingest.CLAIM_PREFIX + "*")] == []
    if where == "inbox":
        assert tree(ctx.settings.inbox / "alice") == contents and job.source_dir is None
        assert not ctx.settings.job_dir(job.id).exists()
    else:
        assert job.source_dir and tree(Path(job.source_dir)) == contents
    events = ctx.store.events(job.id)
    ingest.recover_claims(ctx)  # nothing left to recover: a second start changes nothing
    assert ctx.store.get(job.id) == job and ctx.store.events(job.id) == events


# ---- log lines name the job -----------------------------------------------------------------


def test_recovery_log_lines_carry_the_job_id(ctx, caplog):
    caplog.set_level(logging.INFO, logger="lorad")
    drop(ctx.settings.inbox, "alice")
    drop(ctx.settings.inbox, "bob")
    crash_claim(ctx, "alice", "after the row, before the rename")
    crash_claim(ctx, "bob", "after the rename, before the update")
    ingest.recover_claims(ctx)
    assert "job 1: undid the interrupted claim of alice; it is still in the inbox" in caplog.text
    assert "job 2: finished the interrupted claim of bob" in caplog.text
