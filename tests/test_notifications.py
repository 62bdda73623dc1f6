"""Notifications: delivered through Apprise, retried in the background, secrets never shown."""

from __future__ import annotations

import base64
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lorad.delivery import messages, notify
from lorad.settings import NotifySettings
from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.jobs import context, prepared_job
from tests.photos import make_photos


def queue_one(ctx, settings: NotifySettings, event: str = "done", attach=None) -> int:
    job_id = prepared_job(ctx)
    job = ctx.store.get(job_id)
    assert notify.enqueue(ctx.store, settings, job, event, "title", "body", attach)
    return job_id


def test_a_notification_arrives_with_its_attachment(config, hook, tmp_path):
    ctx = context(config())
    settings = NotifySettings(urls=[hook.url])
    sheet = _png(tmp_path / "samples.png")
    queue_one(ctx, settings, attach=sheet)
    assert notify.Sender(ctx.store, settings).send_due() == 1
    received = hook.wait_for(1)
    assert received[0]["title"] == "title" and received[0]["message"] == "body"
    assert received[0]["type"] == "success"
    attachment = received[0]["attachments"][0]
    assert base64.b64decode(attachment["base64"]) == sheet.read_bytes()


def _png(path):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def test_a_failed_notification_is_retried_later_and_recorded(config, hook):
    ctx = context(config())
    settings = NotifySettings(urls=[hook.url], retry_seconds=[0.2, 0.2])
    job_id = queue_one(ctx, settings)
    sender = notify.Sender(ctx.store, settings)
    hook.fail_next = 1
    assert sender.send_due() == 0
    note = ctx.store.notifications(job_id)[0]
    assert (note["state"], note["attempts"]) == ("pending", 1)
    retry_at = note["next_at"]
    assert sender.send_due(now=retry_at - 0.01) == 0  # not due yet: the backoff holds it
    assert sender.send_due(now=retry_at) == 1
    assert ctx.store.notifications(job_id)[0]["state"] == "sent"
    events = [e.message for e in ctx.store.events(job_id)]
    assert any("failed" in m and "retrying in 0.2s" in m for m in events)


def test_a_notification_is_given_up_after_its_retries(config):
    ctx = context(config())
    settings = NotifySettings(urls=["json://127.0.0.1:9/down"], retry_seconds=[0.0],
                              timeout_seconds=1)
    job_id = queue_one(ctx, settings)
    sender = notify.Sender(ctx.store, settings)
    sender.send_due()
    sender.send_due()
    note = ctx.store.notifications(job_id)[0]
    assert note["state"] == "gave_up" and note["attempts"] == 2
    assert ctx.store.get(job_id).state == "queued"  # the job itself is untouched


def test_each_target_is_retried_alone(config, hook):
    """One target down does not send the others twice."""
    ctx = context(config())
    settings = NotifySettings(urls=[hook.url, "json://127.0.0.1:9/down"], retry_seconds=[0.0],
                              timeout_seconds=1)
    job_id = queue_one(ctx, settings)
    sender = notify.Sender(ctx.store, settings)
    sender.send_due()
    sender.send_due()
    assert len(hook.received) == 1
    targets = ctx.store.notifications(job_id)[0]["targets"]
    assert sorted(targets.values()) == ["failed", "sent"]


def test_a_target_that_never_answers_does_not_hold_up_the_others(config, hook):
    """A target that takes the request and answers only after 60 s (past the 10 s timeout) is
    listed before a fast one: the fast one has its message at once, not after the slow one's
    timeout; only the slow one counts as failed, and only it is tried again."""
    slow = type(hook)()
    slow.delay = 60.0
    try:
        ctx = context(config())
        settings = NotifySettings(urls=[slow.url, hook.url], retry_seconds=[0.0],
                                  timeout_seconds=10)
        job_id = queue_one(ctx, settings)
        sender = notify.Sender(ctx.store, settings)
        started = time.monotonic()
        first_pass = threading.Thread(target=sender.send_due)
        first_pass.start()
        assert len(hook.wait_for(1, timeout=60)) == 1
        fast_after = time.monotonic() - started
        first_pass.join(timeout=120)
        pass_took = time.monotonic() - started
        assert not first_pass.is_alive()
        note = ctx.store.notifications(job_id)[0]
        slow.delay = 0.0
        assert sender.send_due() == 1
        retried = ctx.store.notifications(job_id)[0]
    finally:
        slow.close()
    print(f"fast target served after {fast_after:.2f} s; the pass ended after {pass_took:.2f} s "
          "(the slow target's timeout: 10 s)")
    assert fast_after < 5, "the fast target waited for the slow one"
    assert (note["state"], note["attempts"]) == ("pending", 1)
    assert {notify.label(s) for s in notify.build_apprise(settings).find("all")} == set(
        note["targets"])
    assert sorted(note["targets"].values()) == ["failed", "sent"]
    assert retried["state"] == "sent" and set(retried["targets"].values()) == {"sent"}
    assert len(hook.received) == 1 and len(slow.received) == 1  # each had it once


