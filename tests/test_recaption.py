"""`lorad recaption`: a finished job gets new captions, and nothing is trained again."""

from __future__ import annotations

import json

from lorad import actions
from tests.daemon_process import DaemonProcess
from tests.jobs import context, prepared_job, trainer_runs

USER_CAPTION = "ivy, à la plage – her own words,  as written\n".encode()


def test_recaption_rewrites_blip_captions_keeps_the_users_and_trains_nothing(
        tmp_path, config, hook, fake_trainer):
    """BLIP's captions are written anew; a caption the user dropped with the photo stays
    byte for byte; no training and no second "LoRA ready"."""
    cfg = config(notify={"urls": [hook.url]})
    ctx = context(cfg)
    job_id = prepared_job(ctx, "ivy")
    paths = ctx.paths(ctx.store.get(job_id))
    manifest = json.loads(paths.manifest.read_text())
    manifest["images"][1]["user_caption"] = True
    paths.manifest.write_text(json.dumps(manifest))
    users = paths.dataset / manifest["train_dir"] / "ivy_002.txt"
    users.write_bytes(USER_CAPTION)
    ctx.store.update(job_id, state="done", stage="done")
    actions.recaption(ctx.store, ctx.store.get(job_id))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda jobs: jobs[0]["state"] == "done", what="the recaption")
    finally:
        daemon.stop()
    assert users.read_bytes() == USER_CAPTION
    captions = sorted(set(paths.training_images.glob("*/*.txt")) - {users})
    texts = [c.read_text().strip() for c in captions]
    assert len(texts) == 3 and all(t.startswith("ivy, ") for t in texts)
    assert "ivy, a test photo" not in texts  # BLIP wrote new ones
    published = (ctx.settings.outbox / "ivy" / "captions.txt").read_text()
    assert texts[0] in published
    assert "ivy_002.png (yours): ivy, à la plage" in published
    assert trainer_runs(fake_trainer()) == []
    assert hook.received == []  # no second "LoRA ready" for new captions
