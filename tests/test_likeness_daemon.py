"""Likeness under the real daemon: the stand-in trainer draws no face for the first epochs, near
copies of the person in the middle and distorted faces at the end; lorad scores every epoch when
it delivers and suggests (and, with auto_pick, picks) a middle one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorad.likeness.protocol import faces_installed
from tests import faces
from tests.daemon_process import DaemonProcess, all_final, lorad

pytestmark = pytest.mark.skipif(not faces_installed(), reason="lorad[faces] is not installed")


def test_lorad_suggests_the_last_epoch_that_still_looks_like_the_person(tmp_path, config,
                                                                       fake_trainer):
    pictures = tmp_path / "pictures"
    nothing, near, bent = (faces.no_faces(pictures), faces.near_copies(pictures),
                           faces.distorted(pictures))
    by_name = {path.stem: str(path) for path in [*nothing, *near, *bent]}
    recipe = {1: ["noise", "coffee", "cat"], 2: ["cat", "noise", "coffee"],
              3: ["grey", "crop", "warm"], 4: ["closer", "dark", "narrow"],
              5: ["crop", "warm", "grey"], 6: ["swirled", "swirled", "smeared"],
              7: ["smeared", "smeared", "smeared"]}
    fake_trainer(samples_from={str(n): [by_name[name] for name in names]
                               for n, names in recipe.items()})
    cfg = config(caption={"enabled": False},
                 score={"enabled": True, "samples_per_prompt": 3, "auto_pick": True})
    subject = tmp_path / "inbox" / "eileen"
    faces.near_copies(tmp_path / "dropped", ["crop", "closer", "warm", "dark", "narrow"])
    shutil.copytree(tmp_path / "dropped", subject)
    (subject / "lora.toml").write_text("epochs = 7\n")
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        jobs = daemon.wait_for(all_final(1), timeout=90, what="the job to be delivered")
    finally:
        daemon.stop()
    assert jobs[0]["state"] == "done", daemon.output()[-3000:]
    m = json.loads((tmp_path / "outbox" / "eileen" / "lorad-job.json").read_text())
    scores = {int(n): e["likeness"] for n, e in m["epochs"].items()}
    print("likeness per epoch:", {n: (s["score"], f"{s['faces']}/{s['samples']}", s["spread"])
                                  for n, s in sorted(scores.items())})
    print("suggestion:", m["suggestion"])
    assert [scores[n]["faces"] for n in range(1, 8)] == [0, 0, 3, 3, 3, 3, 3]
    assert all(len(m["epochs"][str(n)]["samples"]) == 3 for n in range(1, 8))
    assert m["suggestion"]["epoch"] in (3, 4, 5)
    assert "epochs 6–7 drift" in m["suggestion"]["reason"]
    assert m["final"]["epoch"] == m["suggestion"]["epoch"] and m["final"]["how"] == "picked"
    shown = lorad(cfg, "show", str(jobs[0]["id"])).stdout
    assert f"suggestion: epoch {m['suggestion']['epoch']} looks most like the person" in shown
    assert "epoch 1: no face (faces 0/3)" in shown
    assert (Path(jobs[0]["outbox"]) / "samples.png").is_file()
