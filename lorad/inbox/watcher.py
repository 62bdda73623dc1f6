"""The inbox: which top-level folders have finished arriving.

A folder is ready when its fingerprint (relative path, size and mtime of every file, and the file
count) has not changed for `watch.settle_seconds`, or at once when it holds the ready marker. Any
change restarts the wait and there is no give-up. System litter (.DS_Store, @eaDir/, ...) is left
out of the fingerprint; an empty folder is never ready (it may be about to be filled), but once it
has stayed empty for the settle time a warning names it, once. Filesystem events only say "look
now"; a full rescan at start-up and every `watch.rescan_seconds` covers lost events and downtime.
An inbox removed while lorad runs is looked for every second, and watched again (and its lock
taken again) as soon as it exists: a watch dies with the folder it was set on.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from lorad.inbox.junk import is_arriving_folder, is_junk, is_junk_dir, is_partial
from lorad.inbox.lock import INBOX_LOCK, InboxLock
from lorad.settings import WatchSettings
from lorad.system.logs import log
from lorad.system.pidlock import AlreadyRunning

# Filesystems where inotify does not see changes made by other machines or by the host.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
              "lustre", "beegfs", "gpfs", "davfs", "vboxsf", "virtiofs", "sshfs", "ncpfs",
              "fuseblk", "drvfs", "prl_fs", "vmhgfs", "fakeowner", "smb2", "afpfs")
# How often a folder that is still arriving is fingerprinted again: every CHECK_INTERVAL while it
# changes, less often the longer it stays the same (up to MAX_CHECK_INTERVAL: an empty folder left
# in the inbox costs little), and always at the moment it would become ready.
CHECK_INTERVAL = 0.25
MAX_CHECK_INTERVAL = 2.0
# How often a missing inbox (removed, or its share not mounted) is looked for.
MISSING_INBOX_INTERVAL = 1.0

Fingerprint = tuple[int, frozenset[tuple[str, int, int]]]


def _counts(name: str, ignore: Iterable[str]) -> bool:
    """Whether an entry is part of a folder's fingerprint.

    System litter (.DS_Store, Thumbs.db, @eaDir/, ...) and the extra ignore patterns are left out,
    so that a file browser or an indexer touching them cannot hold a folder up forever. Partial
    downloads and copies stay in: a growing .part file means the folder is still arriving.
    """
    return is_partial(name) or not (is_junk(name, ignore) or is_junk_dir(name))


def fingerprint(folder: Path, ignore: Iterable[str] = ()) -> Fingerprint:
    """(file count, {(relative path, size, mtime_ns)}) of the files below folder that count.

    Symbolic links are recorded as links and never followed. Raises OSError when folder itself
    cannot be listed (it vanished); unreadable subfolders are left out.
    """
    ignore = tuple(ignore)
    entries = set()
    pending = [(str(folder), "")]
    while pending:
        path, prefix = pending.pop()
        try:
            with os.scandir(path) as listing:
                items = list(listing)
        except OSError:
            if not prefix:
                raise
            continue
        for item in items:
            if not _counts(item.name, ignore):
                continue
            rel = prefix + item.name
            try:
                if item.is_dir(follow_symlinks=False):
                    pending.append((item.path, rel + "/"))
                    continue
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            entries.add((rel, st.st_size, st.st_mtime_ns))
    return len(entries), frozenset(entries)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding path (longest mount-point prefix), or None."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = _unescape(fields[4])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, right.split()[0]
    return best_type


def needs_polling(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in NETWORK_FS or fs_type.startswith("fuse."))


@dataclass
class Candidate:
    path: Path
    fingerprint: Fingerprint | None = None
    changed_at: float = 0.0
    checked_at: float = float("-inf")
    warned_empty: bool = False


class _Nudge(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self.on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.on_event(event)


class Inbox:
    """Finds the inbox folders that are ready to become jobs. Not thread-safe: one caller."""

    def __init__(self, inbox: Path, settings: WatchSettings, wake: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, lock: InboxLock | None = None
                 ) -> None:
        self.inbox = inbox
        self.lock = lock  # taken again when the inbox is created anew
        self.settings = settings
        self.wake = wake or threading.Event()
        self.clock = clock
        self.candidates: dict[str, Candidate] = {}
        self.observer: BaseObserver | None = None
        self.mode = "none"
        self._dirty = threading.Event()
        self._next_rescan = float("-inf")
        self._reported: set[str] = set()
        self.outside_links: list[Path] = []
        self._watched: tuple[int, int] | None = None  # (device, inode) of the watched folder
        self._watch_lost = threading.Event()  # the watched folder was removed
        self._missing = False

    # ---- observing -----------------------------------------------------------------------
    def start(self) -> str:
        """Start watching; returns the mode used ("native" or "poll")."""
        try:
            st = os.stat(self.inbox)
            self._watched = (st.st_dev, st.st_ino)
        except OSError:
            self._watched = None
        mode = self.settings.mode
        if mode == "auto":
            fs_type = filesystem_type(self.inbox)
            mode = "poll" if needs_polling(fs_type) else "native"
            if mode == "poll":
                log.info("inbox %s is on %s: polling every %ss", self.inbox, fs_type,
                         self.settings.poll_seconds)
        if mode == "native":
            try:
                self.observer = self._schedule(Observer())
            except OSError as error:
                hint = ""
                if error.errno in (errno.ENOSPC, errno.EMFILE):  # out of watches or instances
                    hint = (" Raise fs.inotify.max_user_watches / max_user_instances "
                            "(sysctl) to fix this.")
                log.warning("cannot watch %s with inotify (%s); polling every %ss instead.%s",
                            self.inbox, error, self.settings.poll_seconds, hint)
                mode = "poll"
        if mode == "poll":
            self.observer = self._schedule(PollingObserver(timeout=self.settings.poll_seconds))
        self.mode = mode
        self._dirty.set()
        return mode

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        observer.schedule(_Nudge(self.nudge), str(self.inbox), recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    def nudge(self, event: FileSystemEvent | None = None) -> None:
        """Something in the inbox changed (the observer's call, or anyone's): look again soon."""
        if (event is not None and event.event_type == "deleted"
                and os.fsdecode(event.src_path) == str(self.inbox)):
            self._watch_lost.set()  # the watch went with the folder
        self._dirty.set()
        self.wake.set()

    def _rewatch(self) -> None:
        """Watch the inbox again: it was removed, and now exists anew."""
        self.stop()
        self._watch_lost.clear()
        mode = self.start()
        log.info("the inbox %s exists again: watching it (%s)", self.inbox, mode)
        if self.lock is not None:
            try:
                self.lock.renew()
            except (AlreadyRunning, OSError) as error:
                log.error("cannot take the inbox's lock again: %s", error)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    # ---- settling ------------------------------------------------------------------------
    def rescan(self) -> None:
        """Look at every top-level entry of the inbox."""
        self._next_rescan = self.clock() + self.settings.rescan_seconds
        try:
            st = os.stat(self.inbox)
            if self.observer is not None and (self._watch_lost.is_set()
                                              or (st.st_dev, st.st_ino) != self._watched):
                self._rewatch()  # a watch is set on a folder, not on a path
            names = set(os.listdir(self.inbox))
        except FileNotFoundError:
            self._lost_inbox()
            return
        self._missing = False
        for name in list(self.candidates):
            if name not in names:
                del self.candidates[name]
        for name in names:
            if name not in self.candidates and not self._skipped(name):
                self._consider(name)
        self._reported &= names

    def _lost_inbox(self) -> None:
        """The inbox is gone: look for it again soon, and say so once."""
        self._next_rescan = self.clock() + min(MISSING_INBOX_INTERVAL, self.settings.rescan_seconds)
        self.candidates.clear()
        if not self._missing:
            self._missing = True
            log.error("the inbox %s does not exist (removed, or not mounted): lorad looks for it "
                      "every %gs and watches it again once it is back", self.inbox,
                      MISSING_INBOX_INTERVAL)

    def _skipped(self, name: str) -> bool:
        """Top-level names that are never subjects: still arriving, system litter, ignored, and
        the inbox's own lock file."""
        return (name == INBOX_LOCK or is_arriving_folder(name) or is_junk_dir(name)
                or is_junk(name, self.settings.ignore))

    def _consider(self, name: str) -> None:
        path = self.inbox / name
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            inbox = Path(os.path.realpath(self.inbox))
            if inbox not in target.parents:
                self.outside_links.append(path)  # refused by the caller, with its reason
            elif target.parent != inbox and target.is_dir():
                self.candidates[name] = Candidate(target)
            # A link to another top-level folder: that folder is taken on its own.
            return
        if path.is_dir():
            self.candidates[name] = Candidate(path)
        elif name not in self._reported:
            self._reported.add(name)
            log.warning("%s is a file, not a subject folder: put photos into a folder "
                        "and drop the folder into the inbox", path)

    def forget(self, name: str) -> None:
        self.candidates.pop(name, None)

    def take_outside_links(self) -> list[Path]:
        """Top-level symbolic links that point out of the inbox (never taken as subjects)."""
        links, self.outside_links = self.outside_links, []
        return links

    def poll(self) -> list[Path]:
        """Folders that have settled since the last call (each returned once)."""
        now = self.clock()
        if self._dirty.is_set() or now >= self._next_rescan:
            self._dirty.clear()
            self.rescan()
        ready = []
        for name, cand in list(self.candidates.items()):
            if now < self._next_check(cand):
                continue
            cand.checked_at = now
            try:
                current = fingerprint(cand.path, self.settings.ignore)
            except OSError:
                continue  # gone or unreadable now: the next rescan sees what happened
            if current != cand.fingerprint:
                cand.fingerprint, cand.changed_at = current, now
            marker = self._has_marker(current)
            if current[0] - marker == 0:
                self._warn_if_left_empty(cand, now)  # a person may not have filled it yet
                continue
            if marker or now - cand.changed_at >= self.settings.settle_seconds:
                del self.candidates[name]
                ready.append(cand.path)
        return ready

    def _warn_if_left_empty(self, cand: Candidate, now: float) -> None:
        """One warning for a folder that has stayed without a file that counts for the settle
        time: otherwise it would sit in the inbox unexplained."""
        if cand.warned_empty or now - cand.changed_at < self.settings.settle_seconds:
            return
        cand.warned_empty = True
        log.warning("%s has no photos in it (it is empty, or holds only system files such as "
                    ".DS_Store or Thumbs.db) and is left in the inbox: put the photos into it "
                    "to make it a job, or remove it", cand.path)

    def _next_check(self, cand: Candidate) -> float:
        quiet = cand.checked_at - cand.changed_at
        due = cand.checked_at + min(max(CHECK_INTERVAL, quiet / 8), MAX_CHECK_INTERVAL)
        ready_at = cand.changed_at + self.settings.settle_seconds
        return min(due, ready_at) if ready_at > cand.checked_at else due

    def _has_marker(self, current: Fingerprint) -> bool:
        marker = self.settings.ready_marker
        return bool(marker) and any(rel == marker for rel, _, _ in current[1])

    def next_check_in(self) -> float:
        """Seconds until poll() has something to do."""
        now = self.clock()
        waits = [self._next_rescan - now]
        waits += [self._next_check(cand) - now for cand in self.candidates.values()]
        return max(0.0, min(waits))
