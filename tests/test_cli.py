"""The command line: a thin skin over the library, with clear errors and honest exit codes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import zipfile

from lorad.errors import Cancelled
from lorad.training import stage as train
from tests.daemon_process import lorad
from tests.jobs import context, prepared_job
from tests.photos import make_photos


def test_prepare_makes_a_captioned_dataset_and_a_zip_without_the_daemon(tmp_path, config):
    cfg = config()
    make_photos(tmp_path / "Jane Doe", 4)
    out = tmp_path / "prepared"
    result = lorad(cfg, "prepare", str(tmp_path / "Jane Doe"), "--out", str(out), "--zip")
    assert "4 images ready" in result.stdout
    train_dir = out / "training_images" / "100_jane_doe"
    pngs = sorted(train_dir.glob("*.png"))
    assert [p.name for p in pngs] == [f"jane_doe_{n:03d}.png" for n in range(1, 5)]
    for png in pngs:
        assert png.with_suffix(".txt").read_text().startswith("jane_doe, ")
    with zipfile.ZipFile(out / "dataset.zip") as archive:
        assert len(archive.namelist()) == 8


def test_prepare_without_captioning_still_gives_every_image_a_caption_file(tmp_path, config):
    """As the daemon does: the user's captions (prefix added where missing), the prefix alone
    for the others; the zip holds a caption for every image."""
    cfg = config()
    subject = tmp_path / "Jane Doe"
    make_photos(subject, 4)
    (subject / "photo_002.txt").write_text("a woman laughing on a beach\n")
    (subject / "photo_003.txt").write_text("jane_doe, in the rain\n")
    out = tmp_path / "prepared"
    result = lorad(cfg, "prepare", str(subject), "--out", str(out), "--no-caption", "--zip")
    assert "2 images without a caption of their own get 'jane_doe,'" in result.stdout
    train_dir = out / "training_images" / "100_jane_doe"
    captions = {p.name: p.read_text() for p in sorted(train_dir.glob("*.txt"))}
    assert captions == {
        "jane_doe_001.txt": "jane_doe,\n",
        "jane_doe_002.txt": "jane_doe, a woman laughing on a beach\n",
        "jane_doe_003.txt": "jane_doe, in the rain\n",
        "jane_doe_004.txt": "jane_doe,\n",
    }
    with zipfile.ZipFile(out / "dataset.zip") as archive:
        names = sorted(archive.namelist())
        assert names == sorted([*captions, *(n.replace(".txt", ".png") for n in captions)])
        assert archive.read("jane_doe_004.txt") == b"jane_doe,\n"


def test_prepare_exits_1_when_the_dataset_is_refused(tmp_path, config):
    cfg = config()
    make_photos(tmp_path / "few", 1)
    result = lorad(cfg, "prepare", str(tmp_path / "few"), "--out", str(tmp_path / "o"),
                   "--token", "few_ones", "--no-caption", check=False)
    assert result.returncode == 1
    assert "The dataset cannot be used: only 1 usable image" in result.stdout


def test_prepare_refuses_an_output_inside_the_photos(tmp_path, config):
    make_photos(tmp_path / "subject", 3)
    result = lorad(config(), "prepare", str(tmp_path / "subject"), "--out",
                   str(tmp_path / "subject" / "o"), check=False)
    assert result.returncode == 1 and "inside the subject folder" in result.stderr


def test_command_prints_the_training_command_one_argument_a_line(config):
    cfg = config(kohya={"accelerate": True})
    ctx = context(cfg)
    job_id = prepared_job(ctx, subject={"epochs": 2})
    lines = lorad(cfg, "command", "alice").stdout.splitlines()
    assert lines[1:3] == ["-m", "accelerate.commands.launch"]
    assert lines[lines.index("--max_train_epochs") + 1] == "2"
    assert lines[lines.index("--output_name") + 1] == "alice"
    train.run(ctx, ctx.store.get(job_id), 0)
    ctx.store.update(job_id, state="done")
    after = lorad(cfg, "command", str(job_id)).stdout.splitlines()
    assert after == (ctx.paths(ctx.store.get(job_id)).run_dir(1) / "command.txt").read_text(
        ).splitlines()


def test_command_before_training_is_labelled_a_preview_of_the_current_configuration(config):
    cfg = config()
    job_id = prepared_job(context(cfg), subject={"epochs": 1})
    result = lorad(cfg, "command", str(job_id))
    assert result.stderr.startswith(f"# job {job_id} has not trained yet: a preview built from "
                                    "the current configuration")
    assert result.stdout.splitlines()[0] == sys.executable


def test_command_while_a_job_trains_is_the_running_runs_own(config, fake_trainer):
    fake_trainer(step_seconds=0.2)
    cfg = config()
    ctx = context(cfg)
    job_id = prepared_job(ctx, subject={"epochs": 3})
    ctx.store.update(job_id, state="training")

    def training() -> None:
        with contextlib.suppress(Cancelled):
            train.run(ctx, ctx.store.get(job_id), 0)

    worker = threading.Thread(target=training)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not ctx.store.get(job_id).train.get("runs"):
            assert time.monotonic() < deadline, "the training never started"
            time.sleep(0.05)
        result = lorad(cfg, "command", str(job_id))
    finally:
        ctx.store.request_cancel(job_id)
        worker.join(timeout=60)
    run_dir = ctx.paths(ctx.store.get(job_id)).run_dir(1)
    lines = result.stdout.splitlines()
    assert lines[lines.index("--output_dir") + 1] == str(run_dir)
    assert lines == (run_dir / "command.txt").read_text().splitlines()
    assert result.stderr.startswith(f"# job {job_id} run 1 (running since ")


def test_status_show_and_logs_read_the_store(config):
    cfg = config()
    ctx = context(cfg)
    job_id = prepared_job(ctx, subject={"epochs": 1})
    train.run(ctx, ctx.store.get(job_id), 0)
    table = lorad(cfg, "status").stdout
    assert "alice" in table and "queued" in table and "train" in table
    shown = json.loads(lorad(cfg, "show", "alice", "--json").stdout)
    assert shown["id"] == job_id and shown["train"]["runs"][0]["number"] == 1
    log = lorad(cfg, "logs", str(job_id), "-n", "3").stdout
    assert len(log.splitlines()) == 3
    assert "running training" in lorad(cfg, "logs", str(job_id)).stdout


def test_an_unknown_job_is_a_clear_error(config):
    cfg = config()
    context(cfg)
    result = lorad(cfg, "show", "nobody", check=False)
    assert result.returncode == 1 and "no job with id or token 'nobody'" in result.stderr


def test_retry_cancel_and_recaption_change_only_what_they_may(config):
    cfg = config()
    ctx = context(cfg)
    job_id = prepared_job(ctx)
    ctx.store.update(job_id, state="failed", stage="train", error="boom",
                     finished_at=time.time())
    assert "queued again at the train stage" in lorad(cfg, "retry", str(job_id)).stdout
    assert ctx.store.get(job_id).state == "queued"
    refused = lorad(cfg, "retry", str(job_id), check=False)
    assert refused.returncode == 1 and "only failed or cancelled jobs" in refused.stderr
    ctx.store.update(job_id, state="done", stage="done")
    assert "queued for captioning" in lorad(cfg, "recaption", str(job_id)).stdout
    job = ctx.store.get(job_id)
    assert (job.state, job.stage, job.options.get("recaption_only")) == (
        "queued", "caption", True)
    assert "cancelled" in lorad(cfg, "cancel", str(job_id)).stdout
    assert ctx.store.get(job_id).state == "cancelled"


def test_a_bad_configuration_stops_every_command_with_its_error(tmp_path):
    path = tmp_path / "lorad.toml"
    path.write_text('inbox = "/a"\noutbox = "/b"\nstate_dir = "/c"\n[caption]\nbeams = 3\n')
    result = lorad(path, "status", check=False)
    assert result.returncode == 1 and "unknown key 'caption.beams'" in result.stderr


def test_resume_and_pick_from_the_command_line(config):
    from lorad.delivery import stage as deliver

    cfg = config()
    ctx = context(cfg)
    job_id = prepared_job(ctx, subject={"epochs": 2})
    train.run(ctx, ctx.store.get(job_id), 0)
    deliver.run(ctx, ctx.store.get(job_id))
    ctx.store.update(job_id, state="done", stage="done")
    assert "epoch 1 is now" in lorad(cfg, "pick", "alice", "--epoch", "1").stdout
    queued = lorad(cfg, "resume", str(job_id), "--epochs", "3").stdout
    assert f"job {job_id + 1} queued: epochs 3 to 5 of alice, from epoch 2" in queued
    refused = lorad(cfg, "resume", str(job_id), "--epochs", "3", check=False)
    assert refused.returncode == 1 and "still working on this LoRA" in refused.stderr


def lorad_plain(*args: str) -> subprocess.CompletedProcess:
    """`lorad ARGS` exactly as given (tests.daemon_process.lorad puts --config first)."""
    return subprocess.run([sys.executable, "-m", "lorad", *args], capture_output=True, text=True,
                          timeout=60)


def test_config_is_accepted_after_the_command_as_well_as_before_it(tmp_path, config):
    cfg = config()
    job_id = prepared_job(context(cfg))
    listed = lorad_plain("status", "--config", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
    assert "alice" in lorad_plain("show", "alice", "-c", str(cfg)).stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text() + "\n[notify.extra]\nloud = true\n")
    refused = lorad_plain("run", "--config", str(bad))
    assert refused.returncode == 1 and f"{bad}: unknown key 'notify.extra'" in refused.stderr
    last_wins = lorad_plain("--config", str(bad), "status", "--config", str(cfg), "--json")
    assert last_wins.returncode == 0, last_wins.stderr


def test_a_folder_lorad_cannot_create_is_one_clear_line_not_a_traceback(tmp_path, config):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    cfg = config(outbox=str(blocker / "outbox"))
    result = lorad(cfg, "run", check=False, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert f"cannot use {blocker / 'outbox'}: Not a directory" in lines[0]


def test_prepare_refuses_a_model_the_daemon_does_not_know_as_the_daemon_does(tmp_path, config):
    """Same verdict, same message as the daemon's prepare stage (load_subject)."""
    make_photos(tmp_path / "alice", 3)
    (tmp_path / "alice" / "lora.toml").write_text('model = "nonesuch"\n')
    result = lorad(config(), "prepare", str(tmp_path / "alice"), "--out", str(tmp_path / "o"),
                   "--no-caption", check=False)
    assert result.returncode == 1
    assert ("alice/lora.toml: model 'nonesuch' is not a base model of this daemon (known: "
            in " ".join(result.stderr.split()))
    assert not (tmp_path / "o").exists()
