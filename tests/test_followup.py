"""After training: resume for more epochs, or pick an earlier one, by command or by file."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from lorad import actions
from lorad.delivery import manifest, requests
from lorad.delivery import stage as deliver
from lorad.errors import RequestError
from lorad.system.fsutil import file_hash
from lorad.training import stage as train
from tests.jobs import arg, context, prepared_job, trainer_runs


def train_and_deliver(ctx, job_id: int) -> None:
    train.run(ctx, ctx.store.get(job_id), 0)
    deliver.run(ctx, ctx.store.get(job_id))
    ctx.store.update(job_id, state="done", stage="done", finished_at=time.time())


def outbox_epochs(ctx, token: str = "alice") -> list[str]:
    return sorted(p.name for p in (ctx.settings.outbox / token).glob(f"{token}-*.safetensors"))


@pytest.fixture
def done_job(config):
    ctx = context(config(deliver={"copy_to": [str(Path(config().parent) / "loras")]}))
    job_id = prepared_job(ctx, subject={"epochs": 3})
    train_and_deliver(ctx, job_id)
    return ctx, job_id


def test_resume_continues_from_the_saved_state_with_real_epoch_numbers(done_job, fake_trainer):
    ctx, job_id = done_job
    child = actions.resume(ctx, ctx.store.get(job_id), epochs=2)
    assert (child.stage, child.parent_id) == ("train", job_id)
    train_and_deliver(ctx, child.id)
    argv = trainer_runs(fake_trainer())[-1]["argv"]
    assert "--resume" in argv and arg(argv, "--initial_epoch") == "4"
    assert arg(argv, "--max_train_epochs") == "5"
    assert outbox_epochs(ctx) == [f"alice-{n:06d}.safetensors" for n in range(1, 6)]
    out = ctx.settings.outbox / "alice"
    assert file_hash(out / "alice.safetensors") == file_hash(out / "alice-000005.safetensors")
    assert (out / f"train-job{child.id}.log").is_file()  # the first training's log stays too
    assert (out / "train.log").is_file()


def test_resume_from_weights_when_the_work_folder_was_cleaned(done_job, fake_trainer):
    ctx, job_id = done_job
    shutil.rmtree(ctx.paths(ctx.store.get(job_id)).root)  # someone cleaned the work area
    child = actions.resume(ctx, ctx.store.get(job_id), epochs=2, from_epoch=3)
    train_and_deliver(ctx, child.id)
    argv = trainer_runs(fake_trainer())[-1]["argv"]
    assert "--resume" not in argv
    assert arg(argv, "--network_weights").endswith("alice-000003.safetensors")
    assert arg(argv, "--max_train_epochs") == "2"  # Kohya counts from 1 again...
    # ...and lorad names the files after the epochs they really are.
    assert outbox_epochs(ctx) == [f"alice-{n:06d}.safetensors" for n in range(1, 6)]
    samples = sorted(p.name for p in (ctx.settings.outbox / "alice" / "samples").glob("*.png"))
    assert "alice_e000005_00.png" in samples


def test_resume_from_an_earlier_epoch_moves_the_later_epochs_aside_whole(done_job):
    ctx, job_id = done_job
    out = ctx.settings.outbox / "alice"
    old_third = file_hash(out / "alice-000003.safetensors")
    old_samples = sorted(p.name for p in (out / "samples").glob("alice_e000003_*.png"))
    child = actions.resume(ctx, ctx.store.get(job_id), epochs=1, from_epoch=2)
    train_and_deliver(ctx, child.id)
    aside = out / "superseded" / f"job-{job_id}"
    assert file_hash(aside / "alice-000003.safetensors") == old_third
    assert sorted(p.name for p in (aside / "samples").glob("*.png")) == old_samples
    # One consistent line in the folder: epoch 3 is the new one, made by the follow-up.
    assert file_hash(out / "alice-000003.safetensors") != old_third
    m = manifest.read(out)
    assert m.epochs[3].job == child.id and [s.epochs for s in m.superseded] == [[3]]
    assert file_hash(out / "alice.safetensors") == file_hash(out / "alice-000003.safetensors")


def test_resume_refuses_what_cannot_be_done(done_job):
    ctx, job_id = done_job
    job = ctx.store.get(job_id)
    with pytest.raises(RequestError, match="epoch 9 of alice is not in"):
        actions.resume(ctx, job, epochs=2, from_epoch=9)
    with pytest.raises(RequestError, match="epochs must be 1 to"):
        actions.resume(ctx, job, epochs=0)
    actions.resume(ctx, job, epochs=1)
    with pytest.raises(RequestError, match="still working on this LoRA"):
        actions.resume(ctx, job, epochs=1)


def test_pick_makes_an_earlier_epoch_the_lora(done_job):
    ctx, job_id = done_job
    out = ctx.settings.outbox / "alice"
    final = actions.pick(ctx, ctx.store.get(job_id), 2)
    assert final == out / "alice.safetensors"
    assert file_hash(final) == file_hash(out / "alice-000002.safetensors")
    assert (out / "alice-000003.safetensors").is_file()  # the previous final, under its epoch
    copied = Path(ctx.settings.deliver.copy_to[0]) / "alice.safetensors"
    assert file_hash(copied) == file_hash(final)
    with pytest.raises(RequestError, match="no epoch 7"):
        actions.pick(ctx, ctx.store.get(job_id), 7)


def _request(ctx, name: str, text: str) -> Path:
    path = ctx.settings.outbox / "alice" / name
    path.write_text(text)
    return _settled(path)


def _settled(path: Path) -> Path:
    old = time.time() - 5  # written a while ago: finished
    os.utime(path, (old, old), follow_symlinks=False)
    return path


def test_a_pick_file_in_the_outbox_is_acted_on(done_job):
    ctx, _ = done_job
    request = _request(ctx, "pick.toml", "epoch = 1\n")
    requests.scan_requests(ctx)
    out = request.parent
    assert not request.exists()
    assert "epoch 1 copied" in (out / "pick.done.toml").read_text()
    assert file_hash(out / "alice.safetensors") == file_hash(out / "alice-000001.safetensors")


def test_a_resume_file_in_the_outbox_queues_a_follow_up(done_job):
    ctx, job_id = done_job
    _request(ctx, "resume.toml", "epochs = 2\nfrom = 3\n")
    requests.scan_requests(ctx)
    children = [j for j in ctx.store.jobs() if j.parent_id == job_id]
    assert len(children) == 1 and children[0].train["target"] == 5
    done = (ctx.settings.outbox / "alice" / "resume.done.toml").read_text()
    assert f"queued as job {children[0].id}" in done


@pytest.mark.parametrize("text, reason", [
    ("epochs = 'three'\n", "epochs must be a whole number"),
    ("epochs = 2\nfrm = 3\n", "unknown key 'frm'"),
    ("epochs = \n", "not valid TOML"),
    ("from = 2\n", "needs epochs = N"),
    ("epochs = 2\nfrom = 99\n", "epoch 99 of alice is not in"),
])
def test_a_bad_resume_file_gets_an_error_file_with_the_reason(done_job, text, reason):
    ctx, job_id = done_job
    request = _request(ctx, "resume.toml", text)
    requests.scan_requests(ctx)
    error = request.with_name("resume.error.txt").read_text()
    assert reason in error and not request.exists()
    assert [j for j in ctx.store.jobs() if j.parent_id == job_id] == []


def test_a_request_still_being_written_waits(done_job):
    ctx, _ = done_job
    request = ctx.settings.outbox / "alice" / "pick.toml"
    request.write_text("epoch = ")
    requests.scan_requests(ctx)
    assert request.exists()  # not read yet: it is too fresh


def test_unparseable_request_content_is_not_copied_into_the_error_file(done_job):
    ctx, _ = done_job
    request = _request(ctx, "resume.toml", "epochs = \nhunter2-secret = [\n")
    requests.scan_requests(ctx)
    error = request.with_name("resume.error.txt").read_text()
    assert "not valid TOML" in error and "hunter2" not in error


def test_a_folder_named_like_a_request_is_answered_once_and_the_scan_goes_on(done_job, caplog):
    ctx, job_id = done_job
    caplog.set_level(logging.INFO, logger="lorad")
    folder = ctx.settings.outbox / "alice" / "pick.toml"
    folder.mkdir()
    _settled(folder)
    _request(ctx, "resume.toml", "epochs = 1\n")
    requests.scan_requests(ctx)  # must not raise
    error = folder.with_name("pick.error.txt")
    assert "pick.toml is a folder" in error.read_text()
    assert folder.is_dir()  # a person's folder is left alone
    assert folder.with_name("resume.done.toml").is_file()  # the other request was acted on
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith(f"job {job_id} (alice): ") and "pick.toml is a folder" in m
               for m in warnings)
    answered = error.stat().st_mtime_ns
    requests.scan_requests(ctx)
    assert error.stat().st_mtime_ns == answered  # not answered again on every scan


def test_a_request_that_links_elsewhere_is_refused_without_reading_its_target(done_job, tmp_path):
    ctx, job_id = done_job
    secret = tmp_path / "secrets.toml"
    secret.write_text("epochs = 2\n# tgram://123:hunter2-token/456\n")
    link = ctx.settings.outbox / "alice" / "resume.toml"
    link.symlink_to(secret)
    _settled(link)
    requests.scan_requests(ctx)
    error = link.with_name("resume.error.txt").read_text()
    assert "symbolic link" in error and "hunter2" not in error
    assert not link.is_symlink() and not link.exists()  # the link is gone...
    assert "hunter2" in secret.read_text()  # ...its target untouched
    assert [j for j in ctx.store.jobs() if j.parent_id == job_id] == []


def test_an_oversized_request_is_refused_and_not_copied(done_job):
    ctx, job_id = done_job
    request = _request(ctx, "resume.toml", "epochs = 2\n# hunter2 " + "x" * 10_000 + "\n")
    requests.scan_requests(ctx)
    error = request.with_name("resume.error.txt").read_text()
    assert f"at most {requests.MAX_REQUEST_BYTES} bytes" in error and "hunter2" not in error
    assert not request.exists()
    assert [j for j in ctx.store.jobs() if j.parent_id == job_id] == []


def test_a_request_that_cannot_be_opened_gets_the_reason(done_job, monkeypatch):
    ctx, _ = done_job
    request = _request(ctx, "pick.toml", "epoch = 1\n")
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path) == str(request):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(requests.os, "open", refuse)
    requests.scan_requests(ctx)
    error = request.with_name("pick.error.txt").read_text()
    assert "pick.toml cannot be read (Permission denied)" in error


def test_an_unreadable_request_file_gets_the_reason(done_job):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads a file whatever its mode: chmod 000 cannot "
                    "make it unreadable (test_a_request_that_cannot_be_opened_gets_the_reason "
                    "covers the same path)")
    ctx, _ = done_job
    request = _request(ctx, "pick.toml", "epoch = 1\n")
    request.chmod(0)
    requests.scan_requests(ctx)
    error = request.with_name("pick.error.txt").read_text()
    assert "pick.toml cannot be read (Permission denied)" in error


def test_an_unexpected_failure_is_logged_with_the_job_and_the_scan_goes_on(done_job, caplog,
                                                                           monkeypatch):
    ctx, job_id = done_job
    caplog.set_level(logging.INFO, logger="lorad")

    def broken(*args, **kwargs):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(actions, "resume", broken)
    resume_request = _request(ctx, "resume.toml", "epochs = 1\n")
    _request(ctx, "pick.toml", "epoch = 1\n")
    requests.scan_requests(ctx)  # must not raise
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith(f"job {job_id} (alice): ") and "the store went away" in m
               for m in errors)
    assert resume_request.exists()  # left for the next scan
    assert resume_request.with_name("pick.done.toml").is_file()
