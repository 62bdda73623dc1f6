"""The inbox watcher's promises, with a fake clock: when a folder has finished arriving.

Files are real (a temporary inbox); only time is simulated, so that "unchanged for 10 seconds"
and "still changing after an hour" take no time.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from watchdog.observers.polling import PollingObserver

from lorad.inbox import watcher
from lorad.inbox.junk import is_arriving_folder, is_junk, is_partial
from lorad.inbox.watcher import (
    CHECK_INTERVAL,
    MAX_CHECK_INTERVAL,
    Inbox,
    filesystem_type,
    fingerprint,
    needs_polling,
)
from lorad.settings import WatchSettings

SETTLE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Watch:
    """An Inbox on tmp_path/inbox with a fake clock, and the helpers the tests share."""

    def __init__(self, root: Path, **settings: object) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.clock = Clock()
        options = {"settle_seconds": SETTLE, "rescan_seconds": 30.0, **settings}
        self.box = Inbox(self.inbox, WatchSettings(**options), clock=self.clock)

    def poll(self) -> list[str]:
        return sorted(p.name for p in self.box.poll())

    def wait(self, seconds: float, step: float = 0.5) -> list[str]:
        """Poll now, then every `step` until `seconds` have passed; the folders found ready."""
        ready = self.poll()
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + step)
            ready += self.poll()
        return ready

    def take(self, paths: list[Path]) -> None:
        """What a claim does with a ready folder: move it out of the inbox."""
        taken = self.root / "taken"
        taken.mkdir(exist_ok=True)
        for path in paths:
            path.rename(taken / path.name)

    def folder(self, name: str, files: int = 3) -> Path:
        folder = self.inbox / name
        folder.mkdir(parents=True)
        for index in range(files):
            (folder / f"photo_{index}.jpg").write_bytes(b"jpeg" * (index + 1))
        return folder


@pytest.fixture
def watch(tmp_path: Path) -> Watch:
    return Watch(tmp_path)


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# ---- settling ------------------------------------------------------------------------------


def test_a_folder_is_taken_only_after_it_stayed_unchanged_for_the_settle_time(watch):
    watch.folder("alice")
    assert watch.poll() == []
    assert watch.wait(SETTLE - 1) == []
    assert watch.wait(1.0) == ["alice"]


def test_half_copied_folder_is_not_taken(watch):
    """A slow writer: one file grows a little every 2 s for a minute; no wait is long enough
    until it stops, and then the full settle time counts from its last write."""
    folder = watch.folder("alice")
    growing = folder / "big.jpg"
    with open(growing, "wb") as handle:
        for _ in range(30):
            watch.clock.now += 2.0
            handle.write(b"x" * 1000)
            handle.flush()
            assert watch.poll() == []
    assert watch.wait(SETTLE - 0.5) == []
    assert watch.wait(0.5) == ["alice"]


def test_a_copy_that_stalls_for_less_than_the_settle_time_is_not_taken(watch):
    folder = watch.folder("alice", files=1)
    assert watch.wait(SETTLE - 1) == []
    (folder / "photo_9.jpg").write_bytes(b"late")  # the copy goes on after a long pause
    assert watch.wait(SETTLE - 1) == []
    assert watch.wait(2.0) == ["alice"]  # noticed at the next check, settled SETTLE later


@pytest.mark.parametrize("change", ["new file", "bigger", "mtime only", "renamed", "removed",
                                    "new subfolder file", "link added"])
def test_any_change_restarts_the_wait(watch, change):
    folder = watch.folder("alice")
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.jpg").write_bytes(b"inner")
    assert watch.wait(SETTLE - 1) == []
    target = folder / "photo_0.jpg"
    if change == "new file":
        (folder / "photo_new.jpg").write_bytes(b"new")
    elif change == "bigger":
        with open(target, "ab") as handle:
            handle.write(b"more")
    elif change == "mtime only":
        bump_mtime(target)
    elif change == "renamed":
        target.rename(folder / "renamed.jpg")
    elif change == "removed":
        target.unlink()
    elif change == "new subfolder file":
        (folder / "sub" / "deeper.jpg").write_bytes(b"deeper")
    else:
        (folder / "link.jpg").symlink_to(target)
    assert watch.wait(SETTLE - 1) == [], change
    assert watch.wait(2.0) == ["alice"], change


def test_there_is_no_give_up(watch):
    """A folder that keeps changing is never taken, however long it takes (a day here)."""
    folder = watch.folder("alice")
    log = folder / "photo_0.jpg"
    for _ in range(int(86400 / (SETTLE - 1))):
        with open(log, "ab") as handle:
            handle.write(b".")
        assert watch.wait(SETTLE - 1, step=SETTLE - 1) == []
    assert watch.wait(SETTLE, step=SETTLE) == ["alice"]


def test_the_ready_marker_skips_the_wait(watch):
    folder = watch.folder("alice")
    assert watch.poll() == []
    (folder / ".lorad-ready").touch()
    assert watch.wait(CHECK_INTERVAL) == ["alice"]


def test_the_ready_marker_name_is_configurable_and_can_be_switched_off(tmp_path):
    custom = Watch(tmp_path / "custom", ready_marker="READY")
    (custom.folder("alice") / "READY").touch()
    assert custom.wait(CHECK_INTERVAL) == ["alice"]
    off = Watch(tmp_path / "off", ready_marker="")
    off.folder("bob")
    assert off.wait(CHECK_INTERVAL) == []
    assert off.wait(SETTLE) == ["bob"]


def test_an_empty_folder_is_never_taken(watch):
    """Made in a file browser, not filled yet: taking it would steal it from the person."""
    folder = watch.inbox / "New Folder"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"finder")
    (folder / "empty subfolder").mkdir()
    assert watch.wait(10 * SETTLE, step=5) == []
    assert watch.box.next_check_in() <= MAX_CHECK_INTERVAL  # looked at, if less often
    (folder / "photo.jpg").write_bytes(b"jpeg")
    assert watch.wait(SETTLE - 1) == []
    assert watch.wait(MAX_CHECK_INTERVAL + 1.0) == ["New Folder"]


def test_a_folder_left_empty_or_with_litter_only_is_named_in_one_warning(watch, caplog):
    """Not taken (it may be filled yet), but not left unexplained either."""
    (watch.inbox / "New Folder").mkdir()
    holiday = watch.inbox / "Holiday"
    (holiday / "@eaDir").mkdir(parents=True)
    (holiday / "Thumbs.db").write_bytes(b"explorer")
    (holiday / "@eaDir" / "thumb.jpg").write_bytes(b"nas")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.WARNING, logger="lorad"):
        assert watch.wait(SETTLE - 1) == []
        assert warnings() == []
        assert watch.wait(1.0 + MAX_CHECK_INTERVAL) == []
        assert sorted(warnings()) == [
            f"{watch.inbox / name} has no photos in it (it is empty, or holds only system files "
            "such as .DS_Store or Thumbs.db) and is left in the inbox: put the photos into it to "
            "make it a job, or remove it" for name in ("Holiday", "New Folder")]
        assert watch.wait(10 * SETTLE, step=5) == []
        assert len(warnings()) == 2
        (holiday / "photo.jpg").write_bytes(b"jpeg")
        assert watch.wait(SETTLE + MAX_CHECK_INTERVAL) == ["Holiday"]
        assert len(warnings()) == 2


def test_a_settling_folder_is_looked_at_often_and_exactly_when_it_may_be_ready(watch):
    watch.folder("alice")
    assert watch.poll() == []
    assert watch.box.next_check_in() == CHECK_INTERVAL
    watch.clock.now += 8.0
    assert watch.poll() == []
    assert watch.box.next_check_in() == 1.0  # quiet for 8 s: every 8/8 s
    watch.clock.now += 1.0
    assert watch.poll() == []
    assert watch.box.next_check_in() == 1.0  # not 9/8 s: at the settle time exactly
    watch.clock.now += 1.0
    assert watch.poll() == ["alice"]


def test_each_settled_folder_is_returned_once(watch):
    watch.folder("alice")
    assert watch.wait(SETTLE) == ["alice"]
    assert watch.wait(5.0) == []


def test_a_folder_still_there_after_a_failed_claim_is_offered_again_after_a_rescan(watch):
    watch.folder("alice")
    assert watch.wait(SETTLE) == ["alice"]  # ... and the claim failed: it is still there
    assert watch.wait(30.0 + SETTLE) == ["alice"]


def test_a_folder_removed_while_settling_is_forgotten(watch):
    folder = watch.folder("alice")
    watch.wait(2.0)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    watch.box.nudge()  # what the observer does on the folder's removal
    assert watch.wait(SETTLE) == []
    assert watch.box.candidates == {}


def test_a_folder_present_before_the_start_is_found_by_the_first_scan(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "alice").mkdir(parents=True)
    (inbox / "alice" / "photo.jpg").write_bytes(b"jpeg")
    watch = Watch(tmp_path)
    assert watch.wait(SETTLE) == ["alice"]


def test_a_burst_of_folders_all_settle_together(watch):
    for index in range(50):
        watch.folder(f"subject_{index:02d}")
    ready = watch.wait(SETTLE)
    assert ready == [f"subject_{index:02d}" for index in range(50)]


# ---- what is never a subject, and what never holds one up -----------------------------------


@pytest.mark.parametrize("name", [".alice", "alice.part", "alice.tmp", "alice.crdownload",
                                  "alice.PART", ".alice.Xy12Zq", "alice.partial"])
def test_hidden_and_temporary_folders_are_still_arriving(watch, name):
    folder = watch.folder(name)
    assert watch.wait(3 * SETTLE) == []
    folder.rename(watch.inbox / "alice")  # the download or copy finishes with a rename
    watch.box.nudge()
    assert watch.wait(SETTLE) == ["alice"]


@pytest.mark.parametrize("name", [".DS_Store", "._photo_0.jpg", "Thumbs.db", "desktop.ini",
                                  "THUMBS.DB", "__MACOSX/._photo.jpg", "@eaDir/photo_0.jpg/x.jpg",
                                  "sub/.DS_Store", "sub/@EADIR/thumb.jpg"])
def test_system_litter_never_holds_a_folder_up(watch, name):
    """Finder, Explorer and NAS indexers keep rewriting these; the folder settles anyway."""
    folder = watch.folder("alice")
    (folder / "sub").mkdir()
    (folder / "sub" / "photo.jpg").write_bytes(b"jpeg")
    litter = folder / name
    litter.parent.mkdir(parents=True, exist_ok=True)
    ready = []
    for tick in range(int(SETTLE) + 1):
        litter.write_bytes(b"x" * (tick + 1))
        ready += watch.wait(1.0)
    assert ready == ["alice"]


@pytest.mark.parametrize("name", ["photo_9.jpg.part", "photo_9.JPG.CRDOWNLOAD", "photo_9.tmp",
                                  ".photo_9.jpg.a1B2c3", "~$notes.docx", ".~lock.notes.odt#"])
def test_a_growing_partial_file_holds_a_folder_up_and_a_leftover_one_does_not(watch, name):
    folder = watch.folder("alice")
    partial = folder / name
    for tick in range(20):  # growing: still arriving
        partial.write_bytes(b"x" * (tick + 1))
        assert watch.wait(1.0) == []
    assert watch.wait(SETTLE) == ["alice"]  # left behind: settles like anything else


def test_extra_ignore_patterns_never_hold_a_folder_up_nor_become_subjects(tmp_path):
    watch = Watch(tmp_path, ignore=["*.xmp", "scratch*"])
    folder = watch.folder("alice")
    sidecar = folder / "photo_0.XMP"
    (watch.inbox / "scratch space").mkdir()
    (watch.inbox / "scratch space" / "photo.jpg").write_bytes(b"jpeg")
    ready = []
    for tick in range(int(SETTLE) + 1):
        sidecar.write_bytes(b"x" * (tick + 1))
        ready += watch.wait(1.0)
    assert ready == ["alice"]
    watch.take([folder])
    assert watch.wait(60.0) == []


def test_files_and_litter_at_the_top_level_are_not_subjects(watch, caplog):
    for name in ("Thumbs.db", ".DS_Store", "desktop.ini", "photo.jpg.part"):
        (watch.inbox / name).write_bytes(b"x")
    for name in ("@eaDir", "#recycle", "lost+found", "__MACOSX", "$RECYCLE.BIN",
                 "System Volume Information", ".Trash-1000"):
        (watch.inbox / name).mkdir()
        (watch.inbox / name / "photo.jpg").write_bytes(b"jpeg")
    (watch.inbox / "photo.jpg").write_bytes(b"jpeg")
    with caplog.at_level(logging.WARNING, logger="lorad"):
        assert watch.wait(3 * SETTLE + 30.0) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "photo.jpg is a file, not a subject folder" in warnings[0]
    assert watch.box.candidates == {}


def test_junk_names_match_case_insensitively():
    for name in (".DS_Store", ".ds_store", "THUMBS.DB", "Desktop.INI", "photo.JPG.PART",
                 "a.CrDownload", "x.TMP", "~$Report.docx", "._IMG_1.JPG", ".IMG_1.JPG.a1B2c3"):
        assert is_junk(name), name
    for name in ("photo.jpg", "PHOTO.JPG", "lora.toml", "thumbs.jpg", "partial.jpg", "tmp.png"):
        assert not is_junk(name), name
    assert is_partial(".IMG_1.JPG.a1B2c3") and not is_partial(".lorad-ready")
    assert is_arriving_folder(".alice") and is_arriving_folder("alice.Part")
    assert not is_arriving_folder("alice") and not is_arriving_folder("alice.smith")


# ---- links ----------------------------------------------------------------------------------


def test_links_inside_a_folder_are_recorded_never_followed(watch, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    folder = watch.folder("alice")
    (folder / "etc").symlink_to("/etc")
    (folder / "outside").symlink_to(outside)
    (folder / "loop").symlink_to(folder)
    count, entries = fingerprint(folder)
    assert count == 6
    assert {rel for rel, _, _ in entries} == {"photo_0.jpg", "photo_1.jpg", "photo_2.jpg",
                                              "etc", "outside", "loop"}
    watch.wait(SETTLE - 1)
    (outside / "secret.jpg").write_bytes(b"changed, and not ours")
    assert watch.wait(1.0) == ["alice"]


def test_a_top_level_link_out_of_the_inbox_is_refused_not_taken(watch):
    (watch.inbox / "etc").symlink_to("/etc")
    (watch.inbox / "loop").symlink_to(watch.inbox)
    assert watch.wait(SETTLE) == []
    assert sorted(p.name for p in watch.box.take_outside_links()) == ["etc", "loop"]
    assert watch.box.candidates == {}


def test_a_top_level_link_to_a_folder_inside_the_inbox_is_taken_as_that_folder(watch):
    watch.folder("people/alice")
    (watch.inbox / "alice").symlink_to(watch.inbox / "people" / "alice")
    (watch.inbox / "also people").symlink_to("people")  # a link to a top-level folder
    ready = watch.box.poll() + watch.box.poll()
    while not ready or watch.box.candidates:
        watch.clock.now += CHECK_INTERVAL
        ready += watch.box.poll()
    assert sorted(ready) == [watch.inbox / "people", watch.inbox / "people" / "alice"]
    assert watch.box.take_outside_links() == []
    watch.take(sorted(ready, reverse=True))  # the nested one first
    # The linked folder is offered by its real path, the one that is moved.
    watch.folder("bob")
    (watch.inbox / "bobby").symlink_to("bob")
    watch.box.nudge()
    paths = []
    for _ in range(int(SETTLE / CHECK_INTERVAL) + 2):
        watch.clock.now += CHECK_INTERVAL
        paths += watch.box.poll()
    assert paths == [watch.inbox / "bob"]


# ---- events, rescans, observers -------------------------------------------------------------


def test_idle_the_watcher_sleeps_until_the_next_rescan(watch):
    watch.poll()
    assert watch.box.next_check_in() == pytest.approx(30.0)
    watch.folder("alice")
    watch.box.nudge()
    watch.poll()
    assert watch.box.next_check_in() == CHECK_INTERVAL


def test_without_events_the_periodic_rescan_finds_new_folders(watch):
    watch.poll()
    watch.folder("alice")  # no observer running: no event
    assert watch.wait(29.0) == []
    assert watch.wait(1.0 + SETTLE) == ["alice"]


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_a_folder_moved_in_wakes_the_watcher(tmp_path, mode):
    """One directory event for a whole folder moved in with mv (or a poll that sees it)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    wake = threading.Event()
    box = Inbox(inbox, WatchSettings(settle_seconds=0.3, mode=mode, poll_seconds=0.2), wake)
    assert box.start() == mode
    try:
        expected = PollingObserver if mode == "poll" else watcher.Observer
        assert isinstance(box.observer, expected)
        box.poll()
        wake.clear()
        staged = tmp_path / "staging" / "alice"
        staged.mkdir(parents=True)
        (staged / "photo.jpg").write_bytes(b"jpeg")
        os.rename(staged, inbox / "alice")
        assert wake.wait(5.0), "no event for a folder moved in"
        deadline = time.monotonic() + 5.0
        ready: list[Path] = []
        while not ready and time.monotonic() < deadline:
            ready = box.poll()
            time.sleep(0.05)
        assert ready == [inbox / "alice"]
    finally:
        box.stop()


