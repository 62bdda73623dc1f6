"""Results: every epoch reaches the outbox as it is saved, and the manifest (lorad-job.json) is
the one truth about which epoch is the LoRA, through picks, resumes and branches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from PIL import Image

from lorad import actions
from lorad.delivery import manifest, messages
from lorad.delivery.manifest import EpochEntry, Final, Manifest
from lorad.delivery.publish import SHEET, SHEET_ALL, draw_sheets
from lorad.system.fsutil import file_hash
from lorad.system.safetensors import read_header
from tests.daemon_process import DaemonProcess, all_final, wait_until
from tests.jobs import arg, context, prepared_job, trainer_runs
from tests.photos import make_photos
from tests.test_followup import train_and_deliver


def final_bytes_are_epoch(folder: Path, token: str, epoch: int) -> bool:
    return file_hash(folder / f"{token}.safetensors") == file_hash(
        folder / f"{token}-{epoch:06d}.safetensors")


# ---- epochs as they are saved -----------------------------------------------------------------
def test_each_epoch_is_in_the_outbox_with_its_samples_while_the_next_one_trains(
        tmp_path, config, fake_trainer, hook):
    fake_trainer(epoch_seconds=3.0)
    cfg = config(caption={"enabled": False},
                 notify={"urls": [hook.url], "events": ["epoch", "done"]})
    source = tmp_path / "dropped" / "bea"
    make_photos(source, 4, size=(320, 320))
    (source / "lora.toml").write_text('epochs = 3\nsample_prompts = ["photo of {token}", '
                                      '"{token} smiling"]\n')
    out = tmp_path / "outbox" / "bea"
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        shutil.copytree(source, tmp_path / "inbox" / "bea")
        wait_until(lambda: 1 in manifest.read(out).epochs, "epoch 1 in the outbox")
        m = manifest.read(out)
        jobs = daemon.jobs()
        assert jobs[0]["state"] == "training" and 2 not in m.epochs  # epoch 2 still trains
        assert (out / "bea-000001.safetensors").is_file()
        assert jobs[0]["epochs"] == [1]
        wait_until(lambda: len(manifest.read(out).epochs[1].samples) == 2, "epoch 1's samples")
        assert all((out / s).is_file() for s in manifest.read(out).epochs[1].samples)
        assert (out / SHEET).is_file()
        [epoch_note] = hook.wait_for(1)
        assert "epoch 1 of 3" in epoch_note["title"]
        assert f"lorad pick {jobs[0]['id']} --epoch 1" in epoch_note["message"]
        assert epoch_note["attachments"][0]["filename"] == "epoch-1.png"
        jobs = daemon.wait_for(all_final(1), what="the job to finish")
    finally:
        assert daemon.stop() == 0
    assert jobs[0]["state"] == "done"
    m = manifest.read(out)
    assert sorted(m.epochs) == [1, 2, 3] and m.final == Final(epoch=3, how="newest",
                                                              at=m.final.at)
    assert final_bytes_are_epoch(out, "bea", 3)
    assert [e.job for e in m.epochs.values()] == [jobs[0]["id"]] * 3
    assert m.epochs[3].steps == 3 * m.epochs[1].steps
    assert not list(out.rglob(".*"))  # no half file anywhere in the outbox


# ---- one truth about the final epoch ----------------------------------------------------------
def test_the_manifest_names_the_true_final_epoch_through_picks_resumes_and_a_branch(config):
    ctx = context(config())
    out = ctx.settings.outbox / "alice"
    first = prepared_job(ctx, subject={"epochs": 6})
    train_and_deliver(ctx, first)

    def final_is(epoch: int, how: str) -> None:
        m = manifest.read(out)
        assert (m.final.epoch, m.final.how) == (epoch, how)
        assert final_bytes_are_epoch(out, "alice", epoch)  # the bytes, not lorad's word

    final_is(6, "newest")
    actions.pick(ctx, ctx.store.get(first), 4)
    final_is(4, "picked")
    second = actions.resume(ctx, ctx.store.get(first), epochs=2)  # from the newest, 6
    train_and_deliver(ctx, second.id)
    final_is(8, "newest")
    assert sorted(manifest.read(out).epochs) == list(range(1, 9))
    third = actions.resume(ctx, ctx.store.get(second.id), epochs=1, from_epoch=1)
    train_and_deliver(ctx, third.id)
    final_is(2, "newest")
    m = manifest.read(out)
    assert sorted(m.epochs) == [1, 2] and m.epochs[2].job == third.id
    assert [line.epochs for line in m.superseded] == [[2, 3, 4, 5, 6, 7, 8]]
    aside = out / m.superseded[0].folder
    assert sorted(p.name for p in aside.glob("alice-*.safetensors")) == [
        f"alice-{n:06d}.safetensors" for n in range(2, 9)]
    assert not list((out / "samples").glob("alice_e00000[3-8]_*.png"))  # one line on the sheet
    actions.pick(ctx, ctx.store.get(third.id), 2)
    final_is(2, "picked")
    assert [(e.job, e.kind, e.from_epoch) for e in m.lineage] == [
        (first, "new", None), (second.id, "resume", 6), (third.id, "resume", 1)]


def test_resume_from_an_epoch_uses_its_saved_state_from_an_older_job_of_the_lineage(
        config, fake_trainer):
    ctx = context(config())
    first = prepared_job(ctx, subject={"epochs": 3})
    train_and_deliver(ctx, first)
    second = actions.resume(ctx, ctx.store.get(first), epochs=1)
    train_and_deliver(ctx, second.id)
    third = actions.resume(ctx, ctx.store.get(second.id), epochs=1, from_epoch=2)
    train_and_deliver(ctx, third.id)
    argv = trainer_runs(fake_trainer())[-1]["argv"]
    state = arg(argv, "--resume")
    assert state and state.startswith(str(ctx.paths(ctx.store.get(first)).root) + "/")
    assert state.endswith("alice-000002-state")
    events = [e.message for e in ctx.store.events(third.id)]
    assert any("epoch 2's saved state is in" in m for m in events)


# ---- nobody's LoRA is overwritten ---------------------------------------------------------------
def test_copy_to_keeps_a_file_lorad_did_not_put_there_and_says_where_the_lora_went(
        config, tmp_path):
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    foreign = loras / "alice.safetensors"
    foreign.write_bytes(b"another person's LoRA called alice")
    ctx = context(config(deliver={"copy_to": [str(loras)]}))
    job_id = prepared_job(ctx, subject={"epochs": 2})
    train_and_deliver(ctx, job_id)
    assert foreign.read_bytes() == b"another person's LoRA called alice"
    ours = loras / f"alice.job-{job_id}.safetensors"
    out = ctx.settings.outbox / "alice"
    assert file_hash(ours) == file_hash(out / "alice-000002.safetensors")
    actions.pick(ctx, ctx.store.get(job_id), 1)  # lorad's own copy is replaced, the other not
    assert file_hash(ours) == file_hash(out / "alice-000001.safetensors")
    assert foreign.read_bytes() == b"another person's LoRA called alice"
    _, body = messages.done(ctx.store.get(job_id), ctx.settings)
    assert f"Copied to: {ours}" in body


# ---- samples a kill cut off ---------------------------------------------------------------------
def test_samples_a_kill_cut_off_are_drawn_first_by_the_next_run(config, fake_trainer):
    control = fake_trainer(sample_seconds=1.5)
    ctx = context(config(kohya={"max_attempts": 3}))
    job_id = prepared_job(ctx, subject={"epochs": 2, "sample_prompts": ["photo of {token}",
                                                                        "{token} at the sea"]})
    run_dir = ctx.paths(ctx.store.get(job_id)).run_dir(1)
    errors: list[BaseException] = []

    def training() -> None:
        try:
            train_and_deliver(ctx, job_id)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    thread = threading.Thread(target=training)
    thread.start()
    wait_until(lambda: (run_dir / "alice-000001.safetensors").exists(), "epoch 1 saved")
    os.killpg(trainer_runs(control)[0]["pid"], signal.SIGKILL)  # while it draws the samples
    thread.join(timeout=120)
    assert not errors and not thread.is_alive(), errors
    first, second = trainer_runs(control)
    assert "--sample_at_first" not in first["argv"] and "--sample_at_first" in second["argv"]
    m = manifest.read(ctx.settings.outbox / "alice")
    assert sorted(Path(s).name for s in m.epochs[1].samples) == [
        "alice_e000001_00.png", "alice_e000001_01.png"]
    assert m.epochs[1].samples_note is None


def test_an_epoch_without_its_samples_says_so_on_the_sheet(tmp_path):
    folder = tmp_path / "alice"
    (folder / "samples").mkdir(parents=True)
    picture(folder / "samples" / "alice_e000001_00.png")
    m = Manifest(token="alice", prompts=["photo of alice"], epochs={
        1: EpochEntry(file="alice-000001.safetensors", samples=["samples/alice_e000001_00.png"]),
        2: EpochEntry(file="alice-000002.safetensors",
                      samples_note="no samples: the training was stopped while sampling")})
    assert draw_sheets(folder, m) == SHEET
    with Image.open(folder / SHEET) as sheet:
        rows = (sheet.height - 100) // 250
    assert rows == 2  # the epoch without samples has its row, with its note


# ---- a phone-readable sheet ---------------------------------------------------------------------
def picture(path: Path, colour: tuple[int, int, int] = (200, 80, 40)) -> None:
    Image.new("RGB", (64, 64), colour).save(path)


def test_samples_png_stays_phone_sized_and_samples_all_has_every_epoch(tmp_path):
    folder = tmp_path / "alice"
    (folder / "samples").mkdir(parents=True)
    epochs = {}
    for number in range(1, 17):
        name = f"samples/alice_e{number:06d}_00.png"
        picture(folder / name, (number * 15, 100, 100))
        epochs[number] = EpochEntry(file=f"alice-{number:06d}.safetensors", samples=[name],
                                    steps=number * 50)
    m = Manifest(token="alice", prompts=["photo of alice"], epochs=epochs,
                 final=Final(epoch=3, how="picked", at=time.time()))
    draw_sheets(folder, m)
    with Image.open(folder / SHEET) as small, Image.open(folder / SHEET_ALL) as full:
        assert small.height <= 2000 < full.height
        assert full.height > 2 * small.height
    # The final epoch's row is on samples.png although it is old: the newest 6 and epoch 3.
    m.final = Final(epoch=16, how="newest", at=time.time())
    draw_sheets(folder, m)
    with Image.open(folder / SHEET) as small:
        assert small.height <= 2000


# ---- the LoRA's own metadata and the done message ---------------------------------------------
def test_the_lora_names_its_trigger_word_in_its_metadata(config):
    ctx = context(config())
    job_id = prepared_job(ctx, "ohwx_dog", subject={"epochs": 1})
    train_and_deliver(ctx, job_id)
    header = read_header(ctx.settings.outbox / "ohwx_dog" / "ohwx_dog.safetensors")
    metadata = header.table["__metadata__"]
    assert metadata["modelspec.trigger_phrase"] == "ohwx_dog"
    assert metadata["modelspec.title"] == "ohwx_dog"
    assert "sd15" in metadata["modelspec.description"]


def test_the_done_message_says_what_the_memory_ladder_changed_and_the_dataset_warnings(config):
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 2})
    train_and_deliver(ctx, job_id)
    job = ctx.store.get(job_id)
    train = dict(job.train)
    train["ladder"] = ["cache latents to disk", "batch size 1"]
    train["runs"] = [{**train["runs"][0], "steps_per_epoch": 396},
                     {**train["runs"][0], "steps_per_epoch": 792}]
    ctx.store.update(job_id, train=train)
    report = ctx.paths(job).report
    report.write_text(json.dumps({"warnings": ["only 8 photos: 11 to 50 are better",
                                               "IMG_2.jpg looks blurry"]}))
    _, body = messages.done(ctx.store.get(job_id), ctx.settings)
    assert "cache latents to disk, batch size 1 (steps per epoch 396 -> 792)" in body
    assert "- only 8 photos: 11 to 50 are better" in body and "- IMG_2.jpg looks blurry" in body
    assert "epoch 2 (the newest)" in body
    assert "Trained: 2 epochs" in body and "alice/ in the outbox" in body
