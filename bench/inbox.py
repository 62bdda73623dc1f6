"""Benchmark: how fast a running `lorad run` turns dropped folders into jobs, and what it costs.

Starts the daemon on temporary folders (captions off; the stand-in trainer of tests/sd_scripts,
told to hang, so that the first job holds the GPU slot and every other job waits in the queue),
then:

1. measures its CPU time (utime + stime of the daemon process, /proc/PID/stat) over
   --idle-seconds with an empty inbox;
2. copies --singles folders in one at a time (file by file, --spacing seconds apart), then drops
   a burst of --folders folders at once (moved in, or with --how copy copied file by file one
   after another); every folder holds --images small distinct JPEGs written beforehand in a
   staging folder on the same filesystem, and the time its last byte arrived is noted;
3. waits for every job to be claimed, and reports per folder the time from its last byte to its
   job's "claimed from the inbox" event minus the settle time (the target is for a single
   folder; in a burst the claims queue), and how long the whole burst took to register;
4. reads the daemon's peak and current memory (VmHWM, VmRSS in /proc/PID/status);
5. with --idle-after, waits until no preparation is left (all jobs queued for the GPU or
   refused) and measures CPU and memory over --idle-seconds again, with the jobs in the store.

Preparation runs as in production (a child process per job, two at a time) unless --prepare skip,
which gives every folder a lora.toml naming a base model the daemon does not have: each job is
then refused right after its claim, and only the inbox and the claims are measured.

    python bench/inbox.py                       # 200 folders x 20 images, idle 60 s
    python bench/inbox.py --how copy --folders 50 --idle-seconds 20 --idle-after
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO / "tests" / "sd_scripts"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TARGET_LATENCY = 1.0  # seconds past the settle time
TARGET_BURST = (200, 10.0)  # folders registered within seconds
TARGET_RSS_MB = 100.0
TARGET_IDLE_CPU = 0.01  # of one core


# ---- the daemon --------------------------------------------------------------------------


def write_config(root: Path, args: argparse.Namespace) -> Path:
    model = root / "base-sd15.safetensors"
    model.write_bytes(b"stand-in base model")
    config = root / "lorad.toml"
    config.write_text(f"""\
inbox = {json.dumps(str(root / "inbox"))}
outbox = {json.dumps(str(root / "outbox"))}
state_dir = {json.dumps(str(root / "state"))}
default_model = "sd15"
gpus = [0]

[watch]
settle_seconds = {args.settle}
mode = {json.dumps(args.mode)}

[prepare]
min_side = 32
min_images = 5
few_images = 5

[caption]
enabled = false

[kohya]
sd_scripts = {json.dumps(str(SD_SCRIPTS))}
python = {json.dumps(sys.executable)}
accelerate = false
stall_minutes = 600
stop_grace_seconds = 5

[models.sd15]
path = {json.dumps(str(model))}
family = "sd15"
""")
    return config


def start_daemon(root: Path, config: Path) -> subprocess.Popen:
    control = root / "fake-sd-scripts.json"
    control.write_text(json.dumps({"faults": [{"kind": "hang"}]}))  # the first job holds the GPU
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAD_")}
    env["FAKE_SD_SCRIPTS"] = str(control)
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lorad", "--config", str(config), "run"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while "lorad is watching" not in daemon_log(root):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("lorad run did not start:\n" + daemon_log(root)[-3000:])
        time.sleep(0.1)
    return proc


def daemon_log(root: Path) -> str:
    path = root / "daemon.log"
    return path.read_text(errors="replace") if path.exists() else ""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (its children are not counted)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def measure_idle(pid: int, seconds: float) -> float:
    """The fraction of one core the daemon used over `seconds`."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


# ---- the folders -------------------------------------------------------------------------


def make_folders(staging: Path, count: int, images: int, skip_prepare: bool) -> list[str]:
    """count folders of `images` distinct small JPEGs (random noise on a random colour)."""
    rng = random.Random(0)
    names = []
    for n in range(count):
        name = f"subject_{n:04d}"
        folder = staging / name
        folder.mkdir(parents=True)
        for index in range(images):
            colour = tuple(rng.randrange(256) for _ in range(3))
            base = Image.new("RGB", (96, 96), colour)
            noise = Image.effect_noise((96, 96), rng.uniform(20, 80)).convert("RGB")
            Image.blend(base, noise, 0.5).save(folder / f"IMG_{index:04d}.jpg", quality=85)
        if skip_prepare:
            (folder / "lora.toml").write_text('model = "not-configured"\n')
        names.append(name)
    return names


def drop(staging: Path, inbox: Path, names: list[str], how: str) -> dict[str, float]:
    """Put every folder into the inbox; when the last byte of each arrived (time.time())."""
    last_byte = {}
    for name in names:
        if how == "move":
            os.rename(staging / name, inbox / name)
        else:
            target = inbox / name
            target.mkdir()
            for path in sorted((staging / name).iterdir()):
                shutil.copyfile(path, target / path.name)
        last_byte[name] = time.time()
    return last_byte


