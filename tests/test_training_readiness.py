"""A training that cannot start (no Kohya, no base model) waits at the train stage with the reason,
and starts by itself once a reload fixes the configuration; nothing prepared is lost."""

from __future__ import annotations

import signal
import sys

from lorad.daemon.readiness import assess
from lorad.settings import load_settings
from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.test_graceful_stop import drop, wait_until


def test_a_job_waits_for_kohya_with_the_reason_and_trains_once_a_reload_fixes_it(
        tmp_path, config):
    missing = tmp_path / "no-sd-scripts"
    cfg = config(caption={"enabled": False}, kohya={"sd_scripts": str(missing)})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        wait_until(lambda: f"trainings cannot start: kohya.sd_scripts ({missing}) does not "
                           "exist" in daemon.output(), "the start-up line naming the problem",
                   daemon)
        drop(tmp_path, "Dora")
        [job] = daemon.wait_for(
            lambda jobs: jobs and jobs[0]["progress_text"].startswith("waiting for training"),
            what="the job waiting for Kohya")
        assert (job["state"], job["stage"]) == ("queued", "train"), job
        assert f"kohya.sd_scripts ({missing}) does not exist" in job["progress_text"]
        assert "kohya.sd_scripts" in lorad(cfg, "status").stdout
        assert "waiting for training: kohya.sd_scripts" in lorad(cfg, "show", "1").stdout
        captions = list((tmp_path / "state" / "work").glob("*/**/dora_*.txt"))
        assert len(captions) == 4, captions

        config(caption={"enabled": False})  # the stand-in Kohya
        daemon.proc.send_signal(signal.SIGHUP)
        [job] = daemon.wait_for(all_final(1), what="the job to train and finish")
    finally:
        assert daemon.stop() == 0
    assert job["state"] == "done", job
    assert "trainings can start" in daemon.output()
    assert "dora.safetensors" in {p.name for p in (tmp_path / "outbox" / "dora").iterdir()}


def test_what_keeps_trainings_from_starting_is_named_with_the_key_to_set(tmp_path, config):
    settings = load_settings(config(kohya={"python": str(tmp_path / "no-python")},
                                    models={"sdxl": {"path": str(tmp_path / "gone.safetensors")}}))
    found = assess(settings)
    assert "kohya.python" in found.blocker("sd15") and "kohya.python" in found.blocker("sdxl")

    settings = load_settings(config(kohya={"python": sys.executable}))
    assert assess(settings).blocker("sd15") is None
    assert assess(settings).problems() == []

    settings = load_settings(config(models={"sdxl": {"path": str(tmp_path / "gone.safetensors")}}))
    found = assess(settings)
    assert found.blocker("sd15") is None
    assert "fix models.sdxl.path" in found.blocker("sdxl")
    assert "[models.other]" in found.blocker("other")
