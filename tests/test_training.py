"""The training stage with the stand-in Kohya: commands, recovery, retries, progress."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from lorad.errors import Cancelled, StageFailed
from lorad.training import epochs
from lorad.training import stage as train
from lorad.training.kohya.outputs import safetensors_problem
from tests.jobs import arg, context, prepared_job, trainer_runs


def epochs_in(ctx, job_id: int) -> list[int]:
    folder = ctx.paths(ctx.store.get(job_id)).epochs
    return sorted(int(p.stem.rsplit("-", 1)[1]) for p in folder.glob("*.safetensors"))


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_both_presets_give_commands_the_trainer_accepts(config, fake_trainer, model):
    ctx = context(config(kohya={"accelerate": True}))
    job_id = prepared_job(ctx, model=model, subject={"epochs": 2})
    train.run(ctx, ctx.store.get(job_id), 0)
    assert epochs_in(ctx, job_id) == [1, 2]
    runs = trainer_runs(fake_trainer())
    assert len(runs) == 1
    argv = runs[0]["argv"]
    assert os.path.basename(runs[0]["script"]) == (
        "sdxl_train_network.py" if model == "sdxl" else "train_network.py")
    assert arg(argv, "--caption_extension") == ".txt"
    assert arg(argv, "--output_name") == "alice"
    assert "--save_state" in argv and "--console_log_simple" in argv
    assert runs[0]["env"]["ACCELERATE_MIXED_PRECISION"] == arg(argv, "--mixed_precision")
    assert runs[0]["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert runs[0]["env"]["PYTHONUNBUFFERED"] == "1"


def test_the_tokenizer_cache_and_the_extra_environment_reach_the_trainer(config, fake_trainer,
                                                                         tmp_path):
    cache = tmp_path / "tokenizers"
    cache.mkdir()
    ctx = context(config(kohya={"tokenizer_cache_dir": str(cache),
                                "env": {"HF_HUB_OFFLINE": "1"}}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    train.run(ctx, ctx.store.get(job_id), 0)
    [run] = trainer_runs(fake_trainer())
    assert arg(run["argv"], "--tokenizer_cache_dir") == str(cache)
    assert run["env"]["HF_HUB_OFFLINE"] == "1"


def test_subject_overrides_reach_the_command(config, fake_trainer):
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 1, "train": {
        "network_dim": 16, "network_alpha": 8.0, "weight_decay": 0.05, "seed": 7}})
    train.run(ctx, ctx.store.get(job_id), 0)
    argv = trainer_runs(fake_trainer())[0]["argv"]
    assert (arg(argv, "--network_dim"), arg(argv, "--network_alpha")) == ("16", "8.0")
    assert arg(argv, "--optimizer_args") == "weight_decay=0.05"
    assert arg(argv, "--seed") == "7"
    prompts = (ctx.paths(ctx.store.get(job_id)).run_dir(1) / "prompts.txt").read_text()
    assert "--d 7 " in prompts  # fixed seeds follow the job's seed


def test_a_gui_preset_reaches_the_command_and_its_notes_become_events_once(config, fake_trainer,
                                                                          tmp_path):
    gui = tmp_path / "shared-preset.json"
    gui.write_text(json.dumps({
        "sdxl": False, "LoRA_type": "Standard", "network_dim": 8, "network_alpha": 4,
        "optimizer": "Lion", "max_resolution": "768,768", "lowvram": True,
        "output_dir": "/home/someone/loras", "epoch": 10}))
    control = fake_trainer(faults=[{"kind": "crash", "at_step": 1, "times": 1}])  # two runs
    ctx = context(config(kohya={"preset": str(gui)}))
    job_id = prepared_job(ctx)
    train.run(ctx, ctx.store.get(job_id), 0)
    runs = [r["argv"] for r in trainer_runs(control)]
    assert len(runs) == 2
    argv = runs[0]
    assert (arg(argv, "--network_dim"), arg(argv, "--network_alpha")) == ("8", "4.0")
    assert arg(argv, "--optimizer_type") == "Lion" and arg(argv, "--resolution") == "768"
    assert arg(argv, "--output_dir") == str(ctx.paths(ctx.store.get(job_id)).run_dir(1))
    assert arg(argv, "--max_train_epochs") == "6"  # the subject's (sd15 preset's), not the GUI's
    notes = [e.message for e in ctx.store.events(job_id) if "ignored" in e.message]
    prefix = f"kohya.preset ({gui}): ignored"
    assert notes == [
        f"{prefix} GUI-only key 'lowvram'",
        f"{prefix} key 'output_dir': lorad sets this itself",
        f"{prefix} key 'epoch': lorad trains the subject's epochs (lora.toml's epochs, else its "
        "model family's preset: 6 for SD1.5, 16 for SDXL)",
    ]  # once, although the job ran twice


def test_a_gui_preset_for_the_other_model_family_is_refused(config, fake_trainer, tmp_path):
    gui = tmp_path / "sd15-preset.json"
    gui.write_text(json.dumps({"sdxl": False, "network_dim": 8}))
    ctx = context(config(models={"sdxl": {"preset": str(gui)}}))
    job_id = prepared_job(ctx, model="sdxl", subject={"epochs": 1})
    with pytest.raises(StageFailed) as failure:
        train.run(ctx, ctx.store.get(job_id), 0)
    assert str(failure.value).startswith(
        f"models.sdxl.preset: {gui}: key 'sdxl': the file was saved for SD1.5 (sdxl = false), "
        "but the base model it is used with is SDXL")
    assert trainer_runs(fake_trainer()) == []


@pytest.mark.parametrize(("model", "subject", "epochs"), [
    ("sd15", {}, "6"), ("sdxl", {}, "16"), ("sdxl", {"epochs": 3}, "3")])
def test_epochs_come_from_the_model_familys_preset_unless_the_subject_says(config, model,
                                                                          subject, epochs):
    ctx = context(config())
    job_id = prepared_job(ctx, model=model, subject=subject)
    assert arg(train.preview_command(ctx, ctx.store.get(job_id)), "--max_train_epochs") == epochs


def test_out_of_memory_climbs_the_ladder_until_it_fits(config, fake_trainer):
    control = fake_trainer(faults=[{"kind": "oom", "at_step": 1,
                                    "unless": {"max_batch_size": 1}}])
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 2})
    train.run(ctx, ctx.store.get(job_id), 0)
    job = ctx.store.get(job_id)
    assert job.train["ladder"] == ["cache latents to disk", "gradient checkpointing",
                                   "batch size 2 → 1"]
    runs = [r["argv"] for r in trainer_runs(control)]
    assert len(runs) == 4
    assert "--cache_latents_to_disk" in runs[1] and "--gradient_checkpointing" in runs[2]
    assert arg(runs[3], "--train_batch_size") == "1"
    assert epochs_in(ctx, job_id) == [1, 2]
    messages = [e.message for e in ctx.store.events(job_id)]
    assert any("out of GPU memory; retrying with: gradient checkpointing" in m for m in messages)


def test_out_of_memory_that_never_fits_fails_saying_what_was_tried(config, fake_trainer):
    fake_trainer(faults=[{"kind": "oom", "at_step": 1}])
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 1})
    with pytest.raises(StageFailed) as failure:
        train.run(ctx, ctx.store.get(job_id), 0)
    message = str(failure.value)
    assert message.startswith("out of GPU memory; already tried: cache latents to disk")
    assert "batch size 2 → 1" in message


@pytest.fixture
def bf16_gpu(tmp_path, monkeypatch):
    """An nvidia-smi that reports one GPU with bf16 (compute capability 8.6)."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '0, NVIDIA RTX 3060, 12288, 8.6'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    from lorad.system import gpus

    gpus.gpus.cache_clear()
    yield
    gpus.gpus.cache_clear()


