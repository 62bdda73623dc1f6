"""Captioning and training as a person sees them: `lorad run`, `lorad status` and the outbox.

A missing BLIP model fails the job cleanly and `lorad retry` recovers it once the configuration
is fixed; the dataset report is in the outbox before training ends; progress shows "n/m" while
BLIP works.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from lorad.captioning import stage as caption
from lorad.store import Store
from lorad.system import children
from tests.daemon_process import lorad
from tests.jobs import context, prepared_job
from tests.test_inbox_daemon import all_final, photos, running


def child_pids(pid: int) -> list[int]:
    """The live children of process `pid`, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def test_a_missing_blip_model_fails_the_job_cleanly_and_retry_works_once_it_is_fixed(
        tmp_path, config):
    missing = tmp_path / "no-such-blip"
    cfg = config(caption={"model": str(missing)})
    photos(tmp_path / "inbox" / "alice")
    daemon = running(cfg, tmp_path)
    try:
        [job] = daemon.wait_for(all_final(1), what="the captioning to fail")
        assert (job["state"], job["stage"]) == ("failed", "caption")
        assert f"cannot load the BLIP model '{missing}'" in job["error"]
        assert "caption.model" in job["error"]
        assert child_pids(daemon.proc.pid) == []
        store = Store(daemon.db, migrate=False)
        assert store.children() == []
        store.close()
        config()  # the same configuration with a model that is there
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda jobs: "configuration reloaded" in daemon.output(),
                        what="the reload")
        assert "queued again at the caption stage" in lorad(cfg, "retry", "alice").stdout
        [job] = daemon.wait_for(lambda jobs: jobs[0]["stage"] != "caption",
                                what="the captions after the retry")
    finally:
        assert daemon.stop() == 0
    assert job["state"] not in ("failed", "rejected")
    texts = [p.read_text() for p in (tmp_path / "state" / "work" / f"{job['id']:06d}").glob(
        "dataset/training_images/*/*.txt")]
    assert len(texts) == 4 and all(text.startswith("alice, ") for text in texts)


def test_the_dataset_report_is_in_the_outbox_while_the_job_trains(tmp_path, config,
                                                                   fake_trainer):
    """A person sees what will be trained before the GPU is done with it (captions are off
    here: BLIP's part is tested above, and would only make this test slower)."""
    cfg = config(caption={"enabled": False})
    fake_trainer(epoch_seconds=5.0)
    outbox = tmp_path / "outbox" / "alice"
    photos(tmp_path / "inbox" / "alice")
    daemon = running(cfg, tmp_path)
    try:
        daemon.wait_for(lambda jobs: jobs and jobs[0]["state"] == "training",
                        what="the training")
        while_training = sorted(p.name for p in outbox.iterdir())
        lorad(cfg, "cancel", "alice")
    finally:
        assert daemon.stop() == 0
    assert {"report.json", "dataset.png"} <= set(while_training)
    assert "alice.safetensors" not in while_training
    report = json.loads((outbox / "report.json").read_text())
    assert report["usable"] is True and report["token"] == "alice"


def test_captioning_progress_shows_in_the_job_row_and_in_status(config, monkeypatch):
    cfg = config(caption={"batch_size": 1})
    ctx = context(cfg)
    job_id = prepared_job(ctx, stage="caption", images=3)
    assert ctx.store.start_stage(job_id, "caption")
    rows, listed = [], []
    set_progress = ctx.store.set_progress

    def recording(job_id: int, fraction: float, text: str, **values) -> None:
        set_progress(job_id, fraction, text, **values)
        row = ctx.store.get(job_id)
        rows.append((row.state, row.progress_text, round(row.progress, 2)))
        if not listed:  # what `lorad status --json` shows at this moment
            listed.extend(json.loads(lorad(cfg, "status", "--json").stdout))

    monkeypatch.setattr(ctx.store, "set_progress", recording)
    ended = []
    caption.with_blip(ctx, [ctx.store.get(job_id)], children.child_env(),
                      should_stop=lambda: False,
                      on_done=lambda job, error: ended.append(error))
    assert ended == [None]
    assert rows == [("captioning", "loading the captioning model (0/3 images captioned)", 0.0),
                    ("captioning", "1/3 images captioned", 0.33),
                    ("captioning", "2/3 images captioned", 0.67),
                    ("captioning", "3/3 images captioned", 1.0)]
    assert [(j["state"], j["progress_text"], j["progress"]) for j in listed] == [
        ("captioning", "loading the captioning model (0/3 images captioned)", 0.0)]
