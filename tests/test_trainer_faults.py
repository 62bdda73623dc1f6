"""Trainer faults under the running daemon: each ends in the state and with the message that
README's "What lorad guarantees" documents, while the other jobs are served meanwhile."""

from __future__ import annotations

import json
import shutil

from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.photos import make_photos

# token -> (the stand-in's fault, the end state, a part of the message README promises)
FAULTS = {
    "crashy": ({"kind": "crash", "at_step": 2}, "failed",
               "Training crashed: RuntimeError: simulated crash at step 2 (gave up after 2 "
               "attempts)"),
    "hangs": ({"kind": "hang", "at_step": 2}, "failed",
              "the trainer printed nothing for 0.05 minutes and was stopped (gave up after 2 "
              "attempts)"),
    "greedy": ({"kind": "oom", "at_step": 2}, "failed", "out of GPU memory; already tried: "),
    "empty": ({"kind": "nomodel"}, "failed",
              "Kohya finished without writing a model file (gave up after 2 attempts)"),
    "broken": ({"kind": "corrupt"}, "failed", "the trainer wrote a corrupt model file: "),
}
HEALTHY = ("fine_one", "fine_two", "fine_three")


def test_each_trainer_fault_ends_as_documented_while_other_jobs_are_served(
        tmp_path, config, fake_trainer):
    control = fake_trainer(epoch_seconds=0.3, faults=[
        {**fault, "output_name": token} for token, (fault, _, _) in FAULTS.items()])
    cfg = config(gpus=[0, 1], caption={"enabled": False},
                 kohya={"max_attempts": 2, "stall_minutes": 0.05, "stop_grace_seconds": 2})
    (tmp_path / "inbox").mkdir()
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        for index, token in enumerate([*FAULTS, *HEALTHY]):
            source = tmp_path / "dropped" / token
            make_photos(source, 3, size=(320, 320), seed=200 + index)
            (source / "lora.toml").write_text("epochs = 2\n")
            shutil.copytree(source, tmp_path / "inbox" / token)
        jobs = daemon.wait_for(all_final(len(FAULTS) + len(HEALTHY)), timeout=240,
                               what="every job to end")
    finally:
        assert daemon.stop() == 0
    by_token = {job["token"]: job for job in jobs}
    wrong = []
    for token, (_, state, message) in FAULTS.items():
        job = by_token[token]
        if job["state"] != state or message not in (job["error"] or ""):
            wrong.append(f"{token}: {job['state']}: {job['error']!r}, expected {state}: "
                         f"{message!r}")
    assert not wrong, "\n".join(wrong) + "\n" + daemon.output()[-3000:]
    assert all(by_token[token]["state"] == "done" for token in HEALTHY)
    # The healthy jobs were not held up by the one that hung (stopped after its silences).
    finished = {token: json.loads(lorad(cfg, "show", token, "--json").stdout)["finished_at"]
                for token in ("hangs", *HEALTHY)}
    assert any(finished[token] < finished["hangs"] for token in HEALTHY), finished
    greedy = json.loads(lorad(cfg, "show", "greedy", "--json").stdout)
    ladder = [e["message"] for e in greedy["events"] if "out of GPU memory" in e["message"]]
    assert ladder and greedy["train"]["ladder"], "the out-of-memory ladder was not climbed"
    runs_of_healthy = [r for r in (tmp_path / "fake-sd-scripts.json.runs.jsonl").read_text()
                       .splitlines() if '"fine_one"' in r]
    assert len(runs_of_healthy) == 1 and control.exists()
