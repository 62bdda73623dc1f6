"""`lorad recaption`: a finished job gets new captions, and nothing is trained again."""

from __future__ import annotations

from lorad import actions
from tests.daemon_process import DaemonProcess
from tests.jobs import context, prepared_job, trainer_runs


def test_recaption_of_a_done_job_rewrites_captions_without_training(tmp_path, config, hook,
                                                                      fake_trainer):
    cfg = config(notify={"urls": [hook.url]})
    ctx = context(cfg)
    job_id = prepared_job(ctx, "ivy")
    ctx.store.update(job_id, state="done", stage="done")
    actions.recaption(ctx.store, ctx.store.get(job_id))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda jobs: jobs[0]["state"] == "done", what="the recaption")
    finally:
        daemon.stop()
    captions = sorted(ctx.paths(ctx.store.get(job_id)).training_images.glob("*/*.txt"))
    texts = [c.read_text().strip() for c in captions]
    assert len(texts) == 4 and all(t.startswith("ivy, ") for t in texts)
    assert "ivy, a test photo" not in texts  # BLIP wrote new ones
    published = (ctx.settings.outbox / "ivy" / "captions.txt").read_text()
    assert texts[0] in published
    assert trainer_runs(fake_trainer()) == []
    assert hook.received == []  # no second "LoRA ready" for new captions
