"""Does the GPU wait for lorad between trainings?

Five subject folders are dropped at once into the inbox of a real `lorad run` with one GPU slot.
The stand-in Kohya (tests/sd_scripts) takes a fixed time per epoch, so every training lasts the
same, and it records when each trainer process really started and exited (its runs.jsonl and
exits.jsonl). From those records, not from lorad's own bookkeeping, this prints:
- the GPU slot's idle gaps: from one trainer process's exit to the next one's start, summed,
  against the target of under 2 s in total;
- the overhead: lorad's wall time with the jobs queued on the GPU slot (from the first training's
  start to the last job done, its delivery included) over the sum of the trainer processes' run
  times, against the target of under 2 %. The lead-in before the first training (settling,
  preparing the first folder: seconds, however long the trainings are) is printed apart, with
  the overhead counted from the drop as well;
- and, as the named alternative, the same trainings run back to back by a plain loop with no
  preparation in between (the floor the daemon is measured against);
- the delay from the trainer finishing an epoch's file (its mtime) to that epoch being in the
  outbox (the manifest's saved_at), for the epochs published while the training goes on, against
  the target of under 2 s with SD1.5-sized files (--model-mb 150, the default); the last epoch of
  each training is published by the delivery and is printed apart.

    python bench/train.py [--jobs 5] [--epochs 3] [--epoch-seconds 2] [--model-mb 150] [--caption]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.configs import dump_toml  # noqa: E402
from tests.daemon_process import DaemonProcess, all_final, lorad  # noqa: E402
from tests.photos import make_photos  # noqa: E402

SD_SCRIPTS = ROOT / "tests" / "sd_scripts"


def configure(root: Path, args: argparse.Namespace) -> Path:
    model = root / "base.safetensors"
    model.write_bytes(b"stand-in")
    control = root / "trainer.json"
    control.write_text(json.dumps({"epoch_seconds": args.epoch_seconds,
                                   "model_bytes": int(args.model_mb * 1e6)}))
    caption: dict = {"enabled": False}
    if args.caption:
        from tests.blipfixture import build_tiny_blip

        build_tiny_blip(root / "blip")
        caption = {"model": str(root / "blip"), "device": "cpu", "num_beams": 2,
                   "min_length": 3, "max_length": 10}
    config = {
        "inbox": str(root / "inbox"), "outbox": str(root / "outbox"),
        "state_dir": str(root / "state"), "gpus": [0],
        "watch": {"settle_seconds": 0.5}, "prepare": {"min_images": 3},
        "caption": caption,
        "kohya": {"sd_scripts": str(SD_SCRIPTS), "python": sys.executable, "accelerate": False},
        "models": {"sd15": {"path": str(model), "family": "sd15"}},
    }
    path = root / "lorad.toml"
    path.write_text(dump_toml(config))
    return path


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trainer_spans(control: Path) -> list[tuple[float, float]]:
    """(start, exit) of every trainer process, as the stand-in recorded them, in start order."""
    started = {run["pid"]: run["started"] for run in read_jsonl(Path(f"{control}.runs.jsonl"))
               if run["script"].endswith("train_network.py")}
    exited = {end["pid"]: end["exited"] for end in read_jsonl(Path(f"{control}.exits.jsonl"))}
    killed = sorted(set(started) - set(exited))
    if killed:
        raise SystemExit(f"trainer processes {killed} did not exit by themselves (see "
                         f"{control}.runs.jsonl); the figures would be wrong")
    return sorted((started[pid], exited[pid]) for pid in started)


def last_done(config: Path, jobs: list[dict]) -> float:
    """When the last job was finished, as lorad recorded it."""
    shown = [json.loads(lorad(config, "show", str(job["id"]), "--json").stdout) for job in jobs]
    return max(job["finished_at"] for job in shown)


def back_to_back(root: Path, config: Path, count: int) -> float:
    """The alternative: the same runs started one after another by a plain loop."""
    from lorad.settings import load_settings

    command = (root / "state" / "work" / "000001" / "train" / "run-01" / "command.txt")
    argv = command.read_text().split("\n")[:-1]
    settings = load_settings(config)
    control = root / "loop.json"  # its own records, apart from the daemon's runs
    shutil.copyfile(root / "trainer.json", control)
    started = time.monotonic()
    for index in range(count):
        out = root / "loop" / str(index)
        argv_i = [a if a != argv[argv.index("--output_dir") + 1] else str(out) for a in argv]
        subprocess.run(argv_i, cwd=settings.kohya.sd_scripts, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"FAKE_SD_SCRIPTS": str(control), "PATH": "/usr/bin"})
    return time.monotonic() - started


def publish_delays(root: Path) -> tuple[list[float], list[float]]:
    """Seconds from each epoch file's last write in a run folder to its epoch being in the
    outbox (the manifest's saved_at): (published during the training, the runs' last epochs)."""
    from lorad.delivery import manifest

    during, last = [], []
    for folder in sorted((root / "outbox").iterdir()):
        m = manifest.read(folder)
        work = root / "state" / "work"
        for number, entry in m.epochs.items():
            name = entry.file if number < max(m.epochs) else f"{m.token}.safetensors"
            written = [p.stat().st_mtime for p in work.glob(f"*/train/run-*/{name}")]
            if written and entry.saved_at:
                (during if number < max(m.epochs) else last).append(entry.saved_at - max(written))
    return during, last


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-seconds", type=float, default=2.0)
    parser.add_argument("--model-mb", type=float, default=150.0,
                        help="size of each saved model (SD1.5 LoRAs are about 150 MB)")
    parser.add_argument("--caption", action="store_true", help="caption with a tiny BLIP on CPU")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorad-bench-train-"))
    config = configure(root, args)
    (root / "inbox").mkdir()
    daemon = DaemonProcess(config, root / "daemon.log",
                           env={"FAKE_SD_SCRIPTS": str(root / "trainer.json")}).start()
    try:
        for index in range(args.jobs):
            source = root / "src" / f"subject{index}"
            make_photos(source, 4, size=(320, 320), seed=index)
            (source / "lora.toml").write_text(f"epochs = {args.epochs}\n")
        dropped = time.time()
        for index in range(args.jobs):  # dropped at once
            shutil.move(str(root / "src" / f"subject{index}"), root / "inbox")
        jobs = daemon.wait_for(all_final(args.jobs), timeout=args.jobs * args.epochs *
                               args.epoch_seconds * 3 + 120)
    finally:
        daemon.stop()
    assert all(j["state"] == "done" for j in jobs), jobs
    report(args, root, config, jobs, dropped)
    shutil.rmtree(root, ignore_errors=True)


def report(args: argparse.Namespace, root: Path, config: Path, jobs: list[dict],
           dropped: float) -> None:
    spans = trainer_spans(root / "trainer.json")
    gaps = [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]
    busy = sum(end - start for start, end in spans)
    finished = last_done(config, jobs)
    wall = finished - dropped
    steady = (finished - spans[0][0]) / busy - 1
    loop = back_to_back(root, config, args.jobs)
    print(f"{args.jobs} jobs x {args.epochs} epochs x {args.epoch_seconds:g} s on one GPU slot"
          f"{' (captioning on the CPU)' if args.caption else ''}; times from the stand-in "
          "trainer's own records")
    print(f"  trainer processes ({len(spans)}), each from start to exit: "
          + ", ".join(f"{end - start:.2f}s" for start, end in spans))
    print(f"  idle gaps of the GPU slot, exit to next start: "
          f"{', '.join(f'{g * 1000:.0f} ms' for g in gaps)}")
    print(f"  total idle gap: {sum(gaps):.3f} s  (target < 2 s: {verdict(sum(gaps) < 2)})")
    print(f"  wall from the first training's start to the last job done "
          f"{finished - spans[0][0]:.2f} s / trainer processes {busy:.2f} s = overhead "
          f"{steady:+.2%} (target < 2 %: {verdict(steady < 0.02)})")
    lead_in, tail = spans[0][0] - dropped, finished - spans[-1][1]
    print(f"    lead-in from the drop to the first training (settle, prepare) {lead_in:.2f} s, "
          f"last delivery {tail:.2f} s; counted from the drop, {wall:.2f} s is "
          f"{wall / busy - 1:+.2%} over the trainings")
    during, last = publish_delays(root)
    if during:
        print(f"  epoch file written -> in the outbox, {args.model_mb:g} MB files, while training: "
              f"median {sorted(during)[len(during) // 2]:.2f} s, max {max(during):.2f} s "
              f"(target < 2 s: {verdict(max(during) < 2)}); the last epoch of each training, "
              f"at delivery: max {max(last, default=0):.2f} s")
    print(f"  alternative, a plain loop running the same {args.jobs} commands back to back: "
          f"{loop:.2f} s; lorad's wall from the first start / loop = "
          f"{(finished - spans[0][0]) / loop:.3f}")


if __name__ == "__main__":
    main()