def test_sd15_trains_in_bf16_where_the_gpu_has_it(config, fake_trainer, bf16_gpu):
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 1})
    train.run(ctx, ctx.store.get(job_id), 0)
    argv = trainer_runs(fake_trainer())[0]["argv"]
    assert (arg(argv, "--mixed_precision"), arg(argv, "--save_precision")) == ("bf16", "bf16")


def plan_with_nvidia_smi(ctx, job_id, tmp_path, monkeypatch, output: str | None):
    """The job's first plan where nvidia-smi prints output (None: there is no nvidia-smi)."""
    from lorad.system import gpus

    path = "/nonexistent"
    if output is not None:
        smi = tmp_path / "smi" / "nvidia-smi"
        smi.parent.mkdir()
        smi.write_text(f"#!/bin/sh\necho '{output}'\n")
        smi.chmod(0o755)
        path = str(smi.parent)
    monkeypatch.setenv("PATH", path)
    gpus.gpus.cache_clear()
    try:
        return train.plan_run(ctx, ctx.store.get(job_id), 0, {"target": 1})
    finally:
        gpus.gpus.cache_clear()


def test_sd15_trains_in_fp16_on_a_gpu_without_bf16(config, fake_trainer, tmp_path, monkeypatch):
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 1})
    plan = plan_with_nvidia_smi(ctx, job_id, tmp_path, monkeypatch, "0, Tesla T4, 15360, 7.5")
    assert plan is not None and plan.args["mixed_precision"] == "fp16"


