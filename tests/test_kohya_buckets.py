"""A resolution outside the bucket limits: Kohya asserts and exits; lorad widens the limits it
chose itself and refuses limits a person chose against the resolution, naming the keys."""

from __future__ import annotations

import json

import pytest

from lorad.errors import StageFailed
from lorad.training import stage as train
from tests.jobs import arg, context, prepared_job, trainer_runs


@pytest.mark.parametrize(("model", "resolution", "key", "value"), [
    ("sd15", 1088, "--max_bucket_reso", "1088"),  # the SD1.5 preset's max is 1024
    ("sdxl", 256, "--min_bucket_reso", "256"),  # the SDXL preset's min is 512
])
def test_a_subjects_resolution_beyond_the_presets_buckets_trains(config, fake_trainer, model,
                                                                 resolution, key, value):
    ctx = context(config())
    job_id = prepared_job(ctx, model=model, subject={"epochs": 1,
                                                     "train": {"resolution": resolution}})
    train.run(ctx, ctx.store.get(job_id), 0)
    [run] = trainer_runs(fake_trainer())
    assert arg(run["argv"], "--resolution") == str(resolution)
    assert arg(run["argv"], key) == value
    notes = [e.message for e in ctx.store.events(job_id) if key[2:] in e.message]
    assert len(notes) == 1
    assert f"to {value} to hold resolution {resolution} (lora.toml [train])" in notes[0]


def test_a_resolution_rounded_onto_the_bucket_steps_is_left_alone(config, fake_trainer, tmp_path):
    # Kohya rounds max_bucket_reso 1000 up to 1024 itself, which holds 1024
    gui = tmp_path / "gui.json"
    gui.write_text(json.dumps({"max_resolution": "1024,1024", "max_bucket_reso": 1000,
                               "enable_bucket": True}))
    ctx = context(config(kohya={"preset": str(gui)}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    plan = train.plan_run(ctx, ctx.store.get(job_id), 0, {"target": 1})
    assert plan is not None and plan.args["max_bucket_reso"] == 1000


def test_a_gui_presets_buckets_under_a_later_subject_resolution_are_widened(config, tmp_path):
    gui = tmp_path / "gui.json"
    gui.write_text(json.dumps({"max_resolution": "64,64", "enable_bucket": True,
                               "min_bucket_reso": 64, "max_bucket_reso": 256}))
    ctx = context(config(kohya={"preset": str(gui)}))
    job_id = prepared_job(ctx, subject={"epochs": 1, "train": {"resolution": 320}})
    plan = train.plan_run(ctx, ctx.store.get(job_id), 0, {"target": 1})
    assert plan is not None
    assert (plan.args["min_bucket_reso"], plan.args["max_bucket_reso"]) == (64, 320)
    assert any(f"max_bucket_reso raised from 256 (kohya.preset ({gui})) to 320" in note
               for note in plan.notes)


def test_a_gui_presets_own_buckets_against_its_resolution_are_refused(config, fake_trainer,
                                                                      tmp_path):
    gui = tmp_path / "gui.json"
    gui.write_text(json.dumps({"max_resolution": "1088,1088", "enable_bucket": True,
                               "max_bucket_reso": 1024}))
    ctx = context(config(kohya={"preset": str(gui)}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    with pytest.raises(StageFailed) as failure:
        train.run(ctx, ctx.store.get(job_id), 0)
    assert str(failure.value) == (
        f"kohya.preset ({gui}): max_bucket_reso = 1024 does not hold max_resolution = 1088 "
        f"(kohya.preset ({gui})); Kohya trains only when min_bucket_reso <= resolution <= "
        "max_bucket_reso: set max_bucket_reso to at least 1088, or change the resolution")
    assert trainer_runs(fake_trainer()) == []


def test_buckets_off_leave_the_limits_alone(config, tmp_path):
    gui = tmp_path / "gui.json"
    gui.write_text(json.dumps({"max_resolution": "1088,1088", "enable_bucket": False,
                               "max_bucket_reso": 1024}))
    ctx = context(config(kohya={"preset": str(gui)}))
    job_id = prepared_job(ctx, subject={"epochs": 1})
    plan = train.plan_run(ctx, ctx.store.get(job_id), 0, {"target": 1})
    assert plan is not None and "--enable_bucket" not in plan.argv