def test_subject_tags_choose_the_recipients(config, hook, tmp_path):
    other = type(hook)()
    try:
        apprise_config = tmp_path / "apprise.yml"
        apprise_config.write_text(f"urls:\n  - {hook.url}:\n      tag: family\n"
                                  f"  - {other.url}:\n      tag: work\n")
        ctx = context(config())
        settings = NotifySettings(config=apprise_config)
        job_id = prepared_job(ctx, "tagged", subject={"notify_tags": ["work"]})
        notify.enqueue(ctx.store, settings, ctx.store.get(job_id), "done", "t", "b")
        notify.Sender(ctx.store, settings).send_due()
        assert len(other.wait_for(1)) == 1 and hook.received == []
    finally:
        other.close()


def test_secrets_in_urls_are_masked():
    url = "tgram://123456789:AAHsecretTOKENvalue/987654"
    shown = notify.masked(url)
    assert "AAHsecretTOKENvalue" not in shown and shown.startswith("tgram://")
    assert "hunter2" not in notify.masked("mailtos://me:hunter2@example.com?to=you@example.com")
    assert notify.check_urls(NotifySettings(urls=["notascheme://x:hunter2@y"])) and \
        "hunter2" not in notify.check_urls(NotifySettings(urls=["notascheme://x:hunter2@y"]))[0]


def test_messages_read_well_on_a_phone(config):
    ctx = context(config())
    job_id = prepared_job(ctx, "zoe", subject={"epochs": 4})
    ctx.store.update(job_id, state="done", finished_at=time.time(),
                     train={"target": 4, "start_epoch": 0, "runs": [
                         {"first_epoch": 1, "target": 4, "steps_per_epoch": 50}]})
    title, body = messages.done(ctx.store.get(job_id), ctx.settings)
    assert title == "lorad: zoe LoRA ready"
    assert "Token: zoe" in body and "Base model: sd15" in body and "200 steps" in body
    assert f"lorad resume {job_id} --epochs 3" in body and "resume.toml" in body
    assert f"lorad pick {job_id} --epoch N" in body and "pick.toml" in body


class _SlowHook:
    """An endpoint that answers only after a long wait (a notification service in trouble)."""

    def __init__(self, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/slow"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_hanging_endpoint_does_not_delay_the_next_job(tmp_path, config):
    slow = _SlowHook(delay=20)
    secret_url = slow.url.replace("json://", "json://user:hunter2@")
    cfg = config(caption={"enabled": False}, notify={"urls": [secret_url],
                                                     "events": ["accepted", "done"]})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        for name in ("first", "second"):
            make_photos(tmp_path / "src" / name, 4, size=(320, 320), seed=len(name))
            (tmp_path / "src" / name / "lora.toml").write_text("epochs = 1\n")
            shutil.copytree(tmp_path / "src" / name, tmp_path / "inbox" / name)
        started = time.monotonic()
        jobs = daemon.wait_for(all_final(2), timeout=60)
        took = time.monotonic() - started
        shown = lorad(cfg, "show", "first").stdout + lorad(cfg, "show", "--json", "first").stdout
    finally:
        daemon.stop()
        slow.close()
    assert [j["state"] for j in jobs] == ["done", "done"]
    assert took < 20  # neither job waited for the 20 s endpoint
    assert "hunter2" not in shown and "hunter2" not in daemon.output()


def test_failed_and_rejected_messages_say_what_went_wrong(tmp_path, config, hook, fake_trainer):
    fake_trainer(faults=[{"kind": "oom"}])  # out of memory whatever lorad tries
    cfg = config(caption={"enabled": False}, notify={"urls": [hook.url]})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        for name, lora in (("oomy", "epochs = 1\n"), ("badly", "epochs = 0\n")):
            make_photos(tmp_path / "src" / name, 4, size=(320, 320), seed=len(name))
            (tmp_path / "src" / name / "lora.toml").write_text(lora)
            shutil.copytree(tmp_path / "src" / name, tmp_path / "inbox" / name)
        jobs = daemon.wait_for(all_final(2), timeout=60)
        received = hook.wait_for(2)
    finally:
        daemon.stop()
    assert sorted(j["state"] for j in jobs) == ["failed", "rejected"]
    bodies = {note["title"]: note["message"] for note in received}
    failed = bodies["lorad: oomy failed"]
    assert "Tried for memory: cache latents to disk, gradient checkpointing, batch size 2 → 1." \
        in failed
    tail = failed.split("Last lines of train.log:\n", 1)[1]
    assert "torch.OutOfMemoryError: CUDA out of memory." in tail
    refused = bodies["lorad: badly refused"]
    assert "badly/lora.toml: epochs: Input should be greater than or equal to 1" in refused