@pytest.mark.parametrize("where", ["kohya", "train"])
def test_auto_precision_without_a_gpu_trains_in_full_precision(config, fake_trainer, tmp_path,
                                                               monkeypatch, where):
    # fp16 on the CPU crashes in Kohya (c10::Half != float); "no" runs
    ctx = context(config(kohya={"mixed_precision": "auto"}))
    job_id = prepared_job(ctx, subject={"epochs": 1, **(
        {"train": {"mixed_precision": "auto"}} if where == "train" else {})})
    plan = plan_with_nvidia_smi(ctx, job_id, tmp_path, monkeypatch, None)
    assert plan is not None and arg(plan.argv, "--mixed_precision") == "no"


def test_bf16_is_tried_when_a_run_on_fp16_runs_out_of_memory(config, fake_trainer, bf16_gpu):
    control = fake_trainer(faults=[{"kind": "oom", "unless": {"mixed_precision": "bf16"}}])
    ctx = context(config(kohya={"mixed_precision": "fp16"}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    train.run(ctx, ctx.store.get(job_id), 0)
    assert ctx.store.get(job_id).train["ladder"] == ["cache latents to disk",
                                                     "bf16 instead of fp16"]
    assert arg(trainer_runs(control)[-1]["argv"], "--mixed_precision") == "bf16"


def test_a_crash_is_retried_from_the_last_saved_state(config, fake_trainer):
    control = fake_trainer(faults=[{"kind": "crash", "at_step": 5, "times": 1}])
    ctx = context(config())
    job_id = prepared_job(ctx, images=4, subject={"epochs": 3, "repeats": 1,
                                                   "train": {"train_batch_size": 1}})
    train.run(ctx, ctx.store.get(job_id), 0)
    runs = [r["argv"] for r in trainer_runs(control)]
    assert len(runs) == 2
    assert "--resume" in runs[1] and arg(runs[1], "--initial_epoch") == "2"
    assert epochs_in(ctx, job_id) == [1, 2, 3]
    assert ctx.store.get(job_id).attempts == 1


def test_crashes_beyond_max_attempts_fail_the_job(config, fake_trainer):
    fake_trainer(faults=[{"kind": "crash", "at_step": 1}])
    ctx = context(config(kohya={"max_attempts": 2}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    with pytest.raises(StageFailed, match="simulated crash at step 1.*gave up after 2 attempts"):
        train.run(ctx, ctx.store.get(job_id), 0)


def test_a_check_of_kohyas_that_fails_every_time_is_not_retried(config, fake_trainer, tmp_path):
    gui = tmp_path / "gui.json"  # Kohya asserts that cached latents rule out colour augmentation
    gui.write_text(json.dumps({"cache_latents": True, "color_aug": True}))
    ctx = context(config(kohya={"preset": str(gui), "max_attempts": 3}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    with pytest.raises(StageFailed) as failure:
        train.run(ctx, ctx.store.get(job_id), 0)
    assert str(failure.value) == ("Kohya refused the settings: AssertionError: when caching "
                                  "latents, either color_aug or random_crop cannot be used / "
                                  "latentをキャッシュするときはcolor_augとrandom_cropは使えません")
    assert len(trainer_runs(fake_trainer())) == 1
    assert ctx.store.get(job_id).attempts == 0


def test_a_silent_trainer_is_stopped_as_stalled(config, fake_trainer):
    fake_trainer(step_seconds=0.05, faults=[{"kind": "silent", "at_step": 3}])
    ctx = context(config(kohya={"stall_minutes": 0.03, "max_attempts": 1}))
    job_id = prepared_job(ctx, subject={"epochs": 2})
    started = time.monotonic()
    with pytest.raises(StageFailed, match="printed nothing for 0.03 minutes"):
        train.run(ctx, ctx.store.get(job_id), 0)
    assert time.monotonic() - started < 30


def test_exit_zero_without_a_model_is_a_failure(config, fake_trainer):
    fake_trainer(faults=[{"kind": "nomodel"}])
    ctx = context(config(kohya={"max_attempts": 1}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    with pytest.raises(StageFailed, match="without writing a model file"):
        train.run(ctx, ctx.store.get(job_id), 0)


def test_a_corrupt_model_file_is_never_kept_as_an_epoch(config, fake_trainer):
    fake_trainer(faults=[{"kind": "corrupt", "times": 1}])
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 2})
    train.run(ctx, ctx.store.get(job_id), 0)
    folder = ctx.paths(ctx.store.get(job_id)).epochs
    assert epochs_in(ctx, job_id) == [1, 2]
    assert all(safetensors_problem(p) is None for p in folder.glob("*.safetensors"))
    assert any("corrupt model file" in e.message for e in ctx.store.events(job_id))


def test_no_data_found_is_not_retried(config, fake_trainer):
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 1})
    for image in ctx.paths(ctx.store.get(job_id)).training_images.glob("*/*.png"):
        image.unlink()
    with pytest.raises(StageFailed, match="found no training images"):
        train.run(ctx, ctx.store.get(job_id), 0)
    assert len(trainer_runs(fake_trainer())) == 1


def train_in_background(ctx, job_id: int) -> tuple[threading.Thread, list[BaseException]]:
    """train.run in a thread; the list receives what it raised."""
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            train.run(ctx, ctx.store.get(job_id), 0)
        except BaseException as error:  # noqa: BLE001 (the test inspects it)
            outcome.append(error)

    worker = threading.Thread(target=work)
    worker.start()
    return worker, outcome


def test_cancel_stops_the_run_and_keeps_finished_epochs(config, fake_trainer):
    fake_trainer(epoch_seconds=0.6)
    ctx = context(config(kohya={"stop_grace_seconds": 2}))
    job_id = prepared_job(ctx, subject={"epochs": 20})
    worker, outcome = train_in_background(ctx, job_id)
    deadline = time.monotonic() + 30
    while not epochs_in(ctx, job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
        epochs.harvest(ctx, ctx.store.get(job_id), dict(ctx.store.get(job_id).train))
    ctx.store.update(job_id, cancel_requested=1)
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(outcome[0], Cancelled)
    assert epochs_in(ctx, job_id)  # the finished epochs stay
    assert ctx.store.children() == []  # the trainer's process group is gone


def test_a_trainer_that_ignores_sigterm_is_killed_after_the_grace_time(config, fake_trainer):
    fake_trainer(epoch_seconds=0.5, faults=[{"kind": "ignore_sigterm", "at_step": 1}])
    grace = 1.5
    ctx = context(config(kohya={"stop_grace_seconds": grace}))
    job_id = prepared_job(ctx, subject={"epochs": 20})
    worker, outcome = train_in_background(ctx, job_id)
    deadline = time.monotonic() + 30
    while not ctx.store.get(job_id).progress_text.startswith("epoch"):
        assert time.monotonic() < deadline and worker.is_alive(), "training never started"
        time.sleep(0.1)
    ctx.store.update(job_id, cancel_requested=1)
    asked = time.monotonic()
    worker.join(30)
    assert not worker.is_alive() and isinstance(outcome[0], Cancelled)
    assert time.monotonic() - asked >= grace  # SIGTERM did not stop it...
    job = ctx.store.get(job_id)
    assert "SIGTERM received and ignored" in ctx.paths(job).train_log.read_text()
    assert job.train["runs"][-1]["exit"] == -signal.SIGKILL  # ...SIGKILL did
    assert ctx.store.children() == []


def test_progress_is_recorded_while_training(config, fake_trainer):
    fake_trainer(epoch_seconds=0.5)
    ctx = context(config())
    job_id = prepared_job(ctx, subject={"epochs": 3})
    seen: list[tuple[float, str]] = []
    worker = threading.Thread(target=train.run, args=(ctx, ctx.store.get(job_id), 0))
    worker.start()
    while worker.is_alive():
        job = ctx.store.get(job_id)
        seen.append((job.progress, job.progress_text))
        time.sleep(0.2)
    worker.join()
    texts = [text for _, text in seen if text.startswith("epoch")]
    assert any(t.startswith("epoch 2/3") for t in texts), texts
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)  # never goes backwards