def claims(db: Path) -> dict[str, float]:
    """Folder name -> when its job was claimed, for every claimed job."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT jobs.name, events.at FROM events JOIN jobs ON jobs.id = events.job_id "
            "WHERE events.message LIKE 'claimed from the inbox%'"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        conn.close()
    return dict(rows)


def preparing(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE stage = 'prepare' AND state IN "
            "('claiming', 'queued', 'preparing')"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


# ---- reporting ---------------------------------------------------------------------------


def line(label: str, value: float, unit: str, target: float, lower_is_better: bool = True) -> str:
    ratio = value / target if lower_is_better else target / value if value else float("inf")
    verdict = "ok" if ratio <= 1 else "MISSED"
    goal = f"{'<' if lower_is_better else '>'} {target:g} {unit}"
    return (f"  {label:<46} {value:>9.3f} {unit:<6}  target {goal:<12}  "
            f"ratio {ratio:5.2f}  {verdict}")


def wait_claimed(proc: subprocess.Popen, root: Path, names: list[str]) -> dict[str, float]:
    db = root / "state" / "lorad.db"
    deadline = time.monotonic() + 120 + len(names)
    while True:
        claimed = claims(db)
        if all(name in claimed for name in names):
            return {name: claimed[name] for name in names}
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{sum(n in claimed for n in names)} of {len(names)} claimed:\n"
                             + daemon_log(root)[-3000:])
        time.sleep(0.2)


def latency_lines(what: str, latencies: list[float]) -> list[str]:
    latencies = sorted(latencies)
    return [
        line(f"{what}: latency past settle, median", statistics.median(latencies), "s",
             TARGET_LATENCY),
        line(f"{what}: latency past settle, max", latencies[-1], "s", TARGET_LATENCY),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=200, help="folders in the burst")
    parser.add_argument("--images", type=int, default=20, help="images per folder")
    parser.add_argument("--singles", type=int, default=10,
                        help="folders copied in one at a time before the burst")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between singles")
    parser.add_argument("--settle", type=float, default=2.0, help="watch.settle_seconds")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--how", choices=("move", "copy"), default="move",
                        help="how the burst arrives: all moved in, or copied file by file")
    parser.add_argument("--mode", choices=("auto", "native", "poll"), default="native",
                        help="watch.mode")
    parser.add_argument("--prepare", choices=("run", "skip"), default="run")
    parser.add_argument("--idle-after", action="store_true",
                        help="also measure idle with the jobs in the store (waits for the "
                             "preparations to finish)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lorad-bench-inbox-"))
    config = write_config(root, args)
    total = args.singles + args.folders
    print(f"generating {total} folders x {args.images} images in {root}", flush=True)
    folders = make_folders(root / "staging", total, args.images, args.prepare == "skip")
    singles, burst = folders[:args.singles], folders[args.singles:]
    (root / "inbox").mkdir()
    proc = start_daemon(root, config)
    pid = proc.pid
    report: list[str] = []
    try:
        mode = "poll" if "(poll)" in daemon_log(root) else "native"
        print(f"daemon pid {pid} watching in {mode} mode; idle for {args.idle_seconds:g}s",
              flush=True)
        time.sleep(2.0)  # let the start-up finish
        idle = measure_idle(pid, args.idle_seconds)
        rss_idle = memory_mb(pid)["VmRSS"]

        print(f"copying in {len(singles)} folders one at a time, {args.spacing:g}s apart",
              flush=True)
        last_byte = {}
        for name in singles:
            last_byte |= drop(root / "staging", root / "inbox", [name], "copy")
            time.sleep(args.spacing)
        claimed = wait_claimed(proc, root, singles)
        single_latency = [claimed[n] - last_byte[n] - args.settle for n in singles]

        print(f"dropping {len(burst)} folders at once ({args.how})", flush=True)
        started = time.time()
        last_byte = drop(root / "staging", root / "inbox", burst, args.how)
        dropped = time.time()
        claimed = wait_claimed(proc, root, burst)
        memory = memory_mb(pid)
        first, last = min(claimed.values()), max(claimed.values())
        registered = last - started - args.settle
        report += [
            f"{len(singles)} single folders, then {len(burst)} at once ({args.how}); "
            f"{args.images} images each; settle {args.settle:g}s; {mode} observer; "
            f"preparation {args.prepare}",
            *latency_lines("single folders", single_latency),
            f"  burst: the drop took {dropped - started:.2f}s; claims from "
            f"{first - started:.2f}s to {last - started:.2f}s after it began",
            *latency_lines("burst", [claimed[n] - last_byte[n] - args.settle for n in burst]),
            line(f"burst: all {len(burst)} registered (past settle)", registered, "s",
                 TARGET_BURST[1] * len(burst) / TARGET_BURST[0]),
            line("burst: registration rate", len(burst) / max(registered, 1e-9), "jobs/s",
                 TARGET_BURST[0] / TARGET_BURST[1], lower_is_better=False),
            line("peak memory VmHWM (so far)", memory["VmHWM"], "MB", TARGET_RSS_MB),
            line("resident memory, idle before the drops", rss_idle, "MB", TARGET_RSS_MB),
            line(f"CPU idle, empty inbox ({args.idle_seconds:g}s)", idle * 100, "%",
                 TARGET_IDLE_CPU * 100),
        ]
        if args.idle_after:
            print("waiting for the preparations to finish", flush=True)
            while preparing(root / "state" / "lorad.db"):
                if proc.poll() is not None:
                    raise SystemExit(daemon_log(root)[-3000:])
                time.sleep(1.0)
            time.sleep(2.0)
            print(f"idle with {total} jobs in the store for {args.idle_seconds:g}s", flush=True)
            idle_after = measure_idle(pid, args.idle_seconds)
            memory = memory_mb(pid)
            report += [
                line(f"CPU idle, {total} jobs in the store", idle_after * 100, "%",
                     TARGET_IDLE_CPU * 100),
                line("resident memory, idle after the burst", memory["VmRSS"], "MB",
                     TARGET_RSS_MB),
                line("peak memory VmHWM (whole run)", memory["VmHWM"], "MB", TARGET_RSS_MB),
            ]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(report))


if __name__ == "__main__":
    main()