def test_network_and_fuse_filesystems_are_polled_in_auto_mode(tmp_path, monkeypatch):
    for fs_type in ("nfs", "nfs4", "cifs", "smb3", "9p", "fuse.sshfs", "fuse.rclone", "virtiofs"):
        assert needs_polling(fs_type), fs_type
    for fs_type in ("ext4", "xfs", "btrfs", "tmpfs", "zfs", "overlay", None):
        assert not needs_polling(fs_type), fs_type
    monkeypatch.setattr(watcher, "filesystem_type", lambda path: "fuse.sshfs")
    box = Inbox(tmp_path, WatchSettings(mode="auto", poll_seconds=0.5))
    try:
        assert box.start() == "poll"
        assert isinstance(box.observer, PollingObserver)
    finally:
        box.stop()


def test_the_filesystem_type_is_read_from_mountinfo(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /mnt/nas rw,relatime shared:20 - nfs4 nas:/photos rw,vers=4.2\n"
        "41 40 0:41 / /mnt/nas/local\\040disk rw shared:21 - xfs /dev/sdb1 rw\n"
        "42 22 0:42 / /media/phone rw,nosuid - fuse.gvfsd-fuse gvfsd-fuse rw\n"
        "43 22 0:43 / /mnt/nasty rw - cifs //nas/x rw\n"
    )

    def fs(path: str) -> str | None:
        return filesystem_type(Path(path), str(mountinfo))

    assert fs("/mnt/nas/inbox") == "nfs4"
    assert fs("/mnt/nas") == "nfs4"
    assert fs("/mnt/nas/local disk/inbox") == "xfs"
    assert fs("/mnt/nasty/inbox") == "cifs"
    assert fs("/mnt/nasx") == "ext4"
    assert fs("/media/phone/DCIM") == "fuse.gvfsd-fuse"
    assert fs("/home/someone/inbox") == "ext4"
    assert filesystem_type(tmp_path, str(tmp_path / "no such file")) is None


def test_running_out_of_inotify_watches_falls_back_to_polling(tmp_path, monkeypatch, caplog):
    from watchdog.observers import inotify_c

    def no_more_watches(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_add_watch", no_more_watches)
    box = Inbox(tmp_path, WatchSettings(mode="native", poll_seconds=0.5))
    with caplog.at_level(logging.WARNING, logger="lorad"):
        try:
            assert box.start() == "poll"
            assert isinstance(box.observer, PollingObserver)
        finally:
            box.stop()
    text = caplog.text
    assert "cannot watch" in text and "polling" in text and "max_user_watches" in text
