"""The crash test: subject folders dropped while `lorad run` works through them, the daemon killed
with SIGKILL at random moments spread over every stage and restarted each time; then nothing may
be lost, doubled or half-written.

    .venv/bin/python -m tests.crashtest [--seed N] [--folders 10] [--kills 20] [--keep DIR]

prints what each kill hit and exits 1 when a promise is broken. tests/test_crash.py runs it under
pytest (seed from LORAD_CRASH_SEED, else a new one, printed for reproducing it). The stages a kill
aims at, in turn: settling (a folder still arriving), claiming (just as it has settled), preparing,
captioning (the BLIP child), training (after a finished epoch, or in the first one), delivering
and notifying (a notification in flight to a slow endpoint). A kill aims at one of them by
watching the inbox and the database, then waits a random moment from the seed; what it really
hit is read from the database at the instant of the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tests.configs import dump_toml
from tests.hook import Hook
from tests.photos import make_photos

TESTS = Path(__file__).parent
AIMS = ("settling", "claiming", "preparing", "captioning", "training", "delivering",
        "notifying")
# The job states that are stages a kill can hit (the others, settling and notifying, are seen
# in the inbox and the notification queue).
WORKING_STATES = ("claiming", "preparing", "captioning", "training", "delivering")
SETTLE = 1.0
READY = "lorad is watching"  # what `lorad run` logs once it has started
EPOCHS = 3


@dataclass
class Kill:
    aim: str
    hit: list[str]
    at: float
    # job id -> (runs recorded by lorad, newest epoch whose saved state was complete)
    training: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Outcome:
    seed: int
    kills: list[Kill]
    problems: list[str]
    seconds: float

    def summary(self) -> str:
        hits = Counter(stage for kill in self.kills for stage in kill.hit or ["idle"])
        lines = [f"crash test, seed {self.seed}: {len(self.kills)} kills in "
                 f"{self.seconds:.0f} s; stages hit: "
                 + ", ".join(f"{stage} {hits[stage]}" for stage in (*AIMS, "idle") if hits[stage])]
        lines += [f"  kill {n:2d} at {k.at:6.1f} s, aimed at {k.aim:10} hit "
                  f"{', '.join(k.hit) or 'nothing running'}" for n, k in enumerate(self.kills, 1)]
        lines += [f"  BROKEN: {problem}" for problem in self.problems] or ["  every promise held"]
        return "\n".join(lines)


class Rig:
    """Folders, a configuration, the stand-in trainer and a slow notification endpoint."""

    def __init__(self, root: Path, blip: Path, folders: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.inbox, self.outbox = root / "inbox", root / "outbox"
        self.state = root / "state"
        self.pristine = root / "pristine"
        self.names = [f"Subject {n:02d}" for n in range(1, folders + 1)]
        self.dropped: list[str] = []
        self.hook = Hook()
        self.hook.delay = 0.8  # a slow service: a notification stays in flight a while
        self.control = root / "trainer.json"
        self.control.write_text(json.dumps({"epoch_seconds": 0.5}))
        for index, name in enumerate(self.names):
            make_photos(self.pristine / name, 4, size=(320, 320), seed=500 + index)
            (self.pristine / name / "lora.toml").write_text(f"epochs = {EPOCHS}\n")
        model = root / "base.safetensors"
        model.write_bytes(b"stand-in base model")
        self.config = root / "lorad.toml"
        self.config.write_text(dump_toml({
            "inbox": str(self.inbox), "outbox": str(self.outbox), "state_dir": str(self.state),
            "default_model": "sd15", "gpus": [0, 1],
            "watch": {"settle_seconds": SETTLE, "rescan_seconds": 2.0},
            "prepare": {"min_images": 3, "few_images": 3},
            "caption": {"model": str(blip), "device": "cpu", "num_beams": 2, "min_length": 3,
                        "max_length": 10},
            "kohya": {"sd_scripts": str(TESTS / "sd_scripts"), "python": sys.executable,
                      "accelerate": False, "stall_minutes": 2.0, "stop_grace_seconds": 3.0},
            "models": {"sd15": {"path": str(model), "family": "sd15"}},
            "notify": {"urls": [self.hook.url], "retry_seconds": [0.5, 1.0, 2.0, 4.0]},
        }))
        self.env = {**os.environ, "FAKE_SD_SCRIPTS": str(self.control)}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self.log = root / "daemon.log"
        self.starts = 0

    # ---- the daemon --------------------------------------------------------------------------
    def start(self) -> None:
        """Start `lorad run`; return once it has recovered and scanned (it logs that it watches),
        so that the database shows what this run does, not what the killed one left."""
        self.starts += 1
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lorad", "--config", str(self.config), "run"],
                stdout=handle, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        ready = wait_for(lambda: self.log.read_text(errors="replace").count(READY) >= self.starts
                         or not self.alive(), timeout=60, every=0.05)
        if not ready or not self.alive():
            raise RuntimeError("lorad run did not start:\n"
                               + self.log.read_text(errors="replace")[-4000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # the daemon alone: its children live on, as after a real crash
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.hook.close()

    # ---- dropping folders --------------------------------------------------------------------
    def drop_next(self, slowly: bool) -> bool:
        """Copy the next folder into the inbox, file by file (slowly: a pause between files)."""
        if len(self.dropped) == len(self.names):
            return False
        name = self.names[len(self.dropped)]
        self.dropped.append(name)
        target = self.inbox / name
        target.mkdir(parents=True)
        for path in sorted((self.pristine / name).iterdir()):
            shutil.copy2(path, target / path.name)
            if slowly:
                time.sleep(0.15)
        return True

    # ---- what the daemon is doing ------------------------------------------------------------
    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        path = self.state / "lorad.db"
        if not path.exists():
            return []
        conn = sqlite3.connect(path, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
        finally:
            conn.close()

    def job_states(self) -> list[str]:
        return [row[0] for row in self.query("SELECT state FROM jobs")]

    def in_inbox(self) -> list[Path]:
        return [p for p in self.inbox.iterdir() if not p.name.startswith(".")] \
            if self.inbox.is_dir() else []

    def pending_notes(self) -> bool:
        return bool(self.query("SELECT 1 FROM notifications WHERE state = 'pending'"))

    def stages_now(self) -> list[str]:
        seen = set(self.job_states()) & set(WORKING_STATES)
        hit = sorted(seen, key=AIMS.index)
        if self.in_inbox():
            hit.insert(0, "settling")
        if self.pending_notes():
            hit.append("notifying")
        return hit

    def training_snapshot(self) -> dict[int, tuple[int, int]]:
        """For each job in training: its runs so far, and its newest epoch with a full state."""
        found = {}
        for job_id, token, train in self.query(
                "SELECT id, token, train FROM jobs WHERE state = 'training'"):
            runs = json.loads(train or "{}").get("runs", [])
            newest = 0
            work = self.state / "work" / f"{job_id:06d}"
            for run in runs:
                for state in (work / "train" / f"run-{run['number']:02d}").glob(
                        f"{token}-[0-9]*-state/train_state.json"):
                    number = int(state.parent.name.split("-")[-2])
                    newest = max(newest, run["offset"] + number)
            found[job_id] = (len(runs), newest)
        return found


def wait_for(condition: Any, timeout: float, every: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def aim_and_kill(rig: Rig, aim: str, rng: random.Random) -> Kill | None:
    """Wait for a moment of the aimed stage, then kill. None when no such moment came."""
    if aim == "settling":
        if not rig.drop_next(slowly=True):
            return None
        time.sleep(rng.uniform(0, SETTLE))
    elif aim == "claiming":  # the moment the folder leaves the inbox, rows and rename
        if not rig.drop_next(slowly=False):
            return None
        folder = rig.inbox / rig.dropped[-1]
        if not wait_for(lambda: "claiming" in rig.job_states() or not folder.exists(), 30):
            return None
    else:
        conditions = {
            "notifying": rig.pending_notes,
            "training": lambda: any(n for _, n in rig.training_snapshot().values())
            if rng.random() < 0.7 else "training" in rig.job_states(),
        }
        condition = conditions.get(aim, lambda: aim in rig.job_states())
        if not wait_for(condition, timeout=30):
            return None
        if aim in ("training", "captioning", "notifying"):  # long stages: somewhere inside
            time.sleep(rng.uniform(0, 0.5))
    training = rig.training_snapshot()
    hit = rig.stages_now()
    rig.kill()
    return Kill(aim, hit, 0.0, training)


def check(rig: Rig, kills: list[Kill]) -> list[str]:
    problems: list[str] = []
    jobs = rig.query("SELECT id, name, kind, state, error, token, train FROM jobs")
    names = Counter(name for _, name, kind, *_ in jobs if kind == "new")
    for name in rig.names:
        if names[name] != 1:
            problems.append(f"{name}: {names[name]} jobs, expected exactly one")
    for job_id, name, _, state, error, *_ in jobs:
        if state != "done":
            problems.append(f"job {job_id} ({name}) ended {state}: {error}")
    problems += _originals(rig)
    problems += _resumed(jobs, kills)
    problems += _outbox(rig)
    result = rig.query("PRAGMA integrity_check")
    if result != [("ok",)]:
        problems.append(f"the database fails PRAGMA integrity_check: {result}")
    received = {note["title"] for note in rig.hook.received}
    for _, name, _, _, _, token, _ in jobs:
        if not any(token and token in title and "ready" in title for title in received):
            problems.append(f"no 'ready' notification arrived for {token} ({name})")
    return problems


def _originals(rig: Rig) -> list[str]:
    """Every dropped file present exactly once, byte for byte: in its job's work area, in failed
    or still in the inbox."""
    problems = []
    work = {name: [rig.state / "work" / f"{job_id:06d}" / "source" for (job_id,) in
                   rig.query("SELECT id FROM jobs WHERE name = ?", (name,))]
            for name in rig.names}
    for name in rig.names:
        places = [*work[name], *rig.state.glob(f"failed/{name}*"), rig.inbox / name]
        for original in sorted((rig.pristine / name).iterdir()):
            copies = [place / original.name for place in places
                      if (place / original.name).is_file()]
            if len(copies) != 1:
                problems.append(f"{name}/{original.name}: {len(copies)} copies, expected one")
            elif copies[0].read_bytes() != original.read_bytes():
                problems.append(f"{copies[0]}: differs from what was dropped")
    return problems


def _resumed(jobs: list[tuple], kills: list[Kill]) -> list[str]:
    """After a kill during a later epoch, the next run starts after the newest saved epoch."""
    problems = []
    runs_of = {job_id: json.loads(train or "{}").get("runs", [])
               for job_id, *_, train in jobs}
    for number, kill in enumerate(kills, 1):
        for job_id, (runs_before, newest) in kill.training.items():
            later = [r for r in runs_of.get(job_id, []) if r["number"] > runs_before]
            if not later or newest == 0:
                continue
            first = later[0]
            if first["first_epoch"] <= newest or not (
                    "--resume" in first["argv"] or "--network_weights" in first["argv"]):
                problems.append(
                    f"job {job_id}: killed (kill {number}) after epoch {newest} was saved, the "
                    f"next run started at epoch {first['first_epoch']} ({first['mode']})")
    return problems


def _outbox(rig: Rig) -> list[str]:
    from lorad.training.kohya.outputs import safetensors_problem

    problems = []
    for path in sorted(rig.outbox.rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith(".") or "partial" in path.name:
            problems.append(f"a half-written file was left in the outbox: {path}")
        elif path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            problems.append(f"{path}: {problem}")
        elif path.suffix == ".png":
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception as error:  # noqa: BLE001 (any decoding failure is the finding)
                problems.append(f"{path}: not a whole PNG ({error})")
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except ValueError as error:
                problems.append(f"{path}: not whole JSON ({error})")
    return problems


def run(root: Path, blip: Path, seed: int, folders: int = 10, kills: int = 20,
        timeout: float = 600) -> Outcome:
    rng = random.Random(seed)
    rig = Rig(root, blip, folders)
    plan = [AIMS[n % len(AIMS)] for n in range(kills)]
    began = time.monotonic()
    done: list[Kill] = []
    try:
        rig.start()
        for index, aim in enumerate(plan):
            kill = aim_and_kill(rig, aim, rng)
            if kill is None:  # the aimed stage did not come: kill at a random moment instead
                time.sleep(rng.uniform(0, 1))
                kill = Kill(aim, rig.stages_now(), 0.0, rig.training_snapshot())
                rig.kill()
            kill.at = time.monotonic() - began
            done.append(kill)
            needed = sum(a in ("settling", "claiming") for a in plan[index + 1:])
            spare = len(rig.names) - len(rig.dropped) - needed
            if spare > 0 and rng.random() < 0.5:  # a folder arrives while the daemon is down
                rig.drop_next(slowly=False)
            rig.start()
        while rig.drop_next(slowly=False):
            pass
        finished = wait_for(lambda: _all_done(rig), timeout=timeout)
        if not finished:
            return Outcome(seed, done, ["timed out waiting for every job and notification: "
                                        f"{rig.job_states()}\n"
                                        + rig.log.read_text(errors="replace")[-3000:]],
                           time.monotonic() - began)
    finally:
        rig.stop()
    return Outcome(seed, done, check(rig, done), time.monotonic() - began)


def _all_done(rig: Rig) -> bool:
    states = rig.job_states()
    return (len(states) >= len(rig.names) and all(s in ("done", "failed", "rejected")
                                                  for s in states)
            and not rig.pending_notes() and not rig.in_inbox())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--folders", type=int, default=10)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(10**6)
    from tests.blipfixture import build_tiny_blip

    with tempfile.TemporaryDirectory(prefix="lorad-crash-") as temp:
        root = options.keep or Path(temp)
        root.mkdir(parents=True, exist_ok=True)
        blip = build_tiny_blip(root / "tiny-blip")
        outcome = run(root / "rig", blip, seed, options.folders, options.kills)
    print(outcome.summary())
    return 1 if outcome.problems else 0


if __name__ == "__main__":
    sys.exit(main())
