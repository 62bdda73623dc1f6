"""Notifications through Apprise, sent in the background from the store's queue.

A job's events (accepted, rejected, failed, done) become rows in the `notifications` table in the
same step that changes the job; a sender thread delivers them to each Apprise target, retrying a
failed target with backoff. Each target is sent to in its own thread, so a target that never
answers holds only its own messages, never the others'. Sending never changes a job's state and
never delays the next job.
URLs are only ever shown in Apprise's privacy form (secrets masked).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import apprise

from lorad.settings import NotifySettings
from lorad.store import Job, Store
from lorad.system.logs import log

# Threads sending at once in one pass; targets beyond this share them, each target's messages
# still in order.
MAX_PARALLEL_TARGETS = 8
NOTIFY_TYPE = {"accepted": apprise.NotifyType.INFO, "epoch": apprise.NotifyType.INFO,
               "rejected": apprise.NotifyType.WARNING,
               "failed": apprise.NotifyType.FAILURE, "done": apprise.NotifyType.SUCCESS}


def masked(url: str) -> str:
    """The URL with passwords and tokens masked, or a placeholder if Apprise cannot read it."""
    service = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if not service:
        return f"{url.split('://', 1)[0]}://… (not a URL Apprise understands)"
    return label(service)


def build_apprise(settings: NotifySettings) -> apprise.Apprise:
    asset = apprise.AppriseAsset(app_id="lorad", app_desc="lorad LoRA training daemon")
    ap = apprise.Apprise(asset=asset)
    for url in settings.urls:
        if not ap.add(url):
            log.error("notify.urls: cannot use %s (check the URL's form in Apprise's docs)",
                      masked(url))
    if settings.config:
        config = apprise.AppriseConfig(asset=asset)
        if not config.add(str(settings.config)) or not ap.add(config):
            log.error("notify.config: cannot read %s", settings.config)
    for service in ap.find("all"):
        service.socket_connect_timeout = settings.timeout_seconds
        service.socket_read_timeout = settings.timeout_seconds
    return ap


def label(service: Any) -> str:
    """How a target is named in logs, events and `lorad show`: secrets masked, options left out."""
    return str(service.url(privacy=True)).split("?", 1)[0]


def check_urls(settings: NotifySettings) -> list[str]:
    """Problems with the configured targets, without sending anything."""
    problems = [f"notify.urls: {masked(u)} is not a URL Apprise understands"
                for u in settings.urls if not apprise.Apprise.instantiate(u,
                                                                          suppress_exceptions=True)]
    if settings.config:
        if not Path(settings.config).is_file():
            problems.append(f"notify.config: {settings.config} does not exist")
        else:
            config = apprise.AppriseConfig()
            config.add(str(settings.config))
            if not config.servers():
                problems.append(f"notify.config: {settings.config} defines no usable target")
    return problems


def enqueue(store: Store, settings: NotifySettings, job: Job, event: str, title: str, body: str,
            attach: Path | None = None) -> int | None:
    """Queue a notification for the sender thread (if the event is switched on)."""
    if event not in settings.events or not (settings.urls or settings.config):
        return None
    tags = list(job.settings.get("notify_tags") or [])
    note_id = store.add_notification(job.id, event, title, body,
                                     str(attach) if attach else None, tags)
    store.event(job.id, f"notification '{event}' queued")
    return note_id


class Sender:
    """Delivers queued notifications; one pass per call of send_due(), a thread in run()."""

    def __init__(self, store: Store, settings: NotifySettings,
                 wake: threading.Event | None = None) -> None:
        self.store = store
        self.settings = settings
        self.apprise = build_apprise(settings)
        self.wake = wake or threading.Event()  # set when a notification is queued

    def configure(self, settings: NotifySettings) -> None:
        """Use new settings (a reload) from the next notification on."""
        self.settings = settings
        self.apprise = build_apprise(settings)

    def _targets(self, tags: list[str]) -> list[Any]:
        return list(self.apprise.find(tags or "all"))

    def send_due(self, now: float | None = None) -> int:
        """Send every due notification to its targets that have not had it; returns how many
        were sent to all their targets."""
        work: list[tuple[dict[str, Any], list[Any]]] = []
        for note in self.store.due_notifications(now if now is not None else time.time()):
            targets = self._targets(note["tags"])
            if targets:
                work.append((note, targets))
                continue
            self.store.update_notification(note["id"], state="gave_up",
                                           last_error="no notification target has these tags")
            self.store.event(note["job_id"], f"notification '{note['event']}' has no target "
                                             f"with tags {note['tags']}", level="warning")
        results = self._deliver_all(work)
        return sum(self._conclude(note, targets, results) for note, targets in work)

    def _deliver_all(self, work: list[tuple[dict[str, Any], list[Any]]]
                     ) -> dict[tuple[int, int], bool]:
        """Deliver each note to its targets that have not had it, each target in its own thread
        (its notes in order); {(note id, id(target)): delivered}. Only the store is left to the
        caller's thread."""
        queues: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
        for note, targets in work:
            for service in targets:
                if note["targets"].get(label(service)) != "sent":
                    queues.setdefault(id(service), (service, []))[1].append(note)
        results: dict[tuple[int, int], bool] = {}

        def lane(queue: list[tuple[Any, list[dict[str, Any]]]]) -> None:
            for service, notes in queue:
                for note in notes:
                    results[note["id"], id(service)] = self._deliver(service, note)

        groups = list(queues.values())
        count = min(MAX_PARALLEL_TARGETS, len(groups))
        # Daemon threads: a target that never answers must not hold up lorad's exit.
        threads = [threading.Thread(target=lane, args=(groups[i::count],), daemon=True,
                                    name="lorad-notify-target") for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def _conclude(self, note: dict[str, Any], targets: list[Any],
                  results: dict[tuple[int, int], bool]) -> int:
        """Record one note's outcome: sent to all, retried later for the failed targets only, or
        given up; 1 when it was sent to all."""
        status: dict[str, str] = dict(note["targets"])
        errors = []
        for service in targets:
            key = label(service)
            if status.get(key) == "sent":
                continue
            ok = results.get((note["id"], id(service)), False)
            status[key] = "sent" if ok else "failed"
            if not ok:
                errors.append(key)
        attempts = note["attempts"] + 1
        if not errors:
            self.store.update_notification(note["id"], state="sent", attempts=attempts,
                                           targets=status, sent_at=time.time(), last_error=None)
            self.store.event(note["job_id"], f"notification '{note['event']}' sent")
            return 1
        waits = self.settings.retry_seconds
        message = f"could not deliver to {', '.join(errors)}"
        if attempts > len(waits):
            self.store.update_notification(note["id"], state="gave_up", attempts=attempts,
                                           targets=status, last_error=message)
            self.store.event(note["job_id"], f"notification '{note['event']}' given up after "
                                             f"{attempts} tries: {message}", level="warning")
            log.warning("job %d: notification '%s' given up: %s", note["job_id"], note["event"],
                        message)
            return 0
        delay = waits[attempts - 1]
        self.store.update_notification(note["id"], attempts=attempts, targets=status,
                                       next_at=time.time() + delay, last_error=message)
        self.store.event(note["job_id"], f"notification '{note['event']}' failed ({message}); "
                                         f"retrying in {delay:g}s", level="warning")
        log.warning("job %d: notification '%s' failed (%s); retrying in %gs", note["job_id"],
                    note["event"], message, delay)
        return 0

    def _deliver(self, service: Any, note: dict[str, Any]) -> bool:
        attach = note["attach"] if note["attach"] and Path(note["attach"]).is_file() else None
        kwargs: dict[str, Any] = {"body": note["body"], "title": note["title"],
                                  "notify_type": NOTIFY_TYPE.get(note["event"],
                                                                 apprise.NotifyType.INFO)}
        if attach:
            kwargs["attach"] = apprise.AppriseAttachment(attach)
        try:
            return bool(service.notify(**kwargs))
        except Exception as error:  # a plugin bug must not kill the sender
            logging.getLogger("lorad").warning("notification plugin error: %s", error)
            return False

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.send_due()
            except Exception:
                log.exception("notification sender failed; continuing")
            next_at = self.store.next_notification_at()
            wait = 60.0 if next_at is None else max(0.05, min(60.0, next_at - time.time()))
            self.wake.wait(wait)
            self.wake.clear()
