"""The whole path, as a person uses it: `lorad run`, a folder copied into the inbox, a LoRA out."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from tests.daemon_process import DaemonProcess, all_final
from tests.photos import make_photos


def test_a_dropped_folder_becomes_a_trained_lora_with_a_notification(tmp_path, config, hook):
    cfg = config(notify={"urls": [hook.url]})
    source = tmp_path / "dropped" / "Alice Smith"
    make_photos(source, 6)
    (source / "lora.toml").write_text('epochs = 3\nsample_prompts = ["photo of {token}"]\n')
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        shutil.copytree(source, tmp_path / "inbox" / "Alice Smith")
        jobs = daemon.wait_for(all_final(1), what="the job to finish")
    finally:
        assert daemon.stop() == 0
    assert [(j["token"], j["state"]) for j in jobs] == [("alice_smith", "done")], jobs
    out = tmp_path / "outbox" / "alice_smith"
    assert (out / "alice_smith.safetensors").is_file()
    assert sorted(p.name for p in out.glob("alice_smith-*.safetensors")) == [
        "alice_smith-000001.safetensors", "alice_smith-000002.safetensors",
        "alice_smith-000003.safetensors"]
    captions = sorted((out / "dataset").glob("*.txt"))
    assert len(captions) == 6
    for caption in captions:
        text = caption.read_text()
        assert text.startswith("alice_smith, ") and text.count("alice_smith,") == 1
    assert (out / "samples.png").is_file() and (out / "report.json").is_file()
    received = hook.wait_for(1)
    assert len(received) == 1
    message = received[0]
    assert "alice_smith" in message["title"] and "ready" in message["title"]
    assert f"lorad resume {jobs[0]['id']} --epochs 3" in message["message"]
    attachment = message["attachments"][0]
    assert attachment["filename"] == "samples.png"
    assert base64.b64decode(attachment["base64"]).startswith(b"\x89PNG")
    # The photos are kept, unchanged, in the work area.
    kept = sorted(p.name for p in Path(tmp_path / "state" / "work").glob("*/source/*.jpg"))
    assert kept == sorted(p.name for p in source.glob("*.jpg"))
