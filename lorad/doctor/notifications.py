"""Notifications: the Apprise targets are understood, and a test notification when asked for."""

from __future__ import annotations

from collections.abc import Iterator

from lorad.delivery.notify import build_apprise, check_urls, masked
from lorad.doctor.check import FAIL, OK, WARN, Check
from lorad.settings import Settings


def notifications(settings: Settings, send_test: bool) -> Iterator[Check]:
    notify = settings.notify
    if not notify.urls and not notify.config:
        yield Check(WARN, "notifications", "none configured, so nobody is told when a LoRA is "
                                           "ready; add an Apprise URL to notify.urls")
        return
    problems = check_urls(notify)
    for problem in problems:
        yield Check(FAIL, "notifications", f"{problem}; fix it (Apprise's documentation shows "
                                           "each service's URL)")
    if not problems:
        targets = [masked(url) for url in notify.urls]
        if notify.config:
            targets.append(f"the targets in {notify.config}")
        yield Check(OK, "notifications", f"{', '.join(targets)} understood (nothing sent)")
    if send_test:
        yield test_notification(settings, problems)


def test_notification(settings: Settings, problems: list[str]) -> Check:
    if problems:
        return Check(WARN, "test notification", "not sent; fix the notification targets first")
    failed, sent = [], []
    for service in build_apprise(settings.notify).find("all"):
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            setattr(service, name, settings.notify.timeout_seconds)
        delivered = service.notify(title="lorad: test notification",
                                   body="lorad doctor --send-test: notifications work.")
        (sent if delivered else failed).append(service.url(privacy=True))
    if failed:
        return Check(FAIL, "test notification", f"could not deliver to {', '.join(failed)}; "
                                                "check the URL's credentials and the network")
    return Check(OK, "test notification", f"delivered to {', '.join(sent)}")
